package guard

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
	"github.com/caw-dev/caw/internal/safefs"
	"github.com/caw-dev/caw/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestDecideLock(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	stale := 60 * time.Second
	fresh := lockObs{exists: true, ino: 7, mtime: now.Add(-time.Second)}
	none := lockObs{}
	held := func(o side) lockState {
		return lockState{held: true, origin: o, originIno: 7, mirrorIno: 9, mtime: fresh.mtime, budget: stale, last: now}
	}
	mirror := lockObs{exists: true, ino: 9, mtime: fresh.mtime}
	type want struct {
		steps []lockStep
		held  bool
	}
	cases := []struct {
		name string
		st   lockState
		obs  [2]lockObs // [home, host]
		want want
	}{
		{"idle", lockState{}, [2]lockObs{none, none}, want{nil, false}},
		{"home lock mirrored to host", lockState{}, [2]lockObs{fresh, none}, want{[]lockStep{{actCreate, host}}, true}},
		{"host lock mirrored to home", lockState{}, [2]lockObs{none, fresh}, want{[]lockStep{{actCreate, home}}, true}},
		{"both locked at once: nothing to mirror", lockState{}, [2]lockObs{fresh, fresh}, want{nil, false}},
		{"a stale lock is removed, not mirrored", lockState{}, [2]lockObs{{exists: true, ino: 7, mtime: now.Add(-2 * stale)}, none},
			want{[]lockStep{{actRemoveOrigin, home}}, false}},
		{"a dead container's stale host lock is removed", lockState{}, [2]lockObs{fresh, {exists: true, ino: 8, mtime: now.Add(-2 * stale)}},
			want{[]lockStep{{actRemoveOrigin, host}}, false}},
		{"an abandoned origin is not mirrored again", lockState{abandoned: [2]uint64{7, 0}}, [2]lockObs{fresh, none}, want{nil, false}},
		{"origin released: sync, then remove the mirror", held(home), [2]lockObs{none, mirror}, want{[]lockStep{{actRelease, host}}, false}},
		{"origin released and retaken (new inode)", held(host), [2]lockObs{mirror, {exists: true, ino: 8, mtime: now}}, want{[]lockStep{{actRelease, home}}, false}},
		{"mirror removed by someone else", held(host), [2]lockObs{none, fresh}, want{nil, false}},
		{"origin's owner died", held(host), [2]lockObs{mirror, {exists: true, ino: 7, mtime: now.Add(-stale - time.Second)}},
			want{[]lockStep{{actDrop, home}, {actRemoveOrigin, host}}, false}},
		{"origin's mtime moved: the mirror follows", held(home), [2]lockObs{{exists: true, ino: 7, mtime: now}, mirror}, want{[]lockStep{{actTouch, host}}, true}},
		{"still held, nothing new", held(home), [2]lockObs{fresh, mirror}, want{nil, true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, steps, _ := decideLock(tc.st, tc.obs, now, stale)
			if st.held != tc.want.held || len(steps) != len(tc.want.steps) {
				t.Fatalf("got held=%v steps=%v, want %+v", st.held, steps, tc.want)
			}
			for i := range steps {
				if steps[i] != tc.want.steps[i] {
					t.Fatalf("got steps %v, want %v", steps, tc.want.steps)
				}
			}
		})
	}
}

// TestDecideLockFutureMtime: a home lock dated in the future is mirrored
// with the present time, so the host's agent can still find it stale.
func TestDecideLockFutureMtime(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	st, _, _ := decideLock(lockState{}, [2]lockObs{{exists: true, ino: 7, mtime: now.Add(24 * time.Hour)}, {}}, now, time.Minute)
	if !st.held || st.mtime.After(now) {
		t.Fatalf("mirror mtime %v after now %v", st.mtime, now)
	}
}

