package agents

import (
	"encoding/json"
	"testing"
)

func TestMerge(t *testing.T) {
	for _, c := range []struct {
		name, format, winner, loser, want string
	}{
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
	} {
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
	}
}
