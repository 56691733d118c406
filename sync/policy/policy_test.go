package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/caw-dev/caw/agents"
)

// The decision's table tests: no root, no files, no clock.

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// tok is a usable side holding token n (fresher with n), changed or not.
func tok(n int) SideState {
	exp := t0.Add(time.Hour + time.Duration(n)*time.Second)
	return SideState{St: agents.Status{State: agents.Valid, Expiry: exp, Fresh: exp}, Sum: sum(n)}
}

// noExpiry is a usable side whose format tells no freshness (an API key).
func noExpiry(n int) SideState {
	return SideState{St: agents.Status{State: agents.Valid}, Sum: sum(n)}
}

func state(s agents.State, n int) SideState {
	return SideState{St: agents.Status{State: s}, Sum: sum(n)}
}

func sum(n int) [32]byte { return [32]byte{byte(n), byte(n >> 8), 1} }

func (s SideState) changed() SideState { s.Changed = true; return s }
func (s SideState) known() SideState   { s.Known = true; return s }
func (s SideState) stale() SideState   { s.Stale = true; return s }
func (s SideState) owed() SideState    { s.Owed = true; return s }
func (s SideState) alone() SideState   { s.LeftAlone = true; return s }
func (s SideState) prev(p SideState, mine bool) SideState {
	s.Prev, s.PrevSum, s.PrevMine = p.St, p.Sum, mine
	return s
}
func (s SideState) claims(c agents.Claims) SideState { s.Claims = c; return s }

