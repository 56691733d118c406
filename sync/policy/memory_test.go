package policy

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/caw-dev/caw/agents"
)

// Memory and Decide played together, as the guard and the bridge use them,
// on two sides held in memory: no files, no root, a clock of our own.

// duo is a caller of Memory and Decide whose sides are byte slices (nil: no
// file) and whose writes always succeed.
type duo struct {
	t    *testing.T
	m    Memory
	data [2][]byte
	now  time.Time
}

func newDuo(t *testing.T) *duo {
	return &duo{t: t, m: Memory{Format: "claude", RepairStubs: true, Limits: DefaultLimits}, now: t0}
}

// claude is a Claude credential named tag expiring in d.
func claude(tag string, d time.Duration) []byte {
	return fmt.Appendf(nil, `{"claudeAiOauth":{"accessToken":"at-%s","refreshToken":"rt-%s","expiresAt":%d}}`,
		tag, tag, t0.Add(d).UnixMilli())
}

func (d *duo) content(s Side) Content {
	if d.data[s] == nil {
		return Content{St: agents.Status{State: agents.Missing}, Sum: Unreadable(agents.Missing)}
	}
	return d.m.Read(d.data[s], d.now)
}

// startedWith is a duo of format whose sides both held data at start-up.
func startedWith(t *testing.T, format string, data []byte) *duo {
	d := newDuo(t)
	d.m.Format = format
	d.data = [2][]byte{data, data}
	d.expect(0, OnStart, "settled")
	return d
}

// homeRefreshes: the home takes data, 2 s later, which reaches the host.
func (d *duo) homeRefreshes(data []byte) {
	d.t.Helper()
	d.data[Home] = data
	d.expect(2*time.Second, OnEvent, "write host")
	d.holds(Host, data)
}

// step lets time pass, then takes one decision for cause c and carries it
// out as the guard and the bridge do.
func (d *duo) step(pass time.Duration, c Cause) Action {
	d.now = d.now.Add(pass)
	v := [2]Content{d.content(Home), d.content(Host)}
	a := Decide(d.m.Input(c, d.now, v, NoSide))
	d.m.Taken(a, v, c, d.now)
	defer d.m.Held(v)
	if a.Verb == Write {
		x := d.m.Merge(v[a.Dst.Other()], v[a.Dst], d.now)
		d.data[a.Dst] = x.Data
		d.m.Wrote(a.Dst, x, c, d.now)
	}
	return a
}

// expect takes a step and checks its action.
func (d *duo) expect(pass time.Duration, c Cause, want string) Action {
	d.t.Helper()
	a := d.step(pass, c)
	if a.String() != want {
		d.t.Fatalf("%s: %s, want %s (%+v)", c, a, want, a)
	}
	return a
}

func (d *duo) holds(s Side, want []byte) {
	d.t.Helper()
	if string(d.data[s]) != string(want) {
		d.t.Fatalf("the %s holds %s, want %s", s, d.data[s], want)
	}
}

// At start-up the host wins, and what the home held then is stale: the
// home going back to it gets the host's token back, never the other way.
func TestMemoryStartUpMakesTheHomeStale(t *testing.T) {
	d := newDuo(t)
	old, host := claude("left-over", 5*time.Hour), claude("host", time.Hour)
	d.data = [2][]byte{old, host}
	d.expect(0, OnStart, "write home")
	d.holds(Home, host)
	d.data[Home] = old // the agent rewrites the token it holds
	if a := d.expect(2*time.Second, OnEvent, "write home"); !a.WriteBack {
		t.Fatal("the home's stale token was not a regression")
	}
	d.data[Home] = old
	d.expect(2*time.Second, OnFlush, "write home")
	d.holds(Host, host)
}

