package guard

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/testenv"
	"golang.org/x/sys/unix"
)

// The container user controls the home and may plant anything where the
// guard (root) reads and writes. The bait is a fresher credential outside the
// home, owned by the user: if any attack made the guard read it, it would
// win and show up on the host; if any made the guard write through it, its
// content would change.

type attackFx struct {
	*fx
	s                  *sentinel
	hostFile, homeFile string
	outside, bait      string
	n                  int
}

func newAttack(t *testing.T) *attackFx {
	f := newFx(t)
	a := &attackFx{fx: f, n: 10}
	a.hostFile = f.bind("claude", ".claude/.credentials.json", claudeTok(a.n))
	a.s = f.sentinel()
	a.outside = filepath.Join(f.dir, "outside")
	mkdir(t, a.outside, userUID, userGID)
	a.bait = filepath.Join(a.outside, ".credentials.json")
	writeOwned(t, a.bait, claudeTok(999), userUID, userGID, 0o600)
	a.homeFile = f.homePath(".claude/.credentials.json")
	f.start()
	assertContent(t, a.homeFile, claudeTok(a.n))
	return a
}

// check proves the planted thing was neither read nor written through, the
// guard is not blocked, and a host refresh still reaches the home by
// replacing what was planted.
func (a *attackFx) check(replaces bool) {
	a.t.Helper()
	a.s.barrier() // the guard is not blocked, and has seen the plant
	assertContent(a.t, a.hostFile, claudeTok(a.n))
	assertContent(a.t, a.bait, claudeTok(999))
	a.n++
	writeOwned(a.t, a.hostFile, claudeTok(a.n), hostUID, hostGID, 0o600)
	if replaces {
		waitContent(a.t, a.homeFile, claudeTok(a.n))
		var st unix.Stat_t
		if err := unix.Lstat(a.homeFile, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 || st.Uid != userUID {
			a.t.Fatalf("home copy is not a regular single-link user file after the refresh")
		}
	} else {
		a.s.barrier()
	}
	assertContent(a.t, a.bait, claudeTok(999))
	entries, _ := os.ReadDir(a.outside)
	if len(entries) != 1 {
		a.t.Fatalf("the guard created %d files outside the home", len(entries)-1)
	}
	if a.report("claude").HomeHostile == 0 && replaces {
		a.t.Fatalf("the hostile home copy was not refused as such")
	}
}

func TestAttackSymlink(t *testing.T) {
	a := newAttack(t)
	os.Remove(a.homeFile)
	if err := os.Symlink(a.bait, a.homeFile); err != nil {
		t.Fatal(err)
	}
	unix.Lchown(a.homeFile, userUID, userGID)
	a.check(true)
}

func TestAttackSymlinkInsideHome(t *testing.T) {
	// Even a symlink that stays in the home is not followed: the guard
	// reads and replaces only the file itself.
	a := newAttack(t)
	inside := a.homePath("other.json")
	writeOwned(t, inside, claudeTok(500), userUID, userGID, 0o600)
	os.Remove(a.homeFile)
	os.Symlink("../other.json", a.homeFile)
	unix.Lchown(a.homeFile, userUID, userGID)
	a.check(true)
	assertContent(t, inside, claudeTok(500))
}

func TestAttackHardLink(t *testing.T) {
	a := newAttack(t)
	os.Remove(a.homeFile)
	if err := os.Link(a.bait, a.homeFile); err != nil {
		t.Fatal(err)
	}
	a.check(true)
}

func TestAttackFIFO(t *testing.T) {
	a := newAttack(t)
	os.Remove(a.homeFile)
	if err := unix.Mkfifo(a.homeFile, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(a.homeFile, userUID, userGID)
	a.check(true)
}

func TestAttackHugeSparseFile(t *testing.T) {
	a := newAttack(t)
	// A 1 GB sparse file whose first bytes are the fresher bait.
	renameOwned(t, a.homeFile, claudeTok(999), userUID, userGID)
	a.s.n++ // the rename itself is a legit refresh: let it land first
	waitContent(t, a.hostFile, claudeTok(999))
	a.n = 999
	writeOwned(t, a.bait, claudeTok(999), userUID, userGID, 0o600)
	tmp := a.homeFile + ".tmp.huge"
	writeOwned(t, tmp, claudeTok(1000), userUID, userGID, 0o600)
	if err := os.Truncate(tmp, 1<<30); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, a.homeFile); err != nil {
		t.Fatal(err)
	}
	a.check(true)
}

func TestAttackWrongOwner(t *testing.T) {
	a := newAttack(t)
	renameOwned(t, a.homeFile, claudeTok(999), 0, 0) // root's file, e.g. hard to plant, but never trusted
	a.check(true)
}

func TestAttackDirSwappedForSymlink(t *testing.T) {
	a := newAttack(t)
	if err := os.Rename(a.homePath(".claude"), a.homePath(".claude-old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(a.outside, a.homePath(".claude")); err != nil {
		t.Fatal(err)
	}
	unix.Lchown(a.homePath(".claude"), userUID, userGID)
	// The home copy's path now resolves outside the home: nothing is read
	// from or written there, the guard reports and keeps serving the rest.
	a.check(false)
	assertContent(t, a.homePath(".claude-old/.credentials.json"), claudeTok(10))
}

func TestAttackBindDirSymlink(t *testing.T) {
	// The container user may write into a bind-mounted host directory:
	// a symlink planted there is not followed either.
	f := newFx(t)
	hostFile := f.bindDir("claude", ".claude/.credentials.json", claudeTok(10))
	s := f.sentinel()
	bait := filepath.Join(f.dir, "bait.json")
	writeOwned(t, bait, claudeTok(999), userUID, userGID, 0o600)
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	os.Remove(hostFile)
	os.Symlink(bait, hostFile)
	s.barrier()
	assertContent(t, homeFile, claudeTok(10))
	// A container refresh replaces the symlink with a real file.
	renameOwned(t, homeFile, claudeTok(11), userUID, userGID)
	testenv.WaitFor(t, "the host symlink replaced", func() bool {
		fi, err := os.Lstat(hostFile)
		return err == nil && fi.Mode().IsRegular() && same(readFile(hostFile), claudeTok(11))
	}, filepath.Dir(hostFile))
	assertContent(t, bait, claudeTok(999))
}

// TestAttackFlippingSymlink: the user swaps the home copy with a symlink to
// the bait (RENAME_EXCHANGE, as fast as possible) while the host refreshes;
// nothing outside is read or written, and once the flipping stops the guard
// syncs as before.
func TestAttackFlippingSymlink(t *testing.T) {
	a := newAttack(t)
	alt := a.homeFile + ".alt"
	if err := os.Symlink(a.bait, alt); err != nil {
		t.Fatal(err)
	}
	unix.Lchown(alt, userUID, userGID)
	for try := 0; try < 8; try++ {
		stop := make(chan struct{})
		done := make(chan int)
		go func() {
			k := 0
			for ; ; k++ {
				select {
				case <-stop:
					done <- k
					return
				default:
				}
				unix.Renameat2(unix.AT_FDCWD, a.homeFile, unix.AT_FDCWD, alt, unix.RENAME_EXCHANGE)
			}
		}()
		for k := 0; k < 5; k++ {
			a.n++
			writeOwned(t, a.hostFile, claudeTok(a.n), hostUID, hostGID, 0o600)
			time.Sleep(2 * time.Millisecond)
		}
		close(stop)
		if k := <-done; k%2 == 1 {
			unix.Renameat2(unix.AT_FDCWD, a.homeFile, unix.AT_FDCWD, alt, unix.RENAME_EXCHANGE)
		}
		assertContent(t, a.bait, claudeTok(999))
		if got := tokenOf(readFile(a.hostFile)); got != a.n {
			t.Fatalf("try %d: host holds %d, want %d", try, got, a.n)
		}
		// As the torture test does: the user puts a sane copy back, then
		// the host refreshes again.
		renameOwned(t, a.homeFile, claudeTok(a.n), userUID, userGID)
		a.n++
		writeOwned(t, a.hostFile, claudeTok(a.n), hostUID, hostGID, 0o600)
		waitContent(t, a.homeFile, claudeTok(a.n))
	}
}

// TestHostPathOvermounted: the guard reaches a bind-mounted host file by
// its path in the staging dir (cheaper than reopening its descriptor
// through /proc), but only where the descriptor's inode is: a file mounted
// over that path after start (what only root could do) is reported and
// never written, and the host file keeps its content.
func TestHostPathOvermounted(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	f.start()
	home := f.homePath(".claude/.credentials.json")
	assertContent(t, home, claudeTok(1))

	decoy := filepath.Join(f.dir, "decoy.json")
	writeOwned(t, decoy, claudeTok(9), 0, 0, 0o600)
	mount(t, decoy, filepath.Join(f.auth, "claude", "cred.json"))
	renameOwned(t, home, claudeTok(2), userUID, userGID)
	f.waitIdle()
	time.Sleep(100 * time.Millisecond)
	f.waitIdle()
	assertContent(t, decoy, claudeTok(9))
	assertContent(t, hostFile, claudeTok(1))
	if got := f.log.String(); !strings.Contains(got, "is no longer the file mounted at start") {
		t.Fatalf("the other file was not reported:\n%s", got)
	}
}
