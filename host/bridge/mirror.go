package bridge

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/caw-dev/caw/internal/safefs"
	"golang.org/x/sys/unix"
)

// MaxSize bounds a mirror: a credential is a few KiB.
const MaxSize = 1 << 20

// ErrChanged: the mirror changed between the decision and the write.
var ErrChanged = errors.New("changed under the write")

// ReadMirror reads the mirror at p without following a final symlink or
// blocking on a FIFO (a container user who can write the mirror's
// directory may plant either); fs.ErrNotExist when it is missing.
func ReadMirror(p string) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s is a symlink", p)
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%s is more than %d bytes", p, MaxSize)
	}
	return data, nil
}

// WriteMirror puts data in the mirror at p, in place: containers may have
// the file itself bind-mounted, and a rename would detach their mounts. The
// new document goes in one pwrite at offset 0, padded with spaces to the
// old length (JSON allows trailing whitespace, so a reader sees the old or
// the new document, never a mix), then fsync, then a truncate to its
// length. It holds an flock, which the guards of containers honour, and
// writes only when still(current content) holds, else ErrChanged. A
// missing mirror is created, mode 0600; an existing one is made 0600.
func WriteMirror(p string, data []byte, still func(cur []byte, err error) bool) error {
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		if still != nil && !still(nil, fs.ErrNotExist) {
			return ErrChanged
		}
		fd, err = unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	}
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return fmt.Errorf("write %s: it is a symlink; caw does not write through one", p)
		}
		return fmt.Errorf("open %s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("write %s: not a regular file", p)
	}
	unlock, err := safefs.Flock(fd)
	if err != nil {
		return fmt.Errorf("lock %s: %w", p, err)
	}
	defer unlock()
	cur, rerr := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if still != nil && !still(cur, rerr) {
		return ErrChanged
	}
	buf := data
	if pad := len(cur) - len(data); pad > 0 {
		buf = make([]byte, len(cur))
		copy(buf, data)
		for i := len(data); i < len(buf); i++ {
			buf[i] = ' '
		}
	}
	if n, err := f.WriteAt(buf, 0); err != nil || n != len(buf) {
		return fmt.Errorf("write %s: %v (%d of %d bytes)", p, err, n, len(buf))
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	// Cut the padding only while the file still holds exactly what was
	// written: a container's agent writes without the flock, and one that
	// rewrote the file during the fsync would lose the end of its document
	// to the cut (TestKeychainLoginWins caught it about once in 30 runs).
	// The padded document left otherwise is valid as it is. The check and
	// the cut are microseconds apart, not the fsync's milliseconds; macOS
	// has no write lease to close that window, as the guard does on Linux.
	if len(data) < len(cur) && safefs.Holds(fd, buf) {
		if err := f.Truncate(int64(len(data))); err != nil {
			return fmt.Errorf("truncate %s: %w", p, err)
		}
	}
	if fi.Mode().Perm() != 0o600 {
		if err := f.Chmod(0o600); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	return nil
}