// A host login wins over a fresher-claiming home, which cannot put its own
// token back; going back to it spends the write-back budget.
func TestMemoryHostLoginWins(t *testing.T) {
	a := claude("a", time.Hour)
	d := startedWith(t, "claude", a)
	ctr := claude("container", 7*time.Hour)
	d.homeRefreshes(ctr)
	login := claude("login", 2*time.Hour)
	d.data[Host] = login
	if a := d.expect(2*time.Second, OnEvent, "write home"); !a.Login {
		t.Fatal("a new host token was not a login")
	}
	for i := range MaxWriteBacks {
		d.data[Home] = ctr
		if a := d.expect(time.Second, OnEvent, "write home"); !a.WriteBack {
			t.Fatalf("write-back %d not counted", i)
		}
	}
	d.data[Home] = ctr
	if a := d.expect(time.Second, OnEvent, "leave"); !a.LeaveAlone {
		t.Fatalf("the budget was not spent after %d write-backs", MaxWriteBacks)
	}
	d.holds(Host, login)
	if !d.m.Side[Home].LeftAlone {
		t.Fatal("the home was not marked left alone")
	}
}

// A new host token right after the caller's own host write is a refresh
// racing the home's: freshness decides, not the login rule.
func TestMemoryRacedRefreshIsNoLogin(t *testing.T) {
	a := claude("a", time.Hour)
	d := startedWith(t, "claude", a)
	ctr := claude("container", 7*time.Hour)
	d.homeRefreshes(ctr)
	d.data[Host] = claude("raced", 2*time.Hour)
	if a := d.expect(RaceWindow/2, OnEvent, "write host"); a.Login || !a.WriteBack {
		t.Fatalf("a raced refresh: %+v", a)
	}
	d.holds(Host, ctr)
}

// What the home claims is read from its content: a far-future expiry or
// another account never reaches the host.
func TestMemoryClaimsComeFromTheContent(t *testing.T) {
	a := claude("a", time.Hour)
	d := startedWith(t, "claude", a)
	d.data[Home] = []byte(`{"claudeAiOauth":{"accessToken":"evil","refreshToken":"evil","expiresAt":9999999999999}}`)
	if a := d.expect(2*time.Second, OnEvent, "leave"); a.Refused != RefusedImplausible {
		t.Fatalf("refused %q", a.Refused)
	}
	d.holds(Host, a)

	mine := codex("me", 1)
	for _, theirs := range [][]byte{codex("attacker", 5), codex("", 5)} {
		d = startedWith(t, "codex", mine)
		d.data[Home] = theirs
		if a := d.expect(2*time.Second, OnEvent, "leave"); a.Refused != RefusedAccount {
			t.Fatalf("%s: refused %q", theirs, a.Refused)
		}
		d.holds(Host, mine)
	}
}

// codex is a Codex auth.json for account acct, refreshed h hours ago
// (no JWT: its freshness is last_refresh).
func codex(acct string, h int) []byte {
	return fmt.Appendf(nil, `{"tokens":{"access_token":"at-%s","refresh_token":"rt-%s","account_id":%q},"last_refresh":%q}`,
		acct, acct, acct, t0.Add(-time.Duration(5-h)*time.Hour).Format(time.RFC3339))
}

// Host writes from the home go at the rate limit; the flush is not held
// back and does not count.
func TestMemoryRateLimit(t *testing.T) {
	a := claude("a", time.Hour)
	d := startedWith(t, "claude", a)
	for i := range DefaultLimits.Burst {
		d.data[Home] = claude(fmt.Sprint(i), time.Hour+time.Duration(i+1)*time.Minute)
		d.expect(10*time.Millisecond, OnEvent, "write host")
	}
	d.data[Home] = claude("held", 3*time.Hour)
	if a := d.expect(10*time.Millisecond, OnEvent, "later host"); !a.At.After(d.now) {
		t.Fatalf("held back until %v, now %v", a.At, d.now)
	}
	due := d.m.HostDue
	d.expect(0, OnFlush, "write host")
	if !d.m.HostDue.Equal(due) {
		t.Fatal("the flush's write counted against the rate limit")
	}
	d.holds(Host, claude("held", 3*time.Hour))
}

