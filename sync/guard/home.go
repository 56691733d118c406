package guard

// This file is the only code that touches the container user's home. The
// guard runs as root and the home belongs to an unprivileged user who can
// plant symlinks, hard links, FIFOs, devices, huge files, or swap a directory
// for a symlink at any instant, so every operation here follows three rules:
//
//  0. It runs with the user's filesystem identity (safefs.As: setfsuid,
//     setfsgid and the user's groups on a locked thread), so the kernel's
//     permission checks are the user's: root's privileges never touch a
//     path in the home, what it creates is the user's without a chown, and
//     a directory the user cannot write (a root-owned volume in the home)
//     the guard cannot write either.
//  1. A parent directory is resolved through one os.Root opened on the home,
//     which refuses any path (symlinks included) that leaves the home.
//  2. The final component is always handled with a *at syscall on that
//     parent's descriptor, with a single name that cannot traverse anything:
//     opened O_NOFOLLOW|O_NONBLOCK (a symlink fails, a FIFO cannot block),
//     checked with fstat on the open descriptor (regular, owned by the user,
//     one link, under the size cap) before a byte is read, and replaced only by
//     renameat of a temp file this code created O_EXCL and chowned/chmodded
//     through its own descriptor.
//
// os.Root alone is not enough for rule 2: Root.OpenFile follows a symlink in
// the last component when it stays inside the root, even with O_NOFOLLOW.

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/caw-dev/caw/internal/safefs"
	"golang.org/x/sys/unix"
)

// maxCredSize caps a synced credential, read or written. Real ones are under
// 8 KiB; a bigger file is hostile or not ours, and is reported, not synced.
const maxCredSize = 64 << 10

// maxCopySize caps a copied (copy strategy) file: configs can be larger
// than credentials, and are copied once.
const maxCopySize = 1 << 20

// tmpMarker is in the name of every temp file the guard creates, so stale
// ones (a SIGKILL between create and rename) are recognisable.
const tmpMarker = ".caw-tmp."

// hostileError is content the guard refuses to touch: a symlink, hard link,
// FIFO, device, directory, foreign owner, or oversized file where a
// credential should be. It is treated as an invalid credential.
type hostileError struct {
	path, why string
}

func (e *hostileError) Error() string { return e.path + ": " + e.why }

// errChanged means the file changed between the guard's decision and its
// write, so the decision must be taken again on the new content.
var errChanged = errors.New("changed while writing")

// homeFS is the guard's view of the user's home: every method runs as the
// user (rule 0).
type homeFS struct {
	root     *os.Root
	dir      string // absolute path, for messages and inotify
	uid, gid int
	user     safefs.User
}

// as runs fn with the user's filesystem identity.
func (h *homeFS) as(fn func() error) error { return safefs.As(h.user, fn) }

// openHome opens (creating it when missing) the user's home.
func openHome(dir string, u safefs.User) (*homeFS, error) {
	uid, gid := u.UID, u.GID
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		// The home's parent (/home, /) belongs to root, not to the user, so
		// creating the path by name is safe; only the home itself is theirs.
		if err := os.MkdirAll(path.Dir(dir), 0o755); err != nil {
			return nil, fmt.Errorf("create home %s: %w", dir, err)
		}
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create home %s: %w", dir, err)
		}
		if err := chownDirNoFollow(unix.AT_FDCWD, dir, uid, gid); err != nil {
			return nil, fmt.Errorf("create home %s: %w", dir, err)
		}
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open home %s: %w", dir, err)
	}
	return &homeFS{root: r, dir: dir, uid: uid, gid: gid, user: u}, nil
}

func (h *homeFS) close() error { return h.root.Close() }

// chownDirNoFollow gives a directory the guard just created to the user.
func chownDirNoFollow(dirfd int, name string, uid, gid int) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return err
	}
	return unix.Fchmod(fd, 0o700)
}

// openDir opens the directory holding rel (resolved inside the home) and
// returns it with rel's base name.
func (h *homeFS) openDir(rel string) (*os.File, string, error) {
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	d, err := h.root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, "", err
	}
	return d, base, nil
}

// mkdirParents creates rel's missing parent directories, mode 0700, as the
// user (so they are the user's, and only where the user may create them).
// Existing ones are left as they are.
func (h *homeFS) mkdirParents(rel string) error {
	dir := path.Dir(rel)
	if dir == "." {
		return nil
	}
	return h.as(func() error {
		parts := strings.Split(dir, "/")
		for i := range parts {
			p := path.Join(parts[:i+1]...)
			err := h.root.Mkdir(p, 0o700)
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("create %s in home: %w", p, err)
			}
		}
		return nil
	})
}

