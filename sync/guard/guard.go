// Package guard is the credential guard that runs inside caw-init as root.
//
// For every manifest entry it copies the file into the container user's home
// before the child starts; for synced credentials (bind, bind-dir) it then
// keeps the home copy and the host's file in sync in both directions,
// reacting to inotify events within milliseconds, until the final Flush.
//
// Every decision is one call of policy.Decide (package sync/policy, a pure
// function whose rules are listed there and in docs/SECURITY.md, shared
// with the Keychain bridge), on contents classified by
// agents.Classify and compared by agents.Compare, the same functions `caw
// status` uses: only usable (valid or expired) content ever crosses, a host
// login wins, the fresher credential wins otherwise, nothing implausible,
// stale or for another account reaches the host, and host writes are
// rate-limited. The guard compares content, never timestamps, so it never
// reacts to its own writes. docs/ARCHITECTURE.md maps the goroutines,
// timers and files.
//
// Files: home.go is the only code touching the user's home, as the user;
// the descriptor-checked *at primitives, the bounded read, the staging dir
// checks and the crash-safe in-place write are internal/safefs (read both
// to trust the guard against a hostile user; a bind-dir host directory,
// which the user may be able to write too, uses the same primitives);
// host.go is the host side; inotify.go is the event source, poll.go a stat
// poll for host files shared through a VM (no host-side events); cred.go
// reads both sides, asks sync/policy and carries the decision out, one
// worker per credential;
// lockmirror.go mirrors Claude Code's refresh lock directory between home
// and host; report.go is what the guard reports per credential.
package guard

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/caw-dev/caw/agents"
	"github.com/caw-dev/caw/internal/logf"
	"github.com/caw-dev/caw/internal/safefs"
	"github.com/caw-dev/caw/manifest"
	"github.com/caw-dev/caw/sync/policy"
	"golang.org/x/sys/unix"
)

// Config is what caw-init hands the guard.
type Config struct {
	AuthDir string // where the staging dir is mounted (/tmp/caw_auth), for messages
	// Auth is the staging dir, opened and checked (safefs.TrustDir) by
	// caw-init; everything in it is opened beneath it. nil: the guard
	// opens AuthDir itself (tests).
	Auth     *os.File
	Manifest *manifest.Manifest // validated
	Home     string             // the target user's home in the container
	UID, GID int                // the target user's ids: every operation in Home runs as them
	Groups   []int              // the target user's supplementary groups
	Logf     logf.Func
	// Poll: 0 stat-polls the host sides on filesystems that raise no
	// host-side events (see poll.go); > 0 polls every host side at that
	// interval; < 0 never polls.
	Poll time.Duration
	// WriteBurst and WriteEvery bound the guard's writes of each host file
	// from the container's side: WriteBurst at once, then one per
	// WriteEvery (zero: 4 and 3 s; a negative WriteBurst: no limit).
	WriteBurst int
	WriteEvery time.Duration
}

// Guard keeps home copies and host credentials in sync.
type Guard struct {
	cfg     Config
	auth    *os.File // the staging dir
	home    *homeFS
	creds   []*cred
	skipped []CredReport // the synced entries setup could not sync (Report)
	in      *inotify
	poll    *poller
	done    chan struct{}
	locks   []*lockMirror // Claude Code's refresh locks, mirrored (lockmirror.go)

	stopOnce  sync.Once
	closeOnce sync.Once
}

// repairs: the agent's logged-out stubs are its answer to invalid_grant.
func repairs(agent string) bool {
	a, ok := agents.Lookup(agent)
	return ok && a.StubOnRefusal
}

// limits is the home-to-host rate limit Config asks for.
func (g *Guard) limits() policy.Limits {
	l := policy.DefaultLimits
	if g.cfg.WriteBurst != 0 {
		l.Burst = max(g.cfg.WriteBurst, 0)
	}
	if g.cfg.WriteEvery > 0 {
		l.Every = g.cfg.WriteEvery
	}
	return l
}

func (g *Guard) logf(level int, format string, args ...any) {
	if g.cfg.Logf != nil {
		g.cfg.Logf(level, format, args...)
	}
}

