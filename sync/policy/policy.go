// Package policy owns the sync rules: which of a credential's two copies
// wins, and what is written where. Decide is one pure function from what
// the two sides hold and what happened to an Action; Memory is what its
// caller remembers between decisions and how two sides just read become an
// Input. Nothing here touches a file, a clock or a timer, so every rule has
// a table test that needs no root and runs on any OS.
//
// Two callers share it, each with the person's own store in the host's
// place: caw-init's guard (sync/guard: the host file mounted into the
// container, and the home copy the agent uses), and the Keychain bridge
// on a Mac (host/bridge: the Keychain item, and the mirror file containers
// mount and write).
//
// The rules, in the order Decide applies them:
//
//  1. Equal content: nothing to do (nothing is owed any more).
//  2. A host login wins: a usable token appears on the host that the caller
//     has never seen, and not within RaceWindow of its own last write there
//     (that is a refresh racing the home's). It goes to the home whatever
//     the home's copy claims, and everything seen before becomes stale: no
//     stale content is ever written to the host again. Only a token the
//     home writes afterwards (a real refresh) can replace the login.
//     Start-up counts as a login: the host is the source of truth, a home
//     copy left from before is never pushed (the guard's final flush carries
//     the container's last refresh).
//  3. The fresher usable side wins (agents.Compare); between equally fresh
//     different contents, the most recent change wins.
//  4. Three checks before anything is written to the host: the home content
//     must claim a plausible expiry (agents.Inspect: at most now plus the
//     agent's longest token lifetime), name the same account as the host's
//     where the host's names one (Codex, opencode; naming none is refused:
//     agents.SameAccount), and not be stale. A refusal is reported once and
//     leaves both sides alone; stale content the home went back to is a
//     regression of the home (rule 7).
//  5. A torn side (empty, or not parseable: its writer is mid-write) is not
//     written over: it is owed the content, and the settle timer delivers it
//     if its writer stays quiet for SettleDelay (or the final flush does).
//  6. A logged-out stub or a deleted file that is the side's own latest
//     change is left alone (a logout), unless the agent's stubs are its
//     reaction to invalid_grant (Claude) and the other side holds a token
//     the stub's side was handed or a fresher one than it held: then that
//     token is put back at once (a collision's repair). A deleted file is
//     always a logout.
//  7. A side that went back to a token seen before (an agent rewriting the
//     old token it holds in memory), or took a new but older one (two
//     refreshes raced), gets the fresher one written back, at most
//     MaxWriteBacks times per WriteBackWindow; then it is reported once and
//     left alone.
//  8. Every home-to-host write but the final flush's is rate-limited per
//     credential (Limits): a burst, then one per Limits.Every; a write the
//     limit holds back is delivered by a timer, with whatever is freshest
//     then.
package policy

import (
	"fmt"
	"time"

	"github.com/caw-dev/caw/agents"
)

// Side is one end of a synced credential.
type Side int

// The two sides. Host is the person's own store: the host's file for the
// guard, the Keychain for the bridge. Home is the copy the other party
// writes: the container home's copy, or the mirror file.
const (
	Home Side = iota
	Host
)

func (s Side) String() string {
	if s == Home {
		return "home"
	}
	return "host"
}

// Other is the side across from s.
func (s Side) Other() Side { return 1 - s }

// Cause is why a decision is taken.
type Cause int

const (
	// OnEvent: a side changed (an inotify, fsnotify or poll event, events
	// lost, a file the guard displaced written into, a Keychain read).
	OnEvent Cause = iota
	// OnStart: the start-up copy (before the agent runs, for the guard).
	OnStart
	// OnSettle: a side owed content stayed torn and quiet for SettleDelay
	// (its writer died): it gets the content.
	OnSettle
	// OnLimit: the rate limit's timer, to deliver a held-back host write.
	OnLimit
	// OnFlush: the last decision (the agent is gone, or the bridge stops):
	// the home's fresher content must reach the host now, even over a host
	// side that looks mid-write, and the rate limit holds nothing back.
	OnFlush
)

func (c Cause) String() string {
	return [...]string{"event", "start", "settle", "limit", "flush"}[c]
}

// SettleDelay is how long a torn side must stay quiet before it is written
// over anyway (its writer died mid-write).
const SettleDelay = 250 * time.Millisecond

