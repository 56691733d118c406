//go:build linux

package harness

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Watch is an inotify instance whose reads honour deadlines, so a wait for a
// file to change blocks on the kernel's event rather than polling, and a
// guard that never writes fails the wait instead of hanging it.
type Watch struct {
	f   *os.File
	buf []byte
}

// Masks used by the waits: a finished write in place, a rename into place,
// and the changes a writer makes before it finishes.
const (
	MaskWritten = syscall.IN_CLOSE_WRITE | syscall.IN_MOVED_TO | syscall.IN_MODIFY | syscall.IN_CREATE | syscall.IN_ATTRIB
)

// NewWatch opens an inotify instance watching each path with mask.
func NewWatch(mask uint32, paths ...string) (*Watch, error) {
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	w := &Watch{f: os.NewFile(uintptr(fd), "inotify"), buf: make([]byte, 64<<10)}
	for _, p := range paths {
		if err := w.Add(p, mask); err != nil {
			w.Close()
			return nil, err
		}
	}
	return w, nil
}

// Add watches one more path.
func (w *Watch) Add(path string, mask uint32) error {
	if _, err := syscall.InotifyAddWatch(int(w.f.Fd()), path, mask); err != nil {
		return fmt.Errorf("inotify_add_watch %s: %w", path, err)
	}
	return nil
}

// MaskChanged is any change of a file or of a directory's entries.
const MaskChanged = MaskWritten | syscall.IN_MOVED_FROM | syscall.IN_DELETE

// WaitFor waits until cond holds, re-checking it on every change inotify
// reports on paths and every 5 ms (a backstop for a condition no file
// change announces, such as a guard's report), until the deadline.
func WaitFor(deadline time.Time, cond func() bool, paths ...string) error {
	w, err := NewWatch(MaskChanged, paths...)
	if err != nil {
		return err
	}
	defer w.Close()
	for {
		err := w.Until(earliest(deadline, time.Now().Add(5*time.Millisecond)), cond)
		if !errors.Is(err, ErrTimeout) || time.Now().After(deadline) {
			return err
		}
	}
}

// ErrTimeout is returned by Until when the deadline passes first.
var ErrTimeout = errors.New("timed out waiting for the change")

// Until calls done now and after every batch of events until it reports
// true, or the deadline passes.
func (w *Watch) Until(deadline time.Time, done func() bool) error {
	if done() {
		return nil
	}
	if err := w.f.SetReadDeadline(deadline); err != nil {
		return fmt.Errorf("inotify deadline: %w", err)
	}
	for {
		_, err := w.f.Read(w.buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if done() {
				return nil
			}
			return ErrTimeout
		}
		if err != nil {
			return fmt.Errorf("read inotify: %w", err)
		}
		if done() {
			return nil
		}
	}
}

// Next waits for the next batch of events, or the deadline; it reports
// whether events came.
func (w *Watch) Next(deadline time.Time) (bool, error) {
	if err := w.f.SetReadDeadline(deadline); err != nil {
		return false, fmt.Errorf("inotify deadline: %w", err)
	}
	_, err := w.f.Read(w.buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read inotify: %w", err)
	}
	return true, nil
}

// Drain discards queued events without blocking.
func (w *Watch) Drain() {
	_ = w.f.SetReadDeadline(time.Now())
	for {
		if _, err := w.f.Read(w.buf); err != nil {
			return
		}
	}
}

// Close releases the instance and its watches.
func (w *Watch) Close() error { return w.f.Close() }

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