func TestMemoryInert(t *testing.T) {
	a := claude("a", time.Hour)
	d := startedWith(t, "claude", a)
	torn := Read("claude", a[:10], t0)
	stub := Read("claude", []byte(`{"claudeAiOauth":{"accessToken":"","refreshToken":"","expiresAt":0}}`), t0)
	if !d.m.Inert(Home, Read("claude", a, t0)) {
		t.Error("unchanged content needs a decision")
	}
	if !d.m.Inert(Home, torn) || d.m.Side[Home].Seen != torn.Sum {
		t.Error("a torn side needs a decision, or was not recorded as seen")
	}
	if d.m.Inert(Home, stub) {
		t.Error("a Claude stub (repaired after a collision) was taken as inert")
	}
	if d.m.Inert(Home, Read("claude", claude("b", 2*time.Hour), t0)) {
		t.Error("a new token was taken as inert")
	}
	d.m.RepairStubs = false
	if !d.m.Inert(Home, stub) {
		t.Error("a stub of an agent whose stubs are logouts needs a decision")
	}
}

// A write a previous decision found changed leaves its side owed.
func TestMemoryInputOwed(t *testing.T) {
	var m Memory
	v := [2]Content{Read("claude", claude("a", time.Hour), t0), Read("claude", claude("b", time.Hour), t0)}
	in := m.Input(OnEvent, t0, v, Host)
	if in.Side[Home].Owed || !in.Side[Host].Owed {
		t.Fatalf("owed %v %v", in.Side[Home].Owed, in.Side[Host].Owed)
	}
	if in := m.Input(OnEvent, t0, v, NoSide); in.Side[Home].Owed || in.Side[Host].Owed {
		t.Fatal("NoSide owed something")
	}
}

// Merges keep what the winner lacks: a Claude MCP login on the losing side.
func TestMemoryMerge(t *testing.T) {
	m := Memory{Format: "claude"}
	win := Read("claude", claude("win", 2*time.Hour), t0)
	lose := Read("claude", []byte(`{"claudeAiOauth":{"accessToken":"x","refreshToken":"y","expiresAt":1},"mcpOAuth":{"srv":{"accessToken":"mcp"}}}`), t0)
	got := m.Merge(win, lose, t0)
	if got.Sum == win.Sum || !got.St.State.Usable() || got.Sum != Sum(got.Data) {
		t.Fatalf("merged %s", got.Data)
	}
	if same := m.Merge(win, win, t0); same.Sum != win.Sum {
		t.Fatal("a merge with nothing to keep changed the content")
	}
}

// TestMemoryRemembersExactly: what Memory remembers of content it has
// classified answers as a fresh decode would, whatever the time: an expiry
// passed since, a claim that has become plausible, a clock gone back.
func TestMemoryRemembersExactly(t *testing.T) {
	m := Memory{Format: "claude"}
	a := claude("a", time.Hour)
	far := claude("far", 9*time.Hour) // beyond 8 h plus the 30 min margin at t0
	for _, at := range []time.Duration{0, 2 * time.Hour, time.Minute, 30 * time.Minute, -time.Hour, 3 * time.Hour} {
		now := t0.Add(at)
		for _, data := range [][]byte{a, far} {
			x := m.Read(data, now)
			if want := agents.Classify("claude", data, now); x.St != want {
				t.Errorf("%v: status %+v, want %+v", at, x.St, want)
			}
			if got, want := m.claims(x, now), agents.Inspect("claude", data, now); got.Implausible != want.Implausible {
				t.Errorf("%v: claims %q, want %q", at, got.Implausible, want.Implausible)
			}
		}
	}
}

// TestMergeSkipsOnlyWhatKeepsNothing: a merge that keeps nothing of the
// loser returns the winner as is; one that keeps an MCP login still merges.
func TestMergeSkipsOnlyWhatKeepsNothing(t *testing.T) {
	m := Memory{Format: "claude"}
	win := m.Read(claude("win", 2*time.Hour), t0)
	if got := m.Merge(win, m.Read(claude("lose", time.Hour), t0), t0); got.Sum != win.Sum {
		t.Errorf("merge of equal shapes changed the winner: %s", got.Data)
	}
	lose := m.Read([]byte(`{"claudeAiOauth":{"accessToken":"x","refreshToken":"y","expiresAt":1},"mcpOAuth":{"srv":{"accessToken":"mcp"}}}`), t0)
	got := m.Merge(win, lose, t0)
	if got.Sum == win.Sum || !got.St.State.Usable() || !bytes.Contains(got.Data, []byte(`"mcpOAuth"`)) {
		t.Errorf("the MCP login was lost: %s (%v)", got.Data, got.St)
	}
}
