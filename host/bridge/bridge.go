// Package bridge keeps a Keychain-held credential and its mirror file in
// sync both ways, on the host: macOS agents keep their login in the login
// Keychain, containers can only mount files, so `caw setup` keeps a mirror
// file (mode 0600, outside the staging dir) that docker-flags mounts like
// any host credential, and `caw bridge` runs Run.
//
// Run watches each mirror with fsnotify (kqueue on macOS, inotify on
// Linux) and reads the Keychain every Interval; every difference is settled
// by Decide, the guard's rule with the mirror in the home copy's place,
// classifying content with agents.Classify and ordering it with
// agents.Compare. A locked keychain (an SSH session) is waited for; a
// denied access prompt stops the bridge from touching that item again
// until it is restarted, so the user is not asked over and over.
package bridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/caw-dev/caw/agents"
	"github.com/caw-dev/caw/host/keychain"
	"github.com/caw-dev/caw/internal/logf"
)

// DefaultInterval is how often the Keychain is read: a host refresh reaches
// the mirror within it; a container refresh reaches the Keychain at once.
const DefaultInterval = 10 * time.Second

// keychainTimeout bounds one security run; long enough for a person to
// answer an access prompt.
const keychainTimeout = 2 * time.Minute

// settleDelay is how long a torn mirror must stay quiet before the bridge
// writes over it anyway (its writer died mid-write).
const settleDelay = 250 * time.Millisecond

// Regression policy, as the guard's: a side that goes back to an older
// token gets the fresher one back at most maxWriteBacks times a window.
const (
	maxWriteBacks   = 3
	writeBackWindow = time.Minute
)

// Options configure Run.
type Options struct {
	Pairs    []Pair
	Store    keychain.Store
	Interval time.Duration // 0: DefaultInterval
	Logf     logf.Func
	// Ready, when set, is called once the first sync is done and the
	// mirrors are watched.
	Ready func()
}

type bridge struct {
	o       Options
	ctx     context.Context
	pairs   []*pair
	settleC chan int
	w       *fsnotify.Watcher
	watched map[string]bool // the mirrors' directories w watches
}

