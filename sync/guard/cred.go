package guard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/caw-dev/caw/agents"
	"github.com/caw-dev/caw/manifest"
	"github.com/caw-dev/caw/sync/policy"
	"golang.org/x/sys/unix"
)

// side is one end of a synced credential: home, the copy in the user's
// home; host, the host's file (its mount).
type side = policy.Side

const (
	home = policy.Home
	host = policy.Host
)

// cred is one synced credential. Every decision takes mu, so the event loop
// and Flush never interleave on one credential.
type cred struct {
	g      *Guard
	e      manifest.Entry
	host   hostSide
	homeWd int32
	// homeWds are the watches on the home: the copy's directory, then the
	// directories above it (see watchHome). Only the worker changes them,
	// under mu, after setup.
	homeWds []homeWatch

	mu sync.Mutex
	// mem is what the decisions remember of both sides (the content
	// seen, what is owed, write-backs, the history of tokens, the host
	// writes the rate limit counts); at is what the I/O knows of each
	// side, hostAt what only the host side has.
	mem    policy.Memory
	at     [2]sideIO
	hostAt hostIO
	said   map[string]bool
	rep    CredReport // what Report tells: the counts
	settle *time.Timer
	closed bool
	// recheck deletes the files in at[s].kept after recheckDelay.
	recheck *time.Timer
	// limit is the timer that delivers a host write the rate limit held
	// back.
	limit *time.Timer

	// The worker: the event loop posts event masks per side (or a re-read
	// after an overflow) under qmu and wakes it; it handles them under mu.
	qmu     sync.Mutex
	queued  [2]uint32
	reread  bool
	busy    bool
	inline  int // the event reader is handling events itself (takeInline)
	wake    chan struct{}
	quit    chan struct{}
	stopped chan struct{}
	started bool
}

// sideIO is what the guard's I/O remembers of one side.
type sideIO struct {
	// readFailed: the last read failed (EACCES for a guard without root,
	// a foreign owner...): a chmod or chown on it, which only raises
	// ATTRIB, may make it readable, so ATTRIB re-reads it.
	readFailed bool
	// kept are files the guard's writes displaced, deleted after
	// recheckDelay (see swapIn): an agent writing in place into one of
	// them is put back instead of lost.
	kept []keptFile
}

// hostIO is what the guard's I/O remembers of the host side only.
type hostIO struct {
	// dead: the mount no longer reaches the host's file (a rename there
	// detached it); readOnly: writes are refused, and owedRO: one was
	// skipped for it, which a chmod or chown there retries.
	dead, readOnly, owedRO bool
}

// view is one side's content as read, classified once classified is set.
type view struct {
	policy.Content
	classified bool
}

func (c *cred) name() string { return c.e.Agent + " credential " + c.e.ContainerTarget }

// post hands events on side s (or a re-read of both sides) to the
// credential's worker, started on first use. Events that pile up while it
// works are merged: every decision reads the sides afresh.
func (c *cred) post(s side, mask uint32, reread bool) {
	c.qmu.Lock()
	c.queued[s] |= mask
	c.reread = c.reread || reread
	c.busy = true
	if !c.started {
		c.started = true
		c.wake, c.quit, c.stopped = make(chan struct{}, 1), make(chan struct{}), make(chan struct{})
		go c.work()
	}
	c.qmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *cred) work() {
	defer close(c.stopped)
	for {
		select {
		case <-c.quit:
			return
		case <-c.wake:
		}
		for {
			c.qmu.Lock()
			q, reread := c.queued, c.reread
			c.queued, c.reread = [2]uint32{}, false
			if q == [2]uint32{} && !reread {
				c.busy = false
				c.qmu.Unlock()
				break
			}
			c.qmu.Unlock()
			c.mu.Lock()
			if reread {
				c.sync(anySide, policy.OnEvent)
			}
			for s, mask := range q {
				if mask != 0 {
					c.handle(side(s), mask)
				}
			}
			c.mu.Unlock()
		}
	}
}

