// Package safefs is the root-only filesystem code of caw-init in one place,
// so a security review reads one package: the bounded read every reader of
// a file it does not trust uses (safefs.go); the checks that make a staging
// dir trusted, and opening beneath it without following symlinks or
// crossing mounts (beneath.go, openat2); the descriptor-checked *at
// primitives, temp files and the exchange that never loses another
// writer's file, for a directory another user controls (dir.go); the
// in-place write of a bind-mounted file that is never torn, full disk
// included (inplace.go); and running file operations with a user's
// filesystem identity (user.go, setfsuid on a locked OS thread). The
// bounded read, Flock and Holds also serve the host side (caw's Keychain
// bridge).
package safefs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrTooLarge is a file over the limit a reader gave.
var ErrTooLarge = errors.New("larger than the size cap")

// ReadFD reads an open file from offset 0 up to limit bytes, without moving
// any shared file offset; size is fstat's size, a hint that saves the read
// returning 0. More than limit bytes is ErrTooLarge (nothing is returned),
// whatever the file grows to while it is read.
func ReadFD(fd int, size, limit int64) ([]byte, error) {
	if size > limit {
		return nil, ErrTooLarge
	}
	buf := make([]byte, 0, min(max(size, 512)+1, limit+1))
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, ErrTooLarge
			}
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Pread(fd, buf[len(buf):cap(buf)], int64(len(buf)))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n == 0 {
			if int64(len(buf)) > limit {
				return nil, ErrTooLarge
			}
			return buf, nil
		}
		buf = buf[:len(buf)+n]
		if int64(len(buf)) == size && len(buf) < cap(buf) {
			// Exactly the size fstat gave, with room for more: a regular
			// file had no more at that instant, so the read that would
			// return 0 is skipped. A file growing under the read is a
			// writer at work whose close brings another event.
			return buf, nil
		}
	}
}

// ReadRegular reads an open *os.File that must be a regular file of at most
// limit bytes (checked on the descriptor before a byte is read).
func ReadRegular(f *os.File, limit int64) ([]byte, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("fstat %s: %w", f.Name(), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("%s is not a regular file", f.Name())
	}
	data, err := ReadFD(int(f.Fd()), st.Size, limit)
	if errors.Is(err, ErrTooLarge) {
		return nil, fmt.Errorf("%s is larger than %d bytes", f.Name(), limit)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return data, nil
}

// Flock takes an exclusive flock on fd, which the other writers that share
// the file (other containers' guards, the Keychain bridge) honour. It waits
// at most 2 s: a stopped writer holding the lock must not wedge this one.
func Flock(fd int) (unlock func(), err error) {
	deadline := time.Now().Add(2 * time.Second)
	wait := 50 * time.Microsecond
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Flock(fd, unix.LOCK_UN) }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, errors.New("held by another writer for over 2s")
		}
		time.Sleep(wait)
		wait = min(wait*2, 5*time.Millisecond)
	}
}

// Holds reports whether the open file fd holds exactly buf: what an
// in-place writer checks before it cuts its padding, so that another
// writer's document (one that takes no lock) is never cut.
func Holds(fd int, buf []byte) bool {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Size != int64(len(buf)) {
		return false
	}
	got := make([]byte, len(buf)+1)
	n, err := unix.Pread(fd, got, 0)
	return err == nil && bytes.Equal(got[:n], buf)
}
