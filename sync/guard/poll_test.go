package guard

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/testenv"
	"github.com/caw-dev/caw/manifest"
	"golang.org/x/sys/unix"
)

func TestPollEvery(t *testing.T) {
	const ext4 = 0xef53
	for _, tc := range []struct {
		name    string
		fsType  int64
		setting time.Duration
		want    time.Duration
	}{
		{"local fs, auto", ext4, 0, 0},
		{"tmpfs, auto", unix.TMPFS_MAGIC, 0, 0},
		{"FUSE/virtiofs, auto", unix.FUSE_SUPER_MAGIC, 0, DefaultPollInterval},
		{"9p, auto", unix.V9FS_MAGIC, 0, DefaultPollInterval},
		{"NFS, auto", unix.NFS_SUPER_MAGIC, 0, DefaultPollInterval},
		{"CIFS, auto", unix.CIFS_SUPER_MAGIC, 0, DefaultPollInterval},
		{"SMB2, auto", smb2Magic, 0, DefaultPollInterval},
		{"statfs failed, auto", 0, 0, 0},
		{"local fs, forced", ext4, 2 * time.Second, 2 * time.Second},
		{"FUSE, other interval", unix.FUSE_SUPER_MAGIC, 100 * time.Millisecond, 100 * time.Millisecond},
		{"FUSE, off", unix.FUSE_SUPER_MAGIC, -1, 0},
		{"local fs, off", ext4, -1, 0},
	} {
		if got := pollEvery(tc.fsType, tc.setting); got != tc.want {
			t.Errorf("%s: pollEvery(%#x, %v) = %v, want %v", tc.name, tc.fsType, tc.setting, got, tc.want)
		}
	}
}

func TestPollChange(t *testing.T) {
	base := stamp{ino: 7, size: 100, mtime: unix.StatxTimestamp{Sec: 10}, ctime: unix.StatxTimestamp{Sec: 10},
		mode: unix.S_IFREG | 0o600, uid: 3000, gid: 3000, nlink: 1}
	with := func(f func(*stamp)) stamp { s := base; f(&s); return s }
	missing := stamp{errno: unix.ENOENT}
	for _, tc := range []struct {
		name  string
		a, b  stamp
		inDir bool
		want  uint32
	}{
		{"same", base, base, false, 0},
		{"missing stays missing", missing, missing, true, 0},
		{"size", base, with(func(s *stamp) { s.size = 90 }), false, unix.IN_CLOSE_WRITE},
		{"mtime", base, with(func(s *stamp) { s.mtime.Nsec = 1 }), false, unix.IN_CLOSE_WRITE},
		{"ctime only", base, with(func(s *stamp) { s.ctime.Nsec = 1 }), false, unix.IN_CLOSE_WRITE},
		{"new inode in a dir", base, with(func(s *stamp) { s.ino = 8 }), true, unix.IN_MOVED_TO},
		{"new inode of a file", base, with(func(s *stamp) { s.ino = 8 }), false, unix.IN_CLOSE_WRITE},
		{"chmod", base, with(func(s *stamp) { s.mode = unix.S_IFREG | 0o644; s.ctime.Sec = 11 }), false, unix.IN_CLOSE_WRITE | unix.IN_ATTRIB},
		{"chown, same ctime", base, with(func(s *stamp) { s.uid = 0 }), false, unix.IN_ATTRIB},
		{"unlinked", base, with(func(s *stamp) { s.nlink = 0 }), false, unix.IN_ATTRIB},
		{"appears", missing, base, true, unix.IN_CREATE},
		{"disappears", base, missing, true, unix.IN_DELETE},
		{"unreadable", base, stamp{errno: unix.EACCES}, false, unix.IN_CLOSE_WRITE | unix.IN_ATTRIB},
	} {
		if got := change(tc.a, tc.b, tc.inDir); got != tc.want {
			t.Errorf("%s: change = %#x, want %#x", tc.name, got, tc.want)
		}
	}
}

