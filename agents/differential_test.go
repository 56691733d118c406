package agents

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"
)

// The agents parse their files with JavaScript's JSON.parse (Claude Code,
// Gemini CLI, opencode) or serde_json (Codex): keys are compared exactly,
// and a duplicate key's last value wins. A classifier that sees anything
// else (encoding/json's struct decoding matches keys case-insensitively)
// can call a file usable that the agent reads as a logged-out stub, and let
// it cross. These tests and the fuzz target hold the classifiers to the
// agents' view.

func TestParserDifferentials(t *testing.T) {
	now := time.UnixMilli(1764504000000)
	valid := `{"accessToken":"a","refreshToken":"r","expiresAt":1764522000000}`
	stub := `{"accessToken":"","refreshToken":"","expiresAt":0}`
	for _, c := range []struct {
		format, doc string
		want        State
	}{
		{"claude", `{"claudeAiOauth":` + stub + `,"CLAUDEAIOAUTH":` + valid + `}`, LoggedOut},
		{"claude", `{"CLAUDEAIOAUTH":` + valid + `}`, Invalid},
		{"claude", `{"claudeAiOauth":` + valid + `,"claudeAiOauth":` + stub + `}`, LoggedOut},
		{"claude", `{"claudeAiOauth":` + stub + `,"claudeAiOauth":` + valid + `}`, Valid},
		{"claude", `{"claudeAiOauth":{"accessToken":"","refreshToken":"","expiresAt":0,"RefreshToken":"r"}}`, LoggedOut},
		{"codex", `{"OPENAI_API_KEY":null,"Tokens":{"access_token":"a","refresh_token":"r"}}`, LoggedOut},
		{"codex", `{"OPENAI_API_KEY":"sk-1","OPENAI_API_KEY":null}`, LoggedOut},
		{"gemini", `{"access_token":"","refresh_token":"","Refresh_Token":"r"}`, LoggedOut},
		{"gemini", `{"access_token":"a","access_token":"","refresh_token":""}`, LoggedOut},
		{"opencode", `{"anthropic":{"type":"oauth","refresh":"","access":"","Refresh":"r"}}`, LoggedOut},
	} {
		if got := Classify(c.format, []byte(c.doc), now).State; got != c.want {
			t.Errorf("%s %s: %v, want %v (what the agent's parser sees)", c.format, c.doc, got, c.want)
		}
	}
}

// agentParse decodes data as JSON.parse does: exact keys, the last of
// duplicate keys wins, numbers kept as written, nothing after the value.
func agentParse(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := parseValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the value")
	}
	return v, nil
}

func parseValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		m := map[string]any{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := parseValue(dec)
			if err != nil {
				return nil, err
			}
			m[k.(string)] = v // the last one wins
		}
		_, err := dec.Token()
		return m, err
	case json.Delim('['):
		var a []any
		for dec.More() {
			v, err := parseValue(dec)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := dec.Token()
		return a, err
	}
	return tok, nil
}

// schema is the members a format reads: nil for a leaf, a nested schema
// for an object; the key "*" stands for every member.
type schema map[string]schema

var schemas = map[string]schema{
	"claude":   {"claudeAiOauth": {"accessToken": nil, "refreshToken": nil, "expiresAt": nil}},
	"codex":    {"OPENAI_API_KEY": nil, "last_refresh": nil, "tokens": {"id_token": nil, "access_token": nil, "refresh_token": nil, "account_id": nil}},
	"gemini":   {"access_token": nil, "refresh_token": nil, "expiry_date": nil},
	"opencode": {"*": {"type": nil, "refresh": nil, "access": nil, "expires": nil, "key": nil, "accountId": nil}},
}

// project keeps of v only what s reads, by exact key.
func project(v any, s schema) any {
	m, ok := v.(map[string]any)
	if !ok || s == nil {
		return v
	}
	out := map[string]any{}
	for k, x := range m {
		sub, ok := s[k]
		if !ok {
			sub, ok = s["*"]
		}
		if ok {
			out[k] = project(x, sub)
		}
	}
	return out
}

// FuzzAgentView: every classifier gives the same answer for a document and
// for the document as the agent's parser sees it (duplicates resolved,
// exact keys, only the members it reads); a document the agent's parser
// refuses is never usable.
func FuzzAgentView(f *testing.F) {
	for _, s := range []string{
		`{"claudeAiOauth":{"accessToken":"","refreshToken":"","expiresAt":0},"CLAUDEAIOAUTH":{"accessToken":"a","refreshToken":"r","expiresAt":1764522000000}}`,
		`{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":1764522000000},"claudeAiOauth":{"accessToken":""}}`,
		`{"OPENAI_API_KEY":null,"tokens":{"access_token":"a","refresh_token":"r"},"TOKENS":null}`,
		`{"access_token":"a","refresh_token":"r","expiry_date":1764522000000,"Access_Token":""}`,
		`{"openai":{"type":"oauth","refresh":"r","access":"a","expires":1764522000000,"Expires":1}}`,
	} {
		f.Add([]byte(s))
	}
	now := time.UnixMilli(1764504000000)
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := agentParse(data)
		for format, s := range schemas {
			st := Classify(format, data, now)
			if err != nil {
				if st.State.Usable() {
					t.Fatalf("%s: usable, but the agent cannot parse it (%v)", format, err)
				}
				continue
			}
			clean, err := json.Marshal(project(v, s))
			if err != nil {
				t.Fatal(err)
			}
			if st2 := Classify(format, clean, now); st2 != st {
				t.Fatalf("%s: %+v, but %+v as the agent sees it (%s)", format, st, st2, clean)
			}
		}
	})
}

// TestCodexOneToken: a Codex file with only an access token works until it
// expires, one with only a refresh token gets a new one: both are logins.
func TestCodexOneToken(t *testing.T) {
	now := time.UnixMilli(1764504000000)
	for _, doc := range []string{
		`{"OPENAI_API_KEY":null,"tokens":{"access_token":"a","refresh_token":""},"last_refresh":"2025-11-30T10:00:00Z"}`,
		`{"OPENAI_API_KEY":null,"tokens":{"access_token":"","refresh_token":"r"},"last_refresh":"2025-11-30T10:00:00Z"}`,
	} {
		if st := Classify("codex", []byte(doc), now); !st.State.Usable() {
			t.Errorf("%s: %v, want usable", doc, st.State)
		}
	}
}
