package torture

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
	"github.com/caw-dev/caw/manifest"
	"golang.org/x/sys/unix"
)

// Tokens planted outside the home: fresher than anything the test writes,
// so a guard that read them would want to sync them to the host.
const (
	plantedRoot = 1_000_000 // in a root-owned 0600 file
	plantedUser = 2_000_000 // in a file the container user owns, outside the home
)

// outside is what lies outside the home: files and directories a root
// guard must never write, and whose content it must never copy.
type outside struct {
	dir, secret, userFile, rootDir, userDir string
}

func newOutside(t *testing.T, d string) *outside {
	o := &outside{dir: filepath.Join(d, "outside")}
	o.secret = filepath.Join(o.dir, "secret.json")
	o.userFile = filepath.Join(o.dir, "user.json")
	o.rootDir = filepath.Join(o.dir, "rootdir")
	o.userDir = filepath.Join(o.dir, "userdir")
	must(t, os.MkdirAll(o.rootDir, 0o755))
	must(t, os.MkdirAll(o.userDir, 0o700))
	must(t, os.Chown(o.userDir, userUID, userGID))
	must(t, os.WriteFile(o.secret, harness.Cred(plantedRoot), 0o600))
	must(t, os.WriteFile(o.userFile, harness.Cred(plantedUser), 0o600))
	must(t, os.Chown(o.userFile, userUID, userGID))
	return o
}