// read returns rel's whole content. A missing file gives an error matching
// fs.ErrNotExist; anything hostile a *hostileError.
func (h *homeFS) read(rel string) (data []byte, err error) {
	if aerr := h.as(func() error {
		data, err = h.readAsUser(rel)
		return nil
	}); aerr != nil {
		return nil, fmt.Errorf("read %s in home: %w", rel, aerr)
	}
	return data, err
}

func (h *homeFS) readAsUser(rel string) ([]byte, error) {
	d, base, err := h.openDir(rel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, &hostileError{rel, "parent directory: " + err.Error()}
	}
	defer d.Close()
	return readAt(int(d.Fd()), base, rel, h.uid)
}

// readAt reads name in the directory dirfd with every check on the open
// descriptor. owner < 0 accepts any owner.
func readAt(dirfd int, name, label string, owner int) ([]byte, error) {
	// A file replaced by rename between openat and fstat shows nlink 0: that
	// is a writer at work, not an attack, so open the new one.
	for try := 0; ; try++ {
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fs.ErrNotExist
		case errors.Is(err, unix.ELOOP):
			return nil, &hostileError{label, "is a symlink"}
		case err != nil:
			return nil, &hostileError{label, err.Error()}
		}
		data, again, err := readFD(fd, label, owner)
		unix.Close(fd)
		if again && try < 16 {
			continue
		}
		return data, err
	}
}

// readFD checks and reads an open file; again reports a file unlinked
// since it was opened.
func readFD(fd int, label string, owner int) (data []byte, again bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, false, fmt.Errorf("fstat %s: %w", label, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, false, &hostileError{label, "is not a regular file"}
	case st.Nlink == 0:
		return nil, true, &hostileError{label, "was replaced while being read"}
	case st.Nlink > 1:
		return nil, false, &hostileError{label, "has several hard links"}
	case owner >= 0 && int(st.Uid) != owner:
		return nil, false, &hostileError{label, fmt.Sprintf("is owned by uid %d, not %d", st.Uid, owner)}
	}
	data, err = safefs.ReadFD(fd, st.Size, maxCredSize)
	if errors.Is(err, safefs.ErrTooLarge) {
		return nil, false, &hostileError{label, fmt.Sprintf("is larger than %d bytes", maxCredSize)}
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", label, err)
	}
	return data, false, nil
}

// replace atomically sets rel's content: a temp file created O_EXCL beside
// it, owned by the user with mode perm (set on the descriptor), swapped in
// for rel (see swapIn; still and prefer may be nil for an unconditional
// write, which deletes what it displaces at once). No fsync: the home copy
// is rebuilt from the host at every start. kept names the displaced file
// left for recheck.
func (h *homeFS) replace(rel string, data []byte, perm fs.FileMode, still func(cur []byte, err error) bool, prefer preferFunc) (kept string, err error) {
	if aerr := h.as(func() error {
		kept, err = h.replaceAsUser(rel, data, perm, still, prefer)
		return nil
	}); aerr != nil {
		return "", fmt.Errorf("write %s in home: %w", rel, aerr)
	}
	return kept, err
}

func (h *homeFS) replaceAsUser(rel string, data []byte, perm fs.FileMode, still func(cur []byte, err error) bool, prefer preferFunc) (kept string, err error) {
	d, base, err := h.openDir(rel)
	if err != nil {
		return "", fmt.Errorf("write %s in home: %w", rel, err)
	}
	defer d.Close()
	dirfd := int(d.Fd())
	tmp, err := createTemp(dirfd, base)
	if err != nil {
		return "", fmt.Errorf("write %s in home: %w", rel, err)
	}
	// Created as the user: already the user's, no chown.
	if err := tmp.fill(data, -1, -1, perm, false); err != nil {
		unix.Unlinkat(dirfd, tmp.name, 0)
		return "", fmt.Errorf("write %s in home: %w", rel, err)
	}
	if still == nil {
		still = func([]byte, error) bool { return true }
	}
	kept, err = swapIn(dirfd, tmp.name, base, h.uid, still, prefer)
	if err != nil && !errors.Is(err, errChanged) {
		err = fmt.Errorf("write %s in home: %w", rel, err)
	}
	return kept, err
}

// recheck deals with a file swapIn displaced and kept (see there) beside
// rel: see recheckAt.
func (h *homeFS) recheck(rel, kept string, was [32]byte, mine []byte, prefer preferFunc) (changed bool) {
	h.as(func() error {
		d, base, err := h.openDir(rel)
		if err != nil {
			return nil
		}
		defer d.Close()
		changed = recheckAt(int(d.Fd()), kept, base, h.uid, was, mine, prefer)
		return nil
	})
	return changed
}

