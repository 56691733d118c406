package guard

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/caw-dev/caw/agents"
	"github.com/caw-dev/caw/manifest"
	"golang.org/x/sys/unix"
)

// side is one end of a synced credential.
type side int

const (
	home side = iota
	host
)

func (s side) String() string {
	if s == home {
		return "home"
	}
	return "host"
}

// cred is one synced credential. Every decision takes mu, so the event loop
// and Flush never interleave on one credential.
type cred struct {
	g      *Guard
	e      manifest.Entry
	format string
	host   hostSide
	homeWd int32
	// homeWds are the watches on the home: the copy's directory, then the
	// directories above it (see watchHome). Only the worker changes them,
	// under mu, after setup.
	homeWds []homeWatch

	mu sync.Mutex
	// at is what the guard knows of each side; hostAt what only the host
	// side has.
	at     [2]sideMem
	hostAt hostMem
	said   map[string]bool
	rep    CredReport // what Report tells: the counts
	settle *time.Timer
	closed bool
	// recheck deletes the files in at[s].kept after recheckDelay.
	recheck *time.Timer
	// history holds the last usable contents either side held, to tell an
	// agent rewriting an old token from two fresh refreshes racing; each
	// with the count of contents remembered before it, so that those
	// remembered before staleBefore (the host's latest login, or start-up)
	// are stale: never written to the host again.
	history     [64]histEntry
	histN       int
	staleBefore int
	// limit is the timer that delivers a host write the rate limit held
	// back.
	limit *time.Timer

	// The worker: the event loop posts event masks per side (or a re-read
	// after an overflow) under qmu and wakes it; it handles them under mu.
	qmu     sync.Mutex
	queued  [2]uint32
	reread  bool
	busy    bool
	wake    chan struct{}
	quit    chan struct{}
	stopped chan struct{}
	started bool
}

// sideMem is what the guard remembers of one side between decisions.
type sideMem struct {
	// seen is the content (trailing whitespace trimmed) the side held when
	// the guard last read or wrote it: an event whose content matches is
	// the guard's own write or no change, and is ignored. Content, never
	// timestamps. prev is its status, and mine whether the guard wrote it.
	seen [32]byte
	prev agents.Status
	mine bool
	// owed: the side is owed the other's content, held back because it
	// looked mid-write (the settle timer delivers it once the side is
	// quiet) or by the rate limit (the limit timer does).
	owed bool
	// readFailed: the last read failed (EACCES for a guard without root,
	// a foreign owner...): a chmod or chown on it, which only raises
	// ATTRIB, may make it readable, so ATTRIB re-reads it.
	readFailed bool
	// writeBacks are the times of the write-backs to the side within
	// writeBackWindow; leftAlone is set once they exceed the budget.
	writeBacks []time.Time
	leftAlone  bool
	// kept are files the guard's writes displaced, deleted after
	// recheckDelay (see swapIn): an agent writing in place into one of
	// them is put back instead of lost.
	kept []keptFile
}

// hostMem is what the guard remembers of the host side only.
type hostMem struct {
	// dead: the mount no longer reaches the host's file (a rename there
	// detached it); readOnly: writes are refused, and owedRO: one was
	// skipped for it, which a chmod or chown there retries.
	dead, readOnly, owedRO bool
	// writtenAt is when the guard last wrote the host; due the rate
	// limit's state (see limits).
	writtenAt, due time.Time
}

type histEntry struct {
	sum [32]byte
	n   int
}

// view is one side's content as read, classified.
type view struct {
	data       []byte
	st         agents.Status
	sum        [32]byte
	classified bool // st is set
}

func (c *cred) name() string { return c.e.Agent + " credential " + c.e.ContainerTarget }

// remember records usable content either side held.
func (c *cred) remember(sum [32]byte) {
	if _, ok := c.known(sum); ok {
		return
	}
	c.history[c.histN%len(c.history)] = histEntry{sum, c.histN}
	c.histN++
}

