package guard

// Lock mirroring: Claude Code takes a lock directory before it refreshes
// its login (proper-lockfile, mkdir style, <config dir>/.oauth_refresh.lock)
// and refreshes only if the token on disk is still its own. The host's agent
// and a container's agent each lock their own config directory, so without
// help nobody ever waits, every copy refreshes the same single-use refresh
// token at about the same moment, and the losers get invalid_grant.
//
// The guard makes the two directories one for this lock: a lock directory
// that appears on one side (the origin) is created on the other (the
// mirror) within the inotify round trip, with the origin's mtime; when the
// origin goes away the guard first syncs the credential (so the winner's new
// token is on the mirror's side) and only then removes the mirror, so the
// next holder re-reads the winner's token and adopts it instead of
// refreshing. Containers on one host credential meet at the host's lock:
// each guard mirrors its home's lock to the host and the host's to its home.
//
// Bounds (docs/SECURITY.md): a mirror is only ever created, touched and
// removed at the exact lock name under a directory descriptor, with
// O_NOFOLLOW and as that side's owner (setfsuid), never following a symlink;
// a mirror is removed when its origin's mtime is older than the agent's own
// stale time (its owner died); and a lock taken in the home, which the
// container user controls, holds the host's lock for at most the stale time
// in one go and about a tenth of the time over the long run (homeBudget).
//
// decideLock is the pure decision; lockMirror does the I/O around it.

import (
	"errors"
	"fmt"
	"os"
	"path"
	"time"
	"unsafe"

	"github.com/caw-dev/caw/internal/logf"
	"github.com/caw-dev/caw/internal/safefs"
	"github.com/caw-dev/caw/manifest"
	"github.com/caw-dev/caw/sync/policy"
	"golang.org/x/sys/unix"
)

const (
	// claudeRefreshLock is the lock directory Claude Code takes in its
	// config directory before refreshing. The legacy <config dir>.lock lies
	// outside the bind-mounted directory and cannot be mirrored; holding
	// both, as Claude Code does, already requires holding this one.
	claudeRefreshLock = ".oauth_refresh.lock"
	// lockStale is proper-lockfile's stale time as Claude Code sets it.
	lockStale = 60 * time.Second
	// lockRefill: the home's budget for holding the host's lock refills at
	// one second per lockRefill seconds.
	lockRefill = 10
	// lockMirrorEnv=off turns mirroring off (the bench's "caw without lock
	// mirroring" row).
	lockMirrorEnv = "CAW_LOCK_MIRROR"
)

// lockObs is what one side's lock name holds.
type lockObs struct {
	exists bool // a directory is there (anything else is no lock)
	ino    uint64
	mtime  time.Time
}

// lockState is what the mirror remembers between decisions.
type lockState struct {
	held      bool // a mirror of ours stands on other(origin)
	origin    side
	originIno uint64
	mirrorIno uint64
	mtime     time.Time // the mtime last given to the mirror
	// abandoned is an origin inode not to mirror again on that side: its
	// mirror was removed by someone else, or it outlived its bounds.
	abandoned [2]uint64
	// budget is how long a home lock may still hold the host's lock.
	budget time.Duration
	last   time.Time // when budget was last brought up to date
}

// lockAct is one thing to do, in order.
type lockAct int

const (
	actCreate       lockAct = iota // create the mirror on other(origin), with mtime
	actRelease                     // sync the credential, then remove the mirror
	actDrop                        // remove the mirror without waiting for a sync
	actRemoveOrigin                // remove the origin: its owner died
	actTouch                       // give the mirror the origin's newer mtime
)

type lockStep struct {
	act lockAct
	on  side
}

