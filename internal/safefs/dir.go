//go:build linux

package safefs

// The *at primitives for a directory another user controls (the container
// user's home, or a host directory that user may write): every file is
// opened by a single name on the directory's descriptor, O_NOFOLLOW and
// O_NONBLOCK, and checked on the open descriptor before a byte is read;
// every replacement is an exchange (RENAME_EXCHANGE) of a temp file this
// code created O_EXCL, checked before and after, so another writer's file is
// never lost.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Dir is an open directory with the checks its files must pass.
type Dir struct {
	FD    int   // the directory's descriptor
	Owner int   // the owner files must have; < 0 accepts any
	Limit int64 // the size cap
}

// TmpMarker is in the name of every temp file the guard creates, so stale
// ones (a SIGKILL between create and rename) are recognisable.
const TmpMarker = ".caw-tmp."

// HostileError is content the guard refuses to touch: a symlink, hard link,
// FIFO, device, directory, foreign owner, or oversized file where a
// credential should be. It is treated as an invalid credential.
type HostileError struct {
	Path, Why string
}

func (e *HostileError) Error() string { return e.Path + ": " + e.Why }

// ErrChanged means the file changed between the guard's decision and its
// write, so the decision must be taken again on the new content.
var ErrChanged = errors.New("changed while writing")

// ReadAt reads name in the directory with every check on the open
// descriptor (regular, one link, d.Owner, under d.Limit). A missing file
// is fs.ErrNotExist, anything else refused a *HostileError.
func (d Dir) ReadAt(name, label string) ([]byte, error) {
	// A file replaced by rename between openat and fstat shows nlink 0: that
	// is a writer at work, not an attack, so open the new one.
	for try := 0; ; try++ {
		fd, err := unix.Openat(d.FD, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		switch {
		case errors.Is(err, unix.ENOENT):
			return nil, fs.ErrNotExist
		case errors.Is(err, unix.ELOOP):
			return nil, &HostileError{label, "is a symlink"}
		case err != nil:
			return nil, &HostileError{label, err.Error()}
		}
		data, again, err := d.readFD(fd, label)
		unix.Close(fd)
		if again && try < 16 {
			continue
		}
		return data, err
	}
}

// readFD checks and reads an open file; again reports a file unlinked
// since it was opened.
func (d Dir) readFD(fd int, label string) (data []byte, again bool, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, false, fmt.Errorf("fstat %s: %w", label, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return nil, false, &HostileError{label, "is not a regular file"}
	case st.Nlink == 0:
		return nil, true, &HostileError{label, "was replaced while being read"}
	case st.Nlink > 1:
		return nil, false, &HostileError{label, "has several hard links"}
	case d.Owner >= 0 && int(st.Uid) != d.Owner:
		return nil, false, &HostileError{label, fmt.Sprintf("is owned by uid %d, not %d", st.Uid, d.Owner)}
	}
	data, err = ReadFD(fd, st.Size, d.Limit)
	if errors.Is(err, ErrTooLarge) {
		return nil, false, &HostileError{label, fmt.Sprintf("is larger than %d bytes", d.Limit)}
	}
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", label, err)
	}
	return data, false, nil
}

// Prefer decides, after a swap found another writer's file displaced
// (disp, now under the temp's name), whether it must go back over what the
// name holds now (at): it must when it is the fresher of the two, or when
// at is the guard's own file.
type Prefer func(disp []byte, derr error, at []byte, aerr error) bool

// MaxSwaps bounds the exchanges one swapIn makes. Each puts a file prefer
// ranks strictly higher at the name, so only a stream of new writers could
// use them all.
const MaxSwaps = 8