// Start copies every manifest entry into the home (before the child starts)
// and starts watching; it returns once the copy-in is done. Problems with one
// credential are logged and skip that credential; an error means the guard
// could not run at all.
func Start(ctx context.Context, cfg Config) (*Guard, error) {
	g := &Guard{cfg: cfg}
	if cfg.Manifest == nil || len(cfg.Manifest.Entries()) == 0 {
		return g, nil
	}
	if cfg.Home == "" || cfg.Home == "/" {
		g.logf(0, "the user (uid %d) has no home directory: agent credentials are not copied or synced (give the user a home)", cfg.UID)
		return g, nil
	}
	g.auth = cfg.Auth
	if g.auth == nil {
		d, err := os.OpenFile(cfg.AuthDir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			g.logf(0, "staging dir %s: %v: agent credentials are not copied or synced", cfg.AuthDir, err)
			return g, nil
		}
		g.auth = d
	}
	h, err := openHome(cfg.Home, safefs.User{UID: cfg.UID, GID: cfg.GID, Groups: cfg.Groups})
	if err != nil {
		g.logf(0, "%v: agent credentials are not copied or synced", err)
		return g, nil
	}
	g.home = h
	in, err := newInotify()
	if err != nil {
		h.close()
		return nil, err
	}
	g.in = in
	for _, e := range cfg.Manifest.Entries() {
		if err := ctx.Err(); err != nil {
			g.Close()
			return nil, err
		}
		if e.Synced() {
			if c, why := g.setup(e); c != nil {
				g.creds = append(g.creds, c)
			} else {
				g.skipped = append(g.skipped, CredReport{Agent: e.Agent, Target: e.ContainerTarget, NotSynced: why})
			}
		} else {
			g.copyFile(e)
		}
	}
	g.done = make(chan struct{})
	go g.read()
	g.poll = g.startPoll()
	return g, nil
}

// copyFile copies a copy-strategy file from the staging dir into the home,
// with its manifest mode, owned by the user. The file is opened beneath the
// staging dir, on its mount, without following any symlink.
func (g *Guard) copyFile(e manifest.Entry) {
	src := path.Join(g.cfg.AuthDir, e.Src)
	data, err := readStaged(int(g.auth.Fd()), e.Src, src)
	if err != nil {
		g.logf(0, "%s %s: not copied: cannot read %s: %v (run caw setup again)", e.Agent, e.ContainerTarget, src, err)
		return
	}
	if err := g.home.mkdirParents(e.ContainerTarget); err != nil {
		g.logf(0, "%s %s: not copied: %v", e.Agent, e.ContainerTarget, err)
		return
	}
	g.home.removeStaleTemps(e.ContainerTarget)
	if _, err := g.home.replace(e.ContainerTarget, data, e.Perm(), nil, nil); err != nil {
		g.logf(0, "%s %s: not copied: %v", e.Agent, e.ContainerTarget, err)
		return
	}
	g.logf(1, "copied %s", e.ContainerTarget)
}

// setup checks a synced credential's mount, watches both sides, and does
// the start-up copy. nil means skipped (already reported), for the reason
// returned (CredReport.NotSynced).
func (g *Guard) setup(e manifest.Entry) (*cred, string) {
	mount := path.Join(g.cfg.AuthDir, e.MountSrc())
	// The mount must be exactly where the manifest says, inside the
	// staging dir's own mount, reached without a symlink.
	fd, err := safefs.OpenMount(int(g.auth.Fd()), e.MountSrc(), unix.O_PATH|unix.O_NOFOLLOW)
	ok := err == nil
	if errors.Is(err, unix.EACCES) {
		// Only root gets through caw setup's locked mounts (<agent>/mnt,
		// mode 0400): this caw-init was started without root.
		g.logf(0, "%s credential %s: not synced: caw-init runs as uid %d, which cannot reach %s through caw's locked mounts: for docker run --user, run caw setup --unlocked-mounts on the host (or start the container as root)",
			e.Agent, e.ContainerTarget, os.Geteuid(), mount)
		return nil, NotSyncedLockedMount
	}
	if !ok {
		g.logf(0, "%s credential %s: %s is not mounted from the host, so it is not synced: run docker with $(caw docker-flags)",
			e.Agent, e.ContainerTarget, mount)
		return nil, NotSyncedNotMounted
	}
	m := os.NewFile(uintptr(fd), mount)
	defer m.Close()
	c := &cred{g: g, e: e, said: map[string]bool{}}
	c.mem = policy.Memory{Format: e.CredentialFormat(), RepairStubs: repairs(e.Agent), Limits: g.limits()}
	if e.Strategy == manifest.StrategyBindDir {
		b, err := openBindDir(m, mount, path.Base(e.Src))
		if err != nil {
			g.logf(0, "%s credential %s: not synced: %v", e.Agent, e.ContainerTarget, err)
			return nil, NotSyncedHostDir
		}
		c.host = b
	} else {
		if fi, err := m.Stat(); err == nil && !fi.Mode().IsRegular() {
			// Docker mounts a directory it created itself when the host
			// file did not exist at `docker run`.
			g.logf(0, "%s credential %s: the host file was missing when the container started (Docker mounted a directory instead), so it is not synced: log in on the host, run caw setup, restart the container",
				e.Agent, e.ContainerTarget)
			return nil, NotSyncedHostMissing
		}
		c.host = newBindFile(m, int(g.auth.Fd()), e.MountSrc(), mount)
	}
	if err := g.home.mkdirParents(e.ContainerTarget); err != nil {
		g.logf(0, "%s: not synced: %v", c.name(), err)
		c.host.close()
		return nil, NotSyncedHome
	}
	g.home.removeStaleTemps(e.ContainerTarget)
	g.home.keepSpares(e.ContainerTarget)
	// Watch before the first read, so no change between the two is missed.
	hp, name := c.host.watch()
	mask := uint32(fileMask)
	if name != "" {
		mask = dirMask
	}
	if _, err := g.in.add(hp, mask, target{c: c, side: host, name: name}); err != nil {
		if errors.Is(err, unix.EACCES) {
			// inotify needs read permission, as a guard started without
			// root (docker run --user) may lack on the host's file.
			g.logf(0, "%s: not synced: the guard runs as uid %d, which cannot read %s (make the host file readable by uid %d, e.g. chown it on the host, then restart the container)",
				c.name(), os.Geteuid(), hp, os.Geteuid())
		} else {
			g.logf(0, "%s: not synced: %v", c.name(), err)
		}
		c.host.close()
		return nil, NotSyncedUnwatchable
	}
	if err := g.watchHome(c); err != nil {
		g.logf(0, "%s: home changes are not synced: %v", c.name(), err)
	}
	c.mu.Lock()
	c.copyIn()
	c.checkDead()
	c.mu.Unlock()
	if m := g.startLockMirror(c); m != nil {
		g.locks = append(g.locks, m)
	}
	return c, ""
}