// decideLock takes one decision from both sides' observations. It returns
// the new state, the steps, and a reason worth logging ("" if none).
func decideLock(st lockState, obs [2]lockObs, now time.Time, stale time.Duration) (lockState, []lockStep, string) {
	// The home's budget: spent while a home lock holds the host's, refilled
	// at 1/lockRefill of real time, never more than one stale time.
	if !st.last.IsZero() {
		el := now.Sub(st.last)
		if el > 0 {
			st.budget += el / lockRefill
			if st.held && st.origin == home {
				st.budget -= el
			}
		}
	} else {
		st.budget = stale
	}
	st.budget = min(st.budget, stale)
	st.last = now
	isStale := func(t time.Time) bool { return now.Sub(t) > stale }
	clamp := func(t time.Time) time.Time {
		if t.After(now) {
			return now // a future mtime would never go stale
		}
		return t
	}
	if st.held {
		o, m := st.origin, other(st.origin)
		switch {
		case !obs[m].exists || obs[m].ino != st.mirrorIno:
			// Someone else removed the mirror (an agent that found it
			// stale, or the user): leave this origin alone from now on.
			st.held = false
			st.abandoned[o] = st.originIno
			return st, nil, fmt.Sprintf("the mirrored lock in the %s was removed by someone else", m)
		case !obs[o].exists || obs[o].ino != st.originIno:
			// Released (or released and taken again, a new inode, which
			// the next decision mirrors afresh).
			st.held = false
			return st, []lockStep{{actRelease, m}}, ""
		case isStale(obs[o].mtime):
			st.held = false
			st.abandoned[o] = st.originIno
			return st, []lockStep{{actDrop, m}, {actRemoveOrigin, o}},
				fmt.Sprintf("the refresh lock in the %s is stale (its owner died): removed on both sides", o)
		case o == home && st.budget <= 0:
			st.held = false
			st.abandoned[o] = st.originIno
			return st, []lockStep{{actDrop, m}}, "a refresh lock in the home held the host's lock too long: no longer mirrored"
		case clamp(obs[o].mtime).After(st.mtime):
			st.mtime = clamp(obs[o].mtime)
			return st, []lockStep{{actTouch, m}}, ""
		}
		return st, nil, ""
	}
	var dead []lockStep
	for _, s := range []side{home, host} {
		if obs[s].exists && isStale(obs[s].mtime) {
			// Left by a holder that died before this guard knew of it
			// (a container killed while it mirrored its lock): removed
			// by proper-lockfile's own rule, so the other side's lock
			// can be mirrored here.
			dead = append(dead, lockStep{actRemoveOrigin, s})
		}
	}
	if len(dead) > 0 {
		return st, dead, "a stale refresh lock (its owner died) was removed"
	}
	if obs[home].exists == obs[host].exists {
		// Neither side locked, or both (their agents took them at the same
		// instant, or a mirror of ours was taken over): nothing to mirror.
		return st, nil, ""
	}
	o := host
	if obs[home].exists {
		o = home
	}
	if obs[o].ino == st.abandoned[o] {
		return st, nil, ""
	}
	if o == home && st.budget < stale/lockRefill {
		return st, nil, ""
	}
	st.held, st.origin, st.originIno, st.mirrorIno = true, o, obs[o].ino, 0
	st.mtime = clamp(obs[o].mtime)
	return st, []lockStep{{actCreate, other(o)}}, ""
}

// lockDir is one side's directory holding the lock, and who owns what is
// created in it.
type lockDir struct {
	fd    int
	owner safefs.User // whose filesystem identity acts in it
	label string
}

// lockMirror mirrors one lock name between a home directory and a host
// directory.
type lockMirror struct {
	name    string
	dirs    [2]lockDir
	stale   time.Duration
	syncNow func() // brings the credential on both sides up to date
	logf    logf.Func

	st    lockState
	in    int // inotify descriptor
	stop  int // eventfd
	wds   [2]int32
	done  chan struct{}
	check chan struct{} // tests: a decision was taken
}

