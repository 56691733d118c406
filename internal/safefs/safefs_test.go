//go:build linux

package safefs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caw-dev/caw/internal/testenv/mountns"
	"golang.org/x/sys/unix"
)

// TestMain runs the tests as root in a private mount namespace, so they
// mount freely.
func TestMain(m *testing.M) { mountns.Main(m) }

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestReadFD(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	for _, tc := range []struct {
		size, hint, limit int64
		tooLarge          bool
	}{
		{0, 0, 10, false},
		{10, 10, 10, false},
		{11, 11, 10, true},
		{11, 3, 10, true}, // a stale size hint (the file grew): still bounded
		{3, 11, 10, true}, // a hint over the limit is refused before reading
		{5000, 100, 8192, false},
	} {
		data := bytes.Repeat([]byte("x"), int(tc.size))
		must(t, os.WriteFile(p, data, 0o600))
		f, err := os.Open(p)
		must(t, err)
		got, err := ReadFD(int(f.Fd()), tc.hint, tc.limit)
		f.Close()
		if tc.tooLarge {
			if !errors.Is(err, ErrTooLarge) {
				t.Errorf("%+v: err %v, want ErrTooLarge", tc, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%+v: %d bytes, %v", tc, len(got), err)
		}
	}
}

func bindRO(t *testing.T, dir string, ro bool) {
	t.Helper()
	must(t, unix.Mount(dir, dir, "", unix.MS_BIND, ""))
	if ro {
		must(t, unix.Mount("", dir, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""))
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// TestTrustDir: only a read-only mount root reached without symlinks is a
// trusted staging dir.
func TestTrustDir(t *testing.T) {
	needRoot(t)
	d := t.TempDir()
	plain := filepath.Join(d, "plain")
	rw := filepath.Join(d, "rw")
	ro := filepath.Join(d, "ro")
	link := filepath.Join(d, "link")
	for _, p := range []string{plain, rw, ro} {
		must(t, os.Mkdir(p, 0o755))
	}
	bindRO(t, rw, false)
	bindRO(t, ro, true)
	must(t, os.Symlink(ro, link))
	for _, tc := range []struct{ dir, want string }{
		{plain, "is not a mount"},
		{rw, "is mounted read-write"},
		{link, "is reached through a symlink"},
		{filepath.Join(d, "missing"), "not exist"},
		{ro, ""},
	} {
		f, err := TrustDir(tc.dir)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v, want trusted", tc.dir, err)
			} else {
				f.Close()
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.dir, err, tc.want)
			if f != nil {
				f.Close()
			}
		}
	}
}

// TestBeneath: no symlink, no "..", no other mount (unless allowed).
func TestBeneath(t *testing.T) {
	needRoot(t)
	d := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(d, "a/m"), 0o755))
	must(t, os.WriteFile(filepath.Join(d, "a/f"), []byte("x"), 0o600))
	must(t, os.Symlink("f", filepath.Join(d, "a/l")))
	must(t, os.Symlink("/etc", filepath.Join(d, "e")))
	other := t.TempDir()
	must(t, os.WriteFile(filepath.Join(other, "g"), []byte("y"), 0o600))
	must(t, unix.Mount(other, filepath.Join(d, "a/m"), "", unix.MS_BIND, ""))
	t.Cleanup(func() { unix.Unmount(filepath.Join(d, "a/m"), unix.MNT_DETACH) })
	dir, err := os.Open(d)
	must(t, err)
	defer dir.Close()
	for _, tc := range []struct {
		rel       string
		sameMount bool
		want      error
	}{
		{"a/f", true, nil},
		{"a/l", true, unix.ELOOP},
		{"e/passwd", false, unix.ELOOP},
		{"../x", false, unix.EXDEV},
		{"/etc/passwd", false, unix.EXDEV},
		{"a/m/g", true, unix.EXDEV},
		{"a/m/g", false, nil},
	} {
		fd, err := Beneath(int(dir.Fd()), tc.rel, unix.O_RDONLY|unix.O_NOFOLLOW, tc.sameMount)
		if fd >= 0 {
			unix.Close(fd)
		}
		if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
			t.Errorf("%s (same mount %v): %v, want %v", tc.rel, tc.sameMount, err, tc.want)
		}
	}
	// OpenMount: exactly a mount root at that name.
	if fd, err := OpenMount(int(dir.Fd()), "a/m", unix.O_PATH); err != nil {
		t.Errorf("OpenMount a/m: %v", err)
	} else {
		unix.Close(fd)
	}
	if _, err := OpenMount(int(dir.Fd()), "a/f", unix.O_PATH); !IsNotMountRoot(err) {
		t.Errorf("OpenMount a/f: %v, want not a mount root", err)
	}
	must(t, os.Symlink("m", filepath.Join(d, "a/ml")))
	// The symlink itself is opened (O_PATH|O_NOFOLLOW), and is no mount.
	if _, err := OpenMount(int(dir.Fd()), "a/ml", unix.O_PATH|unix.O_NOFOLLOW); !IsNotMountRoot(err) {
		t.Errorf("OpenMount through a symlink to a mount: %v, want not a mount root", err)
	}
	if _, err := OpenMount(int(dir.Fd()), "a/ml", unix.O_RDONLY); !errors.Is(err, unix.ELOOP) {
		t.Errorf("OpenMount through a symlink to a mount: %v, want ELOOP", err)
	}
}