func TestDecide(t *testing.T) {
	long := t0.Add(-time.Hour) // the guard wrote the host long ago
	cases := []struct {
		name string
		in   Input
		want string // action.String()
		// wantFlag checks one of the action's flags.
		login, writeBack, alone, unowe bool
		refused                        string // action.Refused
		note                           string // a substring of the note at level 0, the user's line
	}{
		{name: "equal content settles", in: Input{Side: [2]SideState{tok(1).changed(), tok(1)}}, want: "settled"},

		// Rule 2: a host login wins.
		{name: "host login beats a fresher-claiming home token", in: Input{HostWrittenAt: long,
			Side: [2]SideState{tok(9).known(), tok(5).changed()}}, want: "write home", login: true},
		{name: "host login with nothing written yet", in: Input{
			Side: [2]SideState{tok(9).known(), tok(5).changed()}}, want: "write home", login: true},
		{name: "a new host token right after the guard's write is a raced refresh", in: Input{HostWrittenAt: t0.Add(-10 * time.Millisecond),
			Side: [2]SideState{tok(9).known(), tok(5).changed()}}, want: "write host", writeBack: true},
		{name: "both sides new: the fresher wins", in: Input{HostWrittenAt: long,
			Side: [2]SideState{tok(9).changed(), tok(5).changed()}}, want: "write host"},
		{name: "host login waits for a torn home", in: Input{HostWrittenAt: long,
			Side: [2]SideState{state(agents.Invalid, 2).changed(), tok(5).changed()}}, want: "hold home", login: true},
		{name: "a known host token is no login", in: Input{HostWrittenAt: long,
			Side: [2]SideState{tok(9).known(), tok(5).changed().known()}}, want: "write host", writeBack: true},

		// Start-up: the host is the source of truth.
		{name: "start: a fresher home copy is replaced", in: Input{Cause: OnStart,
			Side: [2]SideState{tok(9).changed(), tok(5).changed()}}, want: "write home"},
		{name: "start: an older home copy is replaced", in: Input{Cause: OnStart,
			Side: [2]SideState{tok(2).changed(), tok(5).changed()}}, want: "write home"},
		{name: "start: a logged-out host leaves the home alone", in: Input{Cause: OnStart,
			Side: [2]SideState{tok(9).changed(), state(agents.LoggedOut, 3).changed()}}, want: "leave"},
		{name: "start: a missing host leaves the home alone", in: Input{Cause: OnStart,
			Side: [2]SideState{tok(9).changed(), state(agents.Missing, 3).changed()}}, want: "leave"},

		// Rule 3: the fresher side wins; then the most recent change.
		{name: "a fresher home token goes to the host", in: Input{Side: [2]SideState{tok(6).changed(), tok(5).known()}}, want: "write host"},
		{name: "a fresher known host token goes home", in: Input{Side: [2]SideState{tok(4).known(), tok(5).changed().known()}}, want: "write home"},
		{name: "equally fresh: the home's change wins", in: Input{Side: [2]SideState{noExpiry(2).changed(), noExpiry(1).known()}}, want: "write host"},
		{name: "equally fresh: the host's change wins", in: Input{Side: [2]SideState{noExpiry(2).known(), noExpiry(1).changed().known()}}, want: "write home"},
		{name: "equally fresh, nothing changed", in: Input{Side: [2]SideState{noExpiry(2).known(), noExpiry(1).known()}}, want: "leave"},
		{name: "neither usable", in: Input{Side: [2]SideState{state(agents.LoggedOut, 1).changed(), state(agents.Missing, 2)}}, want: "leave"},

		// Rule 4: what the host never gets.
		{name: "an implausible expiry is refused for the host", in: Input{
			Side: [2]SideState{tok(9).changed().claims(agents.Claims{Implausible: "expiresAt claims 2286"}), tok(5).known()}},
			want: "leave", refused: RefusedImplausible, note: "expiresAt claims 2286"},
		{name: "another account is refused for the host", in: Input{
			Side: [2]SideState{tok(9).changed().claims(agents.Claims{Accounts: map[string]string{"": "attacker"}}),
				tok(5).known().claims(agents.Claims{Accounts: map[string]string{"": "me"}})}},
			want: "leave", refused: RefusedAccount, note: "another account"},
		{name: "a stale home token the home went back to is a regression of the home", in: Input{
			Side: [2]SideState{tok(9).changed().known().stale(), tok(5).known()}}, want: "write home", writeBack: true},
		{name: "a stale home token is never flushed", in: Input{Cause: OnFlush,
			Side: [2]SideState{tok(9).known().stale(), tok(5).known()}}, want: "leave"},
		{name: "a stale home token is not pushed over a host logout", in: Input{
			Side: [2]SideState{tok(9).changed().known().stale(), state(agents.LoggedOut, 3)}}, want: "leave"},

		// Rule 5: torn sides wait for their writer.
		{name: "a torn host waits", in: Input{Side: [2]SideState{tok(6).changed(), state(agents.Empty, 2).changed()}}, want: "hold host"},
		{name: "a torn host owed nothing new is left", in: Input{Side: [2]SideState{tok(6).known(), state(agents.Invalid, 2).changed()}}, want: "leave"},
		{name: "a torn host still owed waits", in: Input{Side: [2]SideState{tok(6).known(), state(agents.Invalid, 2).owed()}}, want: "hold host"},
		{name: "the settle timer writes over a torn side", in: Input{Cause: OnSettle,
			Side: [2]SideState{tok(6).known(), state(agents.Invalid, 2).owed()}}, want: "write host"},
		{name: "the flush writes over a torn side", in: Input{Cause: OnFlush,
			Side: [2]SideState{tok(6).changed(), state(agents.Invalid, 2)}}, want: "write host"},

		// Rule 6: logouts and stubs.
		{name: "a host logout is left alone", in: Input{
			Side: [2]SideState{tok(6).known(), state(agents.LoggedOut, 2).changed()}}, want: "leave", unowe: true},
		{name: "a logout is left alone even when the other side changed too", in: Input{
			Side: [2]SideState{tok(7).changed(), state(agents.LoggedOut, 2).changed()}}, want: "leave", unowe: true},
		{name: "a deleted host file is a logout", in: Input{RepairStubs: true,
			Side: [2]SideState{tok(6).known(), state(agents.Missing, 2).changed().prev(tok(6), true)}}, want: "leave", unowe: true},
		{name: "a new login goes over an old logout", in: Input{
			Side: [2]SideState{tok(7).changed(), state(agents.LoggedOut, 2)}}, want: "write host"},
		{name: "a stub over a token the guard handed is repaired", in: Input{RepairStubs: true,
			Side: [2]SideState{state(agents.LoggedOut, 2).changed().prev(tok(6), true), tok(6).known()}}, want: "write home", writeBack: true},
		{name: "a stub over an older token than the other side's is repaired", in: Input{RepairStubs: true,
			Side: [2]SideState{tok(7).known(), state(agents.LoggedOut, 2).changed().prev(tok(4), false)}}, want: "write host", writeBack: true},
		{name: "a stub over the side's own token is its logout", in: Input{RepairStubs: true,
			Side: [2]SideState{state(agents.LoggedOut, 2).changed().prev(tok(6), false), tok(6).known()}}, want: "leave", unowe: true},
		{name: "stubs of an agent whose stub is a logout are left", in: Input{
			Side: [2]SideState{state(agents.LoggedOut, 2).changed().prev(tok(6), true), tok(6).known()}}, want: "leave", unowe: true},

		// Rule 7: regressions and raced refreshes, bounded.
		{name: "a side back to a known older token gets the fresher one", in: Input{
			Side: [2]SideState{tok(4).changed().known(), tok(6).known()}}, want: "write home", writeBack: true},
		{name: "a side back to an older token while owed is simply owed", in: Input{
			Side: [2]SideState{tok(4).changed().known().owed(), tok(6).known()}}, want: "write home"},
		{name: "a side left alone stays alone", in: Input{
			Side: [2]SideState{tok(4).changed().known().alone(), tok(6).known()}}, want: "leave"},
		{name: "the regression budget spent: left alone", in: Input{Now: t0,
			WriteBacks: [2][]time.Time{{t0.Add(-3 * time.Second), t0.Add(-2 * time.Second), t0.Add(-time.Second)}},
			Side:       [2]SideState{tok(4).changed().known(), tok(6).known()}}, want: "leave", alone: true, note: "leaving it alone"},
		{name: "old write-backs fall out of the window", in: Input{Now: t0,
			WriteBacks: [2][]time.Time{{t0.Add(-3 * time.Minute), t0.Add(-2 * time.Minute), t0.Add(-time.Second)}},
			Side:       [2]SideState{tok(4).changed().known(), tok(6).known()}}, want: "write home", writeBack: true},
		{name: "a raced older token counts against the budget", in: Input{Now: t0, HostWrittenAt: t0,
			WriteBacks: [2][]time.Time{nil, {t0, t0, t0}},
			Side:       [2]SideState{tok(6).known(), tok(4).changed()}}, want: "leave", alone: true},

		// The final flush and idle events.
		{name: "the flush updates an older host", in: Input{Cause: OnFlush,
			Side: [2]SideState{tok(6).known(), tok(4).known()}}, want: "write host"},
		{name: "an event with nothing new does nothing", in: Input{
			Side: [2]SideState{tok(6).known(), tok(4).known()}}, want: "leave"},

		// Rule 8: the rate limit on host writes.
		{name: "a host write within the burst goes at once", in: Input{Now: t0, Limits: Limits{4, 3 * time.Second}, HostDue: t0.Add(9 * time.Second),
			Side: [2]SideState{tok(6).changed(), tok(4).known()}}, want: "write host"},
		{name: "a host write past the burst waits", in: Input{Now: t0, Limits: Limits{4, 3 * time.Second}, HostDue: t0.Add(12 * time.Second),
			Side: [2]SideState{tok(6).changed(), tok(4).known()}}, want: "later host"},
		{name: "the flush is never held back", in: Input{Cause: OnFlush, Now: t0, Limits: Limits{4, 3 * time.Second}, HostDue: t0.Add(time.Hour),
			Side: [2]SideState{tok(6).known(), tok(4).known()}}, want: "write host"},
		{name: "home writes are not rate-limited", in: Input{Now: t0, Limits: Limits{4, 3 * time.Second}, HostDue: t0.Add(time.Hour),
			Side: [2]SideState{tok(4).known(), tok(6).changed().known()}}, want: "write home"},
		{name: "the limit timer delivers what is owed", in: Input{Cause: OnLimit, Now: t0, Limits: Limits{4, 3 * time.Second}, HostDue: t0.Add(9 * time.Second),
			Side: [2]SideState{tok(7).known(), tok(4).known().owed()}}, want: "write host"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.in.Now.IsZero() {
				c.in.Now = t0
			}
			a := Decide(c.in)
			if a.String() != c.want {
				t.Fatalf("Decide = %s, want %s (%+v)", a, c.want, a)
			}
			if a.Login != c.login || a.WriteBack != c.writeBack || a.LeaveAlone != c.alone || a.Unowe != c.unowe {
				t.Fatalf("flags login=%v writeBack=%v leaveAlone=%v unowe=%v, want %v %v %v %v",
					a.Login, a.WriteBack, a.LeaveAlone, a.Unowe, c.login, c.writeBack, c.alone, c.unowe)
			}
			if a.Refused != c.refused {
				t.Fatalf("refused %q, want %q", a.Refused, c.refused)
			}
			if c.note != "" {
				found := false
				for _, n := range a.Notes {
					found = found || (n.Level == 0 && strings.Contains(n.Msg, c.note))
				}
				if !found {
					t.Fatalf("no level-0 note with %q: %+v", c.note, a.Notes)
				}
			}
		})
	}
}

