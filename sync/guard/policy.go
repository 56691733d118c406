package guard

import (
	"fmt"
	"time"

	"github.com/caw-dev/caw/agents"
)

// This file is the sync decision: one pure function, decide, from what the
// two sides hold and what happened to an action. cred.go reads the sides,
// calls decide, and carries the action out; nothing here touches a file,
// a clock or a timer, so every rule has a table test (policy_test.go) that
// needs no root. The rules, in the order decide applies them:
//
//  1. Equal content: nothing to do (nothing is owed any more).
//  2. A host login wins: a usable token appears on the host that the guard
//     has never seen, and not within raceWindow of the guard's own last
//     write there (that is a refresh racing the container's). It goes into
//     the container whatever the container's copy claims, and everything the
//     guard had seen before becomes stale: no stale content is ever written
//     to the host again. Only a token the container writes afterwards (a
//     real refresh) can replace the login. Start-up counts as a login: the
//     host is the source of truth, a home copy left from an earlier run is
//     never pushed (the final flush carries the container's last refresh).
//  3. The fresher usable side wins (agents.Compare); between equally fresh
//     different contents, the most recent change wins.
//  4. Three checks before anything is written to the host: the home content
//     must claim a plausible expiry (agents.Inspect: at most now plus the
//     agent's longest token lifetime), name the same account as the host's
//     (Codex, opencode), and not be stale. A refusal is reported once and
//     leaves both sides alone; stale content the home went back to is a
//     regression of the home (rule 7).
//  5. A torn side (empty, or not parseable: its writer is mid-write) is not
//     written over: it is owed the content, and the settle timer delivers it
//     if its writer stays quiet (or the final flush does).
//  6. A logged-out stub or a deleted file that is the side's own latest
//     change is left alone (a logout), unless the agent's stubs are its
//     reaction to invalid_grant (Claude) and the other side holds a token
//     the stub's side was handed by the guard or a fresher one than it
//     held: then that token is put back at once (a collision's repair). A
//     deleted file is always a logout.
//  7. A side that went back to a token seen before (an agent rewriting the
//     old token it holds in memory), or took a new but older one (two
//     refreshes raced), gets the fresher one written back, at most
//     maxWriteBacks times per writeBackWindow; then it is reported once and
//     left alone.
//  8. Every home-to-host write but the final flush's is rate-limited per
//     credential (limits): a burst, then one per limits.every; a write the
//     limit holds back is delivered by a timer, with whatever is freshest
//     then.

// cause is why a decision is taken.
type cause int

const (
	// onEvent: inotify reported a change (or events were lost, or a file
	// the guard displaced was written into).
	onEvent cause = iota
	// onStart: the start-up copy, before the agent runs.
	onStart
	// onSettle: a side owed content stayed torn and quiet for settleDelay
	// (its writer died): it gets the content.
	onSettle
	// onLimit: the rate limit's timer, to deliver a held-back host write.
	onLimit
	// onFlush: the agent is gone; the home's fresher content must reach
	// the host now, even over a host file that looks mid-write.
	onFlush
)

func (c cause) String() string {
	return [...]string{"event", "start", "settle", "limit", "flush"}[c]
}

// sideState is one side as a decision sees it.
type sideState struct {
	St  agents.Status
	Sum [32]byte
	// Changed: the content differs from what the guard last read or wrote
	// there.
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
	// Prev is the status of the content the guard last saw there, and
	// PrevMine whether the guard had written it (handed it to that side).
	Prev     agents.Status
	PrevSum  [32]byte
	PrevMine bool
	// Claims is what the content claims (account, expiry) that its writer
	// could have made up.
	Claims agents.Claims
}

func (s sideState) torn() bool {
	return s.St.State == agents.Empty || s.St.State == agents.Invalid
}

// limits is the home-to-host rate limit: burst writes at once, then one per
// every.
type limits struct {
	burst int
	every time.Duration
}

var defaultLimits = limits{burst: 4, every: 3 * time.Second}

// input is everything a decision depends on.
type input struct {
	Cause cause
	Now   time.Time
	Side  [2]sideState
	// RepairStubs: the agent writes a logged-out stub when its refresh
	// token is refused (invalid_grant), and deletes its file to log out.
	RepairStubs bool
	// HostWrittenAt is when the guard last wrote the host.
	HostWrittenAt time.Time
	// WriteBacks are the times of the write-backs to each side within
	// writeBackWindow.
	WriteBacks [2][]time.Time
	// Limits and HostDue: a home-to-host write is due no earlier than
	// HostDue - (burst-1)*every (a GCRA: HostDue is the theoretical arrival
	// time of the next write).
	Limits  limits
	HostDue time.Time
}