// TestWriteInPlaceFullDisk: on a full filesystem a longer document fails
// the reservation and the file keeps the old one, byte for byte; with room
// again it is written; a shorter one is always written.
func TestWriteInPlaceFullDisk(t *testing.T) {
	needRoot(t)
	d := t.TempDir()
	must(t, unix.Mount("tmpfs", d, "tmpfs", 0, "size=65536"))
	t.Cleanup(func() { unix.Unmount(d, unix.MNT_DETACH) })
	p := filepath.Join(d, "cred.json")
	old := []byte(`{"old":true}`)
	must(t, os.WriteFile(p, old, 0o600))
	filler := filepath.Join(d, "filler")
	fill, err := os.Create(filler)
	must(t, err)
	for err == nil {
		_, err = fill.Write(make([]byte, 4096))
	}
	fill.Close()
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("filling: %v", err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	big := []byte(`{"new":"` + strings.Repeat("n", 20000) + `"}`)
	err = WriteInPlace(int(f.Fd()), old, big)
	if !errors.Is(err, unix.ENOSPC) {
		t.Errorf("write on a full disk: %v, want ENOSPC", err)
	}
	if got, _ := os.ReadFile(p); !bytes.Equal(got, old) {
		t.Errorf("after the failed write the file holds %d bytes %.40q, want the old document", len(got), got)
	}
	must(t, os.Remove(filler))
	must(t, WriteInPlace(int(f.Fd()), old, big))
	if got, _ := os.ReadFile(p); !bytes.Equal(got, big) {
		t.Errorf("with room: %d bytes, want the new document", len(got))
	}
	must(t, WriteInPlace(int(f.Fd()), big, old))
	if got, _ := os.ReadFile(p); !bytes.Equal(got, old) {
		t.Errorf("shorter: %q", got)
	}
}

// TestAs: inside As the kernel checks the user's permissions and new files
// are the user's; after it, the thread is root again with root's groups.
func TestAs(t *testing.T) {
	needRoot(t)
	d := t.TempDir()
	must(t, os.Chmod(d, 0o755))
	must(t, os.Chmod(filepath.Dir(d), 0o755))
	userDir := filepath.Join(d, "user")
	rootDir := filepath.Join(d, "root")
	must(t, os.Mkdir(userDir, 0o700))
	must(t, os.Chown(userDir, 1000, 1000))
	must(t, os.Mkdir(rootDir, 0o755))
	groups, _ := unix.Getgroups()
	u := User{UID: 1000, GID: 1000, Groups: []int{1000}}
	err := As(u, func() error {
		if err := os.WriteFile(filepath.Join(userDir, "f"), nil, 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(rootDir, "f"), nil, 0o600); !errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("write in a root-owned dir as the user: %v, want permission denied", err)
		}
		return nil
	})
	must(t, err)
	var st unix.Stat_t
	must(t, unix.Stat(filepath.Join(userDir, "f"), &st))
	if st.Uid != 1000 || st.Gid != 1000 {
		t.Errorf("file made as the user is %d:%d", st.Uid, st.Gid)
	}
	// Every thread is root again: many goroutines write in the root dir.
	errs := make(chan error, 50)
	for i := range 50 {
		go func() {
			errs <- As(u, func() error { return nil })
			errs <- os.WriteFile(filepath.Join(rootDir, fmt.Sprint(i)), nil, 0o600)
		}()
	}
	for range 100 {
		must(t, <-errs)
	}
	// A thread keeps the last user's groups (the next As skips setgroups),
	// never anything else; As for another user gives it that user's.
	if now, _ := unix.Getgroups(); !slices.Equal(now, groups) && !slices.Equal(now, []int{1000}) {
		t.Errorf("groups %v after As, were %v", now, groups)
	}
	for _, v := range []User{{UID: 1001, GID: 1001, Groups: []int{1001, 2000}}, u, {UID: 1002, GID: 1002}} {
		must(t, As(v, func() error {
			want := v.Groups
			if len(want) == 0 {
				want = []int{v.GID}
			}
			if now, _ := unix.Getgroups(); !slices.Equal(now, want) {
				return fmt.Errorf("groups %v as %d, want %v", now, v.UID, want)
			}
			return nil
		}))
	}
}

// TestInPlaceSteps: after BeginInPlace the file holds the whole new document
// (padded to the old length); Ours tells a file nobody wrote since from one
// another writer changed, so Trim and Undo never touch another writer's
// document; Trim cuts the padding; Undo brings the old one back.
func TestInPlaceSteps(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cred.json")
	old := []byte(`{"token":"old-and-longer"}`)
	short := []byte(`{"token":"new"}`)
	must(t, os.WriteFile(p, old, 0o600))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	fd := int(f.Fd())

	w, err := BeginInPlace(fd, old, short)
	must(t, err)
	got, _ := os.ReadFile(p)
	if want := string(short) + strings.Repeat(" ", len(old)-len(short)); string(got) != want {
		t.Fatalf("after BeginInPlace: %q, want %q", got, want)
	}
	if !w.Padded() || !w.Ours() {
		t.Fatalf("Padded %v Ours %v, want both", w.Padded(), w.Ours())
	}
	must(t, w.Sync())
	must(t, w.Trim())
	if got, _ := os.ReadFile(p); !bytes.Equal(got, short) {
		t.Errorf("after Trim: %q, want %q", got, short)
	}

	// Another writer between the steps: not ours any more.
	w, err = BeginInPlace(fd, short, old)
	must(t, err)
	if w.Padded() {
		t.Errorf("a longer document is not padded")
	}
	must(t, os.WriteFile(p, []byte(`{"token":"host"}`), 0o600))
	if w.Ours() {
		t.Errorf("Ours after another writer rewrote the file")
	}
	w, err = BeginInPlace(fd, []byte(`{"token":"host"}`), short)
	must(t, err)
	w.Undo()
	if got, _ := os.ReadFile(p); string(got) != `{"token":"host"}` {
		t.Errorf("after Undo: %q, want the old document", got)
	}
}
