package guard

// A chmod or chown raises only IN_ATTRIB. A side the guard could not read
// or write may become usable through one: the guard must act on it then,
// not wait for the next content change. The realistic case is a guard
// without root (caw-init under `docker run --user 1000`) facing a host file
// of another uid, so these tests run the guard as uid 1000 in a helper
// process of its own.

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
	"github.com/caw-dev/caw/manifest"
)

// procGuard is the test binary running as a guard helper, a guard in a
// process of its own. Stopping it (at cleanup) flushes and closes it.
type procGuard struct {
	stdin    io.WriteCloser
	stderr   harness.SyncBuffer
	cmd      *exec.Cmd
	stopOnce sync.Once
}

// stop flushes and stops the guard, and returns what it logged.
func (g *procGuard) stop(t testing.TB) string {
	g.stopOnce.Do(func() {
		g.stdin.Close()
		done := make(chan error, 1)
		go func() { done <- g.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("guard helper: %v\n%s", err, g.stderr.String())
			}
		case <-time.After(10 * time.Second):
			g.cmd.Process.Kill()
			<-done
			t.Errorf("guard helper did not stop")
		}
	})
	return g.stderr.String()
}

// waitLog waits until the guard has logged want: a barrier on another
// credential does not say that this one's worker is done.
func (g *procGuard) waitLog(t testing.TB, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(g.stderr.String(), want); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the guard never logged %q:\n%s", want, g.stderr.String())
		}
	}
}

func (f *fx) startAsUser() *procGuard { return f.startProc(true) }

// startProc runs the test binary as a guard helper for f, as root or (asUser)
// as the container user.
func (f *fx) startProc(asUser bool) *procGuard {
	f.t.Helper()
	bin := os.Args[0]
	if asUser {
		// The helper must reach the test binary and f.dir without root:
		// copy the binary out of the build cache (0700), open f.dir's
		// parent.
		if err := os.Chmod(filepath.Dir(f.dir), 0o755); err != nil {
			f.t.Fatal(err)
		}
		bin = filepath.Join(f.dir, "bin", "guard.test")
		mkdir(f.t, filepath.Dir(bin), 0, 0)
		self, err := os.ReadFile(os.Args[0])
		if err != nil {
			f.t.Fatal(err)
		}
		if err := os.WriteFile(bin, self, 0o755); err != nil {
			f.t.Fatal(err)
		}
	}
	mdir := filepath.Join(f.dir, "manifest")
	mkdir(f.t, mdir, 0, 0)
	if err := f.m.Validate(); err != nil {
		f.t.Fatal(err)
	}
	data, err := f.m.Marshal()
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mdir, manifest.FileName), data, 0o644); err != nil {
		f.t.Fatal(err)
	}
	spec, _ := json.Marshal(helperSpec{Auth: f.auth, Home: f.home, ManifestDir: mdir})
	g := &procGuard{cmd: exec.Command(bin)}
	g.cmd.Env = append(os.Environ(), helperEnv+"="+string(spec))
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if asUser {
		g.cmd.SysProcAttr.Credential = &syscall.Credential{Uid: userUID, Gid: userGID}
	}
	g.cmd.Stderr = &g.stderr
	g.stdin, _ = g.cmd.StdinPipe()
	out, _ := g.cmd.StdoutPipe()
	if err := g.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { g.stop(f.t) })
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line
		io.Copy(io.Discard, out)
	}()
	select {
	case line := <-ready:
		if line != "ready\n" {
			f.t.Fatalf("guard helper did not start (%q)", line)
		}
	case <-time.After(10 * time.Second):
		f.t.Fatal("guard helper did not start")
	}
	return g
}

// userSentinel is a sentinel the guard can use without root: its host file
// belongs to the container user.
func (f *fx) userSentinel() *sentinel {
	s := f.sentinel()
	if err := os.Chown(s.hostFile, userUID, userGID); err != nil {
		f.t.Fatal(err)
	}
	return s
}

// TestAttribRereadsUnreadableHost: the host file is not readable by the
// guard (another uid, 0600). A chmod, then later a chown, on the host make
// it readable: each time the home copy gets the host's token at once,
// though the content did not change with the chmod or chown.
func TestAttribRereadsUnreadableHost(t *testing.T) {
	f := newFx(t)
	hostFile := f.bindDir("claude", ".claude/.credentials.json", claudeTok(1))
	os.Chmod(hostFile, 0o600)
	s := f.userSentinel()
	f.startAsUser()
	homeFile := f.homePath(".claude/.credentials.json")
	s.barrier()
	if _, err := os.Lstat(homeFile); err == nil {
		t.Fatal("the guard copied a host file it cannot read")
	}

	if err := os.Chmod(hostFile, 0o644); err != nil {
		t.Fatal(err)
	}
	waitContent(t, homeFile, claudeTok(1))

	// Unreadable again, with new content: the write's event finds it
	// unreadable (the barrier proves that event was handled); the chown
	// alone then brings the new token.
	os.Chmod(hostFile, 0o600)
	writeOwned(t, hostFile, claudeTok(2), hostUID, hostGID, 0o600)
	s.barrier()
	assertContent(t, homeFile, claudeTok(1))
	if err := os.Chown(hostFile, userUID, userGID); err != nil {
		t.Fatal(err)
	}
	waitContent(t, homeFile, claudeTok(2))
}

