package guard

// A minimal inotify reader. fsnotify (v1.10.1) keeps IN_CLOSE_WRITE and the
// watch flags the home needs (IN_DONT_FOLLOW, IN_ONLYDIR) unexported, and
// adds a goroutine and a channel hop per event; the guard needs neither.

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// fileMask is for a bind-mounted file: a writer closing it (agents
	// write the whole file and close; a killed writer's file is closed by
	// the kernel), and ATTRIB, the only event a host rename leaves on the
	// mounted inode (nlink 0). IN_MODIFY is left out on purpose: it fires
	// for the truncate before every in-place write and for each write call,
	// waking every guard of a shared file to read content that is not
	// complete yet; the close follows the last write by microseconds.
	fileMask = unix.IN_CLOSE_WRITE | unix.IN_ATTRIB
	// dirMask is for a directory holding a credential: in-place writes
	// (close), creations and renames into or out of it, removals.
	dirMask = unix.IN_CLOSE_WRITE | unix.IN_ATTRIB | unix.IN_CREATE |
		unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE | unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK
)

// target is what one watch descriptor reports to: a side of a credential,
// filtered by name for a directory watch.
type target struct {
	c    *cred
	side side
	name string // "" on a file watch: every event counts
}

type inotify struct {
	f  *os.File
	mu sync.Mutex
	wd map[int32][]target
}

func newInotify() (*inotify, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	// A non-blocking descriptor goes through Go's poller, so Close wakes
	// the reader.
	return &inotify{f: os.NewFile(uintptr(fd), "inotify"), wd: map[int32][]target{}}, nil
}

// add watches p (the same inode twice shares one descriptor, so masks add up).
func (in *inotify) add(p string, mask uint32, t target) (int32, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	var wd int
	err := in.control(func(fd int) error {
		var err error
		wd, err = unix.InotifyAddWatch(fd, p, mask|unix.IN_MASK_ADD)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("watch %s: %w", p, err)
	}
	in.wd[int32(wd)] = append(in.wd[int32(wd)], t)
	return int32(wd), nil
}

// remove stops reporting wd's events to t, and drops the kernel watch when
// nobody else uses it.
func (in *inotify) remove(wd int32, t target) {
	in.mu.Lock()
	defer in.mu.Unlock()
	ts, ok := in.wd[wd]
	if !ok {
		return
	}
	kept := ts[:0]
	for _, x := range ts {
		if x != t {
			kept = append(kept, x)
		}
	}
	if len(kept) > 0 {
		in.wd[wd] = kept
		return
	}
	delete(in.wd, wd)
	in.control(func(fd int) error {
		_, err := unix.InotifyRmWatch(fd, uint32(wd))
		return err
	})
}

func (in *inotify) control(f func(fd int) error) error {
	rc, err := in.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// dirty is one side of a credential that saw events, with their masks.
type dirty struct {
	t    target
	mask uint32
}

// run reads events until the descriptor is closed, calling handle once per
// target per batch: a burst of events on one file becomes one re-read.
func (in *inotify) run(handle func([]dirty), overflow func()) {
	buf := make([]byte, 64*1024)
	var batch []dirty
	for {
		n, err := in.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		batch = batch[:0]
		in.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := ""
			if ev.Len > 0 {
				raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				for len(raw) > 0 && raw[len(raw)-1] == 0 {
					raw = raw[:len(raw)-1]
				}
				name = string(raw)
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				in.mu.Unlock()
				overflow()
				in.mu.Lock()
				continue
			}
			for _, t := range in.wd[ev.Wd] {
				// A directory's own events count too: its removal, and a
				// chmod or chown of it (which may let the guard write in it).
				if t.name != "" && t.name != name && (name != "" || ev.Mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED|unix.IN_ATTRIB) == 0) {
					continue
				}
				batch = merge(batch, t, ev.Mask)
			}
			if ev.Mask&unix.IN_IGNORED != 0 {
				delete(in.wd, ev.Wd)
			}
		}
		in.mu.Unlock()
		if len(batch) > 0 {
			handle(batch)
		}
	}
}

func merge(batch []dirty, t target, mask uint32) []dirty {
	for i := range batch {
		if batch[i].t == t {
			batch[i].mask |= mask
			return batch
		}
	}
	return append(batch, dirty{t, mask})
}

func (in *inotify) close() error { return in.f.Close() }