// handle is what the events mask on side s call for.
func (c *cred) handle(s side, mask uint32) {
	if s == host && mask&unix.IN_ATTRIB != 0 {
		c.checkDead()
	}
	if s == home && mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0 {
		c.g.rewatchHome(c)
	}
	if mask&^uint32(unix.IN_ATTRIB|unix.IN_ISDIR) != 0 {
		c.sync(s, policy.OnEvent)
	} else {
		// ATTRIB alone (chmod, chown, link count) changes no content,
		// but may end a failure to read or write the side.
		c.attrChanged(s)
	}
}

func (c *cred) idle() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return !c.busy && c.inline == 0
}

// takeInline reports whether the event reader may handle c's events
// itself: its worker has none queued or in hand (they come first). Until
// doneInline, events for c are queued for the worker.
func (c *cred) takeInline() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	if c.busy || c.inline > 0 {
		return false
	}
	c.inline++
	return true
}

func (c *cred) doneInline() {
	c.qmu.Lock()
	c.inline--
	c.qmu.Unlock()
}

// stopWorker stops the worker (after the event loop) and waits for it.
func (c *cred) stopWorker() {
	c.qmu.Lock()
	started := c.started
	c.started = true // no new worker after this
	c.qmu.Unlock()
	if started && c.quit != nil {
		close(c.quit)
		<-c.stopped
	}
}

// once logs a message the first time its key is seen for this credential.
func (c *cred) once(key string, level int, format string, args ...any) {
	if c.said[key] {
		return
	}
	c.said[key] = true
	c.g.logf(level, format, args...)
}

func (c *cred) read(s side) view {
	v := c.readRaw(s)
	c.classify(&v)
	return v
}

// classify sets the status of content readRaw read (it is already set for
// content that could not be read).
func (c *cred) classify(v *view) {
	if !v.classified {
		v.St = c.mem.Classify(v.Data, v.Sum, time.Now())
		v.classified = true
	}
}

// readRaw reads side s and hashes its content, leaving the classification
// (a JSON decode) to classify: the guard's own writes echo back as events
// whose content it only needs to recognise.
func (c *cred) readRaw(s side) view {
	var data []byte
	var err error
	if s == home {
		data, err = c.g.home.read(c.e.ContainerTarget)
	} else {
		data, err = c.host.read()
	}
	v := view{Content: policy.Content{Data: data}}
	c.at[s].readFailed = err != nil && !errors.Is(err, fs.ErrNotExist)
	var hostile *hostileError
	switch {
	case err == nil:
		v.Sum = policy.Sum(data)
		return v
	case errors.Is(err, fs.ErrNotExist):
		v.St = agents.Status{State: agents.Missing}
	case errors.As(err, &hostile):
		c.rep.hostile(s)
		c.once("hostile "+err.Error(), 1, "%s: ignoring the %s side: %v", c.name(), s, err)
		v.St = agents.Status{State: agents.Invalid}
	default:
		c.once("read "+err.Error(), 1, "%s: cannot read the %s side: %v", c.name(), s, err)
		v.St = agents.Status{State: agents.Invalid}
	}
	v.classified = true
	v.Sum = policy.Unreadable(v.St.State)
	return v
}

// copyIn is the start-up sync: the host is the source of truth, so its
// usable credential replaces the home copy (one left from an earlier run of
// this container is never pushed: see policy.Decide).
func (c *cred) copyIn() {
	c.sync(anySide, policy.OnStart)
}

// anySide is the trigger of a sync that no single side's event caused.
const anySide = policy.NoSide

// sync brings both sides to the freshest usable content after a change on
// trigger (or anySide). It re-decides when a side changed under a write.
func (c *cred) sync(trigger side, m policy.Cause) error {
	var err error
	owed := anySide
	for range 8 {
		if owed, err = c.syncOnce(trigger, m, owed); !errors.Is(err, errChanged) {
			return err
		}
		trigger = anySide
	}
	return err
}