// homeWatch is one inotify watch a credential has on the home.
type homeWatch struct {
	wd int32
	t  target
}

// homeDirMask is the watch on the directory holding a home copy: the
// directory's own move or removal too, after which the copy lives
// elsewhere and the watch is re-established (rewatchHome).
const homeDirMask = dirMask | unix.IN_MOVE_SELF | unix.IN_DELETE_SELF

// upMask is the watch on each directory above it, up to the home: any
// change of the name on the way down (moved away, replaced, created,
// removed) also moves the home copy's directory.
const upMask = unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM | unix.IN_DELETE | unix.IN_ONLYDIR

// watchHome watches the directory holding the home copy (agents replace
// the file by rename, which a watch on the file itself would miss), and the
// directories above it within the home, as deep as they exist, each for the
// name of the next one, so that moving, replacing or creating any of them
// (mv ~/.claude ~/.claude.moved; mkdir ~/.claude) is followed.
func (g *Guard) watchHome(c *cred) error {
	rel := c.e.ContainerTarget
	dir := path.Dir(rel)
	var ws []homeWatch
	defer func() { c.homeWds = append(c.homeWds, ws...) }()
	add := func(dirRel string, mask uint32, t target) error {
		p, closer, err := g.home.watchDir(dirRel)
		if err != nil {
			return err
		}
		defer closer.Close()
		wd, err := g.in.add(p, mask, t)
		if err != nil {
			return err
		}
		ws = append(ws, homeWatch{wd, t})
		return nil
	}
	if dir != "." {
		parts := strings.Split(dir, "/")
		for i := range parts {
			if err := add(path.Join(parts[:i]...), upMask, target{c: c, side: home, name: parts[i], up: true}); err != nil {
				return err
			}
		}
	}
	t := target{c: c, side: home, name: path.Base(rel)}
	if err := add(dir, homeDirMask, t); err != nil {
		return err
	}
	c.homeWd = ws[len(ws)-1].wd
	return nil
}

// rewatchHome follows a home directory that was removed, moved away or
// replaced, or a directory above it. One that was removed is recreated (as
// the user); one moved away is not (the user is at work there: recreating
// it would race them), and the watches above it report when it is back.
func (g *Guard) rewatchHome(c *cred) {
	for _, w := range c.homeWds {
		g.in.remove(w.wd, w.t)
	}
	c.homeWds = nil
	c.homeWd = -1
	if g.in.takeGone(c) {
		if err := g.home.mkdirParents(c.e.ContainerTarget); err != nil {
			c.once("rewatch", 1, "%s: home changes are not synced until %s exists: %v", c.name(), path.Dir(c.e.ContainerTarget), err)
		}
	}
	if err := g.watchHome(c); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.once("rewatch", 1, "%s: home changes are not synced until %s is a directory again: %v", c.name(), path.Dir(c.e.ContainerTarget), err)
	}
}

