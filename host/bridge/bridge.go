// Package bridge keeps a Keychain-held credential and its mirror file in
// sync both ways, on the host: macOS agents keep their login in the login
// Keychain, containers can only mount files, so `caw setup` keeps a mirror
// file (mode 0600, outside the staging dir) that docker-flags mounts like
// any host credential, and `caw bridge` runs Run.
//
// Run watches each mirror with fsnotify (kqueue on macOS, inotify on
// Linux) and reads the Keychain every Interval. Every decision is
// policy.Decide, the guard's own (package sync/policy), with the Keychain
// in the host's place (the person's own store: a login there wins) and the
// mirror in the home's (containers write it): only usable logins cross; a
// new token in the Keychain replaces the mirror whatever the mirror claims;
// the mirror's content reaches the Keychain only with a plausible expiry,
// for the same account, and not if it was there before the Keychain's
// latest login or the bridge's start (at start-up the Keychain is the
// source of truth, unless it still holds what both sides held when last in
// sync and only the mirror changed: a container's refresh made while no
// bridge ran, see synced.go); Keychain writes are rate-limited and a side that keeps
// going back to an old token is left alone; a torn mirror is waited for.
// A locked keychain (an SSH session) is waited for; a denied access prompt
// stops the bridge from touching that item again until it is restarted,
// so the user is not asked over and over. This file is the I/O around the
// decision: the reads, the writes, the timers and the log.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/caw-dev/caw/agents"
	"github.com/caw-dev/caw/host/keychain"
	"github.com/caw-dev/caw/internal/logf"
	"github.com/caw-dev/caw/sync/policy"
)

// DefaultInterval is how often the Keychain is read: a host refresh reaches
// the mirror within it; a container refresh reaches the Keychain at once.
const DefaultInterval = 10 * time.Second

// keychainTimeout bounds one security run; long enough for a person to
// answer an access prompt.
const keychainTimeout = 2 * time.Minute

// The sides, as policy sees them: the Keychain is the person's own store,
// as the host file is for the guard; the mirror is what containers write.
const (
	Keychain = policy.Host
	Mirror   = policy.Home
)

// names are the sides' names in the log.
var names = [2]string{Keychain: "Keychain", Mirror: "mirror"}

// Options configure Run.
type Options struct {
	Pairs    []Pair
	Store    keychain.Store
	Interval time.Duration // 0: DefaultInterval
	Logf     logf.Func
	// Ready, when set, is called once the first sync is done and the
	// mirrors are watched.
	Ready func()
	// StateDir is where each pair's synced file is kept (synced.go): the
	// bridge config's directory, which no container sees. Empty: none, and
	// the Keychain always wins at start-up.
	StateDir string
}

type bridge struct {
	o       Options
	ctx     context.Context
	pairs   []*pair
	fired   chan fired
	w       *fsnotify.Watcher
	watched map[string]bool // the mirrors' directories w watches
}

// fired is a pair's timer (settle or limit) going off.
type fired struct {
	i     int
	cause policy.Cause
}

// Run syncs until ctx is done, then takes a last decision (a flush) for
// every pair and returns.
func Run(ctx context.Context, o Options) error {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Logf == nil {
		o.Logf = func(int, string, ...any) {}
	}
	if len(o.Pairs) == 0 {
		return errors.New("nothing to bridge: no credential of this setup is in the Keychain")
	}
	b := &bridge{o: o, ctx: ctx, fired: make(chan fired, 2*len(o.Pairs)), watched: map[string]bool{}}
	for i, p := range o.Pairs {
		a, _ := agents.Lookup(p.Agent)
		pr := &pair{Pair: p, b: b, i: i, said: map[string]bool{},
			mem: policy.Memory{Format: p.Format, RepairStubs: a.StubOnRefusal, Limits: policy.DefaultLimits, Names: names}}
		pr.synced, pr.hasSynced = LoadSynced(o.StateDir, p.Agent)
		b.pairs = append(b.pairs, pr)
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch mirrors: %w", err)
	}
	defer w.Close()
	b.w = w
	b.watch()
	for _, p := range b.pairs {
		p.sync(nil, policy.OnStart)
	}
	o.Logf(1, "bridging %d Keychain item(s); reading the Keychain every %s", len(b.pairs), o.Interval)
	if o.Ready != nil {
		o.Ready()
	}
	return b.loop()
}

