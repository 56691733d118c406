package agents

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// fuzzClassify checks what every classifier promises: no panic, never
// Missing, Empty exactly for blank input, an expiry only on usable states,
// Expired only for an expiry not after now, and the same answer twice.
func fuzzClassify(f *testing.F, format string, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s), int64(1764504000))
	}
	f.Fuzz(func(t *testing.T, data []byte, nowSec int64) {
		now := time.Unix(nowSec%(1<<40), 0)
		st := Classify(format, data, now)
		if st.State == Missing {
			t.Fatal("Classify returned Missing")
		}
		if (st.State == Empty) != isBlank(data) {
			t.Fatalf("Empty=%v for blank=%v", st.State == Empty, isBlank(data))
		}
		if !st.State.Usable() && (!st.Expiry.IsZero() || !st.Fresh.IsZero()) {
			t.Fatalf("%v with expiry %v fresh %v", st.State, st.Expiry, st.Fresh)
		}
		if st.State == Expired && !st.Expiry.IsZero() && st.Expiry.After(now) {
			t.Fatalf("expired with a future expiry %v (now %v)", st.Expiry, now)
		}
		if st.State == Valid && !st.Expiry.IsZero() && !st.Expiry.After(now) {
			t.Fatalf("valid with a past expiry %v (now %v)", st.Expiry, now)
		}
		if st2 := Classify(format, data, now); st2 != st {
			t.Fatalf("not deterministic: %+v then %+v", st, st2)
		}
		if Compare(st, st) != 0 {
			t.Fatal("Compare(s, s) != 0")
		}
		_ = st.Describe(now)
		// One decode tells what Classify and Inspect do.
		f := Examine(format, data, now)
		if f.Status != st || !reflect.DeepEqual(f.Claims, Inspect(format, data, now)) {
			t.Fatalf("Examine %+v, want %+v and %+v", f, st, Inspect(format, data, now))
		}
		// A status brought to another time is the classification then.
		for _, d := range []time.Duration{-48 * time.Hour, -time.Second, time.Second, time.Hour, 400 * 24 * time.Hour} {
			if later := Classify(format, data, now.Add(d)); st.At(now.Add(d)) != later {
				t.Fatalf("At(now%+v) = %+v, Classify then %+v", d, st.At(now.Add(d)), later)
			}
		}
	})
}

func FuzzClassifyClaude(f *testing.F) {
	fuzzClassify(f, "claude",
		claudeCred("sk-ant-oat01-a", "sk-ant-ort01-r", 1764522000000),
		claudeCred("", "", 0),
		`{"claudeAiOauth":{"accessToken":"a","refreshToken":"r"}}`,
		`{"claudeAiOauth":null}`, "null", "  \n")
}

func FuzzClassifyCodex(f *testing.F) {
	fuzzClassify(f, "codex",
		codexCred(jwt(`{"exp":1764522000,"sub":"u"}`), "2026-11-30T07:00:00Z"),
		codexCred("opaque", "2026-11-29T10:00:00.123456Z"),
		`{"OPENAI_API_KEY":"sk-proj-abc"}`, `{"OPENAI_API_KEY":null}`, `{"tokens":{}}`)
}

func FuzzClassifyGemini(f *testing.F) {
	fuzzClassify(f, "gemini",
		geminiCred("ya29.a", "1//r", 1764522000000), geminiCred("", "", 0),
		`{"access_token":"a","expiry_date":1.7e12}`, `{"refresh_token":null}`)
}

func FuzzClassifyOpencode(f *testing.F) {
	fuzzClassify(f, "opencode",
		`{"anthropic":{"type":"oauth","refresh":"r","access":"a","expires":1764522000000}}`,
		`{"openrouter":{"type":"api","key":"sk-or-1"},"github-copilot":{"type":"oauth","refresh":"gho","access":"","expires":0}}`,
		`{}`, `{"x":{"type":"wellknown","key":"k","token":"t"}}`)
}

// FuzzCleanCodexTOML: no panic; what parses cleans to TOML that parses
// again, has no projects table, and keeps every other top-level key.
func FuzzCleanCodexTOML(f *testing.F) {
	f.Add([]byte("model = \"gpt-5-codex\"\n[projects.\"/home/a/src\"]\ntrust_level = \"trusted\"\n[tui]\nnotifications = true\n"))
	f.Add([]byte("projects.\"/x\".trust_level = \"trusted\"\n"))
	f.Add([]byte("[mcp_servers.docs]\ncommand = \"npx\"\nargs = [\"-y\", \"docs\"]\nenv = { A = \"1\" }\n[notice]\nhide_full_access_warning = true\n"))
	f.Add([]byte("d = 2026-11-30\nt = 07:32:00\ndt = 2026-11-30T07:32:00Z\nf = 1e3\ni = 0x1f\n[[profiles]]\nname = \"x\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var in map[string]any
		inErr := toml.Unmarshal(data, &in)
		out, err := CleanCodexTOML(data, CleanOptions{})
		if inErr != nil {
			if err == nil {
				t.Fatal("cleaned a file that does not parse")
			}
			return
		}
		if err != nil {
			t.Fatalf("clean of a parsing file: %v", err)
		}
		var got map[string]any
		if err := toml.Unmarshal(out, &got); err != nil {
			t.Fatalf("cleaned config does not parse: %v\n%s", err, out)
		}
		if _, ok := got["projects"]; ok {
			t.Fatalf("cleaned config has a projects table:\n%s", out)
		}
		for k := range in {
			if _, ok := got[k]; !ok && k != "projects" {
				t.Fatalf("lost key %q:\n%s", k, out)
			}
		}
		if len(got) != len(in)-btoi(in["projects"] != nil) {
			t.Fatalf("key count %d -> %d", len(in), len(got))
		}
	})
}

// FuzzCleanClaudeJSON: no panic; output is a JSON object holding only the
// kept keys, with a projects map of exactly the container home.
func FuzzCleanClaudeJSON(f *testing.F) {
	f.Add([]byte(`{"numStartups":3,"userID":"u","oauthAccount":{"emailAddress":"a@example.com"},"projects":{"/home/a":{}},"history":[1]}`), "/home/playground")
	f.Add([]byte(`{}`), "/home/dev")
	f.Add([]byte(`{"autoUpdates":false,"cachedStatsigGates":{"x":true}}`), "")
	f.Fuzz(func(t *testing.T, data []byte, home string) {
		out, err := CleanClaudeJSON(data, CleanOptions{ContainerHome: home})
		if err != nil {
			return
		}
		var doc map[string]json.RawMessage
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("output is not a JSON object: %v\n%s", err, out)
		}
		keep := map[string]bool{"projects": home != ""}
		for _, k := range claudeKeys {
			keep[k] = true
		}
		for k := range doc {
			if !keep[k] {
				t.Fatalf("kept key %q", k)
			}
		}
		if home == "" {
			return
		}
		var projects map[string]json.RawMessage
		if err := json.Unmarshal(doc["projects"], &projects); err != nil || len(projects) != 1 || projects[home] == nil {
			t.Fatalf("projects = %s, want only %q", doc["projects"], home)
		}
		if !bytes.HasSuffix(out, []byte("\n")) {
			t.Fatal("no final newline")
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
