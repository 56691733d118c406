package guard

// A minimal inotify reader. fsnotify (v1.10.1) keeps IN_CLOSE_WRITE and the
// watch flags the home needs (IN_DONT_FOLLOW, IN_ONLYDIR) unexported, and
// adds a goroutine and a channel hop per event; the guard needs neither.
//
// The reader blocks in poll(2) itself rather than in Go's netpoller: an
// event then wakes the one thread that handles it, where the netpoller
// readies a goroutine and wakes spinning threads to run it (measured: 6
// futex and 10 nanosleep calls per event). With 64 guards on 2 CPUs those
// wake-ups are most of the fan-out cost.

import (
	"errors"
	"fmt"
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
	// up: a directory above the home copy's, watched for name; any event
	// on it is reported as the home copy's directory moving.
	up bool
}

type inotify struct {
	fd   int // the inotify descriptor (non-blocking)
	stop int // an eventfd: readable once close was called
	mu   sync.Mutex
	wd   map[int32][]target
	// gone records home copies whose directory was removed (not moved):
	// rewatchHome recreates those, and only those.
	gone map[*cred]bool
}

func newInotify() (*inotify, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &inotify{fd: fd, stop: stop, wd: map[int32][]target{}, gone: map[*cred]bool{}}, nil
}

// add watches p (the same inode twice shares one descriptor, so masks add up).
func (in *inotify) add(p string, mask uint32, t target) (int32, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	wd, err := unix.InotifyAddWatch(in.fd, p, mask|unix.IN_MASK_ADD)
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
	unix.InotifyRmWatch(in.fd, uint32(wd))
}

// takeGone reports (and forgets) whether c's home directory was removed
// since the last call.
func (in *inotify) takeGone(c *cred) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	g := in.gone[c]
	delete(in.gone, c)
	return g
}

// dirty is one side of a credential that saw events, with their masks.
type dirty struct {
	t    target
	mask uint32
}

// run reads events until close is called, calling handle once per target
// per batch: a burst of events on one file becomes one re-read. It then
// closes the descriptors and returns true. If handle returns false,
// another goroutine has taken over the reading (see Guard.handle): run
// returns false at once and leaves the descriptors to it.
func (in *inotify) run(handle func([]dirty) bool, overflow func()) (owner bool) {
	owner = true
	defer func() {
		if owner {
			unix.Close(in.fd)
			unix.Close(in.stop)
		}
	}()
	buf := make([]byte, 64*1024)
	var batch []dirty
	fds := []unix.PollFd{{Fd: int32(in.fd), Events: unix.POLLIN}, {Fd: int32(in.stop), Events: unix.POLLIN}}
	for {
		// Sleep until an event or close (no timeout: an idle guard makes
		// no system call).
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return true
		}
		if fds[1].Revents != 0 {
			return true
		}
		n, err := unix.Read(in.fd, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			return true
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
				// A directory above the home copy's counts only for the
				// next name down, or its own end.
				if t.up && t.name != name && ev.Mask&unix.IN_IGNORED == 0 {
					continue
				}
				// A directory's own events count too: its removal, and a
				// chmod or chown of it (which may let the guard write in it).
				if t.name != "" && t.name != name && (name != "" || ev.Mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED|unix.IN_ATTRIB) == 0) {
					continue
				}
				mask := ev.Mask
				// Removed: the directory itself, or its name above it
				// (a removed symlink there is not: the user is at work).
				if t.side == home && (t.up && mask&unix.IN_DELETE != 0 && mask&unix.IN_ISDIR != 0 ||
					!t.up && name == "" && mask&(unix.IN_DELETE_SELF|unix.IN_IGNORED) != 0) {
					in.gone[t.c] = true
				}
				if t.up {
					mask = unix.IN_MOVE_SELF
				}
				batch = merge(batch, t, mask)
			}
			if ev.Mask&unix.IN_IGNORED != 0 {
				delete(in.wd, ev.Wd)
			}
		}
		in.mu.Unlock()
		if len(batch) > 0 && !handle(batch) {
			return false
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

// close makes the stop eventfd readable, which wakes run's poll and makes
// it return; run then closes both descriptors (the caller waits for it).
// close itself closes nothing, so it is safe while run reads: an inotify
// whose run never started is closed with release instead.
func (in *inotify) close() {
	var one = [8]byte{1}
	unix.Write(in.stop, one[:])
}

// release closes the descriptors of an inotify whose run never started.
func (in *inotify) release() {
	unix.Close(in.fd)
	unix.Close(in.stop)
}