// snapshot lists every entry under the outside dir with its type, mode,
// owner, link count and content hash.
func (o *outside) snapshot(t *testing.T) string {
	var lines []string
	err := filepath.WalkDir(o.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %v %d:%d", p, fi.Mode(), st.Uid, st.Gid)
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %x", sha256.Sum256(data))
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// check is must for the attack goroutines, which may not end the test.
func check(t *testing.T, err error) bool {
	t.Helper()
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// attack is one thing a container user does to the home while the guard
// runs: plant sets it up (it may run until stop is closed, for races),
// undo puts a sane home back.
type attack struct {
	name string
	// plant runs the attack; it returns when done or when stop is closed.
	plant func(t *testing.T, c *harness.Container, o *outside, stop <-chan struct{})
}

func userChown(t *testing.T, p string) bool {
	t.Helper()
	return check(t, os.Lchown(p, userUID, userGID))
}

// replaceHomeCopy puts something else at the home copy's name, atomically
// (as the user would with a rename), owned by the user unless it is a hard
// link (whose inode the user cannot chown).
func replaceHomeCopy(t *testing.T, c *harness.Container, make func(p string) error) {
	t.Helper()
	tmp := c.HomeFile + ".evil"
	os.Remove(tmp)
	if !check(t, make(tmp)) {
		return
	}
	if fi, err := os.Lstat(tmp); err == nil && fi.Sys().(*syscall.Stat_t).Nlink > 1 && fi.Mode().IsRegular() || userChown(t, tmp) {
		check(t, os.Rename(tmp, c.HomeFile))
	}
}

var attacks = []attack{
	{"symlink to a root file", func(t *testing.T, c *harness.Container, o *outside, _ <-chan struct{}) {
		replaceHomeCopy(t, c, func(p string) error { return os.Symlink(o.secret, p) })
	}},
	{"symlink to a user file outside home", func(t *testing.T, c *harness.Container, o *outside, _ <-chan struct{}) {
		replaceHomeCopy(t, c, func(p string) error { return os.Symlink(o.userFile, p) })
	}},
	{"hard link to a user file outside home", func(t *testing.T, c *harness.Container, o *outside, _ <-chan struct{}) {
		replaceHomeCopy(t, c, func(p string) error { return os.Link(o.userFile, p) })
	}},
	{"hard link to a root file", func(t *testing.T, c *harness.Container, o *outside, _ <-chan struct{}) {
		// protected_hardlinks stops a real user doing this; a guard must not
		// rely on the host's sysctl.
		replaceHomeCopy(t, c, func(p string) error { return os.Link(o.secret, p) })
	}},
	{"FIFO", func(t *testing.T, c *harness.Container, o *outside, _ <-chan struct{}) {
		replaceHomeCopy(t, c, func(p string) error { return syscall.Mkfifo(p, 0o600) })
	}},
	{"1 GiB sparse file", func(t *testing.T, c *harness.Container, o *outside, _ <-chan struct{}) {
		replaceHomeCopy(t, c, func(p string) error {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := f.Write(harness.Cred(plantedUser)); err != nil {
				return err
			}
			return f.Truncate(1 << 30)
		})
	}},
	{"directory swapped for a symlink to a user dir", func(t *testing.T, c *harness.Container, o *outside, _ <-chan struct{}) {
		swapDir(t, c, o.userDir)
	}},
	{"directory swapped for a symlink to a root dir", func(t *testing.T, c *harness.Container, o *outside, _ <-chan struct{}) {
		swapDir(t, c, o.rootDir)
	}},
	// Issue 10, finding 2: a directory in the home the user cannot write
	// (a root-owned volume at ~/.cache), reached by a symlink that stays
	// inside the home. The guard acts in the home as the user, so nothing
	// is created in it.
	{"directory swapped for a symlink to a root dir inside the home", func(t *testing.T, c *harness.Container, o *outside, stop <-chan struct{}) {
		vol := filepath.Join(c.Home, ".rootvol")
		if _, err := os.Lstat(vol); err != nil {
			must(t, os.Mkdir(vol, 0o755))
		}
		swapDir(t, c, ".rootvol")
		<-stop
		if ents, _ := os.ReadDir(vol); len(ents) > 0 {
			t.Errorf("root wrote into the root-owned %s: %d entries", vol, len(ents))
			os.RemoveAll(vol)
			must(t, os.Mkdir(vol, 0o755))
		}
	}},
	// Issue 10, finding 4: the directory moved away and a new one made in
	// its place; the guard follows the new one.
	{"directory moved away and replaced", func(t *testing.T, c *harness.Container, o *outside, stop <-chan struct{}) {
		dir := filepath.Dir(c.HomeFile)
		os.RemoveAll(dir + ".moved")
		if check(t, os.Rename(dir, dir+".moved")) && check(t, os.Mkdir(dir, 0o700)) {
			userChown(t, dir)
		}
		<-stop
		os.RemoveAll(dir + ".moved")
	}},
	{"race: directory flipping with a symlink", func(t *testing.T, c *harness.Container, o *outside, stop <-chan struct{}) {
		dir := filepath.Dir(c.HomeFile)
		alt := dir + ".alt"
		os.Remove(alt)
		if check(t, os.Symlink(o.userDir, alt)) && userChown(t, alt) {
			flip(t, dir, alt, stop)
		}
	}},
	{"race: file flipping with a symlink", func(t *testing.T, c *harness.Container, o *outside, stop <-chan struct{}) {
		alt := c.HomeFile + ".alt"
		os.Remove(alt)
		if check(t, os.Symlink(o.userFile, alt)) && userChown(t, alt) {
			flip(t, c.HomeFile, alt, stop)
		}
	}},
}

// swapDir moves the home copy's directory aside and puts a symlink to
// target in its place.
func swapDir(t *testing.T, c *harness.Container, target string) {
	dir := filepath.Dir(c.HomeFile)
	os.RemoveAll(dir + ".real")
	if check(t, os.Rename(dir, dir+".real")) && check(t, os.Symlink(target, dir)) {
		userChown(t, dir)
	}
}

// flip exchanges a and b atomically (renameat2 RENAME_EXCHANGE) as fast as
// it can until stop closes, leaving them as they were.
func flip(t *testing.T, a, b string, stop <-chan struct{}) {
	for k := 0; ; k++ {
		select {
		case <-stop:
			if k%2 == 1 {
				check(t, unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE))
			}
			os.Remove(b)
			return
		default:
		}
		if !check(t, unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)) {
			return
		}
		if k%64 == 0 {
			time.Sleep(50 * time.Microsecond)
		}
	}
}

// restore puts a sane home back after an attack: the directory real and
// the user's, the home copy a regular file holding the host's token.
func restore(t *testing.T, c *harness.Container, hostSeq int64) {
	dir := filepath.Dir(c.HomeFile)
	if fi, err := os.Lstat(dir); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		must(t, os.Remove(dir))
	}
	if _, err := os.Lstat(dir + ".real"); err == nil {
		must(t, os.Rename(dir+".real", dir))
	}
	if _, err := os.Lstat(dir); err != nil {
		must(t, os.Mkdir(dir, 0o700))
		userChown(t, dir)
	}
	if fi, err := os.Lstat(c.HomeFile); err == nil && !fi.Mode().IsRegular() || err == nil && fi.Sys().(*syscall.Stat_t).Nlink != 1 || err == nil && fi.Size() > 1<<20 {
		must(t, os.Remove(c.HomeFile))
	}
	must(t, harness.WriteRename(c.HomeFile, harness.Cred(hostSeq), userUID, userGID))
}