// known reports whether sum is in the history, and when it came in.
func (c *cred) known(sum [32]byte) (n int, ok bool) {
	for i := range min(c.histN, len(c.history)) {
		if c.history[i].sum == sum {
			return c.history[i].n, true
		}
	}
	return 0, false
}

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
				c.sync(anySide, onEvent)
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
		c.sync(s, onEvent)
	} else {
		// ATTRIB alone (chmod, chown, link count) changes no content,
		// but may end a failure to read or write the side.
		c.attrChanged(s)
	}
}

func (c *cred) idle() bool {
	c.qmu.Lock()
	defer c.qmu.Unlock()
	return !c.busy
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
		v.st = agents.Classify(c.format, v.data, time.Now())
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
	v := view{data: data}
	c.at[s].readFailed = err != nil && !errors.Is(err, fs.ErrNotExist)
	var hostile *hostileError
	switch {
	case err == nil:
		v.sum = sha256.Sum256(trimJSON(data))
		return v
	case errors.Is(err, fs.ErrNotExist):
		v.st = agents.Status{State: agents.Missing}
	case errors.As(err, &hostile):
		c.rep.hostile(s)
		c.once("hostile "+err.Error(), 1, "%s: ignoring the %s side: %v", c.name(), s, err)
		v.st = agents.Status{State: agents.Invalid}
	default:
		c.once("read "+err.Error(), 1, "%s: cannot read the %s side: %v", c.name(), s, err)
		v.st = agents.Status{State: agents.Invalid}
	}
	v.classified = true
	// Unreadable content must never match real content.
	v.sum = sha256.Sum256([]byte("\x00" + v.st.State.String()))
	return v
}

// copyIn is the start-up sync: the host is the source of truth, so its
// usable credential replaces the home copy (one left from an earlier run of
// this container is never pushed: see decide).
func (c *cred) copyIn() {
	c.sync(anySide, onStart)
}

// anySide is the trigger of a sync that no single side's event caused.
const anySide side = -1