// TestAttribRetriesUnwritableHost: the host file is readable but not
// writable by the guard, so a container refresh stays in the container
// (reported once). A chown on the host lets the guard write: the refresh
// reaches the host without another one.
func TestAttribRetriesUnwritableHost(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	os.Chmod(hostFile, 0o644)
	s := f.userSentinel()
	g := f.startAsUser()
	homeFile := f.homePath(".claude/.credentials.json")
	assertContent(t, homeFile, claudeTok(1))

	renameOwned(t, homeFile, claudeTok(2), userUID, userGID)
	g.waitLog(t, "not writable by the guard (uid 1000)")
	assertContent(t, hostFile, claudeTok(1))

	if err := os.Chown(hostFile, userUID, userGID); err != nil {
		t.Fatal(err)
	}
	waitContent(t, hostFile, claudeTok(2))
	assertOwner(t, hostFile, userUID, userGID, 0o644)
	// Later refreshes go straight through.
	renameOwned(t, homeFile, claudeTok(3), userUID, userGID)
	waitContent(t, hostFile, claudeTok(3))
	s.barrier()
	g.stop(t)
}

// TestAttribUnreadableBindFile: a file bind mount the guard cannot read
// cannot be watched either (inotify needs read permission): one line says
// so and names the fix, and the other credentials are synced.
func TestAttribUnreadableBindFile(t *testing.T) {
	f := newFx(t)
	f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	s := f.userSentinel()
	g := f.startAsUser()
	s.barrier()
	if got := g.stop(t); !strings.Contains(got, "make the host file readable by uid 1000") {
		t.Fatalf("the unreadable host file was not reported with its fix:\n%s", got)
	}
}

// TestAttribRereadsForeignOwnedHome: a home copy of the wrong owner is
// ignored; once chowned to the user, its fresher token goes to the host.
func TestAttribRereadsForeignOwnedHome(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	s := f.sentinel()
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	renameOwned(t, homeFile, claudeTok(2), 0, 0)
	s.barrier()
	assertContent(t, hostFile, claudeTok(1))
	if err := os.Chown(homeFile, userUID, userGID); err != nil {
		t.Fatal(err)
	}
	waitContent(t, hostFile, claudeTok(2))
}

// TestAttribRetriesUnwritableHostDir: a bind-dir whose directory the guard
// cannot write in (it writes by temp + rename there). A chown of the
// directory itself, an ATTRIB on the watched directory, retries the write.
func TestAttribRetriesUnwritableHostDir(t *testing.T) {
	f := newFx(t)
	hostFile := f.bindDir("claude", ".claude/.credentials.json", claudeTok(1))
	os.Chown(hostFile, userUID, userGID)
	s := f.userSentinel()
	g := f.startAsUser()
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(g.stop(t))
		}
	})
	homeFile := f.homePath(".claude/.credentials.json")
	assertContent(t, homeFile, claudeTok(1))
	renameOwned(t, homeFile, claudeTok(2), userUID, userGID)
	s.barrier()
	assertContent(t, hostFile, claudeTok(1))
	if err := os.Chown(filepath.Dir(hostFile), userUID, userGID); err != nil {
		t.Fatal(err)
	}
	waitContent(t, hostFile, claudeTok(2))
	assertOwner(t, hostFile, userUID, userGID, 0o640)
}

// TestAttribRetriesForeignOwnedHostFile: in a bind-dir the guard can write
// in, a host file of another uid cannot be replaced by a guard without root
// (it could not give the new file that owner), so the refresh waits; a
// chown of the host file to the guard's uid retries it.
func TestAttribRetriesForeignOwnedHostFile(t *testing.T) {
	f := newFx(t)
	hostFile := f.bindDir("claude", ".claude/.credentials.json", claudeTok(1))
	os.Chmod(hostFile, 0o644)
	os.Chown(filepath.Dir(hostFile), userUID, userGID)
	s := f.userSentinel()
	g := f.startAsUser()
	homeFile := f.homePath(".claude/.credentials.json")
	assertContent(t, homeFile, claudeTok(1))
	renameOwned(t, homeFile, claudeTok(2), userUID, userGID)
	s.barrier()
	assertContent(t, hostFile, claudeTok(1))
	assertOwner(t, hostFile, hostUID, hostGID, 0o644)
	if err := os.Chown(hostFile, userUID, userGID); err != nil {
		t.Fatal(err)
	}
	waitContent(t, hostFile, claudeTok(2))
	assertOwner(t, hostFile, userUID, userGID, 0o644)
	if got := g.stop(t); !strings.Contains(got, "not writable by the guard (uid 1000)") {
		t.Fatalf("the foreign-owned host file was not reported:\n%s", got)
	}
}