// SwapIn puts the finished temp file tmp in place of name, both in d,
// if name still holds what the caller decided to replace (still). Another
// writer (an agent refreshing by rename) can land between that decision
// and the rename, and must not be overwritten. So name is checked right
// before the swap (closing the window to microseconds), and the temp is
// swapped in with RENAME_EXCHANGE, which leaves what it displaced under the
// temp's name, a name no agent writes to. If that is not what still
// expects, a write landed in those microseconds: putBack returns it to
// name when prefer says so, and the caller decides again (ErrChanged).
//
// When the displaced file is exactly what still expects, it is not deleted
// at once when prefer is set: an agent that writes in place may have opened
// it by name an instant before the exchange and write into it after, and
// that write would be lost with it. Its name is returned (kept) for the
// caller to recheckAt a little later.
func (d Dir) SwapIn(tmp, name string, still func([]byte, error) bool, prefer Prefer) (kept string, err error) {
	dirfd := d.FD
	mine, merr := d.ReadAt(tmp, tmp)
	cur, cerr := d.ReadAt(name, name)
	if !errors.Is(cerr, fs.ErrNotExist) && !still(cur, cerr) {
		unix.Unlinkat(dirfd, tmp, 0)
		return "", ErrChanged
	}
	err = unix.Renameat2(dirfd, tmp, dirfd, name, unix.RENAME_EXCHANGE)
	switch {
	case errors.Is(err, unix.ENOENT):
		// Nothing to displace: create name only if it is still absent.
		if !still(nil, fs.ErrNotExist) {
			unix.Unlinkat(dirfd, tmp, 0)
			return "", ErrChanged
		}
		err = unix.Renameat2(dirfd, tmp, dirfd, name, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			unix.Unlinkat(dirfd, tmp, 0)
			return "", ErrChanged
		}
		if err != nil {
			unix.Unlinkat(dirfd, tmp, 0)
			return "", fmt.Errorf("rename: %w", err)
		}
		return "", nil
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP):
		// A filesystem without exchange: check, then rename.
		if !still(d.ReadAt(name, name)) {
			unix.Unlinkat(dirfd, tmp, 0)
			return "", ErrChanged
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
	disp, derr := d.ReadAt(tmp, name)
	if prefer != nil && derr == nil && still(disp, derr) {
		return tmp, nil
	}
	changed := d.putBack(tmp, name, still, prefer, mine, disp, derr)
	unix.Unlinkat(dirfd, tmp, 0)
	if changed {
		return "", ErrChanged
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
func (d Dir) putBack(tmp, name string, still func([]byte, error) bool, prefer Prefer, mine, disp []byte, derr error) (changed bool) {
	dirfd := d.FD
	for swaps := 0; ; swaps++ {
		if errors.Is(derr, fs.ErrNotExist) || still(disp, derr) {
			return changed
		}
		changed = true
		if mine != nil && derr == nil && bytes.Equal(disp, mine) {
			return changed // the guard's own file came back: drop it
		}
		if prefer == nil || swaps == MaxSwaps {
			return changed
		}
		if at, aerr := d.ReadAt(name, name); !prefer(disp, derr, at, aerr) {
			return changed
		}
		if unix.Renameat2(dirfd, tmp, dirfd, name, unix.RENAME_EXCHANGE) != nil {
			return changed
		}
		disp, derr = d.ReadAt(tmp, name)
	}
}

// RecheckAt deletes kept, a file SwapIn displaced, after putting it back
// first if a writer wrote into it since (unchanged no longer holds for its
// content) and it ranks above what name holds. It reports whether a writer
// had written into it.
func (d Dir) RecheckAt(kept, name string, unchanged func([]byte, error) bool, mine []byte, prefer Prefer) bool {
	dirfd := d.FD
	disp, derr := d.ReadAt(kept, name)
	changed := d.putBack(kept, name, unchanged, prefer, mine, disp, derr)
	unix.Unlinkat(dirfd, kept, 0)
	return changed
}

// RemoveTemps deletes base's temp files in d older than age (0: all), never
// following anything.
func RemoveTemps(d *os.File, base string, age time.Duration) {
	names, _ := d.Readdirnames(-1)
	prefix := "." + base + TmpMarker
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

// TempFile is a file the guard created with O_EXCL in a directory it holds
// open.
type TempFile struct {
	fd   int
	Name string // in the directory it was created in
}

func CreateTemp(dirfd int, base string) (*TempFile, error) {
	var rnd [8]byte
	for range 8 {
		rand.Read(rnd[:])
		name := "." + base + TmpMarker + hex.EncodeToString(rnd[:])
		fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &TempFile{fd: fd, Name: name}, nil
	}
	return nil, errors.New("cannot create a temp file")
}

// FD is the temp file's descriptor (-1 once filled or closed).
func (t *TempFile) FD() int { return t.fd }

// Close closes the descriptor of a temp file that will not be filled; the
// file itself stays.
func (t *TempFile) Close() {
	if t.fd >= 0 {
		unix.Close(t.fd)
		t.fd = -1
	}
}

// Fill gives the temp file its owner and mode (on the descriptor), writes
// data, optionally fsyncs, and closes it.
func (t *TempFile) Fill(data []byte, uid, gid int, perm fs.FileMode, sync bool) error {
	defer t.Close()
	if uid >= 0 || gid >= 0 {
		if err := unix.Fchown(t.fd, uid, gid); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := unix.Fchmod(t.fd, uint32(perm.Perm())); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := WriteAll(t.fd, data); err != nil {
		return err
	}
	if sync {
		if err := unix.Fsync(t.fd); err != nil {
			return fmt.Errorf("fsync: %w", err)
		}
	}
	return nil
}

func WriteAll(fd int, data []byte) error {
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