// TestRateLimit plays writes through the GCRA: a burst of four, then one
// per interval, whatever the pace of the attempts.
func TestRateLimit(t *testing.T) {
	l := Limits{Burst: 4, Every: 3 * time.Second}
	var due time.Time
	var writes []time.Time
	for now := t0; now.Before(t0.Add(30 * time.Second)); now = now.Add(30 * time.Millisecond) {
		in := Input{Now: now, Limits: l, HostDue: due, Side: [2]SideState{tok(9).changed(), tok(1).known()}}
		if a := Decide(in); a.Verb == Write {
			writes = append(writes, now)
			due = nextHostDue(l, due, now)
		} else if a.Verb != Later || !a.At.After(now) {
			t.Fatalf("at %v: %s at %v", now.Sub(t0), a, a.At)
		}
	}
	// 4 at once, then one every 3 s over 30 s: 4 + 9 (the first at 3 s).
	if len(writes) != 13 {
		t.Fatalf("%d host writes in 30 s of attempts every 30 ms, want 13: %v", len(writes), writes)
	}
	if writes[4].Sub(t0) < 3*time.Second {
		t.Fatalf("the fifth write at %v, before the first interval ended", writes[4].Sub(t0))
	}
	for i := 5; i < len(writes); i++ {
		if d := writes[i].Sub(writes[i-1]); d < 3*time.Second-30*time.Millisecond {
			t.Fatalf("writes %d and %d %v apart", i-1, i, d)
		}
	}
}