// verb is what an action does.
type verb int

const (
	// leave both sides as they are.
	leave verb = iota
	// settled: both sides agree; nothing is owed.
	settled
	// write the other side's content over Dst.
	write
	// hold: Dst is torn; owe it the content and arm the settle timer.
	hold
	// later: the rate limit holds back a write to Dst until At.
	later
)

func (v verb) String() string {
	return [...]string{"leave", "settled", "write", "hold", "later"}[v]
}

// note is a line to log: once-keyed lines are logged once per credential.
type note struct {
	level int
	once  string
	msg   string
}

// action is a decision.
type action struct {
	Verb verb
	Dst  side
	At   time.Time // for later
	// Login: the host's content is a login; what was seen before is stale.
	Login bool
	// WriteBack: the write is a write-back, counted at Now for Dst.
	WriteBack bool
	// LeaveAlone: Dst is left alone from now on (reported).
	LeaveAlone bool
	// Unowe: Dst is owed nothing any more (its own logout).
	Unowe bool
	// Refused: why the home's content was kept from the host ("": it was
	// not), one of the refused* reasons.
	Refused string
	Notes   []note
}

// Why decide keeps the home's content from the host (action.Refused).
const (
	refusedImplausible = "implausible"
	refusedAccount     = "account"
)

func (a action) String() string {
	s := a.Verb.String()
	if a.Verb != leave && a.Verb != settled {
		s += " " + a.Dst.String()
	}
	return s
}

func (a *action) say(level int, once, format string, args ...any) {
	a.Notes = append(a.Notes, note{level, once, fmt.Sprintf(format, args...)})
}

// Regression policy: a side that went back to an older token gets the
// fresher one written back, at most maxWriteBacks times per window; after
// that it is reported once and left alone (an agent holding an old token in
// memory would otherwise fight the guard forever).
const (
	maxWriteBacks   = 3
	writeBackWindow = time.Minute
)

// raceWindow: a new host token within this of the guard's own write there
// is a refresh that raced the container's, not a login.
const raceWindow = time.Second

// decide takes one decision. See the rules at the top of this file.
func decide(in input) action {
	var a action
	h, H := in.Side[home], in.Side[host]
	if h.Sum == H.Sum {
		a.Verb = settled
		return a
	}
	if hostLogin(in) {
		return login(a, in)
	}
	if in.Cause == onStart {
		// The host is the source of truth at start-up: a usable host copy
		// replaces the home's, and nothing goes the other way.
		if H.St.State.Usable() {
			return deliver(a, in, home, false)
		}
		a.say(1, "", "the host's credential is %s; nothing copied", H.St.State)
		return a
	}
	dst, ok := behind(in)
	if !ok {
		return a // neither side has anything worth syncing
	}
	if dst == host {
		if a, stop := gateHost(a, in); stop {
			return a
		}
	}
	return toward(a, in, dst)
}

// hostLogin: the host has a new usable token the home did not bring, and
// not within raceWindow of the guard's own write there: a login (or a
// refresh) on the host, which goes into the container.
func hostLogin(in input) bool {
	h, H := in.Side[home], in.Side[host]
	newHome := h.Changed && h.St.State.Usable() && !h.Known
	return H.Changed && H.St.State.Usable() && !H.Known && !newHome &&
		(in.Cause == onStart || in.HostWrittenAt.IsZero() || in.Now.Sub(in.HostWrittenAt) >= raceWindow)
}

// login delivers the host's new token to the home, waiting while the home
// is torn.
func login(a action, in input) action {
	a.Login = true
	if in.Cause == onStart {
		return deliver(a, in, home, false)
	}
	if in.Side[home].torn() && in.Cause == onEvent {
		a.Verb, a.Dst = hold, home
		return a
	}
	a.say(2, "", "a new token on the host (a login there, or its refresh): it goes into the container")
	return deliver(a, in, home, false)
}

// behind is the side holding the older token (ties go to the side that did
// not change); ok is false when neither side has anything worth syncing.
func behind(in input) (dst side, ok bool) {
	h, H := in.Side[home], in.Side[host]
	cmp := agents.Compare(h.St, H.St)
	if cmp == 0 {
		if !h.St.State.Usable() {
			return home, false
		}
		switch {
		case h.Changed:
			cmp = 1
		case H.Changed:
			cmp = -1
		default:
			return home, false
		}
	}
	if cmp > 0 {
		return host, true
	}
	return home, true
}

