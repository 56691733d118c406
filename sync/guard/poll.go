package guard

// A stat poll of the host side, for filesystems that raise no inotify event
// when the host changes a file: a host directory shared into a VM (Docker
// Desktop's virtiofs and gRPC FUSE, OrbStack, Colima's sshfs or 9p, Lima),
// or a network filesystem. inotify only sees changes made through this
// kernel; the host's own writes happen on the other side of the FUSE
// daemon, the 9p server or the NFS server.
//
// The poller stats each polled file every interval (inode, size, mtime,
// ctime; mode, owner and link count for attribute changes) and turns a
// difference into the same dirty batch the inotify reader handles (g.post
// hands it to the workers), so every decision stays in one place. inotify
// keeps watching both sides: it still sees the home and any change made
// from inside the VM.
//
// The stat asks the filesystem, not the attribute cache (AT_STATX_FORCE_SYNC:
// FUSE and NFS would otherwise answer from a cache up to a second old). The
// poller sleeps in poll(2) on an eventfd, like the inotify reader: one
// thread wakes per tick, no timer goroutine.

import (
	"errors"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultPollInterval is how often a host side on a filesystem without
// host-side events is stat-polled when Config.Poll is 0.
const DefaultPollInterval = 500 * time.Millisecond

// smb2Magic is the statfs type of the kernel's SMB 2/3 client (cifs.ko
// reports it for SMB2+ mounts); x/sys/unix has only the SMB1 and CIFS ones.
const smb2Magic = 0xfe534d42

// noHostEvents names the filesystem types whose host-side changes raise no
// inotify event here: virtiofs and every FUSE filesystem (gRPC FUSE, sshfs,
// bindfs) report FUSE's type.
var noHostEvents = map[int64]string{
	unix.FUSE_SUPER_MAGIC: "FUSE/virtiofs",
	unix.V9FS_MAGIC:       "9p",
	unix.NFS_SUPER_MAGIC:  "NFS",
	unix.SMB_SUPER_MAGIC:  "SMB",
	unix.CIFS_SUPER_MAGIC: "CIFS",
	smb2Magic:             "SMB2",
	unix.CEPH_SUPER_MAGIC: "Ceph",
	unix.AFS_FS_MAGIC:     "AFS",
	unix.AFS_SUPER_MAGIC:  "AFS",
	unix.CODA_SUPER_MAGIC: "Coda",
}

// pollEvery decides whether a host side on a filesystem of type fsType is
// polled, and how often (0: not polled). setting is Config.Poll: 0 polls
// only filesystems without host-side events, every DefaultPollInterval; a
// positive duration polls every credential at that interval; a negative one
// never polls.
func pollEvery(fsType int64, setting time.Duration) time.Duration {
	switch {
	case setting < 0:
		return 0
	case setting > 0:
		return setting
	}
	if _, ok := noHostEvents[fsType]; ok {
		return DefaultPollInterval
	}
	return 0
}

// stamp is what one stat of a polled path shows.
type stamp struct {
	errno        unix.Errno // ENOENT for a missing file; 0 when stat worked
	ino, size    uint64
	mtime, ctime unix.StatxTimestamp
	mode         uint16
	uid, gid     uint32
	nlink        uint32
}

// change is the inotify mask a step from a to b would have raised; 0 for
// none. Content (inode, size, times) reads as a close after writing, or a
// create, delete or rename into a directory; the rest as ATTRIB, which
// handle checks for a dead bind mount and for a side that became readable.
func change(a, b stamp, inDir bool) uint32 {
	if a == b {
		return 0
	}
	var m uint32
	switch {
	case a.errno == unix.ENOENT && b.errno == 0:
		m |= unix.IN_CREATE
	case a.errno == 0 && b.errno == unix.ENOENT:
		m |= unix.IN_DELETE
	case a.errno != b.errno:
		m |= unix.IN_CLOSE_WRITE
	case a.ino != b.ino && inDir:
		m |= unix.IN_MOVED_TO
	case a.ino != b.ino || a.size != b.size || a.mtime != b.mtime || a.ctime != b.ctime:
		m |= unix.IN_CLOSE_WRITE
	}
	// A file that appears or goes is said by the create or delete alone.
	if a.errno != unix.ENOENT && b.errno != unix.ENOENT &&
		(a.mode != b.mode || a.uid != b.uid || a.gid != b.gid || a.nlink != b.nlink) {
		m |= unix.IN_ATTRIB
	}
	return m
}

// polled is one host side under the poll.
type polled struct {
	t    target
	p    string
	last stamp
	// again: the last change may have been followed, within the
	// timestamps' granularity, by a write of the same size that no stat
	// can tell apart; the next tick re-reads once more.
	again bool
}

func statStamp(p string) stamp {
	var stx unix.Statx_t
	flags := unix.AT_NO_AUTOMOUNT | unix.AT_STATX_FORCE_SYNC
	if !strings.HasPrefix(p, "/proc/self/fd/") || strings.Count(p, "/") > 4 {
		// A bind file's side is its held descriptor's /proc magic link,
		// which must be followed (it names the mounted file, and leads
		// nowhere else); any other path's last component must not be.
		flags |= unix.AT_SYMLINK_NOFOLLOW
	}
	err := unix.Statx(unix.AT_FDCWD, p, flags, unix.STATX_BASIC_STATS, &stx)
	if err != nil {
		var errno unix.Errno
		if !errors.As(err, &errno) {
			errno = unix.EIO
		}
		return stamp{errno: errno}
	}
	return stamp{ino: stx.Ino, size: stx.Size, mtime: stx.Mtime, ctime: stx.Ctime,
		mode: stx.Mode, uid: stx.Uid, gid: stx.Gid, nlink: stx.Nlink}
}

// check stats the path and returns the mask to report (0: nothing).
func (it *polled) check() uint32 {
	now := statStamp(it.p)
	m := change(it.last, now, it.t.name != "")
	it.last = now
	switch {
	case m != 0:
		it.again = true
	case it.again:
		it.again = false
		m = unix.IN_CLOSE_WRITE
	}
	return m
}

type poller struct {
	every time.Duration
	items []*polled
	stop  int // an eventfd: readable once close was called
	done  chan struct{}
}

// startPoll starts polling the host side of every credential that needs it
// (see pollEvery), or returns nil when none does. The first tick reports
// every polled side once, so a host change between the start-up copy and
// the first stat is not missed.
func (g *Guard) startPoll() *poller {
	if g.cfg.Poll < 0 {
		return nil
	}
	p := &poller{}
	for _, c := range g.creds {
		dir, name := c.host.watch()
		fsType := int64(0)
		var sf unix.Statfs_t
		if err := unix.Statfs(dir, &sf); err == nil {
			fsType = int64(sf.Type)
		}
		every := pollEvery(fsType, g.cfg.Poll)
		if every == 0 {
			continue
		}
		why := "(--poll)"
		if fs, ok := noHostEvents[fsType]; ok && g.cfg.Poll == 0 {
			why = "(on " + fs + ", which reports no host-side changes)"
		}
		g.logf(1, "%s: host side polled every %v %s", c.name(), every, why)
		p.every = every
		file := dir
		if name != "" {
			file = path.Join(dir, name)
		}
		p.items = append(p.items, &polled{t: target{c: c, side: host, name: name}, p: file, last: stamp{errno: unix.ESTALE}})
	}
	if len(p.items) == 0 {
		return nil
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		g.logf(0, "host changes made outside this machine are not seen: eventfd: %v", err)
		return nil
	}
	p.stop, p.done = stop, make(chan struct{})
	go p.run(g.post)
	return p
}

// run ticks until close is called.
func (p *poller) run(handle func([]dirty)) {
	defer close(p.done)
	defer unix.Close(p.stop)
	fds := []unix.PollFd{{Fd: int32(p.stop), Events: unix.POLLIN}}
	var batch []dirty
	next := time.Now().Add(p.every)
	for {
		wait := time.Until(next)
		if wait > 0 {
			// Round up: a timeout that ends a millisecond early would
			// tick twice.
			n, err := unix.Poll(fds, int((wait+time.Millisecond-1)/time.Millisecond))
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || n > 0 {
				return
			}
			if time.Now().Before(next) {
				continue
			}
		}
		next = next.Add(p.every)
		if now := time.Now(); next.Before(now) {
			// Asleep for longer (a suspended VM): no burst of ticks.
			next = now.Add(p.every)
		}
		batch = batch[:0]
		for _, it := range p.items {
			if m := it.check(); m != 0 {
				batch = append(batch, dirty{it.t, m})
			}
		}
		if len(batch) > 0 {
			handle(batch)
		}
	}
}

// close stops the poller and waits for it; nil-safe.
func (p *poller) close() {
	if p == nil {
		return
	}
	var one = [8]byte{1}
	unix.Write(p.stop, one[:])
	<-p.done
}