// SideState is one side as a decision sees it.
type SideState struct {
	St  agents.Status
	Sum [32]byte
	// Changed: the content differs from what the caller last read or
	// wrote there.
	Changed bool
	// Known: usable content either side held before this decision.
	Known bool
	// Stale: content seen before the host's latest login (or at start-up).
	Stale bool
	// Owed: the side is owed the other's content (held back while it
	// looked torn, or by the rate limit, or a write to it found it changed).
	Owed bool
	// LeftAlone: the side kept going back to an older token and was left.
	LeftAlone bool
	// Prev is the status of the content the caller last saw there, and
	// PrevMine whether the caller had written it (handed it to that side).
	Prev     agents.Status
	PrevSum  [32]byte
	PrevMine bool
	// Claims is what the content claims (account, expiry) that its writer
	// could have made up.
	Claims agents.Claims
}

func (s SideState) torn() bool {
	return s.St.State == agents.Empty || s.St.State == agents.Invalid
}

// Limits is the home-to-host rate limit: Burst writes at once, then one per
// Every. A Burst of 0 or less is no limit.
type Limits struct {
	Burst int
	Every time.Duration
}

// DefaultLimits: four writes at once, then one every 3 s.
var DefaultLimits = Limits{Burst: 4, Every: 3 * time.Second}

// Input is everything a decision depends on.
type Input struct {
	Cause Cause
	Now   time.Time
	Side  [2]SideState
	// Names are the sides' names in the notes ("": home, host).
	Names [2]string
	// RepairStubs: the agent writes a logged-out stub when its refresh
	// token is refused (invalid_grant), and deletes its file to log out.
	RepairStubs bool
	// HostWrittenAt is when the caller last wrote the host.
	HostWrittenAt time.Time
	// WriteBacks are the times of the write-backs to each side within
	// WriteBackWindow.
	WriteBacks [2][]time.Time
	// Limits and HostDue: a home-to-host write is due no earlier than
	// HostDue - (Burst-1)*Every (a GCRA: HostDue is the theoretical arrival
	// time of the next write).
	Limits  Limits
	HostDue time.Time
}

// name is how the notes call side s.
func (in Input) name(s Side) string {
	if n := in.Names[s]; n != "" {
		return n
	}
	return s.String()
}

// Verb is what an Action does.
type Verb int

const (
	// Leave both sides as they are.
	Leave Verb = iota
	// Settled: both sides agree; nothing is owed.
	Settled
	// Write the other side's content over Dst.
	Write
	// Hold: Dst is torn; owe it the content and arm the settle timer.
	Hold
	// Later: the rate limit holds back a write to Dst until At.
	Later
)

func (v Verb) String() string {
	return [...]string{"leave", "settled", "write", "hold", "later"}[v]
}

// Note is a line to log at Level: a line with a Once key is logged once
// per credential.
type Note struct {
	Level int
	Once  string
	Msg   string
}

// Action is a decision.
type Action struct {
	Verb Verb
	Dst  Side
	At   time.Time // for Later
	// Login: the host's content is a login; what was seen before is stale.
	Login bool
	// WriteBack: the write is a write-back, counted at Now for Dst.
	WriteBack bool
	// LeaveAlone: Dst is left alone from now on (reported).
	LeaveAlone bool
	// Unowe: Dst is owed nothing any more (its own logout).
	Unowe bool
	// Refused: why the home's content was kept from the host ("": it was
	// not), one of the Refused* reasons.
	Refused string
	Notes   []Note
}

// Why Decide keeps the home's content from the host (Action.Refused).
const (
	RefusedImplausible = "implausible"
	RefusedAccount     = "account"
)

func (a Action) String() string {
	s := a.Verb.String()
	if a.Verb != Leave && a.Verb != Settled {
		s += " " + a.Dst.String()
	}
	return s
}

func (a *Action) say(level int, once, format string, args ...any) {
	a.Notes = append(a.Notes, Note{level, once, fmt.Sprintf(format, args...)})
}

// Regression policy: a side that went back to an older token gets the
// fresher one written back, at most MaxWriteBacks times per window; after
// that it is reported once and left alone (an agent holding an old token in
// memory would otherwise fight the caller forever).
const (
	MaxWriteBacks   = 3
	WriteBackWindow = time.Minute
)

// RaceWindow: a new host token within this of the caller's own write there
// is a refresh that raced the home's, not a login.
const RaceWindow = time.Second

