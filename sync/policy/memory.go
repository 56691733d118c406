package policy

import (
	"bytes"
	"crypto/sha256"
	"time"

	"github.com/caw-dev/caw/agents"
)

// Content is one side's content as read: its bytes, their classification
// and Sum. Content that is not there or could not be read has no bytes and
// the Sum of Unreadable.
type Content struct {
	Data []byte
	St   agents.Status
	Sum  [32]byte
}

// Sum is what content is known by: the hash of its bytes without trailing
// white space (an in-place write pads a shorter document with spaces).
// Content, never timestamps: a side rewritten with the same bytes did not
// change.
func Sum(data []byte) [32]byte { return sha256.Sum256(bytes.TrimRight(data, " \t\r\n")) }

// Unreadable is the Sum of content in state s that has no bytes (missing,
// or unreadable: Invalid); it never matches real content.
func Unreadable(s agents.State) [32]byte { return sha256.Sum256([]byte("\x00" + s.String())) }

// Read is data classified as format and hashed.
func Read(format string, data []byte, now time.Time) Content {
	return Content{Data: data, St: agents.Classify(format, data, now), Sum: Sum(data)}
}

// Read is data classified in m's format and hashed, as Read does; content
// m has classified before is not decoded again.
func (m *Memory) Read(data []byte, now time.Time) Content {
	x := Content{Data: data, Sum: Sum(data)}
	x.St = m.Classify(data, x.Sum, now)
	return x
}

// Classify is agents.Classify(m.Format, data, now) for data whose Sum is
// sum, remembered with the content's claims (agents.Examine decodes it once
// for both): a status worked out before is brought to now
// (agents.Status.At), which is exact.
func (m *Memory) Classify(data []byte, sum [32]byte, now time.Time) agents.Status {
	return m.examine(data, sum, now).Status.At(now)
}

func (m *Memory) examine(data []byte, sum [32]byte, now time.Time) *facts {
	if f := m.lookup(sum); f != nil {
		return f
	}
	f := &m.facts[m.factsN%len(m.facts)]
	*f = facts{sum: sum, Facts: agents.Examine(m.Format, data, now), at: now}
	m.factsN++
	return f
}

// claims is agents.Inspect(m.Format, x.Data, now), remembered. Claims found
// plausible stay so as time goes on (the limit, now plus a lifetime, only
// grows); implausible ones, or a clock gone back, are inspected again.
func (m *Memory) claims(x Content, now time.Time) agents.Claims {
	f := m.examine(x.Data, x.Sum, now)
	if f.Claims.Implausible != "" || now.Before(f.at) {
		f.Claims, f.at = agents.Inspect(m.Format, x.Data, now), now
	}
	return f.Claims
}

func (m *Memory) lookup(sum [32]byte) *facts {
	for i := range min(m.factsN, len(m.facts)) {
		if m.facts[i].sum == sum {
			return &m.facts[i]
		}
	}
	return nil
}

// NoSide is no side (Memory.Input's owed).
const NoSide Side = -1

// Memory is what the caller of Decide remembers of one credential between
// decisions, and the one place where two sides just read become an Input:
// what each side held when it was last read or written, what it is owed,
// its write-backs, when the host was last written, and the usable contents
// either side held (a side that goes back to one of them regresses; those
// held before the host's latest login are stale). The caller reads both
// sides, asks Input, Decide, records the decision with Taken, carries it
// out (Wrote for each write), then Held. It serialises its calls.
type Memory struct {
	// Set once: the credential's agents.Classify format; RepairStubs (the
	// agents table's StubOnRefusal); the home-to-host rate limit; the
	// sides' names in notes.
	Format      string
	RepairStubs bool
	Limits      Limits
	Names       [2]string

	Side [2]SideMemory
	// HostWrittenAt is when the host was last written; HostDue is the
	// rate limit's state (Input.HostDue).
	HostWrittenAt, HostDue time.Time

	// history holds the last usable contents either side held, each with
	// the count of contents remembered before it, so that those remembered
	// before staleBefore (the host's latest login, or start-up) are stale:
	// never written to the host again.
	history     [64]histEntry
	histN       int
	staleBefore int

	// facts holds what Classify and the claims learnt of the last few
	// contents, by Sum: a sync sees the content it wrote the round before
	// again (the side it went to), and a merge sees both once more.
	facts  [4]facts
	factsN int
}