// read is the event reader: one goroutine at a time reads the inotify
// events (see handle); the one that stops for good closes g.done.
func (g *Guard) read() {
	if g.in.run(g.handle, g.overflow) {
		close(g.done)
	}
}

// stallAfter is how long the event reader handles one credential's events
// itself before another goroutine takes the reading over.
const stallAfter = 20 * time.Millisecond

// handle carries out a batch of events. The reader handles a credential's
// events itself when its worker has nothing queued: handing them over
// would wake a second thread for every event, which on a 2-CPU machine
// costs the sync about 5% (bench, docs/FIGURES.md). A credential that
// takes longer than stallAfter (its host file's lock is held: the guard
// waits up to 2 s, see safefs.Flock) gets a new reader started meanwhile,
// and this one hands the rest of its batch to the workers and stops: a
// stuck host file delays the others' events by stallAfter at most.
func (g *Guard) handle(batch []dirty) bool {
	for i, d := range batch {
		c := d.t.c
		if !c.takeInline() {
			c.post(d.t.side, d.mask, false)
			continue
		}
		takeover := time.AfterFunc(stallAfter, g.read)
		c.mu.Lock()
		c.handle(d.t.side, d.mask)
		c.mu.Unlock()
		c.doneInline()
		if !takeover.Stop() {
			g.post(batch[i+1:])
			return false
		}
	}
	return true
}

// post hands a batch of events to the credentials' workers (the stat poll's,
// and the rest of a batch the reader stopped handling).
func (g *Guard) post(batch []dirty) {
	if len(batch) == 0 {
		return
	}
	for _, d := range batch {
		d.t.c.post(d.t.side, d.mask, false)
	}
	// Let the workers just readied run on this thread now. The event loop
	// next blocks in poll(2), a system call that keeps its P until sysmon
	// retakes it, so a worker would otherwise wait for another thread to
	// be woken to run it: about 200 µs more per sync on a 2-CPU VM
	// (BenchmarkLatencyHostToHomeBind). A worker that then blocks (a host
	// file's lock) gives the P back as any system call does.
	runtime.Gosched()
}

// overflow: events were lost, so every credential is re-read.
func (g *Guard) overflow() {
	g.logf(1, "inotify queue overflow: re-reading every credential")
	for _, c := range g.creds {
		c.post(home, 0, true)
	}
}

// readStaged reads a copy-strategy file rel of the staging dir authfd:
// beneath it, on its mount, no symlink followed, a regular file under the
// size cap, checked on the descriptor.
func readStaged(authfd int, rel, label string) ([]byte, error) {
	fd, err := safefs.Beneath(authfd, rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, true)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, &hostileError{Path: label, Why: "is or is reached through a symlink"}
	case errors.Is(err, unix.EXDEV):
		return nil, &hostileError{Path: label, Why: "is outside the staging dir or on another mount"}
	case err != nil:
		return nil, err
	}
	f := os.NewFile(uintptr(fd), label)
	defer f.Close()
	return safefs.ReadRegular(f, maxCopySize)
}

// Flush syncs whatever the home copies hold to the host side and returns only
// when the host side is written. caw-init calls it after the child exits. It
// reads both sides itself, so a write no event has reported yet is flushed.
// The credentials are flushed in parallel: one stuck host file does not
// hold back the others.
func (g *Guard) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("flush credentials: %w", err)
	}
	errs := make([]error, len(g.creds))
	var wg sync.WaitGroup
	for i, c := range g.creds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.mu.Lock()
			defer c.mu.Unlock()
			errs[i] = c.flush()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// idle reports whether every credential's worker has handled every event
// handed to it (tests use it to know that nothing more will happen).
func (g *Guard) idle() bool {
	for _, c := range g.creds {
		if !c.idle() {
			return false
		}
	}
	return true
}

// stopWatching stops the event loop and waits for it.
func (g *Guard) stopWatching() {
	g.stopOnce.Do(func() {
		g.poll.close()
		if g.in == nil {
			return
		}
		g.in.close()
		if g.done != nil {
			<-g.done
		} else {
			g.in.release()
		}
	})
}

// Close stops the watchers and releases the guard's descriptors.
func (g *Guard) Close() error {
	g.stopWatching()
	g.closeOnce.Do(func() {
		for _, m := range g.locks {
			m.close()
		}
		for _, c := range g.creds {
			c.stopWorker()
		}
		for _, c := range g.creds {
			c.mu.Lock()
			c.stop()
			c.host.close()
			c.mu.Unlock()
		}
		if g.home != nil {
			g.home.close()
		}
		if g.auth != nil && g.auth != g.cfg.Auth {
			g.auth.Close()
		}
	})
	return nil
}
