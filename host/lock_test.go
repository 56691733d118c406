package host

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/testenv"
)

// ownerUID is the host user of these tests, and the container user's uid.
const ownerUID = 1000

// ownerHome is a fake home owned by ownerUID, reachable by it, with its
// staging dir path (not created).
func ownerHome(t *testing.T) (home, auth string) {
	t.Helper()
	testenv.RequireRoot(t)
	home = fakeHome(t)
	for _, d := range []string{filepath.Dir(home), filepath.Dir(filepath.Dir(home))} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	filepath.WalkDir(home, func(p string, d fs.DirEntry, err error) error {
		if err == nil {
			err = os.Lchown(p, ownerUID, ownerUID)
		}
		return err
	})
	return home, filepath.Join(home, ".caw", "auth")
}

// caw runs the built caw as ownerUID: the host side as a real user, whom
// the lock dirs stop too (root would pass through them).
func caw(t *testing.T, bin, home string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: ownerUID, Gid: ownerUID}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Every host command works for the (non-root) owner of a locked staging:
// re-setup keeps the lock dirs and placeholders (running containers' mounts
// hang on them) without ever making a lock dir searchable, switching to
// --unlocked-mounts and back retires the old targets, teardown removes it
// all and leaves nothing beside it.
func TestLockedStagingAsOwner(t *testing.T) {
	home, auth := ownerHome(t)
	bin := testenv.Build(t, "github.com/caw-dev/caw/cmd/caw")
	run := func(args ...string) string {
		t.Helper()
		out, err := caw(t, bin, home, args...)
		if err != nil {
			t.Fatalf("caw %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	run("setup")
	mode := func(p string) fs.FileMode {
		fi, err := os.Lstat(filepath.Join(auth, p))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}
	for _, l := range []string{"claude/mnt", "codex/mnt", "gemini/mnt", "opencode/mnt"} {
		if m := mode(l); m != fs.ModeDir|0o400 {
			t.Errorf("%s is %v, want dr--------", l, m)
		}
	}
	before := map[string]uint64{}
	for _, p := range []string{"claude/mnt", "claude/mnt/config-dir", "codex/mnt/auth.json"} {
		before[p] = inode(t, filepath.Join(auth, p))
	}
	run("setup")
	for p, ino := range before {
		if got := inode(t, filepath.Join(auth, p)); got != ino {
			t.Errorf("re-setup replaced %s", p)
		}
	}
	if st := run("status"); !strings.Contains(st, "codex") || !strings.Contains(st, "claude") {
		t.Errorf("status:\n%s", st)
	}
	if fl := run("docker-flags"); !strings.Contains(fl, ":/tmp/caw_auth/codex/mnt/auth.json:rw") || !strings.Contains(fl, "/.claude:/tmp/caw_auth/claude/mnt/config-dir:rw") {
		t.Errorf("docker-flags:\n%s", fl)
	}

	// An opened lock is refused by docker-flags rather than mounted through.
	os.Chmod(filepath.Join(auth, "codex/mnt"), 0o700)
	if out, err := caw(t, bin, home, "docker-flags"); err == nil || !strings.Contains(out, "re-run caw setup") {
		t.Errorf("docker-flags on an opened lock dir: %v\n%s", err, out)
	}
	run("setup") // relocks it (an open lock dir is replaced)
	if m := mode("codex/mnt"); m != fs.ModeDir|0o400 {
		t.Errorf("re-setup left codex/mnt %v", m)
	}

	out := run("setup", "--unlocked-mounts")
	if !strings.Contains(out, "moved") {
		t.Errorf("no warning that the mount targets moved:\n%s", out)
	}
	if _, err := os.Lstat(filepath.Join(auth, "codex/mnt")); !os.IsNotExist(err) {
		t.Errorf("unlocked re-setup left the lock dir: %v", err)
	}
	if fl := run("docker-flags"); !strings.Contains(fl, ":/tmp/caw_auth/codex/auth.json:rw") {
		t.Errorf("unlocked docker-flags:\n%s", fl)
	}
	run("setup", "--strategy", "codex=bind-dir")
	if m := mode("codex/mnt/home"); !m.IsDir() {
		t.Errorf("codex/mnt/home %v", m)
	}
	run("setup") // the lock dir's content changes: retired and replaced
	if m := mode("codex/mnt/auth.json"); !m.IsRegular() {
		t.Errorf("codex/mnt/auth.json %v", m)
	}
	run("teardown")
	if _, err := os.Lstat(auth); !os.IsNotExist(err) {
		t.Errorf("teardown left %s: %v", auth, err)
	}
	assertNoTempDirs(t, filepath.Dir(auth))
}

// The protection itself, with real mounts: a "container" (a private mount
// namespace) mounts a locked staging read-only and the host credentials
// read-write onto its mount targets, as docker does. A process with the
// host user's uid can neither read nor write them, nor open the lock
// (EROFS); root with only Docker's default capabilities (caw-init) reads
// and writes them. The control, the same with --unlocked-mounts, shows the
// same-uid process does reach the host file there.
func TestLockedMountSameUID(t *testing.T) {
	unshare := testenv.LookPath(t, "unshare", "util-linux")
	setpriv := testenv.LookPath(t, "setpriv", "util-linux")
	for _, locked := range []bool{true, false} {
		name := map[bool]string{true: "locked", false: "unlocked-control"}[locked]
		t.Run(name, func(t *testing.T) {
			home, auth := ownerHome(t)
			bin := testenv.Build(t, "github.com/caw-dev/caw/cmd/caw")
			args := []string{"setup", "--strategy", "codex=bind"}
			mnt := "mnt/"
			if !locked {
				args, mnt = append(args, "--unlocked-mounts"), ""
			}
			if out, err := caw(t, bin, home, args...); err != nil {
				t.Fatalf("setup: %v\n%s", err, out)
			}
			ct := filepath.Join(t.TempDir(), "ct")
			os.Mkdir(ct, 0o755)
			os.Chmod(filepath.Dir(ct), 0o755)
			script := `set -u
ct=$1 auth=$2 home=$3 mnt=$4 setpriv=$5
mount --bind "$auth" "$ct" && mount -o remount,bind,ro "$ct" &&
mount --bind "$home/.codex/auth.json" "$ct/codex/${mnt}auth.json" &&
mount --bind "$home/.claude" "$ct/claude/${mnt}config-dir" || exit 9
user() { "$setpriv" --reuid 1000 --regid 1000 --clear-groups sh -c "$1" 2>&1; }
echo "user-read=$(user "cat $ct/codex/${mnt}auth.json >/dev/null && echo ok")"
echo "user-write=$(user "echo x >> $ct/claude/${mnt}config-dir/settings.json && echo ok")"
echo "user-chmod=$(user "chmod 700 $ct/codex/${mnt%/} && echo ok")"
echo "root-read=$("$setpriv" --inh-caps=-all --bounding-set=-all,+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,+setpcap,+net_bind_service,+net_raw,+sys_chroot,+mknod,+audit_write,+setfcap sh -c "cat $ct/codex/${mnt}auth.json >/dev/null && ls $ct/claude/${mnt}config-dir/.credentials.json >/dev/null && echo ok" 2>&1)"
`
			out, err := exec.Command(unshare, "-m", "--propagation", "private", "sh", "-c", script, "sh", ct, auth, home, mnt, setpriv).CombinedOutput()
			t.Logf("%s", out)
			if err != nil {
				t.Fatalf("namespace: %v", err)
			}
			got := map[string]string{}
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				k, v, _ := strings.Cut(l, "=")
				got[k] = v
			}
			if got["root-read"] != "ok" {
				t.Errorf("root with Docker's default capabilities cannot reach the mounts: %q", got["root-read"])
			}
			for _, k := range []string{"user-read", "user-write"} {
				if reached := got[k] == "ok"; reached == locked {
					t.Errorf("%s: %q (locked %t)", k, got[k], locked)
				}
			}
			if locked && !strings.Contains(got["user-chmod"], "Read-only file system") {
				t.Errorf("the same-uid user could chmod the lock dir: %q", got["user-chmod"])
			}
		})
	}
}

// Re-setups (keeping, retiring and replacing lock dirs) never make a lock
// dir searchable where a container sees it: a same-uid process in a
// "container" that loops on open() of a mounted host credential during
// them never gets it.
func TestResetupNeverOpensLock(t *testing.T) {
	unshare := testenv.LookPath(t, "unshare", "util-linux")
	setpriv := testenv.LookPath(t, "setpriv", "util-linux")
	home, auth := ownerHome(t)
	bin := testenv.Build(t, "github.com/caw-dev/caw/cmd/caw")
	if out, err := caw(t, bin, home, "setup"); err != nil {
		t.Fatalf("setup: %v\n%s", err, out)
	}
	ct := filepath.Join(t.TempDir(), "ct")
	os.Mkdir(ct, 0o755)
	os.Chmod(filepath.Dir(ct), 0o755)
	stop := filepath.Join(filepath.Dir(ct), "stop")
	cmd := exec.Command(unshare, "-m", "--propagation", "private", "sh", "-c", `
mount --bind "$2" "$1" && mount -o remount,bind,ro "$1" &&
mount --bind "$3/.codex/auth.json" "$1/codex/mnt/auth.json" &&
mount --bind "$3/.claude" "$1/claude/mnt/config-dir" || exit 9
exec "$4" --reuid 1000 --regid 1000 --clear-groups sh -c '
echo ready; n=0
while [ ! -e "$2" ]; do
  n=$((n+1))
  cat "$1/codex/mnt/auth.json" 2>/dev/null && echo LEAK
  ls "$1/claude/mnt/config-dir" 2>/dev/null && echo LEAK
  [ -e "$1/claude/mnt/config-dir/.credentials.json" ] && echo LEAK
done
echo "tries=$n"' sh "$1" "$5"`, "sh", ct, auth, home, setpriv, stop)
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	br := bufio.NewReader(stdout)
	if l, _ := br.ReadString('\n'); l != "ready\n" {
		t.Fatalf("namespace: %q", l)
	}
	for i := 0; i < 8; i++ {
		for _, args := range [][]string{{"setup"}, {"setup", "--strategy", "codex=bind-dir"}, {"setup", "--agents", "claude,codex"}, {"setup"}} {
			if out, err := caw(t, bin, home, args...); err != nil {
				t.Fatalf("caw %v: %v\n%s", args, err, out)
			}
		}
	}
	writeFile(t, stop, "")
	rest, _ := io.ReadAll(br)
	cmd.Wait()
	t.Logf("%s", rest)
	if strings.Contains(string(rest), "LEAK") || !strings.Contains(string(rest), "tries=") {
		t.Errorf("a same-uid process reached a mounted credential during re-setup:\n%s", rest)
	}
}