// facts is what one content was found to be (agents.Examine), at at.
type facts struct {
	sum [32]byte
	agents.Facts
	at time.Time
}

// SideMemory is what Memory remembers of one side.
type SideMemory struct {
	// Seen is the Sum of what the side held when last read or written: an
	// event whose content matches is the caller's own write or no change.
	// Prev is its status, and Mine whether the caller wrote it.
	Seen [32]byte
	Prev agents.Status
	Mine bool
	// Owed: the side is owed the other's content, held back because it
	// looked mid-write (the settle timer delivers it once the side is
	// quiet) or by the rate limit (the limit timer does).
	Owed bool
	// WriteBacks are the times of the write-backs to the side within
	// WriteBackWindow; LeftAlone is set once they exceed the budget.
	WriteBacks []time.Time
	LeftAlone  bool
}

type histEntry struct {
	sum [32]byte
	n   int
}

// Owing reports whether either side is owed content.
func (m *Memory) Owing() bool { return m.Side[Home].Owed || m.Side[Host].Owed }

// Inert reports whether side s, just read as x while nothing is owed, needs
// no decision: it holds what was seen there, or nothing to give the other
// side and nothing to take from it (a writer mid-write, or its own logout;
// that is recorded as seen). A stub of an agent whose stubs are repaired is
// never inert.
func (m *Memory) Inert(s Side, x Content) bool {
	if x.Sum == m.Side[s].Seen {
		return true
	}
	if !x.St.State.Usable() && !(x.St.State == agents.LoggedOut && m.RepairStubs) {
		m.Saw(s, x, false)
		return true
	}
	return false
}

// Input is the input of a decision for cause c at now on the contents v
// just read. owed is the side a write of the previous decision found
// changed (NoSide: none): the content that write carried never reached it,
// so it is still owed, and its new content is no regression.
func (m *Memory) Input(c Cause, now time.Time, v [2]Content, owed Side) Input {
	in := Input{Cause: c, Now: now, Names: m.Names, RepairStubs: m.RepairStubs, HostWrittenAt: m.HostWrittenAt,
		WriteBacks: [2][]time.Time{m.Side[Home].WriteBacks, m.Side[Host].WriteBacks}, Limits: m.Limits, HostDue: m.HostDue}
	for s := range 2 {
		x, at := v[s], m.Side[s]
		n, known := m.known(x.Sum)
		in.Side[s] = SideState{St: x.St, Sum: x.Sum, Changed: x.Sum != at.Seen || c == OnStart,
			Known: known && c != OnStart, Stale: known && n < m.staleBefore,
			Owed: at.Owed || Side(s) == owed, LeftAlone: at.LeftAlone,
			Prev: at.Prev, PrevSum: at.Seen, PrevMine: at.Mine}
	}
	// Claims matter only for content that may go to the host: the home's,
	// and the host's account when the home's names one.
	if v[Home].St.State.Usable() {
		in.Side[Home].Claims = m.claims(v[Home], now)
		if len(in.Side[Home].Claims.Accounts) > 0 && v[Host].St.State.Usable() {
			in.Side[Host].Claims = m.claims(v[Host], now)
		}
	}
	return in
}

