package agents

import "time"

// Facts is what one decode of a credential's content tells: its status and
// claims as of the time it was examined, and what MergeNeeded reads. A
// caller that meets the same content again (the guard sees what it wrote
// the round before) keeps its Facts rather than decode it again.
type Facts struct {
	Status Status
	Claims Claims
	// object: the content is one JSON object, whose top-level keys are
	// keys; expires is opencode's OAuth expiry by provider (what its
	// merge compares), refresh whether Gemini's refresh_token is set.
	object  bool
	keys    map[string]bool
	expires map[string]int64
	refresh bool
}

// Examine is Classify and Inspect of data at now, with one decode.
func Examine(format string, data []byte, now time.Time) Facts {
	st, doc := classify(format, data, now)
	f := Facts{Status: st, Claims: inspect(format, doc, now, &st), object: doc != nil}
	if doc == nil {
		return f
	}
	f.keys = make(map[string]bool, len(doc))
	for k := range doc {
		f.keys[k] = true
	}
	switch format {
	case "gemini":
		s, _, _ := doc.str("refresh_token")
		f.refresh = s != ""
	case "opencode":
		f.expires = map[string]int64{}
		for k, raw := range doc {
			f.expires[k] = entryExpiry(raw)
		}
	}
	return f
}

// MergeNeeded reports whether Merge(format, winner, loser) may return
// anything but winner, for contents examined as w and l: false only when
// the format's merge surely keeps nothing of the loser, so that the caller
// can skip decoding both again.
func MergeNeeded(format string, w, l Facts) bool {
	a, ok := agentByFormat(format)
	if !ok || a.Merge == nil {
		return false
	}
	if !w.object || !l.object {
		return true
	}
	switch format {
	case "claude":
		// The loser's members the winner lacks, and its MCP logins.
		for k := range l.keys {
			if !w.keys[k] || k == "mcpOAuth" {
				return true
			}
		}
		return false
	case "gemini":
		return !w.refresh && l.keys["refresh_token"]
	case "opencode":
		for k := range l.keys {
			if !w.keys[k] || l.expires[k] > w.expires[k] {
				return true
			}
		}
		return false
	}
	return true
}