// TestAttacks: every attack a container user can mount on the root guard,
// each tried many times (200 under CAW_TORTURE=full). While it is in place
// the host refreshes, so the guard wants to write the home copy, and the
// planted thing itself is a change in the home the guard wants to read.
// Root must never write outside the home (the outside tree is compared
// before and after), never copy a planted file's token anywhere (the host
// file is checked), and must keep syncing once the home is sane again.
func TestAttacks(t *testing.T) {
	bin := cawInit(t)
	tries := rounds(20, 200)
	for _, a := range attacks {
		t.Run(strings.ReplaceAll(a.name, " ", "_"), func(t *testing.T) {
			d := scratch(t)
			o := newOutside(t, d)
			host, err := harness.NewHost(d, 1, hostUID, hostGID)
			must(t, err)
			c := container(t, bin, d, host, harness.Bind)
			before := o.snapshot(t)
			n := newCounts("tries", "writes_outside", "reads_outside", "stuck", "host_invalid")
			seq := int64(1)
			maxRSS := int64(0)
			for i := 0; i < tries; i++ {
				stop := make(chan struct{})
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { defer wg.Done(); a.plant(t, c, o, stop) }()
				// While the attack stands (or flips), the host refreshes.
				for k := 0; k < 5; k++ {
					seq++
					must(t, harness.WriteInPlace(host.File, harness.Cred(seq)))
					_ = waitSeq(c.HomeFile, seq, 20*time.Millisecond)
				}
				close(stop)
				wg.Wait()
				if p, err := harness.ReadProc(c.PID()); err == nil {
					maxRSS = max(maxRSS, p.RSS)
				}
				got := harness.ReadSeq(host.File)
				switch {
				case got == plantedRoot || got == plantedUser:
					n.add("reads_outside", 1)
					t.Logf("try %d: the host file holds the planted token %d", i, got)
					must(t, harness.WriteInPlace(host.File, harness.Cred(seq)))
				case got < 0:
					n.add("host_invalid", 1)
				}
				if now := o.snapshot(t); now != before {
					n.add("writes_outside", 1)
					t.Logf("try %d: outside the home changed:\n%s\nwas:\n%s", i, now, before)
					before = now
				}
				restore(t, c, seq)
				// The guard is not blocked or confused: the next refresh
				// arrives.
				seq++
				must(t, harness.WriteInPlace(host.File, harness.Cred(seq)))
				if err := waitSeq(c.HomeFile, seq, 3*time.Second); err != nil {
					// A user who keeps swapping the home copy under the
					// guard looks like an agent going back to old tokens;
					// the guard then says so once and leaves the home copy
					// alone, by design (the user only stalls their own
					// session). Anything else is a stuck guard.
					if strings.Contains(c.Stderr(), "leaving it alone") {
						n.add("home_left_alone", 1)
					} else {
						n.add("stuck", 1)
						t.Logf("try %d: after the attack: %v", i, err)
					}
				}
				if got := harness.ReadSeq(c.HomeFile); got == plantedRoot || got == plantedUser {
					n.add("reads_outside", 1)
				}
				n.add("tries", 1)
			}
			n.add("max_rss_kib", maxRSS)
			n.report(t, "attack: "+a.name, "writes_outside", "reads_outside", "stuck", "host_invalid")
			if maxRSS > 64<<10 {
				t.Errorf("caw-init RSS reached %d KiB: it read a planted file it should have refused by size", maxRSS)
			}
			if exited, err := c.Exited(); exited {
				t.Errorf("caw-init exited during the attacks: %v", err)
			}
		})
	}
}