// Taken records decision a, taken at now for cause c on the contents v,
// before the caller carries it out: what each side holds, what a login (or
// start-up) makes stale, what is owed or left alone, a write-back.
func (m *Memory) Taken(a Action, v [2]Content, c Cause, now time.Time) {
	for s := range 2 {
		m.Saw(Side(s), v[s], false)
	}
	if c == OnStart || a.Login {
		// Everything seen so far, and what the home holds now, is stale;
		// a new host token is not (Held remembers it after this), unless
		// this is the start-up copy.
		if v[Home].St.State.Usable() {
			m.remember(v[Home].Sum)
		}
		if c == OnStart && v[Host].St.State.Usable() {
			m.remember(v[Host].Sum)
		}
		m.staleBefore = m.histN
	}
	if a.LeaveAlone {
		m.Side[a.Dst].LeftAlone = true
	}
	if a.Unowe {
		m.Side[a.Dst].Owed = false
	}
	switch a.Verb {
	case Settled:
		m.Side[Home].Owed, m.Side[Host].Owed = false, false
	case Hold, Later:
		m.Side[a.Dst].Owed = true
	case Write:
		if a.WriteBack {
			m.countWriteBack(a.Dst, now)
		}
	}
}

// Wrote records that x was written to dst at now, for cause c.
func (m *Memory) Wrote(dst Side, x Content, c Cause, now time.Time) {
	m.Saw(dst, x, true)
	m.Side[dst].Owed = false
	m.remember(x.Sum)
	if dst == Host {
		m.HostWrittenAt = now
		if c != OnFlush {
			m.HostDue = nextHostDue(m.Limits, m.HostDue, now)
		}
	}
}

// Held records the usable contents of v as held, once the decision on
// them is carried out (not before: whether content was known decides what
// a regression is).
func (m *Memory) Held(v [2]Content) {
	for _, x := range v {
		if x.St.State.Usable() {
			m.remember(x.Sum)
		}
	}
}

// Saw records x as what side s holds (mine: the caller wrote it).
func (m *Memory) Saw(s Side, x Content, mine bool) {
	if m.Side[s].Seen != x.Sum {
		m.Side[s].Seen, m.Side[s].Prev, m.Side[s].Mine = x.Sum, x.St, mine
	}
}

// MayReachHost reports whether x, a merge about to be written back to the
// host after the host's own content won, passes what any home-to-host
// write must: plausible claims and the host's account. A merge keeps
// entries of the losing home copy (opencode's other providers); one the
// home could not send on its own must not ride along.
func (m *Memory) MayReachHost(x, host Content, now time.Time) bool {
	c := m.claims(x, now)
	return c.Implausible == "" && agents.SameAccount(c, m.claims(host, now))
}

// Merge is the content that replaces cur when src wins: src, with what the
// agent's merge keeps of cur (agents.Merge).
func (m *Memory) Merge(src, cur Content, now time.Time) Content {
	if !agents.MergeNeeded(m.Format, m.examine(src.Data, src.Sum, now).Facts, m.examine(cur.Data, cur.Sum, now).Facts) {
		return src
	}
	data := agents.Merge(m.Format, src.Data, cur.Data)
	if string(data) == string(src.Data) {
		return src
	}
	x := m.Read(data, now)
	if !x.St.State.Usable() {
		return src // never: a merge only adds members
	}
	return x
}

func (m *Memory) remember(sum [32]byte) {
	if _, ok := m.known(sum); ok {
		return
	}
	m.history[m.histN%len(m.history)] = histEntry{sum, m.histN}
	m.histN++
}

// known reports whether sum is in the history, and when it came in.
func (m *Memory) known(sum [32]byte) (n int, ok bool) {
	for i := range min(m.histN, len(m.history)) {
		if m.history[i].sum == sum {
			return m.history[i].n, true
		}
	}
	return 0, false
}

func (m *Memory) countWriteBack(dst Side, now time.Time) {
	kept := m.Side[dst].WriteBacks[:0]
	for _, t := range m.Side[dst].WriteBacks {
		if now.Sub(t) < WriteBackWindow {
			kept = append(kept, t)
		}
	}
	m.Side[dst].WriteBacks = append(kept, now)
}