// Decide takes one decision. See the rules at the top of this file.
func Decide(in Input) Action {
	var a Action
	h, H := in.Side[Home], in.Side[Host]
	if h.Sum == H.Sum {
		a.Verb = Settled
		return a
	}
	if hostLogin(in) {
		return login(a, in)
	}
	if in.Cause == OnStart {
		// The host is the source of truth at start-up: a usable host copy
		// replaces the home's, and nothing goes the other way.
		if H.St.State.Usable() {
			return deliver(a, in, Home, false)
		}
		a.say(1, "", "the %s's credential is %s; nothing copied", in.name(Host), H.St.State)
		return a
	}
	dst, ok := behind(in)
	if !ok {
		return a // neither side has anything worth syncing
	}
	if dst == Host {
		if a, stop := gateHost(a, in); stop {
			return a
		}
	}
	return toward(a, in, dst)
}

// hostLogin: the host has a new usable token the home did not bring, and
// not within RaceWindow of the caller's own write there: a login (or a
// refresh) on the host, which goes to the home.
func hostLogin(in Input) bool {
	h, H := in.Side[Home], in.Side[Host]
	newHome := h.Changed && h.St.State.Usable() && !h.Known
	return H.Changed && H.St.State.Usable() && !H.Known && !newHome &&
		(in.Cause == OnStart || in.HostWrittenAt.IsZero() || in.Now.Sub(in.HostWrittenAt) >= RaceWindow)
}

// login delivers the host's new token to the home, waiting while the home
// is torn.
func login(a Action, in Input) Action {
	a.Login = true
	if in.Cause == OnStart {
		return deliver(a, in, Home, false)
	}
	if in.Side[Home].torn() && in.Cause == OnEvent {
		a.Verb, a.Dst = Hold, Home
		return a
	}
	a.say(2, "", "a new %s token (a login there, or its refresh): it replaces the %s copy", in.name(Host), in.name(Home))
	return deliver(a, in, Home, false)
}

// behind is the side holding the older token (ties go to the side that did
// not change); ok is false when neither side has anything worth syncing.
func behind(in Input) (dst Side, ok bool) {
	h, H := in.Side[Home], in.Side[Host]
	cmp := agents.Compare(h.St, H.St)
	if cmp == 0 {
		if !h.St.State.Usable() {
			return Home, false
		}
		switch {
		case h.Changed:
			cmp = 1
		case H.Changed:
			cmp = -1
		default:
			return Home, false
		}
	}
	if cmp > 0 {
		return Host, true
	}
	return Home, true
}

// gateHost keeps from the host a home copy that is implausible, of another
// account, or stale; stop is true when the decision is taken (a is it).
func gateHost(a Action, in Input) (_ Action, stop bool) {
	h, H := in.Side[Home], in.Side[Host]
	if why := h.Claims.Implausible; why != "" {
		a.Refused = RefusedImplausible
		a.say(0, "implausible "+why, "the %s copy is not written to the %s: %s (a forged or broken credential)", in.name(Home), in.name(Host), why)
		return a, true
	}
	if !agents.SameAccount(h.Claims, H.Claims) {
		a.Refused = RefusedAccount
		a.say(0, "account", "the %s copy is for another account than the %s's: it is not written to the %s", in.name(Home), in.name(Host), in.name(Host))
		return a, true
	}
	if h.Stale {
		// Content from before the host's login (or start-up) never
		// goes to the host; the home going back to it is a regression
		// of the home.
		if !h.Changed || !H.St.State.Usable() || h.Owed {
			return a, true
		}
		return regressed(a, in, Home, h), true
	}
	return a, false
}