// syncOnce reads the sides, takes one decision (policy.Decide) and carries
// it out. owed is the side a write of the previous decision found changed
// (errChanged), which is returned for the next one: the content that write
// carried never reached it, so it is still owed to that side. Without
// this, the next decision would see only that side change and take its new
// content (say, the token the other side held just before) for a
// regression, or leave a side it left alone without the fresher token.
func (c *cred) syncOnce(trigger side, m policy.Cause, owed side) (side, error) {
	var v [2]view
	var have [2]bool
	if trigger != anySide && m == policy.OnEvent && !c.mem.Owing() {
		var done bool
		if v[trigger], done = c.readTrigger(trigger); done {
			return anySide, nil
		}
		have[trigger] = true
	}
	for s := range 2 {
		if !have[s] {
			v[s] = c.read(side(s))
		}
	}
	now := time.Now()
	a := policy.Decide(c.mem.Input(m, now, contents(v), owed))
	return c.apply(a, v, m, now)
}

// readTrigger reads only the side that moved. Most events are the guard's
// own writes echoing back, or a writer truncating before it writes: that
// one read settles them (done), without reading the other side.
func (c *cred) readTrigger(trigger side) (v view, done bool) {
	v = c.readRaw(trigger)
	if v.Sum == c.mem.Side[trigger].Seen {
		return v, true
	}
	c.classify(&v)
	return v, c.mem.Inert(trigger, v.Content)
}

func contents(v [2]view) [2]policy.Content { return [2]policy.Content{v[0].Content, v[1].Content} }

// apply carries out decision a taken on the sides read (v): it records
// what was seen, logs a's notes and does what a says.
func (c *cred) apply(a policy.Action, v [2]view, m policy.Cause, now time.Time) (side, error) {
	c.mem.Taken(a, contents(v), m, now)
	// Known once this decision is taken (not before: whether the content
	// was known decides what a regression is).
	defer c.mem.Held(contents(v))
	c.note(a)
	switch a.Verb {
	case policy.Settled:
		c.settled()
	case policy.Hold:
		c.owe()
	case policy.Later:
		c.armLimit(a.At.Sub(now))
	case policy.Write:
		if a.WriteBack {
			c.rep.wroteBack(a.Dst)
		}
		src := c.merge(v[other(a.Dst)], v[a.Dst])
		if err := c.write(a.Dst, src, v[a.Dst], m); err != nil || src.Sum == v[other(a.Dst)].Sum || m == policy.OnStart {
			return a.Dst, err
		}
		// The merge kept something of dst's that the winning side lacks:
		// that side gets the merged document too, so both hold both (not
		// at start-up, when nothing goes to the host, nor what the host
		// would refuse from the home).
		if other(a.Dst) == host && !c.mem.MayReachHost(src.Content, v[host].Content, now) {
			c.once("merge refused", 0, "%s: the merged document is not written back to the host: what it keeps of the container's copy is refused there (a forged claim or another account)", c.name())
			return a.Dst, nil
		}
		return other(a.Dst), c.write(other(a.Dst), src, v[other(a.Dst)], m)
	}
	return anySide, nil
}

// note logs a's notes and counts a refusal.
func (c *cred) note(a policy.Action) {
	for _, n := range a.Notes {
		if n.Once != "" {
			c.once(n.Once, n.Level, "%s: %s", c.name(), n.Msg)
		} else {
			c.g.logf(n.Level, "%s: %s", c.name(), n.Msg)
		}
	}
	c.rep.refused(a.Refused)
}

// merge is the content that replaces cur when src wins (policy's Merge).
func (c *cred) merge(src, cur view) view {
	m := c.mem.Merge(src.Content, cur.Content, time.Now())
	return view{Content: m, classified: true}
}

// armLimit arms the timer that delivers a host write the rate limit held
// back; it runs only then, never while idle.
func (c *cred) armLimit(d time.Duration) {
	if c.closed {
		return
	}
	if c.limit == nil {
		c.limit = time.AfterFunc(d, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if !c.closed && c.mem.Side[host].Owed {
				c.sync(anySide, policy.OnLimit)
			}
		})
		return
	}
	c.limit.Reset(d)
}