// watch watches every mirror's directory not watched yet (again after one
// was removed or renamed).
func (b *bridge) watch() {
	for _, p := range b.pairs {
		d := filepath.Dir(p.Mirror)
		if b.watched[d] {
			continue
		}
		if err := b.w.Add(d); err != nil {
			p.once("watch", 0, "%s: cannot watch %s: %v (re-run caw setup); retrying every %s", p.Agent, d, err, b.o.Interval)
			continue
		}
		b.watched[d] = true
		delete(p.said, "watch")
	}
}

// loop handles mirror events, Keychain ticks and timers until ctx is done.
func (b *bridge) loop() error {
	tick := time.NewTicker(b.o.Interval)
	defer tick.Stop()
	for {
		select {
		case <-b.ctx.Done():
			// The last decision, with a fresh context: a change the
			// events have not brought yet still gets across, and what the
			// rate limit held back is written now (at the next start the
			// Keychain is the source of truth).
			b.ctx = context.Background()
			for _, p := range b.pairs {
				p.stopTimers()
				if !p.denied {
					p.sync(nil, policy.OnFlush)
				}
			}
			return nil
		case ev, ok := <-b.w.Events:
			if !ok {
				return errors.New("mirror watch closed")
			}
			if b.watched[ev.Name] && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				delete(b.watched, ev.Name)
			}
			for _, p := range b.pairs {
				if ev.Name == p.Mirror {
					p.onMirror()
				}
			}
		case err, ok := <-b.w.Errors:
			if !ok {
				return errors.New("mirror watch closed")
			}
			b.o.Logf(0, "watching the mirrors: %v; resyncing every pair", err)
			for _, p := range b.pairs {
				p.sync(nil, policy.OnEvent)
			}
		case <-tick.C:
			b.watch()
			for _, p := range b.pairs {
				p.onKeychainTick()
			}
		case f := <-b.fired:
			p := b.pairs[f.i]
			if f.cause == policy.OnSettle {
				p.settle = nil
			} else {
				p.limit = nil
			}
			if p.mem.Owing() && !p.denied {
				p.sync(nil, f.cause)
			}
		}
	}
}

// pair is one bridged credential's state; only Run's goroutine touches it.
type pair struct {
	Pair
	b *bridge
	i int
	// mem is what the decisions remember of both sides.
	mem    policy.Memory
	said   map[string]bool
	denied bool
	locked bool
	// started: the start-up decision is taken (a Keychain that could not
	// be read at start defers it).
	started bool
	// retry: a decision could not be taken (the Keychain could not be
	// read); the next look at either side takes it.
	retry         bool
	settle, limit *time.Timer
	// synced is the content both sides last held in common, as recorded
	// in the synced file (hasSynced: there is one).
	synced    [32]byte
	hasSynced bool
}

func (p *pair) once(key string, level int, format string, args ...any) {
	if p.said[key] {
		return
	}
	p.said[key] = true
	p.b.o.Logf(level, format, args...)
}

// absent is content that is not there (Missing) or cannot be read
// (Invalid, which a decision treats as torn).
func absent(s agents.State) policy.Content {
	return policy.Content{St: agents.Status{State: s}, Sum: policy.Unreadable(s)}
}

// readKeychain reads the item; ok is false when the Keychain cannot be
// read now (locked, denied, failing), which decides nothing.
func (p *pair) readKeychain() (policy.Content, bool) {
	if p.denied {
		return policy.Content{}, false
	}
	ctx, cancel := context.WithTimeout(p.b.ctx, keychainTimeout)
	defer cancel()
	data, err := p.b.o.Store.Read(ctx, p.Item)
	if err != nil && !errors.Is(err, keychain.ErrNotFound) {
		p.keychainFailed(err, "read")
		return policy.Content{}, false
	}
	if p.locked {
		p.locked = false
		p.b.o.Logf(0, "%s: the keychain is unlocked again; syncing", p.Agent)
	}
	delete(p.said, "keychain")
	if err != nil {
		return absent(agents.Missing), true
	}
	return p.mem.Read(data, time.Now()), true
}

func (p *pair) keychainFailed(err error, what string) {
	switch {
	case errors.Is(err, keychain.ErrLocked):
		if !p.locked {
			p.locked = true
			p.b.o.Logf(0, "%s: cannot %s the Keychain item (%s): the keychain is locked and nobody can be asked to unlock it here, as in an SSH session; retrying every %s (unlock it: security unlock-keychain)",
				p.Agent, what, p.Item, p.b.o.Interval)
		}
	case errors.Is(err, keychain.ErrDenied):
		p.denied = true
		p.b.o.Logf(0, "%s: access to the Keychain item (%s) was denied at the prompt; the bridge leaves it alone from now on, and refreshes stop crossing between the Mac and containers (restart caw bridge and choose Always Allow to resume)",
			p.Agent, p.Item)
	default:
		p.once("keychain", 0, "%s: cannot %s the Keychain: %v", p.Agent, what, err)
	}
}