// Run syncs until ctx is done, then syncs once more and returns.
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
	b := &bridge{o: o, ctx: ctx, settleC: make(chan int, len(o.Pairs)), watched: map[string]bool{}}
	for i, p := range o.Pairs {
		b.pairs = append(b.pairs, &pair{Pair: p, b: b, i: i, said: map[string]bool{}})
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch mirrors: %w", err)
	}
	defer w.Close()
	b.w = w
	b.watch()
	for _, p := range b.pairs {
		p.sync(nil, false)
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

// loop handles mirror events, Keychain ticks and settle timers until ctx
// is done.
func (b *bridge) loop() error {
	tick := time.NewTicker(b.o.Interval)
	defer tick.Stop()
	for {
		select {
		case <-b.ctx.Done():
			// One last look, with a fresh context: a change the events
			// have not brought yet still gets across.
			b.ctx = context.Background()
			for _, p := range b.pairs {
				p.onKeychainTick()
				p.onMirror()
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
				p.sync(nil, false)
			}
		case <-tick.C:
			b.watch()
			for _, p := range b.pairs {
				p.onKeychainTick()
			}
		case i := <-b.settleC:
			p := b.pairs[i]
			p.settle = nil
			if p.owed[Keychain] || p.owed[Mirror] {
				p.sync(nil, true)
			}
		}
	}
}

// pair is one bridged credential's state; only Run's goroutine touches it.
type pair struct {
	Pair
	b *bridge
	i int
	// seen is the content (trailing whitespace trimmed) each side held
	// when the bridge last read or wrote it: content, never timestamps.
	seen       [2][32]byte
	owed       [2]bool
	history    [16][32]byte
	histN      int
	writeBacks [2][]time.Time
	leftAlone  [2]bool
	said       map[string]bool
	denied     bool
	locked     bool
	// retry: a decision could not be taken (the Keychain could not be
	// read); the next look at either side takes it.
	retry  bool
	settle *time.Timer
}

type view struct {
	data []byte
	st   agents.Status
	sum  [32]byte
}

func (p *pair) once(key string, level int, format string, args ...any) {
	if p.said[key] {
		return
	}
	p.said[key] = true
	p.b.o.Logf(level, format, args...)
}

func sum(data []byte) [32]byte { return sha256.Sum256(bytes.TrimRight(data, " \t\r\n")) }

// stateSum stands for content that is not there or could not be read; it
// never matches real content.
func stateSum(s string) [32]byte { return sha256.Sum256([]byte("\x00" + s)) }

// readKeychain reads the item; ok is false when the Keychain cannot be
// read now (locked, denied, failing), which decides nothing.
func (p *pair) readKeychain() (view, bool) {
	if p.denied {
		return view{}, false
	}
	ctx, cancel := context.WithTimeout(p.b.ctx, keychainTimeout)
	defer cancel()
	data, err := p.b.o.Store.Read(ctx, p.Item)
	if err != nil && !errors.Is(err, keychain.ErrNotFound) {
		p.keychainFailed(err, "read")
		return view{}, false
	}
	if p.locked {
		p.locked = false
		p.b.o.Logf(0, "%s: the keychain is unlocked again; syncing", p.Agent)
	}
	delete(p.said, "keychain")
	if err != nil {
		return view{st: agents.Status{State: agents.Missing}, sum: stateSum("missing")}, true
	}
	return view{data: data, st: agents.Classify(p.Format, data, time.Now()), sum: sum(data)}, true
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

func (p *pair) readMirror() view {
	data, err := ReadMirror(p.Mirror)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return view{st: agents.Status{State: agents.Missing}, sum: stateSum("missing")}
	case err != nil:
		p.once("mirror "+err.Error(), 0, "%s: cannot read the mirror: %v", p.Agent, err)
		return view{st: agents.Status{State: agents.Invalid}, sum: stateSum("unreadable")}
	}
	delete(p.said, "mirror")
	return view{data: data, st: agents.Classify(p.Format, data, time.Now()), sum: sum(data)}
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
	p.sync(map[Side]view{Mirror: v}, false)
}

// onKeychainTick reads the Keychain; only a change there (or a side owed
// content) reads the mirror too.
func (p *pair) onKeychainTick() {
	v, ok := p.readKeychain()
	if !ok || p.quiet(Keychain, v) {
		return
	}
	p.sync(map[Side]view{Keychain: v}, false)
}

// quiet reports whether side s, just read as v, needs no decision: it did
// not change, or changed to something unusable (mid-write, or its own
// logout) while nothing is owed.
func (p *pair) quiet(s Side, v view) bool {
	if p.owed[Keychain] || p.owed[Mirror] || p.retry {
		return false
	}
	if v.sum == p.seen[s] {
		return true
	}
	if !v.st.State.Usable() {
		p.seen[s] = v.sum
		return true
	}
	return false
}

func (p *pair) remember(s [32]byte) {
	if p.known(s) {
		return
	}
	p.history[p.histN%len(p.history)] = s
	p.histN++
}

func (p *pair) known(s [32]byte) bool {
	for i := range min(p.histN, len(p.history)) {
		if p.history[i] == s {
			return true
		}
	}
	return false
}

// sync brings both sides to the content Decide picks; have holds sides
// already read. A write that finds the mirror changed decides again.
func (p *pair) sync(have map[Side]view, settle bool) {
	for range 8 {
		if !p.syncOnce(have, settle) {
			return
		}
		have, settle = nil, false
	}
}

// syncOnce takes one decision; it reports whether to decide again.
func (p *pair) syncOnce(have map[Side]view, settle bool) bool {
	var v [2]view
	for _, s := range []Side{Keychain, Mirror} {
		if x, ok := have[s]; ok {
			v[s] = x
			continue
		}
		if s == Keychain {
			x, ok := p.readKeychain()
			if !ok {
				p.retry = true
				return false
			}
			v[s] = x
		} else {
			v[s] = p.readMirror()
		}
	}
	p.retry = false
	in := Input{Settle: settle}
	for s := range 2 {
		in.St[s] = v[s].st
		in.Changed[s] = v[s].sum != p.seen[s]
		in.Owed[s] = p.owed[s]
		in.Known[s] = p.known(v[s].sum)
		p.seen[s] = v[s].sum
		if in.Changed[s] && (v[s].st.State == agents.LoggedOut || v[s].st.State == agents.Missing) {
			p.owed[s] = false // its own logout, after what it was owed
		}
	}
	defer func() {
		for _, x := range v {
			if x.st.State.Usable() {
				p.remember(x.sum)
			}
		}
	}()
	if v[Keychain].sum == v[Mirror].sum {
		p.owed = [2]bool{}
		return false
	}
	d := Decide(in)
	switch d.Action {
	case None:
		return false
	case Wait:
		p.b.o.Logf(2, "%s: the %s is %s; waiting for its writer", p.Agent, d.Dst, v[d.Dst].st.State)
		p.owed[d.Dst] = true
		// Quiet means unchanged: only a change of the torn side (its
		// writer at work) restarts the wait, not another look at it.
		if in.Changed[d.Dst] || p.settle == nil {
			p.armSettle()
		}
		return false
	}
	if d.Regression && p.limitWriteBack(d.Dst) {
		return false
	}
	return p.write(d.Dst, v[other(d.Dst)], v[d.Dst])
}

func (p *pair) armSettle() {
	if p.settle != nil {
		p.settle.Stop()
	}
	i, c := p.i, p.b.settleC
	p.settle = time.AfterFunc(settleDelay, func() {
		select {
		case c <- i:
		default:
		}
	})
}

// limitWriteBack applies the regression policy; true means leave dst alone.
func (p *pair) limitWriteBack(dst Side) bool {
	if p.leftAlone[dst] {
		return true
	}
	now := time.Now()
	kept := p.writeBacks[dst][:0]
	for _, t := range p.writeBacks[dst] {
		if now.Sub(t) < writeBackWindow {
			kept = append(kept, t)
		}
	}
	p.writeBacks[dst] = append(kept, now)
	if len(p.writeBacks[dst]) > maxWriteBacks {
		p.leftAlone[dst] = true
		p.b.o.Logf(0, "%s: the %s went back to an older token %d times within %s; leaving it alone (restart the agent holding the old token)",
			p.Agent, dst, len(p.writeBacks[dst]), writeBackWindow)
		return true
	}
	p.b.o.Logf(1, "%s: the %s went back to an older token; writing the fresher one back", p.Agent, dst)
	return false
}

// write puts src's content on dst, whose content was cur; it reports
// whether dst changed under it (decide again).
func (p *pair) write(dst Side, src, cur view) bool {
	var err error
	if dst == Mirror {
		err = WriteMirror(p.Mirror, src.data, func(now []byte, rerr error) bool {
			if errors.Is(rerr, fs.ErrNotExist) {
				return cur.st.State == agents.Missing
			}
			return rerr == nil && sum(now) == cur.sum
		})
		if errors.Is(err, ErrChanged) {
			return true
		}
		if err != nil {
			p.owed[Mirror] = true
			p.once("write mirror "+err.Error(), 0, "%s: cannot write the mirror: %v", p.Agent, err)
			return false
		}
	} else {
		// security has no compare-and-swap: look again just before
		// writing, so a refresh on the Mac since the decision is decided
		// on rather than overwritten (a window of one exec remains).
		now, ok := p.readKeychain()
		if !ok {
			p.owed[Keychain], p.retry = true, true
			return false
		}
		if now.sum != cur.sum {
			return true
		}
		ctx, cancel := context.WithTimeout(p.b.ctx, keychainTimeout)
		err = p.b.o.Store.Write(ctx, p.Item, src.data)
		cancel()
		if err != nil {
			p.owed[Keychain] = true
			if errors.Is(err, keychain.ErrTooLarge) {
				p.once("too large", 0, "%s: %v; the Keychain keeps the older login", p.Agent, err)
				return false
			}
			p.keychainFailed(err, "write")
			return false
		}
	}
	p.seen[dst] = src.sum
	p.owed[dst] = false
	p.b.o.Logf(1, "%s: wrote the %s's %s login to the %s", p.Agent, other(dst), src.st.Describe(time.Now()), dst)
	return false
}