// sync brings both sides to the freshest usable content after a change on
// trigger (or anySide). It re-decides when a side changed under a write.
func (c *cred) sync(trigger side, m cause) error {
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

// syncOnce reads the sides, takes one decision (decide) and carries it
// out. owed is the side a write of the previous decision found changed
// (errChanged), which is returned for the next one: the content that write
// carried never reached it, so it is still owed to that side. Without
// this, the next decision would see only that side change and take its new
// content (say, the token the other side held just before) for a
// regression, or leave a side it left alone without the fresher token.
func (c *cred) syncOnce(trigger side, m cause, owed side) (side, error) {
	var v [2]view
	var have [2]bool
	if trigger != anySide && m == onEvent && !c.at[home].owed && !c.at[host].owed {
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
	a := decide(c.input(v, m, owed, now))
	return c.apply(a, v, m, now)
}

// readTrigger reads only the side that moved. Most events are the guard's
// own writes echoing back, or a writer truncating before it writes: that
// one read settles them (done), without reading the other side.
func (c *cred) readTrigger(trigger side) (v view, done bool) {
	v = c.readRaw(trigger)
	if v.sum == c.at[trigger].seen {
		return v, true
	}
	c.classify(&v)
	if !v.st.State.Usable() && !(v.st.State == agents.LoggedOut && c.repairs()) {
		// Nothing to propagate from it, and nothing to write to it
		// (it is mid-write, or its own deliberate logout).
		c.saw(trigger, v, false)
		return v, true
	}
	return v, false
}

// input is what decide needs to know of the two sides read (v) and of
// what the guard saw and did before.
func (c *cred) input(v [2]view, m cause, owed side, now time.Time) input {
	in := input{Cause: m, Now: now, RepairStubs: c.repairs(), HostWrittenAt: c.hostAt.writtenAt,
		WriteBacks: [2][]time.Time{c.at[home].writeBacks, c.at[host].writeBacks}, Limits: c.g.limits(), HostDue: c.hostAt.due}
	for s := range 2 {
		x := v[s]
		n, known := c.known(x.sum)
		st := sideState{St: x.st, Sum: x.sum, Changed: x.sum != c.at[s].seen || m == onStart,
			Known: known && m != onStart, Stale: known && n < c.staleBefore,
			Owed: c.at[s].owed || side(s) == owed, LeftAlone: c.at[s].leftAlone,
			Prev: c.at[s].prev, PrevSum: c.at[s].seen, PrevMine: c.at[s].mine}
		in.Side[s] = st
	}
	// Claims matter only for content that may go to the host: the home's,
	// and the host's account when the home's names one.
	if v[home].st.State.Usable() {
		in.Side[home].Claims = agents.Inspect(c.format, v[home].data, now)
		if len(in.Side[home].Claims.Accounts) > 0 && v[host].st.State.Usable() {
			in.Side[host].Claims = agents.Inspect(c.format, v[host].data, now)
		}
	}
	return in
}

// apply carries out decision a taken on the sides read (v): it records
// what was seen, logs a's notes and does what a says.
func (c *cred) apply(a action, v [2]view, m cause, now time.Time) (side, error) {
	for s := range 2 {
		c.saw(side(s), v[s], false)
	}
	// Known once this decision is taken (not before: whether the content
	// was known decides what a regression is).
	defer func() {
		for _, x := range v {
			if x.st.State.Usable() {
				c.remember(x.sum)
			}
		}
	}()
	if m == onStart || a.Login {
		// Everything seen so far, and what the home holds now, is stale;
		// a new host token is not (it is remembered after this), unless
		// this is the start-up copy.
		if v[home].st.State.Usable() {
			c.remember(v[home].sum)
		}
		if m == onStart && v[host].st.State.Usable() {
			c.remember(v[host].sum)
		}
		c.staleBefore = c.histN
	}
	c.note(a)
	switch a.Verb {
	case settled:
		c.settled()
	case hold:
		c.owe(a.Dst)
	case later:
		c.at[a.Dst].owed = true
		c.armLimit(a.At.Sub(now))
	case write:
		if a.WriteBack {
			c.countWriteBack(a.Dst, now)
			c.rep.wroteBack(a.Dst)
		}
		src := c.merge(v[other(a.Dst)], v[a.Dst])
		if err := c.write(a.Dst, src, v[a.Dst], m); err != nil || src.sum == v[other(a.Dst)].sum || m == onStart {
			return a.Dst, err
		}
		// The merge kept something of dst's that the winning side lacks:
		// that side gets the merged document too, so both hold both (not
		// at start-up, when nothing goes to the host).
		return other(a.Dst), c.write(other(a.Dst), src, v[other(a.Dst)], m)
	}
	return anySide, nil
}

// note logs a's notes and records the marks it sets on a side.
func (c *cred) note(a action) {
	for _, n := range a.Notes {
		if n.once != "" {
			c.once(n.once, n.level, "%s: %s", c.name(), n.msg)
		} else {
			c.g.logf(n.level, "%s: %s", c.name(), n.msg)
		}
	}
	c.rep.refused(a.Refused)
	if a.LeaveAlone {
		c.at[a.Dst].leftAlone = true
	}
	if a.Unowe {
		c.at[a.Dst].owed = false
	}
}

// merge is the content that replaces cur when src wins: src, with what
// the agent's merge keeps of cur (agents.Merge).
func (c *cred) merge(src, cur view) view {
	data := agents.Merge(c.format, src.data, cur.data)
	if string(data) == string(src.data) {
		return src
	}
	m := view{data: data, sum: sha256.Sum256(trimJSON(data))}
	c.classify(&m)
	if !m.st.State.Usable() {
		return src // never: a merge only adds members
	}
	return m
}

// saw records what side s holds as what the guard last saw there.
func (c *cred) saw(s side, x view, mine bool) {
	if c.at[s].seen != x.sum {
		c.at[s].seen, c.at[s].prev, c.at[s].mine = x.sum, x.st, mine
	}
}

// repairs: the agent's logged-out stubs are its answer to invalid_grant.
func (c *cred) repairs() bool {
	a, ok := agents.Lookup(c.e.Agent)
	return ok && a.StubOnRefusal
}

func (c *cred) countWriteBack(dst side, now time.Time) {
	kept := c.at[dst].writeBacks[:0]
	for _, t := range c.at[dst].writeBacks {
		if now.Sub(t) < writeBackWindow {
			kept = append(kept, t)
		}
	}
	c.at[dst].writeBacks = append(kept, now)
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
			if !c.closed && c.at[host].owed {
				c.sync(anySide, onLimit)
			}
		})
		return
	}
	c.limit.Reset(d)
}

