package main

// Real-binary tests of the refresh-lock mirroring (sync/guard/lockmirror.go):
// real caw-init guards in namespaces with the host's config directory
// bind-mounted, as `caw setup` and Docker arrange it, and lock directories
// taken and dropped by real processes.

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
	"github.com/caw-dev/caw/internal/testenv"
)

const refreshLock = ".oauth_refresh.lock"

// lockRig is a host config dir shared by n containers running caw-init.
type lockRig struct {
	host *harness.Host
	cs   []*harness.Container
}

func newLockRig(t *testing.T, n int) *lockRig {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.LookPath(t, "unshare", "util-linux")
	cawInit := testenv.Build(t, "github.com/caw-dev/caw/cmd/caw-init")
	dir := t.TempDir()
	// The agents run as their users: let them through to their homes.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	host, err := harness.NewHost(dir, 1, hostUID, hostGID)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(host.Home, hostUID, hostGID); err != nil {
		t.Fatal(err)
	}
	r := &lockRig{host: host}
	for i := range n {
		c, err := harness.Start(filepath.Join(dir, "c"+string(rune('a'+i))), host,
			harness.Spec{Strategy: harness.BindDir, Argv: harness.CawInit(cawInit, "-vv")}, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Kill)
		r.cs = append(r.cs, c)
	}
	return r
}

func (r *lockRig) hostLock() string { return filepath.Join(filepath.Dir(r.host.File), refreshLock) }

func homeLock(c *harness.Container) string {
	return filepath.Join(filepath.Dir(c.HomeFile), refreshLock)
}

func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// mkdirAs takes a lock directory as uid, the way an agent does.
func mkdirAs(t *testing.T, p string, uid int) bool {
	t.Helper()
	cmd := exec.Command("mkdir", p)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	return cmd.Run() == nil
}

// TestRealLockMirror: a lock taken in a container's home appears on the
// host and in every other container's home, and a host lock in every home;
// each goes with its origin.
func TestRealLockMirror(t *testing.T) {
	r := newLockRig(t, 4)
	all := []string{r.hostLock()}
	for _, c := range r.cs {
		all = append(all, homeLock(c))
	}
	owners := []int{hostUID, 1000, 1000, 1000, 1000}
	for round, i := range []int{1, 0, 3, 0, 2, 4} {
		if !mkdirAs(t, all[i], owners[i]) {
			t.Fatalf("round %d: %s already locked", round, all[i])
		}
		for _, p := range all {
			testenv.WaitFor(t, p+" locked", func() bool { return isDir(p) })
		}
		if err := os.Remove(all[i]); err != nil {
			t.Fatal(err)
		}
		for _, p := range all {
			testenv.WaitFor(t, p+" unlocked", func() bool { return !isDir(p) })
		}
	}
}

// TestRealLockMirrorSameInstant: the host's agent and a container's agent
// take their locks at the same instant, many times: once both released,
// every side is unlocked again (no mirror outlives its origin).
func TestRealLockMirrorSameInstant(t *testing.T) {
	r := newLockRig(t, 1)
	paths := []string{r.hostLock(), homeLock(r.cs[0])}
	both := 0
	for round := 0; round < 50; round++ {
		got := harness.MkdirAtOnce(paths...)
		if got[0] && got[1] {
			both++
		}
		time.Sleep(2 * time.Millisecond)
		for i, p := range paths {
			if got[i] {
				os.Remove(p)
			}
		}
		for _, p := range paths {
			testenv.WaitFor(t, p+" unlocked", func() bool { return !isDir(p) })
		}
	}
	t.Logf("both agents got the lock in %d of 50 rounds started at the same instant", both)
}

// TestRealLockMirrorKilledHolder: an agent killed holding its lock leaves
// it (and its mirror on the host) until the lock's mtime is older than the
// stale time; then the guard removes both. The test ages the lock instead
// of waiting the 60 s.
func TestRealLockMirrorKilledHolder(t *testing.T) {
	r := newLockRig(t, 1)
	home := homeLock(r.cs[0])
	holder := exec.Command("sh", "-c", "mkdir "+home+" && exec sleep 1000")
	holder.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the host mirror", func() bool { return isDir(r.hostLock()) })
	holder.Process.Kill()
	holder.Wait()
	time.Sleep(1500 * time.Millisecond)
	if !isDir(r.hostLock()) {
		t.Fatalf("the mirror went before the stale time")
	}
	old := time.Now().Add(-61 * time.Second)
	if err := os.Chtimes(home, old, old); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the dead lock and its mirror to go", func() bool { return !isDir(home) && !isDir(r.hostLock()) })
	// The host's agent can lock again, and it is mirrored.
	if !mkdirAs(t, r.hostLock(), hostUID) {
		t.Fatal("host cannot lock")
	}
	testenv.WaitFor(t, "the new lock mirrored", func() bool { return isDir(home) })
}

