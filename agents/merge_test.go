package agents

import (
	"bytes"
	"encoding/json"
	"testing"
)

type mergeCase struct {
	name, format, winner, loser, want string
}

var mergeCases = []mergeCase{
	{"claude: nothing to keep", "claude",
		`{"claudeAiOauth":{"accessToken":"a2"},"mcpOAuth":{"s":{"t":1}}}`, `{"claudeAiOauth":{"accessToken":"a1"},"mcpOAuth":{"s":{"t":0}}}`,
		`{"claudeAiOauth":{"accessToken":"a2"},"mcpOAuth":{"s":{"t":1}}}`},
	{"claude: an MCP login on the other side and an unknown key survive", "claude",
		`{"claudeAiOauth":{"accessToken":"a2"},"mcpOAuth":{"s":{"t":1}}}`, `{"claudeAiOauth":{"accessToken":"a1"},"mcpOAuth":{"s":{"t":0},"n":{"t":5}},"future":true}`,
		`{"claudeAiOauth":{"accessToken":"a2"},"mcpOAuth":{"s":{"t":1},"n":{"t":5}},"future":true}`},
	{"claude: mcpOAuth only on the loser", "claude",
		`{"claudeAiOauth":{"accessToken":"a2"}}`, `{"claudeAiOauth":{"accessToken":"a1"},"mcpOAuth":{"n":{"t":5}}}`,
		`{"claudeAiOauth":{"accessToken":"a2"},"mcpOAuth":{"n":{"t":5}}}`},
	{"gemini: a refresh without refresh_token keeps the other's", "gemini",
		`{"access_token":"a2","expiry_date":2}`, `{"access_token":"a1","refresh_token":"1//r","expiry_date":1}`,
		`{"access_token":"a2","expiry_date":2,"refresh_token":"1//r"}`},
	{"gemini: its own refresh_token wins", "gemini",
		`{"access_token":"a2","refresh_token":"1//s"}`, `{"access_token":"a1","refresh_token":"1//r"}`,
		`{"access_token":"a2","refresh_token":"1//s"}`},
	{"opencode: per provider, the fresher", "opencode",
		`{"openai":{"type":"oauth","access":"o2","refresh":"r","expires":20},"anthropic":{"type":"oauth","access":"a1","refresh":"r","expires":10}}`,
		`{"openai":{"type":"oauth","access":"o1","refresh":"r","expires":15},"anthropic":{"type":"oauth","access":"a2","refresh":"r","expires":30},"x":{"type":"api","key":"k"}}`,
		`{"openai":{"type":"oauth","access":"o2","refresh":"r","expires":20},"anthropic":{"type":"oauth","access":"a2","refresh":"r","expires":30},"x":{"type":"api","key":"k"}}`},
	{"codex: the whole file", "codex", `{"tokens":{"access_token":"a2"}}`, `{"tokens":{"access_token":"a1"},"extra":1}`, `{"tokens":{"access_token":"a2"}}`},
	{"a torn loser keeps nothing", "claude", `{"claudeAiOauth":{"accessToken":"a2"}}`, `{"claudeAiOauth":{"acc`, `{"claudeAiOauth":{"accessToken":"a2"}}`},
	{"duplicates as the agent reads them", "claude",
		`{"claudeAiOauth":{"accessToken":"a2"}}`, `{"k":1,"k":2}`, `{"claudeAiOauth":{"accessToken":"a2"},"k":2}`},
	{"claude: an MCP login only the loser has, the same top-level keys", "claude",
		`{"claudeAiOauth":{"accessToken":"a2"},"mcpOAuth":{"s":{"t":1}}}`, `{"claudeAiOauth":{"accessToken":"a1"},"mcpOAuth":{"s":{"t":0},"n":{"t":5}}}`,
		`{"claudeAiOauth":{"accessToken":"a2"},"mcpOAuth":{"s":{"t":1},"n":{"t":5}}}`},
	{"opencode: the same providers, one fresher on the loser", "opencode",
		`{"openai":{"type":"oauth","access":"o2","refresh":"r","expires":20},"anthropic":{"type":"oauth","access":"a1","refresh":"r","expires":10}}`,
		`{"openai":{"type":"oauth","access":"o1","refresh":"r","expires":15},"anthropic":{"type":"oauth","access":"a2","refresh":"r","expires":30}}`,
		`{"openai":{"type":"oauth","access":"o2","refresh":"r","expires":20},"anthropic":{"type":"oauth","access":"a2","refresh":"r","expires":30}}`},
	{"claude: the same keys", "claude",
		`{"claudeAiOauth":{"accessToken":"a2"},"k":1}`, `{"k":2,"claudeAiOauth":{"accessToken":"a1"}}`, `{"claudeAiOauth":{"accessToken":"a2"},"k":1}`},
	{"gemini: no refresh_token on either side", "gemini", `{"access_token":"a2"}`, `{"access_token":"a1"}`, `{"access_token":"a2"}`},
	{"opencode: the winner fresher everywhere", "opencode",
		`{"openai":{"type":"oauth","access":"o2","refresh":"r","expires":20},"x":{"type":"api","key":"k"}}`,
		`{"openai":{"type":"oauth","access":"o1","refresh":"r","expires":15},"x":{"type":"api","key":"j"}}`,
		`{"openai":{"type":"oauth","access":"o2","refresh":"r","expires":20},"x":{"type":"api","key":"k"}}`},
}

