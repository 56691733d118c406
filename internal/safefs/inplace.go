//go:build linux

package safefs

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// WriteInPlace replaces the content of the open file fd, which holds old,
// with data, for a file that cannot be replaced by rename (a bind-mount
// target): the file is at every instant the old or the new document. It is
// BeginInPlace, Sync and Trim in a row; a caller that holds a lease on fd to
// keep readers out while the document changes can release it after
// BeginInPlace and run the rest without it (see InPlace).
func WriteInPlace(fd int, old, data []byte) error {
	w, err := BeginInPlace(fd, old, data)
	if err != nil {
		return err
	}
	if err := w.Sync(); err != nil {
		w.Undo()
		return err
	}
	return w.Trim()
}

// InPlace is an in-place write whose new document is in the file, padded
// with spaces to at least the old length (JSON allows trailing whitespace),
// but not yet known to be on disk nor cut to its exact length.
//
// Its three steps, in order: BeginInPlace, the only one during which a
// reader could see a mixture of the two documents; Sync (fdatasync: a write
// error the filesystem reports late, NFS or virtiofs, or EIO, surfaces here,
// and then Undo puts the old document back); Trim, which may cut the file
// only once the new bytes are on disk, or a crash could leave the old
// document cut short.
type InPlace struct {
	fd        int
	old, buf  []byte
	newLength int64
}

// BeginInPlace writes data over old, which fd holds, in one pwrite at offset
// 0. Space for a longer document is reserved first (fallocate, keeping the
// size), so a full disk or quota (ENOSPC, EDQUOT) fails the reservation with
// the old document untouched; on a filesystem without fallocate a short or
// failed write is undone by writing the old bytes back (they fit in the
// blocks the file already has) and truncating to the old length.
func BeginInPlace(fd int, old, data []byte) (*InPlace, error) {
	oldLen := int64(len(old))
	buf := data
	if pad := oldLen - int64(len(data)); pad > 0 {
		buf = make([]byte, oldLen)
		copy(buf, data)
		for i := len(data); i < len(buf); i++ {
			buf[i] = ' '
		}
	}
	w := &InPlace{fd: fd, old: old, buf: buf, newLength: int64(len(data))}
	if int64(len(buf)) > oldLen {
		err := unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, int64(len(buf)))
		for errors.Is(err, unix.EINTR) {
			err = unix.Fallocate(fd, unix.FALLOC_FL_KEEP_SIZE, 0, int64(len(buf)))
		}
		if err != nil && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("reserve %d bytes: %w", len(buf), err)
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
	if err != nil {
		w.Undo()
		return nil, err
	}
	return w, nil
}

// Sync makes the new document durable (fdatasync). On an error the caller
// should Undo, if the file still holds the new document (Ours).
func (w *InPlace) Sync() error {
	if err := unix.Fdatasync(w.fd); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	return nil
}

// Padded reports whether Trim has anything to cut.
func (w *InPlace) Padded() bool { return int64(len(w.buf)) > w.newLength }

// Ours reports whether the file still holds exactly what BeginInPlace wrote
// (nobody wrote since), so that Trim or Undo cannot cut or overwrite another
// writer's document.
func (w *InPlace) Ours() bool { return Holds(w.fd, w.buf) }

// Trim cuts the padding, after a successful Sync.
func (w *InPlace) Trim() error {
	if !w.Padded() {
		return nil
	}
	if err := unix.Ftruncate(w.fd, w.newLength); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	return nil
}

// Undo puts the old document back after a failed write: its bytes go where
// they were (blocks the file already has), and the file is cut back to its
// old length.
func (w *InPlace) Undo() {
	old := w.old
	for off := 0; off < len(old); {
		n, err := unix.Pwrite(w.fd, old[off:], int64(off))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			break
		}
		off += n
	}
	unix.Ftruncate(w.fd, int64(len(old)))
	unix.Fdatasync(w.fd)
}