// fuseView mounts a bindfs view of dir and returns its path. Writes made
// in dir itself raise no inotify event on the view, as a Mac's writes raise
// none on Docker Desktop's virtiofs share.
func fuseView(t testing.TB, dir string) string {
	t.Helper()
	bindfs := testenv.LookPath(t, "bindfs", "bindfs")
	view := dir + "-view"
	mkdir(t, view, 0, 0)
	cmd := exec.Command(bindfs, "-f", "-o", "allow_other", dir, view)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("bindfs: %v", err)
	}
	t.Cleanup(func() {
		unix.Unmount(view, unix.MNT_DETACH)
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		var sf unix.Statfs_t
		if unix.Statfs(view, &sf) == nil && sf.Type == unix.FUSE_SUPER_MAGIC {
			return view
		}
		if time.Now().After(deadline) {
			t.Fatalf("bindfs %s %s: not mounted after 10s", dir, view)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fuseBind adds a bind credential whose host file is seen through a FUSE
// view of its directory, and returns the file under the view (what the host
// writes directly). withDir makes it strategy bind-dir.
func (f *fx) fuseBind(agent, target string, content []byte, withDir bool) string {
	f.t.Helper()
	under := filepath.Join(f.host, agent)
	mkdir(f.t, under, hostUID, hostGID)
	hostFile := filepath.Join(under, "cred.json")
	writeOwned(f.t, hostFile, content, hostUID, hostGID, 0o600)
	view := fuseView(f.t, under)
	if withDir {
		src := agent + "/dir/cred.json"
		mkdir(f.t, filepath.Join(f.auth, agent, "dir"), 0, 0)
		mount(f.t, view, filepath.Join(f.auth, agent, "dir"))
		f.entry(agent, manifest.File{Src: src, ContainerTarget: target, HostOriginal: "." + agent + "/cred.json",
			Type: "credential", Strategy: "bind-dir", Mode: "0600"})
	} else {
		src := agent + "/cred.json"
		f.placeholder(src)
		mount(f.t, filepath.Join(view, "cred.json"), filepath.Join(f.auth, src))
		f.entry(agent, manifestFile(src, target, "credential", "bind", "0600"))
	}
	return hostFile
}

// TestPollSeesHostChangesBehindFUSE: a host file shared through FUSE (as
// through Docker Desktop's virtiofs) changes on the host side, which raises
// no inotify event in the container: the poll brings the change to the
// home, in place and by rename, for bind and bind-dir; the home's own
// changes still reach the host through the view.
func TestPollSeesHostChangesBehindFUSE(t *testing.T) {
	for _, withDir := range []bool{false, true} {
		name := "bind"
		if withDir {
			name = "bind-dir"
		}
		t.Run(name, func(t *testing.T) {
			f := newFx(t)
			hostFile := f.fuseBind("claude", ".claude/.credentials.json", claudeTok(1), withDir)
			home := f.homePath(".claude/.credentials.json")
			f.start()
			assertContent(t, home, claudeTok(1))
			if p := f.report("claude").Polled; p != DefaultPollInterval {
				t.Fatalf("the credential is polled every %v, want %v", p, DefaultPollInterval)
			}

			writeOwned(t, hostFile, claudeTok(2), hostUID, hostGID, 0o600)
			waitContent(t, home, claudeTok(2))
			renameOwned(t, hostFile, claudeTok(3), hostUID, hostGID)
			waitContent(t, home, claudeTok(3))

			renameOwned(t, home, claudeTok(4), userUID, userGID)
			waitContent(t, hostFile, claudeTok(4))
			// The guard's own write, seen by the poll, is not echoed back.
			writeOwned(t, hostFile, claudeTok(5), hostUID, hostGID, 0o600)
			waitContent(t, home, claudeTok(5))
		})
	}
}

// TestNoPollMissesHostChangesBehindFUSE proves the FUSE view is a real test
// of the poll: with polling off, a host-side change never reaches the home.
func TestNoPollMissesHostChangesBehindFUSE(t *testing.T) {
	f := newFx(t)
	s := f.sentinel()
	hostFile := f.fuseBind("claude", ".claude/.credentials.json", claudeTok(1), false)
	home := f.homePath(".claude/.credentials.json")
	cfg := f.cfg()
	cfg.Poll = -1
	g, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	assertContent(t, home, claudeTok(1))

	writeOwned(t, hostFile, claudeTok(2), hostUID, hostGID, 0o600)
	// Three poll intervals, then every inotify event is handled.
	time.Sleep(3 * DefaultPollInterval)
	s.barrier()
	assertContent(t, home, claudeTok(1))
	if p := g.Report()[0].Polled; p != 0 {
		t.Fatalf("polled every %v with Poll < 0", p)
	}
}

// TestPollForced: a positive Poll polls a credential on a local filesystem
// too, at that interval.
func TestPollForced(t *testing.T) {
	f := newFx(t)
	f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	cfg := f.cfg()
	cfg.Poll = 50 * time.Millisecond
	g, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if p := g.Report()[0].Polled; p != 50*time.Millisecond {
		t.Fatalf("polled every %v, want 50ms", p)
	}
	g.Close()
	if _, err := os.Stat(f.homePath(".claude/.credentials.json")); err != nil {
		t.Fatal(err)
	}
}