// startLockMirror starts mirroring Claude Code's refresh lock for a synced
// bind-dir credential; nil when the entry is not one or mirroring is off.
func (g *Guard) startLockMirror(c *cred) *lockMirror {
	e := c.e
	if e.Agent != "claude" || e.Strategy != manifest.StrategyBindDir || os.Getenv(lockMirrorEnv) == "off" {
		return nil
	}
	var homeFd int
	err := g.home.as(func() (err error) {
		homeFd, _, err = g.home.openDir(e.ContainerTarget)
		return err
	})
	if err != nil {
		g.logf(1, "%s: refresh lock not mirrored: %v", c.name(), err)
		return nil
	}
	hostDir := path.Join(g.cfg.AuthDir, e.MountSrc())
	sync := func() {
		c.mu.Lock()
		c.sync(anySide, policy.OnEvent)
		c.mu.Unlock()
	}
	m, err := newLockMirror(claudeRefreshLock, lockStale, homeFd, g.home.user, path.Dir(path.Join(g.cfg.Home, e.ContainerTarget)), hostDir, sync, g.cfg.Logf)
	if err != nil {
		unix.Close(homeFd)
		g.logf(1, "%s: refresh lock not mirrored: %v", c.name(), err)
		return nil
	}
	return m
}

// newLockMirror takes ownership of homeFd (the home directory holding the
// lock, opened without following symlinks) and opens hostDir.
func newLockMirror(name string, stale time.Duration, homeFd int, user safefs.User, homeLabel, hostDir string, syncNow func(), log logf.Func) (*lockMirror, error) {
	hostFd, err := unix.Open(hostDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", hostDir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(hostFd, &st); err != nil {
		unix.Close(hostFd)
		return nil, fmt.Errorf("stat %s: %w", hostDir, err)
	}
	m := &lockMirror{name: name, stale: stale, syncNow: syncNow, logf: log, check: make(chan struct{}, 1)}
	m.dirs[home] = lockDir{fd: homeFd, owner: user, label: homeLabel}
	m.dirs[host] = lockDir{fd: hostFd, owner: safefs.User{UID: int(st.Uid), GID: int(st.Gid)}, label: hostDir}
	if err := m.watch(); err != nil {
		unix.Close(hostFd)
		return nil, err
	}
	m.done = make(chan struct{})
	go m.run()
	return m, nil
}

const lockMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_ATTRIB | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_ONLYDIR

func (m *lockMirror) watch() error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("inotify_init1: %w", err)
	}
	stop, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("eventfd: %w", err)
	}
	for s, d := range m.dirs {
		// Through /proc/self/fd: exactly the directory held open.
		wd, err := unix.InotifyAddWatch(fd, fmt.Sprintf("/proc/self/fd/%d", d.fd), lockMask)
		if err != nil {
			unix.Close(fd)
			unix.Close(stop)
			return fmt.Errorf("watch %s: %w", d.label, err)
		}
		m.wds[s] = int32(wd)
	}
	m.in, m.stop = fd, stop
	return nil
}

func (m *lockMirror) logfn(level int, format string, args ...any) {
	if m.logf != nil {
		m.logf(level, format, args...)
	}
}

// run decides on every event for the lock name, and every second while a
// mirror stands (for the stale time and the budget); idle, it sleeps.
func (m *lockMirror) run() {
	defer close(m.done)
	defer unix.Close(m.stop)
	defer unix.Close(m.in)
	defer unix.Close(m.dirs[host].fd)
	defer unix.Close(m.dirs[home].fd)
	buf := make([]byte, 16*1024)
	fds := []unix.PollFd{{Fd: int32(m.in), Events: unix.POLLIN}, {Fd: int32(m.stop), Events: unix.POLLIN}}
	m.decide()
	for {
		timeout := -1
		if m.st.held {
			timeout = 1000
		}
		n, err := unix.Poll(fds, timeout)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || fds[1].Revents != 0 {
			m.dropOnStop()
			return
		}
		if n == 0 {
			m.decide()
			continue
		}
		k, err := unix.Read(m.in, buf)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || k <= 0 {
			return
		}
		if m.relevant(buf[:k]) {
			m.decide()
		}
	}
}

// relevant reports whether a read of events names the lock (or lost some).
func (m *lockMirror) relevant(buf []byte) bool {
	for off := 0; off+unix.SizeofInotifyEvent <= len(buf); {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
		raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
		off += unix.SizeofInotifyEvent + int(ev.Len)
		for len(raw) > 0 && raw[len(raw)-1] == 0 {
			raw = raw[:len(raw)-1]
		}
		if ev.Mask&unix.IN_Q_OVERFLOW != 0 || string(raw) == m.name {
			return true
		}
	}
	return false
}