// TestDecideLockHomeBudget: a home that keeps its lock fresh holds the
// host's lock for at most the stale time, and then gets it back only at a
// tenth of real time.
func TestDecideLockHomeBudget(t *testing.T) {
	stale := 60 * time.Second
	now := time.Unix(1_000_000, 0)
	var st lockState
	var steps []lockStep
	st, steps, _ = decideLock(st, [2]lockObs{{exists: true, ino: 1, mtime: now}, {}}, now, stale)
	if len(steps) != 1 || steps[0].act != actCreate {
		t.Fatalf("not mirrored: %v", steps)
	}
	st.mirrorIno = 2
	dropped := time.Duration(0)
	for el := time.Second; el <= 2*stale; el += time.Second {
		tnow := now.Add(el)
		st, steps, _ = decideLock(st, [2]lockObs{{exists: true, ino: 1, mtime: tnow}, {exists: true, ino: 2, mtime: tnow}}, tnow, stale)
		if !st.held {
			dropped = el
			break
		}
	}
	if dropped == 0 || dropped > stale+stale/lockRefill+time.Second {
		t.Fatalf("home lock held the host's for %v (stale %v)", dropped, stale)
	}
	if len(steps) != 1 || steps[0] != (lockStep{actDrop, host}) {
		t.Fatalf("steps %v", steps)
	}
	// The same lock is not mirrored again, nor is a new one until the
	// budget refilled.
	tnow := now.Add(dropped + time.Second)
	st2, steps, _ := decideLock(st, [2]lockObs{{exists: true, ino: 1, mtime: tnow}, {}}, tnow, stale)
	if len(steps) != 0 {
		t.Fatalf("abandoned lock mirrored again: %v", steps)
	}
	st2, steps, _ = decideLock(st2, [2]lockObs{{exists: true, ino: 3, mtime: tnow}, {}}, tnow, stale)
	if len(steps) != 0 {
		t.Fatalf("new home lock mirrored with no budget: %v", steps)
	}
	tnow = tnow.Add(2 * stale)
	if _, steps, _ = decideLock(st2, [2]lockObs{{exists: true, ino: 3, mtime: tnow}, {}}, tnow, stale); len(steps) != 1 {
		t.Fatalf("budget never refilled: %v", steps)
	}
}

// mirrorFixture is a home dir and a host dir with a lockMirror between them.
type mirrorFixture struct {
	homeDir, hostDir string
	m                *lockMirror
	syncs            atomic.Int32
	// mirrorAtSync counts the syncs during which the mirror being released
	// still stood: the token must arrive before the release.
	mirrorAtSync atomic.Int32
}

func newMirrorFixture(t *testing.T, hostDir string, stale time.Duration) *mirrorFixture {
	t.Helper()
	f := &mirrorFixture{homeDir: filepath.Join(t.TempDir(), ".claude"), hostDir: hostDir}
	if err := os.Mkdir(f.homeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(f.homeDir, userUID, userGID); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.Open(f.homeDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	syncNow := func() {
		f.syncs.Add(1)
		if exists(filepath.Join(f.homeDir, claudeRefreshLock)) || exists(filepath.Join(f.hostDir, claudeRefreshLock)) {
			f.mirrorAtSync.Add(1)
		}
	}
	f.m, err = newLockMirror(claudeRefreshLock, stale, fd, safefs.User{UID: userUID, GID: userGID}, f.homeDir, hostDir, syncNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.m.close)
	return f
}

func newHostDir(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), ".claude")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(d, hostUID, hostGID); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func exists(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// TestLockMirrorBothWays: a lock taken on either side appears on the other,
// owned by that side's owner, and goes with it, after the credential sync.
func TestLockMirrorBothWays(t *testing.T) {
	f := newMirrorFixture(t, newHostDir(t), lockStale)
	homeLock, hostLock := filepath.Join(f.homeDir, claudeRefreshLock), filepath.Join(f.hostDir, claudeRefreshLock)
	for _, dir := range []struct{ from, to string }{{homeLock, hostLock}, {hostLock, homeLock}} {
		if err := os.Mkdir(dir.from, 0o700); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, dir.to+" to appear", func() bool { return exists(dir.to) })
		if os.Geteuid() == 0 {
			fi, _ := os.Lstat(dir.to)
			want := uint32(hostUID)
			if dir.to == homeLock {
				want = userUID
			}
			if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != want {
				t.Errorf("%s owned by %d, want %d", dir.to, uid, want)
			}
		}
		// The holder keeps its lock fresh: the mirror follows.
		later := time.Now().Add(2 * time.Second).Truncate(time.Second)
		if err := os.Chtimes(dir.from, later, later); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, "the mirror's mtime to follow", func() bool {
			fi, err := os.Lstat(dir.to)
			return err == nil && !fi.ModTime().Before(later.Add(-time.Second))
		})
		before := f.syncs.Load()
		if err := os.Remove(dir.from); err != nil {
			t.Fatal(err)
		}
		testenv.WaitFor(t, dir.to+" to go", func() bool { return !exists(dir.to) })
		if f.syncs.Load() == before {
			t.Fatalf("mirror of %s released without a sync", dir.from)
		}
	}
	if n, m := f.syncs.Load(), f.mirrorAtSync.Load(); n != m {
		t.Fatalf("%d of %d syncs happened after the mirror was gone", n-m, n)
	}
}