func TestMerge(t *testing.T) {
	for _, c := range mergeCases {
		got := Merge(c.format, []byte(c.winner), []byte(c.loser))
		var g, w any
		if json.Unmarshal(got, &g) != nil || json.Unmarshal([]byte(c.want), &w) != nil {
			t.Fatalf("%s: %s", c.name, got)
		}
		gb, _ := json.Marshal(g)
		wb, _ := json.Marshal(w)
		if string(gb) != string(wb) {
			t.Errorf("%s:\n got %s\nwant %s", c.name, got, c.want)
		}
		if c.want == c.winner && string(got) != c.winner {
			t.Errorf("%s: rewrote the winner's bytes: %s", c.name, got)
		}
		if !mergeNeeded(c) && c.want != c.winner {
			t.Errorf("%s: MergeNeeded false, but the merge keeps something", c.name)
		}
	}
}

func mergeNeeded(c mergeCase) bool {
	return MergeNeeded(c.format, Examine(c.format, []byte(c.winner), now), Examine(c.format, []byte(c.loser), now))
}

// TestMergeNotNeeded: the usual sync (a refresh of a file whose other keys
// both sides share) needs no second decode. MergeNeeded may say true when
// unsure (an MCP login on both sides, a torn loser): Merge decides then.
func TestMergeNotNeeded(t *testing.T) {
	for _, c := range mergeCases {
		want := map[string]bool{"claude: the same keys": false, "gemini: its own refresh_token wins": false,
			"gemini: no refresh_token on either side": false, "opencode: the winner fresher everywhere": false,
			"codex: the whole file": false, "claude: an MCP login on the other side and an unknown key survive": true,
			"gemini: a refresh without refresh_token keeps the other's": true, "opencode: per provider, the fresher": true}
		if w, ok := want[c.name]; ok && mergeNeeded(c) != w {
			t.Errorf("%s: MergeNeeded %v, want %v", c.name, !w, w)
		}
	}
}

// FuzzMergeNeeded: a merge MergeNeeded says is not needed keeps nothing.
func FuzzMergeNeeded(f *testing.F) {
	for _, c := range mergeCases {
		f.Add(c.format, []byte(c.winner), []byte(c.loser))
	}
	f.Fuzz(func(t *testing.T, format string, winner, loser []byte) {
		if _, ok := formats[format]; !ok {
			return
		}
		if !MergeNeeded(format, Examine(format, winner, now), Examine(format, loser, now)) && !bytes.Equal(Merge(format, winner, loser), winner) {
			t.Fatalf("MergeNeeded false, but Merge gave %s", Merge(format, winner, loser))
		}
	})
}