// TestRealLockMirrorDeadContainer: a container killed (SIGKILL, its guard
// with it) while its agent held the lock leaves the host's mirror behind;
// the other containers' guards remove it, and their own mirrors, once it is
// stale, so the host and the others can refresh again.
func TestRealLockMirrorDeadContainer(t *testing.T) {
	r := newLockRig(t, 3)
	dead, alive := r.cs[0], r.cs[1:]
	if !mkdirAs(t, homeLock(dead), 1000) {
		t.Fatal("cannot lock")
	}
	testenv.WaitFor(t, "the host mirror", func() bool { return isDir(r.hostLock()) })
	for _, c := range alive {
		testenv.WaitFor(t, "the other homes' mirrors", func() bool { return isDir(homeLock(c)) })
	}
	dead.Kill()
	if !isDir(r.hostLock()) {
		t.Fatal("the host lock went with the container")
	}
	old := time.Now().Add(-61 * time.Second)
	if err := os.Chtimes(r.hostLock(), old, old); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the dead container's lock to go from the host", func() bool { return !isDir(r.hostLock()) })
	for _, c := range alive {
		testenv.WaitFor(t, "the other homes unlocked", func() bool { return !isDir(homeLock(c)) })
	}
	if !mkdirAs(t, homeLock(alive[0]), 1000) {
		t.Fatal("a live container cannot lock")
	}
	testenv.WaitFor(t, "its lock mirrored to the host", func() bool { return isDir(r.hostLock()) })
}

// TestRealLockMirrorStopped: a container stopped while its agent holds the
// lock (docker stop: the agent dies, caw-init exits) takes its host mirror
// with it at once.
func TestRealLockMirrorStopped(t *testing.T) {
	r := newLockRig(t, 1)
	if !mkdirAs(t, homeLock(r.cs[0]), 1000) {
		t.Fatal("cannot lock")
	}
	testenv.WaitFor(t, "the host mirror", func() bool { return isDir(r.hostLock()) })
	_ = r.cs[0].Stop(syscall.SIGTERM, 10*time.Second)
	if isDir(r.hostLock()) {
		t.Fatal("the host mirror outlived the stopped container")
	}
}

// TestRealLockMirrorLatency measures the window mirroring leaves open: from
// a container agent's mkdir until the host's lock exists (one guard), and
// until every other container's home has it (two guards). Two agents that
// lock within this window both refresh. It logs the figures; it fails only
// if a mirror takes longer than a second.
func TestRealLockMirrorLatency(t *testing.T) {
	r := newLockRig(t, 4)
	dirs := []string{filepath.Dir(r.hostLock())}
	for _, c := range r.cs[1:] {
		dirs = append(dirs, filepath.Dir(homeLock(c)))
	}
	w, err := harness.NewWatch(syscall.IN_CREATE|syscall.IN_DELETE, dirs...)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var toHost, toAll Sample
	for range 50 {
		w.Drain()
		begin := time.Now()
		if err := os.Mkdir(homeLock(r.cs[0]), 0o700); err != nil {
			t.Fatal(err)
		}
		var host time.Duration
		err := w.Until(begin.Add(time.Second), func() bool {
			if host == 0 && isDir(r.hostLock()) {
				host = time.Since(begin)
			}
			for _, c := range r.cs[1:] {
				if !isDir(homeLock(c)) {
					return false
				}
			}
			return host != 0
		})
		if err != nil {
			t.Fatalf("mirrors not all there after a second: %v", err)
		}
		toHost, toAll = append(toHost, host), append(toAll, time.Since(begin))
		os.Remove(homeLock(r.cs[0]))
		err = w.Until(time.Now().Add(time.Second), func() bool {
			for _, c := range r.cs {
				if isDir(homeLock(c)) {
					return false
				}
			}
			return !isDir(r.hostLock())
		})
		if err != nil {
			t.Fatalf("mirrors not all gone after a second: %v", err)
		}
	}
	t.Logf("mkdir in one home until the host has the lock: median %s, max %s; until 3 other homes have it: median %s, max %s",
		fmtDur(toHost.Median()), fmtDur(toHost.Max()), fmtDur(toAll.Median()), fmtDur(toAll.Max()))
}