// TestLockMirrorSameInstant: both sides' agents mkdir at the same instant,
// many times: each mkdir either wins or finds the lock taken, and once both
// released, no lock is left on either side.
func TestLockMirrorSameInstant(t *testing.T) {
	f := newMirrorFixture(t, newHostDir(t), lockStale)
	paths := []string{filepath.Join(f.homeDir, claudeRefreshLock), filepath.Join(f.hostDir, claudeRefreshLock)}
	both := 0
	for round := 0; round < 100; round++ {
		got := harness.MkdirAtOnce(paths...)
		if got[0] && got[1] {
			both++
		}
		if !got[0] && !got[1] {
			t.Fatalf("round %d: neither side got the lock", round)
		}
		time.Sleep(time.Millisecond)
		for i, p := range paths {
			if got[i] {
				os.Remove(p)
			}
		}
		testenv.WaitFor(t, "both sides unlocked", func() bool { return !exists(paths[0]) && !exists(paths[1]) })
	}
	t.Logf("both sides held the lock in %d of 100 simultaneous rounds", both)
}

// TestLockMirrorDeadHolder: a holder killed with its lock held leaves it
// behind; once its mtime is older than the stale time, the guard removes
// the mirror and the dead lock, and a new lock is mirrored again.
func TestLockMirrorDeadHolder(t *testing.T) {
	stale := 2 * time.Second
	f := newMirrorFixture(t, newHostDir(t), stale)
	homeLock, hostLock := filepath.Join(f.homeDir, claudeRefreshLock), filepath.Join(f.hostDir, claudeRefreshLock)
	// A real process takes the lock and is killed holding it.
	cmd := exec_(t, "sh", "-c", "mkdir "+hostLock+" && echo locked && sleep 100")
	testenv.WaitFor(t, "the home mirror", func() bool { return exists(homeLock) })
	cmd.Process.Kill()
	cmd.Wait()
	begin := time.Now()
	testenv.WaitFor(t, "the dead lock and its mirror to go", func() bool { return !exists(homeLock) && !exists(hostLock) })
	if el := time.Since(begin); el < stale/2 {
		t.Fatalf("dead lock removed after %v, before the stale time %v", el, stale)
	}
	if err := os.Mkdir(homeLock, 0o700); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "a new lock mirrored", func() bool { return exists(hostLock) })
}

func exec_(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	c := exec.Command(name, args...)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	return c
}