// decide observes both sides and carries out the decision, until nothing
// is left to do.
func (m *lockMirror) decide() {
	for range 4 {
		obs := [2]lockObs{m.observe(home), m.observe(host)}
		st, steps, why := decideLock(m.st, obs, time.Now(), m.stale)
		if why != "" {
			m.logfn(1, "refresh lock %s: %s", m.name, why)
		}
		m.st = st
		if len(steps) == 0 {
			break
		}
		for _, s := range steps {
			m.do(s, obs)
		}
	}
	select {
	case m.check <- struct{}{}:
	default:
	}
}

func (m *lockMirror) observe(s side) lockObs {
	var st unix.Stat_t
	if err := unix.Fstatat(m.dirs[s].fd, m.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return lockObs{}
	}
	return lockObs{exists: true, ino: st.Ino, mtime: time.Unix(st.Mtim.Unix())}
}

func (m *lockMirror) do(s lockStep, obs [2]lockObs) {
	d := m.dirs[s.on]
	switch s.act {
	case actCreate:
		var ino uint64
		err := m.asOwner(d, func() error {
			if err := unix.Mkdirat(d.fd, m.name, 0o700); err != nil {
				return err
			}
			fd, err := unix.Openat(d.fd, m.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return err
			}
			ino = st.Ino
			return setMtime(fd, m.st.mtime)
		})
		if err != nil {
			// EEXIST: that side's agent took its own lock at the same
			// instant; both refresh, as without mirroring.
			m.st.held = false
			m.logfn(2, "refresh lock %s: not mirrored to the %s: %v", m.name, s.on, err)
			return
		}
		m.st.mirrorIno = ino
		m.logfn(2, "refresh lock %s: mirrored from the %s to the %s", m.name, other(s.on), s.on)
	case actTouch:
		_ = m.asOwner(d, func() error {
			fd, err := unix.Openat(d.fd, m.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			var st unix.Stat_t
			if unix.Fstat(fd, &st) != nil || st.Ino != m.st.mirrorIno {
				return nil
			}
			return setMtime(fd, m.st.mtime)
		})
	case actRelease:
		if m.syncNow != nil {
			// The holder wrote its new token before it released its lock:
			// it reaches this side before this side may lock again.
			m.syncNow()
		}
		m.remove(s.on, obs[s.on].ino)
		m.logfn(2, "refresh lock %s: released in the %s", m.name, s.on)
	case actDrop:
		m.remove(s.on, obs[s.on].ino)
	case actRemoveOrigin:
		m.remove(s.on, obs[s.on].ino)
	}
}

// remove removes the lock directory at the name if it is still the inode
// seen (an empty directory only: rmdir never follows a symlink).
func (m *lockMirror) remove(s side, ino uint64) {
	d := m.dirs[s]
	_ = m.asOwner(d, func() error {
		var st unix.Stat_t
		if err := unix.Fstatat(d.fd, m.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Ino != ino {
			return nil
		}
		return unix.Unlinkat(d.fd, m.name, unix.AT_REMOVEDIR)
	})
}

// setMtime sets an open directory's mtime (and atime).
func setMtime(fd int, t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), []unix.Timespec{ts, ts}, 0)
}

// asOwner runs fn with the filesystem identity of the directory's owner
// (safefs.As: their uid, gid and groups), so what it creates is theirs and
// it can do nothing there they could not.
func (m *lockMirror) asOwner(d lockDir, fn func() error) error { return safefs.As(d.owner, fn) }

// dropOnStop removes the mirror still standing when the guard stops: the
// child is gone, and with it whatever the home's agent held; a host lock
// mirrored into the home no longer matters to anyone.
func (m *lockMirror) dropOnStop() {
	if !m.st.held || m.st.mirrorIno == 0 {
		return
	}
	m.remove(other(m.st.origin), m.st.mirrorIno)
	m.st.held = false
}

// close stops the mirror and waits for it.
func (m *lockMirror) close() {
	if m == nil {
		return
	}
	one := [8]byte{1}
	unix.Write(m.stop, one[:])
	<-m.done
}