// TestAttackPlantedStaging (issue 10, finding 1): in a container started
// without the staging mount, the container user makes the staging dir
// itself, with a manifest that copies through a symlink out of it. caw-init
// ignores it with one line: nothing is copied, nothing synced, nothing
// outside the home touched, and the command still runs as the user.
func TestAttackPlantedStaging(t *testing.T) {
	bin := cawInit(t)
	d := scratch(t)
	o := newOutside(t, d)
	host, err := harness.NewHost(d, 1, hostUID, hostGID)
	must(t, err)
	spec := harness.Spec{UID: userUID, GID: userGID, PlainStaging: true, Argv: harness.CawInit(bin)}
	c, err := harness.Prepare(d, host, spec)
	must(t, err)
	m := &manifest.Manifest{
		Version: manifest.Version, CreatedAt: "2026-11-30T00:00:00+00:00",
		HostHome: host.Home, ContainerHome: c.Home, MountPoint: c.Staging,
		Agents: map[string]manifest.Agent{"claude": {Files: []manifest.File{
			{Src: "claude/credentials.json", ContainerTarget: ".claude/.credentials.json", HostOriginal: ".claude/.credentials.json",
				Type: manifest.TypeCredential, Strategy: manifest.StrategyBind, Mode: "0600"},
			{Src: "r/secret.json", ContainerTarget: ".stolen/secret.json", HostOriginal: ".stolen/secret.json",
				Type: manifest.TypeConfig, Strategy: manifest.StrategyCopy, Mode: "0644"},
		}}},
	}
	data, err := m.Marshal()
	must(t, err)
	must(t, os.WriteFile(filepath.Join(c.Staging, manifest.FileName), data, 0o644))
	must(t, os.Symlink(o.dir, filepath.Join(c.Staging, "r")))
	for _, p := range []string{c.Staging, filepath.Join(c.Staging, "r"), filepath.Join(c.Staging, manifest.FileName)} {
		must(t, os.Lchown(p, userUID, userGID))
	}
	before := o.snapshot(t)
	hostBefore, err := os.ReadFile(host.File)
	must(t, err)
	must(t, c.Start(spec, 30*time.Second))
	t.Cleanup(func() { c.Stop(syscall.SIGTERM, 10*time.Second) })
	// Give a guard that wrongly trusted the dir time to copy and sync.
	seq := harness.ReadSeq(host.File) + 1
	must(t, harness.WriteInPlace(host.File, harness.Cred(seq)))
	if err := waitSeq(c.HomeFile, seq, 500*time.Millisecond); err == nil {
		t.Errorf("the credential was synced through the planted staging dir")
	}
	if _, err := os.Lstat(filepath.Join(c.Home, ".stolen")); err == nil {
		t.Errorf("root copied through the planted staging dir into the home")
	}
	if now := o.snapshot(t); now != before {
		t.Errorf("outside the home changed:\n%s\nwas:\n%s", now, before)
	}
	if got := harness.ReadSeq(host.File); got != seq {
		t.Errorf("the host file holds %d, want %d (was %q)", got, seq, hostBefore)
	}
	if s := c.Stderr(); strings.Count(s, "\n") != 1 || !strings.Contains(s, "is not a mount") || !strings.Contains(s, "$(caw docker-flags)") {
		t.Errorf("stderr %q: want one line saying the staging dir is not a mount, naming $(caw docker-flags)", s)
	}
}