// owe (re)arms the settle timer for a side owed content that looks torn
// (policy.SettleDelay of quiet); it runs only then, never while idle.
func (c *cred) owe() {
	if c.closed {
		return
	}
	if c.settle == nil {
		c.settle = time.AfterFunc(policy.SettleDelay, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if !c.closed && c.mem.Owing() {
				c.sync(anySide, policy.OnSettle)
			}
		})
		return
	}
	c.settle.Reset(policy.SettleDelay)
}

// settled: both sides agree, nothing is owed: the settle timer stops.
func (c *cred) settled() {
	if c.settle != nil {
		c.settle.Stop()
	}
}

// stop cancels the timers for good and settles the kept files.
func (c *cred) stop() {
	c.closed = true
	if c.settle != nil {
		c.settle.Stop()
	}
	if c.recheck != nil {
		c.recheck.Stop()
	}
	if c.limit != nil {
		c.limit.Stop()
	}
	c.recheckKept()
}

// recheckDelay is how long a file the guard displaced is kept: longer than
// an agent takes between opening its credential file and writing it.
const recheckDelay = 100 * time.Millisecond

// keptFile is a file a write displaced: its name, the content hash it had,
// and what the guard wrote over it.
type keptFile struct {
	name string
	was  [32]byte
	mine []byte
}

// keep records a displaced file and arms the recheck timer; the timer runs
// only after a write, never while idle.
func (c *cred) keep(s side, k keptFile) {
	c.at[s].kept = append(c.at[s].kept, k)
	if c.closed {
		c.recheckKept()
		return
	}
	if c.recheck == nil {
		c.recheck = time.AfterFunc(recheckDelay, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if !c.closed && c.recheckKept() {
				c.sync(anySide, policy.OnEvent)
			}
		})
		return
	}
	c.recheck.Reset(recheckDelay)
}

// recheckKept deletes the kept files, first putting back any an agent
// wrote into since (see recheckAt); it reports whether one was.
func (c *cred) recheckKept() bool {
	wrote := false
	for s := range c.at {
		for _, k := range c.at[s].kept {
			prefer := c.preferOver(policy.Sum(k.mine))
			var changed bool
			if side(s) == home {
				changed = c.g.home.recheck(c.e.ContainerTarget, k.name, k.was, k.mine, prefer)
			} else {
				changed = c.host.recheck(k.name, k.was, k.mine, prefer)
			}
			if changed {
				c.g.logf(1, "%s: the %s side was written in place into the file the guard had just replaced; that write was kept", c.name(), side(s))
				wrote = true
			}
		}
		c.at[s].kept = c.at[s].kept[:0]
	}
	return wrote
}

// write replaces dst's content (cur) with src's, unless dst changed since
// it was read (errChanged: decide again).
func (c *cred) write(dst side, src, cur view, m policy.Cause) error {
	if dst == host && (c.hostAt.dead || c.hostAt.readOnly) {
		c.hostAt.owedRO = c.hostAt.readOnly
		return nil
	}
	still := func(now []byte, err error) bool {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return cur.St.State == agents.Missing
			}
			return !cur.St.State.Usable()
		}
		return policy.Sum(now) == cur.Sum
	}
	var err error
	prefer := c.preferOver(src.Sum)
	var kept string
	if dst == home {
		kept, err = c.g.home.replace(c.e.ContainerTarget, src.Data, 0o600, still, prefer)
	} else {
		kept, err = c.host.write(src.Data, still, prefer)
	}
	if kept != "" {
		c.keep(dst, keptFile{kept, cur.Sum, src.Data})
	}
	switch {
	case err == nil:
		now := time.Now()
		c.rep.wrote(dst)
		c.mem.Wrote(dst, src.Content, m, now)
		c.g.logf(2, "%s: %s -> %s (%s)", c.name(), other(dst), dst, src.St.Describe(now))
		return nil
	case errors.Is(err, errChanged):
		return err
	case errors.Is(err, errDead):
		c.hostAt.dead = true
		c.reportDead()
	case errors.Is(err, errReadOnly):
		c.hostAt.readOnly, c.hostAt.owedRO = true, true
		if errors.Is(err, unix.EROFS) {
			c.once("ro", 0, "%s: the host file is read-only (%v); container refreshes will not reach the host (mount it :rw)", c.name(), err)
		} else {
			c.once("ro", 0, "%s: the host file is not writable by the guard (uid %d): %v; container refreshes will not reach the host until its owner or mode lets uid %d write it",
				c.name(), os.Geteuid(), err, os.Geteuid())
		}
	default:
		c.once("write "+err.Error(), 0, "%s: %v", c.name(), err)
	}
	return err
}