func (p *pair) readMirror() policy.Content {
	data, err := ReadMirror(p.Mirror)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return absent(agents.Missing)
	case err != nil:
		p.once("mirror "+err.Error(), 0, "%s: cannot read the mirror: %v", p.Agent, err)
		return absent(agents.Invalid)
	}
	return p.mem.Read(data, time.Now())
}

// onMirror handles an event on the mirror. Most are the bridge's own
// writes echoing back or a writer mid-write: one read of the mirror
// settles them without touching the Keychain.
func (p *pair) onMirror() {
	if p.denied {
		return
	}
	v := p.readMirror()
	if p.quiet(Mirror, v) {
		return
	}
	p.sync(map[policy.Side]policy.Content{Mirror: v}, policy.OnEvent)
}

// onKeychainTick reads the Keychain; only a change there (or a side owed
// content) reads the mirror too.
func (p *pair) onKeychainTick() {
	v, ok := p.readKeychain()
	if !ok || p.quiet(Keychain, v) {
		return
	}
	p.sync(map[policy.Side]policy.Content{Keychain: v}, policy.OnEvent)
}

// quiet reports whether side s, just read as v, needs no decision
// (policy's Inert), as long as nothing is owed or pending.
func (p *pair) quiet(s policy.Side, v policy.Content) bool {
	if p.mem.Owing() || p.retry || !p.started {
		return false
	}
	return p.mem.Inert(s, v)
}

// sync brings both sides to the content the decisions pick, for cause c;
// have holds sides already read. A write that finds its side changed
// decides again, that side still owed what the write carried.
func (p *pair) sync(have map[policy.Side]policy.Content, c policy.Cause) {
	owed := policy.NoSide
	defer p.recordSynced()
	for range 8 {
		var again bool
		if owed, again = p.syncOnce(have, c, owed); !again {
			return
		}
		have = nil
	}
}

// recordSynced updates the synced file when both sides now hold the same
// usable content (two missing or unreadable sides hold nothing in common).
func (p *pair) recordSynced() {
	k, m := p.mem.Side[Keychain].Seen, p.mem.Side[Mirror].Seen
	if p.b.o.StateDir == "" || k != m || !p.mem.Side[Keychain].Prev.State.Usable() || (p.hasSynced && k == p.synced) {
		return
	}
	if err := SaveSynced(p.b.o.StateDir, p.Agent, k); err != nil {
		p.once("synced", 0, "%s: %v (a refresh made in a container while no bridge runs will be lost)", p.Agent, err)
		return
	}
	p.synced, p.hasSynced = k, true
}

// carriedOver reports, at start-up, whether the mirror changed while no
// bridge ran and the Keychain did not (synced.go); if so the bridge's
// memory is set to what both held then, so that the decision sees a change
// of the mirror, and nothing of the Keychain's as new.
func (p *pair) carriedOver(v [2]policy.Content) bool {
	if !p.hasSynced || v[Keychain].Sum != p.synced || v[Mirror].Sum == p.synced || !v[Mirror].St.State.Usable() {
		return false
	}
	p.mem.Saw(Keychain, v[Keychain], false)
	p.mem.Saw(Mirror, policy.Content{St: v[Keychain].St, Sum: p.synced}, false)
	p.mem.Held([2]policy.Content{v[Keychain], v[Keychain]})
	p.b.o.Logf(1, "%s: the mirror changed while no bridge ran and the Keychain did not (a container's refresh): deciding on it as on any change", p.Agent)
	return true
}

