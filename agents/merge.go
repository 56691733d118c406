package agents

import (
	"bytes"
	"encoding/json"
	"io"
)

// Merges: the guard replaces the older side's file with the fresher side's,
// but three formats hold more than one login, or a refresh may drop a
// field, so a whole-file copy would lose data. Each agent's table entry
// names its merge (Agent.Merge); Merge applies it. A merge only ever adds
// members of the file being replaced to the winner's document, with the
// agent's own names and values: nothing is invented, and when there is
// nothing to keep the winner's bytes are written unchanged.

// MergeFunc merges the file being replaced (loser) into the winner's content.
type MergeFunc func(winner, loser []byte) []byte

// Merge returns the document that replaces loser when winner wins, for the
// named format: winner itself for formats without a merge.
func Merge(format string, winner, loser []byte) []byte {
	a, ok := agentByFormat(format)
	if !ok || a.Merge == nil {
		return winner
	}
	return a.Merge(winner, loser)
}

// member is one member of a JSON object, its value as written.
type member struct {
	key string
	raw json.RawMessage
}

// members reads a JSON object's members in order, a duplicate key's last
// value in the place of its first (as JSON.parse keeps them).
func members(data []byte) ([]member, bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, false
	}
	var out []member
	at := map[string]int{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, false
		}
		key := k.(string)
		if i, ok := at[key]; ok {
			out[i].raw = raw
			continue
		}
		at[key] = len(out)
		out = append(out, member{key, raw})
	}
	if _, err := dec.Token(); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return out, true
}

func encodeMembers(ms []member) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.raw)
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// mergeMembers builds the winner's object with pick's changes: pick says,
// for each of the loser's members, what value (if any) the merged object
// gets under that key. It returns winner unchanged when pick takes nothing.
func mergeMembers(winner, loser []byte, pick func(key string, w, l json.RawMessage, inWinner bool) (json.RawMessage, bool)) []byte {
	wm, ok := members(winner)
	if !ok {
		return winner
	}
	lm, ok := members(loser)
	if !ok {
		return winner
	}
	at := map[string]int{}
	for i, m := range wm {
		at[m.key] = i
	}
	changed := false
	for _, m := range lm {
		i, in := at[m.key]
		var w json.RawMessage
		if in {
			w = wm[i].raw
		}
		v, ok := pick(m.key, w, m.raw, in)
		if !ok {
			continue
		}
		changed = true
		if in {
			wm[i].raw = v
		} else {
			at[m.key] = len(wm)
			wm = append(wm, member{m.key, v})
		}
	}
	if !changed {
		return winner
	}
	return encodeMembers(wm)
}

// mergeClaude keeps the loser's top-level members the winner lacks (the
// winner's claudeAiOauth is the login), and its MCP servers' logins
// (mcpOAuth, by server) the winner lacks.
func mergeClaude(winner, loser []byte) []byte {
	return mergeMembers(winner, loser, func(key string, w, l json.RawMessage, in bool) (json.RawMessage, bool) {
		if !in {
			return l, true
		}
		if key != "mcpOAuth" {
			return nil, false
		}
		merged := mergeMembers(w, l, func(_ string, _, l json.RawMessage, in bool) (json.RawMessage, bool) { return l, !in })
		if bytes.Equal(merged, w) {
			return nil, false
		}
		return bytes.TrimRight(merged, "\n"), true
	})
}

// mergeGemini keeps the loser's refresh_token when the winner has none
// (gemini-cli 21691: a refresh can write the file without it).
func mergeGemini(winner, loser []byte) []byte {
	w, _ := decodeObject(winner)
	if s, _, _ := w.str("refresh_token"); s != "" {
		return winner
	}
	return mergeMembers(winner, loser, func(key string, _, l json.RawMessage, _ bool) (json.RawMessage, bool) {
		return l, key == "refresh_token" && !isNull(l) && string(bytes.TrimSpace(l)) != `""`
	})
}

// mergeOpencode keeps, per provider, the fresher entry: the loser's
// providers the winner lacks, and those whose OAuth expiry is later.
func mergeOpencode(winner, loser []byte) []byte {
	return mergeMembers(winner, loser, func(_ string, w, l json.RawMessage, in bool) (json.RawMessage, bool) {
		return l, !in || entryExpiry(l) > entryExpiry(w)
	})
}

func entryExpiry(raw json.RawMessage) int64 {
	o, _ := decodeObject(raw)
	if t, _, _ := o.str("type"); t != "oauth" {
		return 0
	}
	n, _, _ := o.integer("expires")
	return n
}