// preferFunc decides, after a swap found another writer's file displaced
// (disp, now under the temp's name), whether it must go back over what the
// name holds now (at): it must when it is the fresher of the two, or when
// at is the guard's own file.
type preferFunc func(disp []byte, derr error, at []byte, aerr error) bool

// maxSwaps bounds the exchanges one swapIn makes. Each puts a file prefer
// ranks strictly higher at the name, so only a stream of new writers could
// use them all.
const maxSwaps = 8

// swapIn puts the finished temp file tmp in place of name, both in dirfd,
// if name still holds what the caller decided to replace (still). Another
// writer (an agent refreshing by rename) can land between that decision
// and the rename, and must not be overwritten. So name is checked right
// before the swap (closing the window to microseconds), and the temp is
// swapped in with RENAME_EXCHANGE, which leaves what it displaced under the
// temp's name, a name no agent writes to. If that is not what still
// expects, a write landed in those microseconds: putBack returns it to
// name when prefer says so, and the caller decides again (errChanged).
//
// When the displaced file is exactly what still expects, it is not deleted
// at once when prefer is set: an agent that writes in place may have opened
// it by name an instant before the exchange and write into it after, and
// that write would be lost with it. Its name is returned (kept) for the
// caller to recheckAt a little later.
func swapIn(dirfd int, tmp, name string, owner int, still func([]byte, error) bool, prefer preferFunc) (kept string, err error) {
	mine, merr := readAt(dirfd, tmp, tmp, owner)
	cur, cerr := readAt(dirfd, name, name, owner)
	if !errors.Is(cerr, fs.ErrNotExist) && !still(cur, cerr) {
		unix.Unlinkat(dirfd, tmp, 0)
		return "", errChanged
	}
	err = unix.Renameat2(dirfd, tmp, dirfd, name, unix.RENAME_EXCHANGE)
	switch {
	case errors.Is(err, unix.ENOENT):
		// Nothing to displace: create name only if it is still absent.
		if !still(nil, fs.ErrNotExist) {
			unix.Unlinkat(dirfd, tmp, 0)
			return "", errChanged
		}
		err = unix.Renameat2(dirfd, tmp, dirfd, name, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			unix.Unlinkat(dirfd, tmp, 0)
			return "", errChanged
		}
		if err != nil {
			unix.Unlinkat(dirfd, tmp, 0)
			return "", fmt.Errorf("rename: %w", err)
		}
		return "", nil
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP):
		// A filesystem without exchange: check, then rename.
		if !still(readAt(dirfd, name, name, owner)) {
			unix.Unlinkat(dirfd, tmp, 0)
			return "", errChanged
		}
		if err := unix.Renameat(dirfd, tmp, dirfd, name); err != nil {
			unix.Unlinkat(dirfd, tmp, 0)
			return "", fmt.Errorf("rename: %w", err)
		}
		return "", nil
	case err != nil:
		unix.Unlinkat(dirfd, tmp, 0)
		return "", fmt.Errorf("rename: %w", err)
	}
	if merr != nil {
		mine = nil
	}
	disp, derr := readAt(dirfd, tmp, name, owner)
	if prefer != nil && derr == nil && still(disp, derr) {
		return tmp, nil
	}
	changed := putBack(dirfd, tmp, name, owner, still, prefer, mine, disp, derr)
	unix.Unlinkat(dirfd, tmp, 0)
	if changed {
		return "", errChanged
	}
	return "", nil
}

// putBack returns the file under tmp (what an exchange displaced from name,
// as read: disp, derr) to name when it is another writer's and prefer ranks
// it above what name holds, and reports whether tmp held anything but what
// still expects.
//
// Putting it back is itself an exchange, and yet another write may land at
// name just before it, to be displaced in turn: so it repeats, always
// comparing the two files by content (never by which inode is whose),
// until what sits under tmp is the guard's own file (mine), the content
// still expects, or ranks below what name holds. The caller deletes it.
func putBack(dirfd int, tmp, name string, owner int, still func([]byte, error) bool, prefer preferFunc, mine, disp []byte, derr error) (changed bool) {
	for swaps := 0; ; swaps++ {
		if errors.Is(derr, fs.ErrNotExist) || still(disp, derr) {
			return changed
		}
		changed = true
		if mine != nil && derr == nil && bytes.Equal(disp, mine) {
			return changed // the guard's own file came back: drop it
		}
		if prefer == nil || swaps == maxSwaps {
			return changed
		}
		if at, aerr := readAt(dirfd, name, name, owner); !prefer(disp, derr, at, aerr) {
			return changed
		}
		if unix.Renameat2(dirfd, tmp, dirfd, name, unix.RENAME_EXCHANGE) != nil {
			return changed
		}
		disp, derr = readAt(dirfd, tmp, name, owner)
	}
}