// toward decides whether src's token goes to dst, the side behind.
func toward(a Action, in Input, dst Side) Action {
	src, cur := in.Side[dst.Other()], in.Side[dst]
	srcChanged, curChanged := src.Changed || cur.Owed, cur.Changed
	switch {
	case in.Cause == OnSettle:
	case cur.torn():
		// dst may be mid-write (a truncate before an in-place write, a
		// writer pausing mid-file): writing now would interleave with its
		// writer. Its next event re-decides; if it stays torn and quiet,
		// the settle timer delivers src.
		if !srcChanged {
			return a
		}
		if in.Cause != OnFlush {
			a.say(2, "", "the %s side is %s; waiting for its writer", in.name(dst), cur.St.State)
			a.Verb, a.Dst = Hold, dst
			return a
		}
	case !cur.St.State.Usable():
		return unusable(a, in, dst, srcChanged)
	case curChanged && !srcChanged && !cur.Known:
		// dst changed to a token never seen before that is older than
		// src's: two refreshes raced (each side took one at about the same
		// moment). The fresher one goes back, counted as a write-back.
		if stop := budget(&a, in, dst); stop {
			return a
		}
		a.say(2, "", "the %s side took an older token than the %s side holds; writing the fresher one back", in.name(dst), in.name(dst.Other()))
		return deliver(a, in, dst, true)
	case curChanged && !srcChanged:
		return regressed(a, in, dst, cur)
	case in.Cause == OnFlush:
		// dst holds an older usable token: the last chance to update it.
	case !srcChanged:
		return a // nothing new since the last decision
	}
	return deliver(a, in, dst, false)
}

// unusable decides for a dst that holds no usable token: a logged-out
// stub, a deleted or a broken file.
func unusable(a Action, in Input, dst Side, srcChanged bool) Action {
	src, cur := in.Side[dst.Other()], in.Side[dst]
	if cur.Changed && in.RepairStubs && cur.St.State == agents.LoggedOut &&
		((cur.PrevMine && cur.PrevSum == src.Sum) || agents.Compare(src.St, cur.Prev) > 0) {
		// The agent's answer to invalid_grant after a refresh raced
		// the other side's, which holds a token this side was handed
		// or a fresher one than it had: put it back.
		if stop := budget(&a, in, dst); stop {
			return a
		}
		a.say(1, "", "the %s side wrote a logged-out stub over a token it had been handed (a refresh refused after a race); putting the freshest token back", in.name(dst))
		return deliver(a, in, dst, true)
	}
	// A complete logged-out stub or a deleted file: left as it is when
	// that is dst's own latest change (a deliberate logout), replaced
	// when src brings a new login.
	if cur.Changed {
		a.Unowe, a.Dst = true, dst
		return a
	}
	if !srcChanged {
		return a
	}
	return deliver(a, in, dst, false)
}

// regressed: dst went back to a token it held before (an agent rewrote the
// old token it keeps in memory): the fresher one goes back, within budget.
func regressed(a Action, in Input, dst Side, cur SideState) Action {
	if cur.LeftAlone {
		return a
	}
	if stop := budget(&a, in, dst); stop {
		return a
	}
	a.say(1, "", "the %s copy went back to an older token; writing the fresher one back", in.name(dst))
	return deliver(a, in, dst, true)
}

// budget counts a write-back to dst; stop means the budget is spent and
// dst is left alone from now on (reported once).
func budget(a *Action, in Input, dst Side) (stop bool) {
	if in.Side[dst].LeftAlone {
		return true
	}
	n := 1
	for _, t := range in.WriteBacks[dst] {
		if in.Now.Sub(t) < WriteBackWindow {
			n++
		}
	}
	if n > MaxWriteBacks {
		a.LeaveAlone, a.Dst = true, dst
		a.say(0, "", "the %s copy went back to an older token %d times within %s; leaving it alone (restart the agent holding the old token)",
			in.name(dst), n, WriteBackWindow)
		return true
	}
	return false
}

// deliver writes the other side's content over dst, unless the rate limit
// holds a write to the host back.
func deliver(a Action, in Input, dst Side, writeBack bool) Action {
	a.Dst, a.WriteBack = dst, writeBack
	if dst == Host && in.Cause != OnFlush {
		if at := hostDueAt(in); at.After(in.Now) {
			a.Verb, a.At = Later, at
			a.say(2, "", "writing the %s again is held back until %s (rate limit)", in.name(Host), at.Format("15:04:05.000"))
			return a
		}
	}
	a.Verb = Write
	return a
}

// hostDueAt is the earliest time the rate limit lets the host be written.
func hostDueAt(in Input) time.Time {
	l := in.Limits
	if l.Burst <= 0 {
		return time.Time{}
	}
	return in.HostDue.Add(-time.Duration(l.Burst-1) * l.Every)
}

// nextHostDue is HostDue after a host write at now.
func nextHostDue(l Limits, due, now time.Time) time.Time {
	if due.Before(now) {
		due = now
	}
	return due.Add(l.Every)
}
