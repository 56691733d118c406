//go:build linux

package safefs

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// WriteInPlace replaces the content of the open file fd, which holds old,
// with data, for a file that cannot be replaced by rename (a bind-mount
// target): the file is at every instant the old or the new document.
//
// The new document is padded with spaces to at least the old length (JSON
// allows trailing whitespace) and written in one pwrite at offset 0, then
// fdatasync, then ftruncate to the exact length. Space for a longer document
// is reserved first (fallocate, keeping the size), so a full disk or quota
// (ENOSPC, EDQUOT) fails the reservation with the old document untouched; on
// a filesystem without fallocate a short or failed write is undone by
// writing the old bytes back (they fit in the blocks the file already has)
// and truncating to the old length.
func WriteInPlace(fd int, old, data []byte) error {
	oldLen := int64(len(old))
	buf := data
	if pad := oldLen - int64(len(data)); pad > 0 {
		buf = make([]byte, oldLen)
		copy(buf, data)
		for i := len(data); i < len(buf); i++ {
			buf[i] = ' '
		}
	}
	if int64(len(buf)) > oldLen {
		err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, int64(len(buf)))
		for errors.Is(err, unix.EINTR) {
			err = unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, int64(len(buf)))
		}
		if err != nil && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("reserve %d bytes: %w", len(buf), err)
		}
	}
	// One write call: the kernel copies a credential-sized buffer at offset
	// 0 without a point where a signal can cut it.
	n, err := unix.Pwrite(fd, buf, 0)
	for errors.Is(err, unix.EINTR) {
		n, err = unix.Pwrite(fd, buf, 0)
	}
	if err == nil && n != len(buf) {
		err = fmt.Errorf("short write (%d of %d bytes)", n, len(buf))
	}
	if err == nil {
		err = unix.Fdatasync(fd)
		if err != nil {
			err = fmt.Errorf("fsync: %w", err)
		}
	}
	if err != nil {
		restore(fd, old)
		return err
	}
	if int64(len(data)) < oldLen {
		if err := unix.Ftruncate(fd, int64(len(data))); err != nil {
			return fmt.Errorf("truncate: %w", err)
		}
	}
	return nil
}

// restore puts the old document back after a failed write: its bytes go
// where they were (blocks the file already has), and the file is cut back to
// its old length.
func restore(fd int, old []byte) {
	for off := 0; off < len(old); {
		w, err := unix.Pwrite(fd, old[off:], int64(off))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || w == 0 {
			break
		}
		off += w
	}
	unix.Ftruncate(fd, int64(len(old)))
	unix.Fdatasync(fd)
}