// beats orders the two files a racing write leaves on the sides of a swap
// (see swapIn): a is put back over b when it ranks higher. The guard's own
// file (content mine) ranks lowest; then a complete logged-out stub; then
// usable credentials, by freshness; and above all a torn file, whose
// writer is still at work in it (it opened it by name before the swap moved
// it): its content will be the latest change, and deleting it would lose
// that write. Anything that cannot be read (a user's symlink or FIFO) ranks
// as torn, so it is put back where its owner left it rather than deleted.
func (c *cred) beats(a []byte, aerr error, b []byte, berr error, mine [32]byte) bool {
	ta, sa := c.tier(a, aerr, mine)
	tb, sb := c.tier(b, berr, mine)
	if ta != tb {
		return ta > tb
	}
	return ta == tierUsable && agents.Compare(sa, sb) > 0
}

// preferOver is swapIn's prefer for a write of the content hashing to mine.
func (c *cred) preferOver(mine [32]byte) preferFunc {
	return func(disp []byte, derr error, at []byte, aerr error) bool {
		return c.beats(disp, derr, at, aerr, mine)
	}
}

// The tiers beats ranks files by, lowest first.
const (
	tierMine = iota
	tierStub
	tierUsable
	tierTorn
)

func (c *cred) tier(data []byte, err error, mine [32]byte) (int, agents.Status) {
	if err != nil {
		return tierTorn, agents.Status{}
	}
	if policy.Sum(data) == mine {
		return tierMine, agents.Status{}
	}
	st := agents.Classify(c.mem.Format, data, time.Now())
	switch {
	case st.State == agents.Empty || st.State == agents.Invalid:
		return tierTorn, st
	case !st.State.Usable():
		return tierStub, st
	}
	return tierUsable, st
}

func other(s side) side { return s.Other() }

func (c *cred) reportDead() {
	c.once("dead", 0, "%s: the host replaced its file by rename, so this container's mount no longer reaches it; refreshes here stay here (fix: caw setup --strategy %s=bind-dir, then restart the container)",
		c.name(), c.e.Agent)
}

// attrChanged handles an event that only changed attributes (chmod, chown,
// link count) of side s. It costs nothing unless s has a failure a new
// owner or mode may fix: a read that failed is retried, and so is a host
// write refused as not writable.
func (c *cred) attrChanged(s side) {
	switch {
	case c.at[s].readFailed:
		c.sync(s, policy.OnEvent)
		if !c.at[s].readFailed {
			c.g.logf(1, "%s: the %s side is readable again", c.name(), s)
		}
	case s == host && c.hostAt.readOnly && !c.hostAt.dead:
		c.hostAt.readOnly = false
		if c.hostAt.owedRO {
			c.hostAt.owedRO = false
			c.mem.Side[host].Owed = true
			c.sync(anySide, policy.OnEvent)
		}
	}
}

// checkDead looks for the host rename that detaches a file bind mount (the
// mounted inode's link count drops to 0; ATTRIB is the only event).
func (c *cred) checkDead() {
	if !c.hostAt.dead && c.host.dead() {
		c.hostAt.dead = true
		c.reportDead()
	}
}

// flush pushes the home copy to the host if it is the fresher, without
// relying on any event having been seen.
func (c *cred) flush() error {
	c.recheckKept()
	if err := c.sync(anySide, policy.OnFlush); err != nil && !errors.Is(err, errDead) && !errors.Is(err, errReadOnly) {
		return fmt.Errorf("%s: %w", c.name(), err)
	}
	return nil
}
