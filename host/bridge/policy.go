package bridge

import "github.com/caw-dev/caw/agents"

// Side is one end of a bridged credential.
type Side int

// The two sides.
const (
	Keychain Side = iota
	Mirror
)

func (s Side) String() string {
	if s == Keychain {
		return "Keychain"
	}
	return "mirror"
}

func other(s Side) Side { return 1 - s }

// Input is what a decision knows: each side's classification, and, against
// what the bridge last saw there, whether it changed; whether a side is owed
// the other's content (held back while it looked torn, or a write that
// failed); whether its content is one either side held before.
type Input struct {
	St      [2]agents.Status
	Changed [2]bool
	Owed    [2]bool
	Known   [2]bool
	// Settle: a side owed content stayed torn and quiet (its writer died).
	Settle bool
}

// Action is what a decision asks for.
type Action int

// Actions.
const (
	// None: leave both sides as they are.
	None Action = iota
	// Write: write the other side's content over Dst.
	Write
	// Wait: Dst looks mid-write; mark it owed and decide again once it is
	// quiet.
	Wait
)

// Verdict is a decision.
type Verdict struct {
	Action Action
	Dst    Side
	// Regression: Dst went back to a token it held before (an agent
	// rewriting the old token it keeps in memory); the caller limits how
	// often it writes the fresher one back.
	Regression bool
}

// Decide is the bridge's one rule for which side wins when the two sides
// hold different content. It is the guard's rule (sync/guard/cred.go,
// syncOnce and push) with the mirror in the home copy's place: only usable
// content crosses; the fresher wins (agents.Compare); between equally fresh
// ones the most recent change, the mirror's first; a side's own logout or
// deletion is left alone unless the other side brings a new login; a torn
// side is waited for; a side that went back to a token it held before gets
// the fresher one back. It is pure, so it can give way to a decision shared
// with the guard without touching the bridge's I/O.
func Decide(in Input) Verdict {
	k, m := in.St[Keychain], in.St[Mirror]
	cmp := agents.Compare(k, m)
	if cmp == 0 {
		if !k.State.Usable() {
			return Verdict{}
		}
		switch {
		case in.Changed[Mirror]:
			cmp = -1
		case in.Changed[Keychain]:
			cmp = 1
		default:
			return Verdict{}
		}
	}
	dst := Keychain
	if cmp > 0 {
		dst = Mirror
	}
	src := other(dst)
	cur := in.St[dst]
	srcChanged, curChanged, owed := in.Changed[src], in.Changed[dst], in.Owed[dst]
	v := Verdict{Action: Write, Dst: dst}
	switch {
	case in.Settle:
	case cur.State == agents.Empty || cur.State == agents.Invalid:
		if !srcChanged && !owed {
			return Verdict{}
		}
		v.Action = Wait
	case !cur.State.Usable():
		if curChanged || !srcChanged {
			return Verdict{}
		}
	case curChanged && !srcChanged && !owed && !in.Known[dst]:
		// Two refreshes raced; the fresher goes back. Not a regression.
	case curChanged && !srcChanged && !owed:
		v.Regression = true
	case !srcChanged && !owed:
		return Verdict{}
	}
	return v
}