// settleDelay is how long a torn side must stay quiet before the guard
// writes over it anyway (its writer died mid-write). The timer only runs in
// that case, never while idle.
const settleDelay = 250 * time.Millisecond

// owe marks dst as owed src's content and (re)arms the settle timer.
func (c *cred) owe(dst side) {
	c.at[dst].owed = true
	if c.closed {
		return
	}
	if c.settle == nil {
		c.settle = time.AfterFunc(settleDelay, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if !c.closed && (c.at[home].owed || c.at[host].owed) {
				c.sync(anySide, onSettle)
			}
		})
		return
	}
	c.settle.Reset(settleDelay)
}

// settled: both sides agree, nothing is owed.
func (c *cred) settled() {
	c.at[home].owed, c.at[host].owed = false, false
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
				c.sync(anySide, onEvent)
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
			prefer := c.preferOver(sha256.Sum256(trimJSON(k.mine)))
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
func (c *cred) write(dst side, src, cur view, m cause) error {
	if dst == host && (c.hostAt.dead || c.hostAt.readOnly) {
		c.hostAt.owedRO = c.hostAt.readOnly
		return nil
	}
	still := func(now []byte, err error) bool {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return cur.st.State == agents.Missing
			}
			return !cur.st.State.Usable()
		}
		return sha256.Sum256(trimJSON(now)) == cur.sum
	}
	var err error
	prefer := c.preferOver(src.sum)
	var kept string
	if dst == home {
		kept, err = c.g.home.replace(c.e.ContainerTarget, src.data, 0o600, still, prefer)
	} else {
		kept, err = c.host.write(src.data, still, prefer)
	}
	if kept != "" {
		c.keep(dst, keptFile{kept, cur.sum, src.data})
	}
	switch {
	case err == nil:
		c.rep.wrote(dst)
		c.saw(dst, src, true)
		c.at[dst].owed = false
		c.remember(src.sum)
		if dst == host {
			now := time.Now()
			c.hostAt.writtenAt = now
			if m != onFlush {
				c.hostAt.due = nextHostDue(c.g.limits(), c.hostAt.due, now)
			}
		}
		c.g.logf(2, "%s: %s -> %s (%s)", c.name(), other(dst), dst, src.st.Describe(time.Now()))
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
	if sha256.Sum256(trimJSON(data)) == mine {
		return tierMine, agents.Status{}
	}
	st := agents.Classify(c.format, data, time.Now())
	switch {
	case st.State == agents.Empty || st.State == agents.Invalid:
		return tierTorn, st
	case !st.State.Usable():
		return tierStub, st
	}
	return tierUsable, st
}

func other(s side) side { return 1 - s }

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
		c.sync(s, onEvent)
		if !c.at[s].readFailed {
			c.g.logf(1, "%s: the %s side is readable again", c.name(), s)
		}
	case s == host && c.hostAt.readOnly && !c.hostAt.dead:
		c.hostAt.readOnly = false
		if c.hostAt.owedRO {
			c.hostAt.owedRO = false
			c.at[host].owed = true
			c.sync(anySide, onEvent)
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
	if err := c.sync(anySide, onFlush); err != nil && !errors.Is(err, errDead) && !errors.Is(err, errReadOnly) {
		return fmt.Errorf("%s: %w", c.name(), err)
	}
	return nil
}
