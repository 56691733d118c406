package bridge

import (
	"testing"
	"time"

	"github.com/caw-dev/caw/agents"
)

func TestDecide(t *testing.T) {
	t0 := time.Unix(1_900_000_000, 0)
	valid := func(h int) agents.Status {
		e := t0.Add(time.Duration(h) * time.Hour)
		return agents.Status{State: agents.Valid, Expiry: e, Fresh: e}
	}
	expired := func(h int) agents.Status {
		e := t0.Add(time.Duration(h) * time.Hour)
		return agents.Status{State: agents.Expired, Expiry: e, Fresh: e}
	}
	st := func(s agents.State) agents.Status { return agents.Status{State: s} }
	both := [2]bool{true, true}
	kOnly := [2]bool{Keychain: true}
	mOnly := [2]bool{Mirror: true}
	write := func(dst Side) Verdict { return Verdict{Action: Write, Dst: dst} }
	for _, tc := range []struct {
		name string
		in   Input
		want Verdict
	}{
		{"fresher keychain reaches the mirror", Input{St: [2]agents.Status{valid(2), valid(1)}, Changed: kOnly}, write(Mirror)},
		{"fresher mirror reaches the keychain", Input{St: [2]agents.Status{valid(1), valid(2)}, Changed: mOnly}, write(Keychain)},
		{"at start the fresher wins", Input{St: [2]agents.Status{valid(1), valid(2)}, Changed: both}, write(Keychain)},
		{"expired but fresher still crosses", Input{St: [2]agents.Status{expired(-1), expired(-2)}, Changed: kOnly}, write(Mirror)},
		{"valid beats expired of the same freshness", Input{St: [2]agents.Status{valid(1), expired(1)}, Changed: kOnly}, write(Mirror)},
		{"equal freshness: the mirror's change wins", Input{St: [2]agents.Status{valid(1), valid(1)}, Changed: both}, write(Keychain)},
		{"equal freshness: the keychain's change wins", Input{St: [2]agents.Status{valid(1), valid(1)}, Changed: kOnly}, write(Mirror)},
		{"equal freshness, no change", Input{St: [2]agents.Status{valid(1), valid(1)}}, Verdict{}},
		{"neither usable", Input{St: [2]agents.Status{st(agents.LoggedOut), st(agents.Missing)}, Changed: both}, Verdict{}},
		{"a mirror logout stays", Input{St: [2]agents.Status{valid(1), st(agents.LoggedOut)}, Changed: mOnly}, Verdict{}},
		{"a keychain logout (item deleted) stays", Input{St: [2]agents.Status{st(agents.Missing), valid(1)}, Changed: kOnly}, Verdict{}},
		{"a new login replaces a logout", Input{St: [2]agents.Status{st(agents.LoggedOut), valid(1)}, Changed: mOnly}, write(Keychain)},
		{"at start a logout stays", Input{St: [2]agents.Status{valid(1), st(agents.LoggedOut)}, Changed: both}, Verdict{}},
		{"a torn mirror is waited for", Input{St: [2]agents.Status{valid(2), st(agents.Invalid)}, Changed: kOnly}, Verdict{Action: Wait, Dst: Mirror}},
		{"an empty mirror is waited for", Input{St: [2]agents.Status{valid(2), st(agents.Empty)}, Changed: both}, Verdict{Action: Wait, Dst: Mirror}},
		{"a torn mirror, nothing new", Input{St: [2]agents.Status{valid(2), st(agents.Invalid)}, Changed: mOnly}, Verdict{}},
		{"a torn mirror that settled is written over", Input{St: [2]agents.Status{valid(2), st(agents.Invalid)}, Owed: mOnly, Settle: true}, write(Mirror)},
		{"a torn mirror owed content is waited for", Input{St: [2]agents.Status{valid(2), st(agents.Invalid)}, Changed: mOnly, Owed: mOnly}, Verdict{Action: Wait, Dst: Mirror}},
		{"a regression is written back", Input{St: [2]agents.Status{valid(2), valid(1)}, Changed: mOnly, Known: mOnly}, Verdict{Action: Write, Dst: Mirror, Regression: true}},
		{"a race is not a regression", Input{St: [2]agents.Status{valid(2), valid(1)}, Changed: mOnly}, write(Mirror)},
		{"an older side, nothing new", Input{St: [2]agents.Status{valid(2), valid(1)}}, Verdict{}},
		{"an older side owed content gets it", Input{St: [2]agents.Status{valid(1), valid(2)}, Owed: kOnly}, write(Keychain)},
	} {
		if got := Decide(tc.in); got != tc.want {
			t.Errorf("%s: Decide(%+v) = %+v, want %+v", tc.name, tc.in, got, tc.want)
		}
	}
}
