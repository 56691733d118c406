// Package agents owns what caw knows about each coding agent: where it keeps
// its credential and config files, how those files reach a container (the
// strategy), how a config is cleaned for a container, and how a credential is
// classified (valid, expired, logged out, invalid) and compared for freshness.
//
// The host CLI and the container guard both decide with these functions, so
// `caw status` and caw-init can never disagree about a credential. The package
// is a leaf: it parses bytes it is given and resolves paths from an
// environment it is given; it opens no files itself.
//
// Adding an agent is one entry in the table in table.go plus its format
// functions.
package agents

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// State is what a credential's content says about the login it holds.
type State int

// States, ordered from worst to best so that comparisons read naturally.
const (
	// Missing: the file does not exist.
	Missing State = iota
	// Empty: the file exists with no content (or only whitespace), as a
	// writer that truncated and has not written yet leaves it.
	Empty
	// Invalid: the content does not parse as the agent's format (a torn
	// write, or not a credential at all).
	Invalid
	// LoggedOut: a well-formed stub with no usable token, as Claude Code
	// writes after invalid_grant.
	LoggedOut
	// Expired: a well-formed credential whose access token has expired; its
	// refresh token may still be good, so it is still worth syncing.
	Expired
	// Valid: a well-formed credential whose access token has not expired (or
	// whose expiry is unknown).
	Valid
)

func (s State) String() string {
	switch s {
	case Missing:
		return "missing"
	case Empty:
		return "empty"
	case Invalid:
		return "invalid"
	case LoggedOut:
		return "logged-out"
	case Expired:
		return "expired"
	case Valid:
		return "valid"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Usable reports whether content in this state holds a login worth
// propagating: only Valid and Expired credentials ever cross a sync.
func (s State) Usable() bool { return s == Valid || s == Expired }

// Status is the classification of one credential's content.
type Status struct {
	State State
	// Expiry is when the access token expires; zero when the format does not
	// tell (then Fresh may still order two credentials).
	Expiry time.Time
	// Fresh orders two usable credentials of the same format: the larger is
	// the newer login. It is the expiry where known, else another timestamp
	// the format carries (Codex's last_refresh).
	Fresh time.Time
}

// At is the status the same content has at now: Classify(data, now) for
// the s that Classify(data, t) gave at any other time t. Only a usable
// token's expiry depends on the time, so a caller that classified content
// once need not decode it again to know whether it has expired since.
func (s Status) At(now time.Time) Status {
	if !s.State.Usable() || s.Expiry.IsZero() {
		return s
	}
	st := byExpiry(s.Expiry, now)
	st.Fresh = s.Fresh
	return st
}

// Compare orders two statuses by how much caw should prefer them: -1 if a is
// worse than b, +1 if better, 0 if neither wins (then the most recent change
// wins, which the caller knows and this package does not). A usable
// credential beats any unusable one; between usable ones the fresher wins;
// an expired one never beats a valid one with the same freshness.
func Compare(a, b Status) int {
	au, bu := a.State.Usable(), b.State.Usable()
	switch {
	case au && !bu:
		return 1
	case !au && bu:
		return -1
	case !au && !bu:
		return 0
	}
	if c := a.Fresh.Compare(b.Fresh); c != 0 {
		return c
	}
	switch {
	case a.State > b.State:
		return 1
	case a.State < b.State:
		return -1
	}
	return 0
}

// Describe renders a status for people, as `caw status` shows it:
// "valid (5h 2m left)", "EXPIRED (2d 1h ago)", "LOGGED OUT", "INVALID",
// "MISSING", "EMPTY".
func (s Status) Describe(now time.Time) string {
	switch s.State {
	case Valid:
		if s.Expiry.IsZero() {
			return "valid"
		}
		return "valid (" + Duration(s.Expiry.Sub(now)) + " left)"
	case Expired:
		if s.Expiry.IsZero() {
			return "EXPIRED"
		}
		return "EXPIRED (" + Duration(now.Sub(s.Expiry)) + " ago)"
	}
	return strings.ToUpper(strings.ReplaceAll(s.State.String(), "-", " "))
}

// Duration renders d with its two largest units: "2d 1h", "5h 2m", "42s".
func Duration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	if d < time.Minute {
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
	days, d := d/(24*time.Hour), d%(24*time.Hour)
	hours, d := d/time.Hour, d%time.Hour
	mins := d / time.Minute
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh", days, hours)
	case hours > 0:
		return fmt.Sprintf("%dh %dm", hours, mins)
	}
	return fmt.Sprintf("%dm", mins)
}

// Format is one credential file format.
type Format struct {
	Name string
	// classify reads a credential's content, decoded as one JSON object.
	// It must not panic on any object (it is fuzzed), and never reports
	// Missing.
	classify func(doc obj, now time.Time) Status
}

// Classify classifies data with the named format; an unknown format name
// gives Invalid for non-empty content, so nothing unknown ever propagates.
func Classify(format string, data []byte, now time.Time) Status {
	st, _ := classify(format, data, now)
	return st
}

// classify is Classify, with the decoded document (nil when data is not
// one JSON object).
func classify(format string, data []byte, now time.Time) (Status, obj) {
	if isBlank(data) {
		return Status{State: Empty}, nil
	}
	f, ok := formats[format]
	if !ok {
		return Status{State: Invalid}, nil
	}
	doc, ok := decodeObject(data)
	if !ok {
		return Status{State: Invalid}, nil
	}
	return f.classify(doc, now), doc
}

// FormatNames lists the known credential formats.
func FormatNames() []string {
	out := make([]string, 0, len(formats))
	for n := range formats {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func isBlank(data []byte) bool {
	for _, c := range data {
		switch c {
		case ' ', '\t', '\r', '\n':
		default:
			return false
		}
	}
	return true
}