// TestLockMirrorDeadContainer: a lock left on the host by a container that
// died (its guard with it) is stale for every other container: their
// guards remove their mirrors and the lock.
func TestLockMirrorDeadContainer(t *testing.T) {
	stale := 2 * time.Second
	hostDir := newHostDir(t)
	f := newMirrorFixture(t, hostDir, stale)
	homeLock, hostLock := filepath.Join(f.homeDir, claudeRefreshLock), filepath.Join(hostDir, claudeRefreshLock)
	// What a dead container's guard left: a mirror nobody updates.
	if err := os.Mkdir(hostLock, 0o700); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the home mirror", func() bool { return exists(homeLock) })
	testenv.WaitFor(t, "the dead container's lock to go", func() bool { return !exists(homeLock) && !exists(hostLock) })
}

// TestLockMirrorManyContainers: N containers on one host directory meet at
// the host's lock: one container's lock reaches every home through the
// host, and its release frees them all, each after its own sync.
func TestLockMirrorManyContainers(t *testing.T) {
	hostDir := newHostDir(t)
	var fs []*mirrorFixture
	for range 6 {
		fs = append(fs, newMirrorFixture(t, hostDir, lockStale))
	}
	for round := 0; round < 5; round++ {
		w := fs[round%len(fs)]
		own := filepath.Join(w.homeDir, claudeRefreshLock)
		if err := os.Mkdir(own, 0o700); err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			testenv.WaitFor(t, "every home locked", func() bool { return exists(filepath.Join(f.homeDir, claudeRefreshLock)) })
		}
		before := make([]int32, len(fs))
		for i, f := range fs {
			before[i] = f.syncs.Load()
		}
		os.Remove(own)
		for i, f := range fs {
			testenv.WaitFor(t, "every home unlocked", func() bool { return !exists(filepath.Join(f.homeDir, claudeRefreshLock)) })
			if f != w && f.syncs.Load() == before[i] {
				t.Fatalf("container %d released without a sync", i)
			}
		}
		testenv.WaitFor(t, "the host unlocked", func() bool { return !exists(filepath.Join(hostDir, claudeRefreshLock)) })
	}
}

// TestLockMirrorHostile: what the container user plants at the lock name
// (a symlink, a file) is no lock and is never followed; a mirror the user
// removes is not put back.
func TestLockMirrorHostile(t *testing.T) {
	f := newMirrorFixture(t, newHostDir(t), lockStale)
	homeLock, hostLock := filepath.Join(f.homeDir, claudeRefreshLock), filepath.Join(f.hostDir, claudeRefreshLock)
	target := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, homeLock); err != nil {
		t.Fatal(err)
	}
	// The host's agent locks: the guard must not create through the symlink.
	if err := os.Mkdir(hostLock, 0o700); err != nil {
		t.Fatal(err)
	}
	f.settle(t)
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Fatalf("the guard wrote through the symlink: %v", entries)
	}
	os.Remove(hostLock)
	os.Remove(homeLock)
	f.settle(t)
	// A symlink to a directory in the home is not mirrored as a lock.
	if err := os.Symlink(target, homeLock); err != nil {
		t.Fatal(err)
	}
	f.settle(t)
	if exists(hostLock) {
		t.Fatalf("a symlink in the home was mirrored as a lock")
	}
	os.Remove(homeLock)
	// A mirror the user removes stays removed for that lock.
	if err := os.Mkdir(hostLock, 0o700); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, "the home mirror", func() bool { return exists(homeLock) })
	os.Remove(homeLock)
	f.settle(t)
	f.settle(t)
	if exists(homeLock) {
		t.Fatalf("a removed mirror was put back")
	}
	if !exists(hostLock) {
		t.Fatalf("the host's own lock was removed")
	}
}

// settle waits for the mirror to take a decision after what was just done.
func (f *mirrorFixture) settle(t *testing.T) {
	t.Helper()
	select {
	case <-f.m.check:
	default:
	}
	select {
	case <-f.m.check:
	case <-time.After(1500 * time.Millisecond):
	}
}