// gateHost keeps from the host a home copy that is implausible, of another
// account, or stale; stop is true when the decision is taken (a is it).
func gateHost(a action, in input) (_ action, stop bool) {
	h, H := in.Side[home], in.Side[host]
	if why := h.Claims.Implausible; why != "" {
		a.Refused = refusedImplausible
		a.say(0, "implausible "+why, "the home copy is not written to the host: %s (a forged or broken credential)", why)
		return a, true
	}
	if !agents.SameAccount(h.Claims, H.Claims) {
		a.Refused = refusedAccount
		a.say(0, "account", "the home copy is for another account than the host's: it is not written to the host")
		return a, true
	}
	if h.Stale {
		// Content from before the host's login (or start-up) never
		// goes to the host; the home going back to it is a regression
		// of the home.
		if !h.Changed || !H.St.State.Usable() || h.Owed {
			return a, true
		}
		return regressed(a, in, home, h), true
	}
	return a, false
}

// toward decides whether src's token goes to dst, the side behind.
func toward(a action, in input, dst side) action {
	src, cur := in.Side[other(dst)], in.Side[dst]
	srcChanged, curChanged := src.Changed || cur.Owed, cur.Changed
	switch {
	case in.Cause == onSettle:
	case cur.torn():
		// dst may be mid-write (a truncate before an in-place write, a
		// writer pausing mid-file): writing now would interleave with its
		// writer. Its next event re-decides; if it stays torn and quiet,
		// the settle timer delivers src.
		if !srcChanged {
			return a
		}
		if in.Cause != onFlush {
			a.say(2, "", "the %s side is %s; waiting for its writer", dst, cur.St.State)
			a.Verb, a.Dst = hold, dst
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
		a.say(2, "", "the %s side took an older token than the %s side holds; writing the fresher one back", dst, other(dst))
		return deliver(a, in, dst, true)
	case curChanged && !srcChanged:
		return regressed(a, in, dst, cur)
	case in.Cause == onFlush:
		// dst holds an older usable token: the last chance to update it.
	case !srcChanged:
		return a // nothing new since the last decision
	}
	return deliver(a, in, dst, false)
}

// unusable decides for a dst that holds no usable token: a logged-out
// stub, a deleted or a broken file.
func unusable(a action, in input, dst side, srcChanged bool) action {
	src, cur := in.Side[other(dst)], in.Side[dst]
	if cur.Changed && in.RepairStubs && cur.St.State == agents.LoggedOut &&
		((cur.PrevMine && cur.PrevSum == src.Sum) || agents.Compare(src.St, cur.Prev) > 0) {
		// The agent's answer to invalid_grant after a refresh raced
		// the other side's, which holds a token this side was handed
		// or a fresher one than it had: put it back.
		if stop := budget(&a, in, dst); stop {
			return a
		}
		a.say(1, "", "the %s side wrote a logged-out stub over a token it had been handed (a refresh refused after a race); putting the freshest token back", dst)
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
func regressed(a action, in input, dst side, cur sideState) action {
	if cur.LeftAlone {
		return a
	}
	if stop := budget(&a, in, dst); stop {
		return a
	}
	a.say(1, "", "the %s copy went back to an older token; writing the fresher one back", dst)
	return deliver(a, in, dst, true)
}

// budget counts a write-back to dst; stop means the budget is spent and
// dst is left alone from now on (reported once).
func budget(a *action, in input, dst side) (stop bool) {
	if in.Side[dst].LeftAlone {
		return true
	}
	n := 1
	for _, t := range in.WriteBacks[dst] {
		if in.Now.Sub(t) < writeBackWindow {
			n++
		}
	}
	if n > maxWriteBacks {
		a.LeaveAlone, a.Dst = true, dst
		a.say(0, "", "the %s copy went back to an older token %d times within %s; leaving it alone (restart the agent holding the old token)",
			dst, n, writeBackWindow)
		return true
	}
	return false
}

// deliver writes the other side's content over dst, unless the rate limit
// holds a write to the host back.
func deliver(a action, in input, dst side, writeBack bool) action {
	a.Dst, a.WriteBack = dst, writeBack
	if dst == host && in.Cause != onFlush {
		if at := hostDueAt(in); at.After(in.Now) {
			a.Verb, a.At = later, at
			a.say(2, "", "writing the host again is held back until %s (rate limit)", at.Format("15:04:05.000"))
			return a
		}
	}
	a.Verb = write
	return a
}

// hostDueAt is the earliest time the rate limit lets the host be written.
func hostDueAt(in input) time.Time {
	l := in.Limits
	if l.burst <= 0 {
		return time.Time{}
	}
	return in.HostDue.Add(-time.Duration(l.burst-1) * l.every)
}

// nextHostDue is HostDue after a host write at now.
func nextHostDue(l limits, due, now time.Time) time.Time {
	if due.Before(now) {
		due = now
	}
	return due.Add(l.every)
}