// recheckAt deletes kept, a file swapIn displaced holding content whose
// hash was was, after putting it back first if a writer wrote into it since
// (it then no longer hashes to was) and it ranks above what name holds. It
// reports whether a writer had written into it.
func recheckAt(dirfd int, kept, name string, owner int, was [32]byte, mine []byte, prefer preferFunc) bool {
	unchanged := func(b []byte, err error) bool { return err == nil && sha256.Sum256(trimJSON(b)) == was }
	disp, derr := readAt(dirfd, kept, name, owner)
	changed := putBack(dirfd, kept, name, owner, unchanged, prefer, mine, disp, derr)
	unix.Unlinkat(dirfd, kept, 0)
	return changed
}

// removeStaleTemps deletes temp files a killed guard left beside rel.
func (h *homeFS) removeStaleTemps(rel string) {
	h.as(func() error {
		d, base, err := h.openDir(rel)
		if err != nil {
			return nil
		}
		defer d.Close()
		removeTemps(d, base, 0)
		return nil
	})
}

// removeTemps deletes base's temp files in d older than age (0: all), never
// following anything.
func removeTemps(d *os.File, base string, age time.Duration) {
	names, _ := d.Readdirnames(-1)
	prefix := "." + base + tmpMarker
	for _, n := range names {
		if !strings.HasPrefix(n, prefix) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(int(d.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue
		}
		if age > 0 && time.Since(time.Unix(st.Mtim.Unix())) < age {
			continue
		}
		unix.Unlinkat(int(d.Fd()), n, 0)
	}
}

// tempFile is a file the guard created with O_EXCL in a directory it holds
// open.
type tempFile struct {
	fd   int
	name string
}

func createTemp(dirfd int, base string) (*tempFile, error) {
	var rnd [8]byte
	for range 8 {
		rand.Read(rnd[:])
		name := "." + base + tmpMarker + hex.EncodeToString(rnd[:])
		fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &tempFile{fd: fd, name: name}, nil
	}
	return nil, errors.New("cannot create a temp file")
}

// fill gives the temp file its owner and mode (on the descriptor), writes
// data, optionally fsyncs, and closes it.
func (t *tempFile) fill(data []byte, uid, gid int, perm fs.FileMode, sync bool) error {
	defer unix.Close(t.fd)
	if uid >= 0 || gid >= 0 {
		if err := unix.Fchown(t.fd, uid, gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := unix.Fchmod(t.fd, uint32(perm.Perm())); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := writeAll(t.fd, data); err != nil {
		return err
	}
	if sync {
		if err := unix.Fsync(t.fd); err != nil {
			return fmt.Errorf("fsync: %w", err)
		}
	}
	return nil
}

func writeAll(fd int, data []byte) error {
	for off := 0; off < len(data); {
		n, err := unix.Pwrite(fd, data[off:], int64(off))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		off += n
	}
	return nil
}

// watchPath is a path inotify can watch that names exactly the directory
// holding rel inside the home (through /proc/self/fd, so no symlink the user
// planted can redirect the watch), with the descriptor to close once the
// watch is added.
func (h *homeFS) watchPath(rel string) (string, io.Closer, error) {
	return h.watchDir(path.Dir(rel))
}

// watchDir is watchPath for the directory dir itself.
func (h *homeFS) watchDir(dir string) (string, io.Closer, error) {
	if dir == "" {
		dir = "."
	}
	var d *os.File
	err := h.as(func() (err error) {
		d, err = h.root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
		return err
	})
	if err != nil {
		return "", nil, err
	}
	p := fmt.Sprintf("/proc/self/fd/%d", d.Fd())
	if _, err := os.Stat(p); err != nil {
		// No /proc: fall back to the name, which only ever costs a useless
		// watch (every read still goes through the checks above).
		d.Close()
		return path.Join(h.dir, dir), io.NopCloser(nil), nil
	}
	return p, d, nil
}

// trimJSON drops the trailing whitespace a crash-safe in-place write may
// leave, so the same document compares equal however it was padded.
func trimJSON(b []byte) []byte { return bytes.TrimRight(b, " \t\r\n") }