// syncOnce reads what have lacks, takes one decision and carries it out;
// it reports whether to decide again, and the side then still owed.
func (p *pair) syncOnce(have map[policy.Side]policy.Content, c policy.Cause, owed policy.Side) (policy.Side, bool) {
	var v [2]policy.Content
	for _, s := range []policy.Side{Keychain, Mirror} {
		x, ok := have[s]
		switch {
		case ok:
		case s == Keychain:
			if x, ok = p.readKeychain(); !ok {
				p.retry = true
				return policy.NoSide, false
			}
		default:
			x = p.readMirror()
		}
		v[s] = x
	}
	p.retry = false
	if !p.started {
		c, p.started = policy.OnStart, true
		if p.carriedOver(v) {
			c = policy.OnEvent
		}
	}
	now := time.Now()
	in := p.mem.Input(c, now, v, owed)
	a := policy.Decide(in)
	p.mem.Taken(a, v, c, now)
	defer p.mem.Held(v)
	for _, n := range a.Notes {
		if n.Once != "" {
			p.once(n.Once, n.Level, "%s: %s", p.Agent, n.Msg)
		} else {
			p.b.o.Logf(n.Level, "%s: %s", p.Agent, n.Msg)
		}
	}
	switch a.Verb {
	case policy.Settled:
		if p.settle != nil {
			p.settle.Stop()
			p.settle = nil
		}
	case policy.Hold:
		// Quiet means unchanged: only a change of the torn side (its
		// writer at work) restarts the wait, not another look at it
		// (the Keychain may be read more often than SettleDelay).
		if in.Side[a.Dst].Changed || p.settle == nil {
			p.arm(&p.settle, policy.SettleDelay, policy.OnSettle)
		}
	case policy.Later:
		p.arm(&p.limit, a.At.Sub(now), policy.OnLimit)
	case policy.Write:
		dst, src := a.Dst, p.mem.Merge(v[a.Dst.Other()], v[a.Dst], now)
		if changed := p.write(dst, src, v[dst], c); changed || src.Sum == v[dst.Other()].Sum || c == policy.OnStart {
			return dst, changed
		}
		// The merge kept something of dst's that the winning side lacks:
		// that side gets the merged document too (not at start-up, when
		// nothing goes to the Keychain, nor what the Keychain would refuse
		// from the mirror).
		if dst.Other() == Keychain && !p.mem.MayReachHost(src, v[Keychain], now) {
			p.once("merge refused", 0, "%s: the merged document is not written back to the Keychain: what it keeps of the mirror is refused there (a forged claim or another account)", p.Agent)
			return dst, false
		}
		return dst.Other(), p.write(dst.Other(), src, v[dst.Other()], c)
	}
	return policy.NoSide, false
}

// arm (re)arms timer *t to deliver cause c after d.
func (p *pair) arm(t **time.Timer, d time.Duration, c policy.Cause) {
	if *t != nil {
		(*t).Stop()
	}
	i, ch := p.i, p.b.fired
	*t = time.AfterFunc(d, func() {
		select {
		case ch <- fired{i, c}:
		default:
		}
	})
}

func (p *pair) stopTimers() {
	for _, t := range []*time.Timer{p.settle, p.limit} {
		if t != nil {
			t.Stop()
		}
	}
	p.settle, p.limit = nil, nil
}

// write puts src's content on dst, whose content was cur, for cause c; it
// reports whether dst changed under it (decide again). A write that fails
// leaves dst owed.
func (p *pair) write(dst policy.Side, src, cur policy.Content, c policy.Cause) (changed bool) {
	var err error
	if dst == Mirror {
		err = WriteMirror(p.Mirror, src.Data, func(now []byte, rerr error) bool {
			if errors.Is(rerr, fs.ErrNotExist) {
				return cur.St.State == agents.Missing
			}
			return rerr == nil && policy.Sum(now) == cur.Sum
		})
		if errors.Is(err, ErrChanged) {
			return true
		}
		if err != nil {
			p.mem.Side[Mirror].Owed = true
			p.once("write mirror "+err.Error(), 0, "%s: cannot write the mirror: %v", p.Agent, err)
			return false
		}
	} else {
		// security has no compare-and-swap: look again just before
		// writing, so a refresh on the Mac since the decision is decided
		// on rather than overwritten (a window of one exec remains).
		now, ok := p.readKeychain()
		if !ok {
			p.mem.Side[Keychain].Owed, p.retry = true, true
			return false
		}
		if now.Sum != cur.Sum {
			return true
		}
		ctx, cancel := context.WithTimeout(p.b.ctx, keychainTimeout)
		err = p.b.o.Store.Write(ctx, p.Item, src.Data)
		cancel()
		if err != nil {
			p.mem.Side[Keychain].Owed = true
			if errors.Is(err, keychain.ErrTooLarge) {
				p.once("too large", 0, "%s: %v; the Keychain keeps the older login", p.Agent, err)
				return false
			}
			p.keychainFailed(err, "write")
			return false
		}
	}
	now := time.Now()
	p.mem.Wrote(dst, src, c, now)
	p.b.o.Logf(1, "%s: wrote the %s's %s login to the %s", p.Agent, names[dst.Other()], src.St.Describe(now), names[dst])
	return false
}
