package agents

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func ms(t time.Time) int64 { return t.UnixMilli() }

// jwt builds an unsigned JWT whose payload is claims.
func jwt(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc([]byte(claims)) + ".c2ln"
}

func claudeCred(access, refresh string, expiresAt int64) string {
	return fmt.Sprintf(`{"claudeAiOauth":{"accessToken":%q,"refreshToken":%q,"expiresAt":%d,"scopes":["user:inference","user:profile"],"subscriptionType":"max"},"mcpOAuth":{}}`,
		access, refresh, expiresAt)
}

func codexCred(access, lastRefresh string) string {
	return fmt.Sprintf(`{"OPENAI_API_KEY":null,"tokens":{"id_token":%q,"access_token":%q,"refresh_token":"rt_abc","account_id":"acct"},"last_refresh":%q}`,
		jwt(`{"email":"a@example.com"}`), access, lastRefresh)
}

func geminiCred(access, refresh string, expiry int64) string {
	return fmt.Sprintf(`{"access_token":%q,"refresh_token":%q,"scope":"openid https://www.googleapis.com/auth/cloud-platform","token_type":"Bearer","id_token":"x.y.z","expiry_date":%d}`,
		access, refresh, expiry)
}

func TestClassify(t *testing.T) {
	in5h, ago2d := now.Add(5*time.Hour+2*time.Minute), now.Add(-49*time.Hour)
	tests := []struct {
		format, data string
		state        State
		expiry       time.Time
		fresh        time.Time
	}{
		// Claude Code
		{"claude", claudeCred("sk-ant-oat01-a", "sk-ant-ort01-r", ms(in5h)), Valid, in5h, in5h},
		{"claude", claudeCred("sk-ant-oat01-a", "sk-ant-ort01-r", ms(ago2d)), Expired, ago2d, ago2d},
		{"claude", claudeCred("", "", 0), LoggedOut, time.Time{}, time.Time{}},
		{"claude", `{"claudeAiOauth":{"accessToken":"a","refreshToken":"","expiresAt":0}}`, LoggedOut, time.Time{}, time.Time{}},
		{"claude", `{"claudeAiOauth":{"accessToken":"a","refreshToken":"r"}}`, Valid, time.Time{}, time.Time{}},
		{"claude", `{"claudeAiOauth":{}}`, Invalid, time.Time{}, time.Time{}},
		{"claude", `{"claudeAiOauth":null}`, Invalid, time.Time{}, time.Time{}},
		{"claude", `{"mcpOAuth":{}}`, Invalid, time.Time{}, time.Time{}},
		{"claude", `{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":"soon"}}`, Invalid, time.Time{}, time.Time{}},
		{"claude", claudeCred("a", "r", ms(in5h))[:40], Invalid, time.Time{}, time.Time{}},
		// Codex
		{"codex", codexCred(jwt(fmt.Sprintf(`{"exp":%d}`, in5h.Unix())), "2026-11-30T07:00:00Z"), Valid, in5h.Truncate(time.Second), in5h.Truncate(time.Second)},
		{"codex", codexCred(jwt(fmt.Sprintf(`{"exp":%d}`, ago2d.Unix())), "2026-11-28T07:00:00Z"), Expired, ago2d.Truncate(time.Second), ago2d.Truncate(time.Second)},
		{"codex", codexCred("opaque-token", "2026-11-29T10:00:00Z"), Valid, time.Time{}, time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)},
		{"codex", `{"OPENAI_API_KEY":"sk-proj-abc"}`, Valid, time.Time{}, time.Time{}},
		{"codex", `{"OPENAI_API_KEY":null}`, LoggedOut, time.Time{}, time.Time{}},
		{"codex", `{"OPENAI_API_KEY":null,"tokens":{"access_token":"","refresh_token":""}}`, LoggedOut, time.Time{}, time.Time{}},
		{"codex", `{}`, Invalid, time.Time{}, time.Time{}},
		{"codex", `{"tokens":"x"}`, Invalid, time.Time{}, time.Time{}},
		// Gemini
		{"gemini", geminiCred("ya29.a", "1//r", ms(in5h)), Valid, in5h, in5h},
		{"gemini", geminiCred("ya29.a", "1//r", ms(ago2d)), Expired, ago2d, ago2d},
		{"gemini", geminiCred("", "", 0), LoggedOut, time.Time{}, time.Time{}},
		{"gemini", `{"token_type":"Bearer"}`, Invalid, time.Time{}, time.Time{}},
		// opencode
		{"opencode", fmt.Sprintf(`{"anthropic":{"type":"oauth","refresh":"r","access":"a","expires":%d}}`, ms(in5h)), Valid, in5h, in5h},
		{"opencode", fmt.Sprintf(`{"anthropic":{"type":"oauth","refresh":"r","access":"a","expires":%d},"openai":{"type":"oauth","refresh":"r2","access":"a2","expires":%d}}`, ms(ago2d), ms(in5h)), Valid, in5h, in5h},
		{"opencode", fmt.Sprintf(`{"anthropic":{"type":"oauth","refresh":"r","access":"a","expires":%d}}`, ms(ago2d)), Expired, ago2d, ago2d},
		{"opencode", `{"openrouter":{"type":"api","key":"sk-or-1"}}`, Valid, time.Time{}, time.Time{}},
		{"opencode", `{}`, LoggedOut, time.Time{}, time.Time{}},
		{"opencode", `{"anthropic":{"type":"oauth","refresh":"","access":""}}`, LoggedOut, time.Time{}, time.Time{}},
		{"opencode", `{"anthropic":"x"}`, Invalid, time.Time{}, time.Time{}},
	}
	for i, tc := range tests {
		t.Run(fmt.Sprintf("%s/%d", tc.format, i), func(t *testing.T) {
			st := Classify(tc.format, []byte(tc.data), now)
			if st.State != tc.state || !st.Expiry.Equal(tc.expiry) || !st.Fresh.Equal(tc.fresh) {
				t.Errorf("Classify(%s)\n got %v expiry %v fresh %v\nwant %v expiry %v fresh %v", tc.data, st.State, st.Expiry, st.Fresh, tc.state, tc.expiry, tc.fresh)
			}
		})
	}
}

// What every format shares: blank content is Empty, non-objects are Invalid,
// an unknown format is Invalid, and nothing is ever Missing.
func TestClassifyCommon(t *testing.T) {
	for _, f := range append(FormatNames(), "no-such-format") {
		for _, data := range []string{"", " ", "\n\t\r\n"} {
			if st := Classify(f, []byte(data), now); st.State != Empty {
				t.Errorf("%s %q: %v, want empty", f, data, st.State)
			}
		}
		for _, data := range []string{"null", "[]", `"x"`, "42", "{", "{}{}", "not json", `[{"claudeAiOauth":{}}]`} {
			st := Classify(f, []byte(data), now)
			if st.State != Invalid {
				t.Errorf("%s %q: %v, want invalid", f, data, st.State)
			}
		}
	}
	if st := Classify("no-such-format", []byte(claudeCred("a", "r", ms(now.Add(time.Hour)))), now); st.State != Invalid {
		t.Errorf("unknown format: %v", st.State)
	}
	// Leading whitespace of any length does not make an object invalid.
	padded := strings.Repeat(" ", 100) + claudeCred("a", "r", ms(now.Add(time.Hour)))
	if st := Classify("claude", []byte(padded), now); st.State != Valid {
		t.Errorf("padded credential: %v", st.State)
	}
}

func TestFormatsMatchTable(t *testing.T) {
	names := map[string]bool{}
	for _, n := range FormatNames() {
		names[n] = true
	}
	for _, n := range Names() {
		a, ok := Lookup(n)
		if !ok || a.Name != n {
			t.Fatalf("Lookup(%s)", n)
		}
		if !names[a.Format] {
			t.Errorf("agent %s: format %q has no classifier", n, a.Format)
		}
		if a.Strategy != "bind" && a.Strategy != "bind-dir" {
			t.Errorf("agent %s: default strategy %q", n, a.Strategy)
		}
	}
	if _, ok := Lookup("nope"); ok {
		t.Error("Lookup(nope) found something")
	}
	if got := strings.Join(Names(), ","); got != "claude,codex,gemini,opencode" {
		t.Errorf("Names() = %s", got)
	}
}

func TestStateString(t *testing.T) {
	want := map[State]string{Missing: "missing", Empty: "empty", Invalid: "invalid", LoggedOut: "logged-out", Expired: "expired", Valid: "valid", State(42): "State(42)"}
	for s, w := range want {
		if s.String() != w {
			t.Errorf("%d: %q", int(s), s.String())
		}
	}
	for _, s := range []State{Missing, Empty, Invalid, LoggedOut} {
		if s.Usable() {
			t.Errorf("%v usable", s)
		}
	}
	if !Valid.Usable() || !Expired.Usable() {
		t.Error("valid and expired must be usable")
	}
}

func TestCompare(t *testing.T) {
	t1, t2 := now, now.Add(time.Hour)
	v1 := Status{State: Valid, Expiry: t1, Fresh: t1}
	v2 := Status{State: Valid, Expiry: t2, Fresh: t2}
	e2 := Status{State: Expired, Expiry: t2, Fresh: t2}
	e1 := Status{State: Expired, Expiry: t1, Fresh: t1}
	out := Status{State: LoggedOut}
	inv := Status{State: Invalid}
	empty := Status{State: Empty}
	miss := Status{State: Missing}
	tests := []struct {
		a, b Status
		want int
	}{
		{v2, v1, 1}, {v1, v2, -1}, {v1, v1, 0},
		{e1, out, 1}, {out, e1, -1}, // an expired login still beats a stub
		{e2, v1, 1},  // fresher wins even if expired
		{v1, e1, 1},  // same freshness: valid beats expired
		{e1, v1, -1}, //
		{out, inv, 0}, {inv, miss, 0}, {empty, out, 0},
		{v1, miss, 1}, {miss, v1, -1}, {v1, empty, 1},
	}
	for i, tc := range tests {
		if got := Compare(tc.a, tc.b); got != tc.want {
			t.Errorf("%d: Compare(%v,%v) = %d, want %d", i, tc.a.State, tc.b.State, got, tc.want)
		}
		if got := Compare(tc.b, tc.a); got != -tc.want {
			t.Errorf("%d: Compare is not antisymmetric", i)
		}
	}
}

func TestDescribe(t *testing.T) {
	tests := []struct {
		st   Status
		want string
	}{
		{Status{State: Valid, Expiry: now.Add(5*time.Hour + 2*time.Minute + 30*time.Second)}, "valid (5h 2m left)"},
		{Status{State: Valid}, "valid"},
		{Status{State: Expired, Expiry: now.Add(-(49*time.Hour + 10*time.Minute))}, "EXPIRED (2d 1h ago)"},
		{Status{State: Expired}, "EXPIRED"},
		{Status{State: LoggedOut}, "LOGGED OUT"},
		{Status{State: Invalid}, "INVALID"},
		{Status{State: Missing}, "MISSING"},
		{Status{State: Empty}, "EMPTY"},
	}
	for _, tc := range tests {
		if got := tc.st.Describe(now); got != tc.want {
			t.Errorf("Describe = %q, want %q", got, tc.want)
		}
	}
	for d, want := range map[time.Duration]string{
		42 * time.Second: "42s", -42 * time.Second: "42s", 0: "0s", 3*time.Minute + 5*time.Second: "3m",
		3*time.Hour + 12*time.Minute: "3h 12m", 50 * time.Hour: "2d 2h", 400 * 24 * time.Hour: "400d 0h",
	} {
		if got := Duration(d); got != want {
			t.Errorf("Duration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestLocate(t *testing.T) {
	home := "/home/alice"
	env := func(kv ...string) Env {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return Env{Home: home, Getenv: func(k string) string { return m[k] }}
	}
	loc := func(agent string, e Env) []string {
		a, _ := Lookup(agent)
		out := []string{a.Credential.Locate(e)}
		for _, c := range a.Configs {
			out = append(out, c.Locate(e))
		}
		return out
	}
	tests := []struct {
		agent string
		env   Env
		want  []string
	}{
		{"claude", Env{Home: home}, []string{"/home/alice/.claude/.credentials.json", "/home/alice/.claude.json"}},
		{"claude", env("CLAUDE_CONFIG_DIR", "/srv/claude/"), []string{"/srv/claude/.credentials.json", "/srv/claude/.claude.json"}},
		{"claude", env("CLAUDE_CONFIG_DIR", "relative/dir"), []string{"/home/alice/.claude/.credentials.json", "/home/alice/.claude.json"}},
		{"codex", Env{Home: home}, []string{"/home/alice/.codex/auth.json", "/home/alice/.codex/config.toml"}},
		{"codex", env("CODEX_HOME", "/opt/codex"), []string{"/opt/codex/auth.json", "/opt/codex/config.toml"}},
		{"gemini", Env{Home: home}, []string{"/home/alice/.gemini/oauth_creds.json", "/home/alice/.gemini/google_accounts.json", "/home/alice/.gemini/settings.json"}},
		{"gemini", env("GEMINI_CLI_HOME", "/srv/gem"), []string{"/srv/gem/.gemini/oauth_creds.json", "/srv/gem/.gemini/google_accounts.json", "/srv/gem/.gemini/settings.json"}},
		{"opencode", Env{Home: home}, []string{"/home/alice/.local/share/opencode/auth.json"}},
		{"opencode", env("XDG_DATA_HOME", "/xdg/data"), []string{"/xdg/data/opencode/auth.json"}},
	}
	for _, tc := range tests {
		if got := loc(tc.agent, tc.env); strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%s: got %q, want %q", tc.agent, got, tc.want)
		}
	}
}

func TestCleanClaudeJSON(t *testing.T) {
	in := `{"numStartups":42,"installMethod":"native","autoUpdates":true,"userID":"abc","hasCompletedOnboarding":true,
	 "lastOnboardingVersion":"2.1.120","oauthAccount":{"accountUuid":"u","emailAddress":"a@example.com"},
	 "projects":{"/home/alice/secret":{"history":[{"display":"rm -rf secrets"}]}},
	 "mcpServers":{"x":{"command":"/home/alice/bin/mcp"}},"tipsHistory":{"a":1}}`
	out, err := CleanClaudeJSON([]byte(in), CleanOptions{ContainerHome: "/home/dev"})
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	for _, k := range []string{"mcpServers", "tipsHistory"} {
		if _, ok := doc[k]; ok {
			t.Errorf("kept host-only key %s", k)
		}
	}
	if strings.Contains(string(out), "/home/alice") || strings.Contains(string(out), "rm -rf") {
		t.Errorf("host paths or history leaked:\n%s", out)
	}
	for _, k := range []string{"numStartups", "oauthAccount", "userID", "hasCompletedOnboarding", "installMethod", "autoUpdates", "lastOnboardingVersion"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("dropped essential key %s", k)
		}
	}
	var projects map[string]struct {
		Trust bool `json:"hasTrustDialogAccepted"`
	}
	if err := json.Unmarshal(doc["projects"], &projects); err != nil || len(projects) != 1 || !projects["/home/dev"].Trust {
		t.Errorf("projects = %s, want one trusted entry for /home/dev", doc["projects"])
	}

	out, err = CleanClaudeJSON([]byte(in), CleanOptions{})
	if err != nil || strings.Contains(string(out), "projects") {
		t.Errorf("without a container home: %v\n%s", err, out)
	}
	for _, bad := range []string{"", "null", "[]", `{"numStartups":`, "not json"} {
		if _, err := CleanClaudeJSON([]byte(bad), CleanOptions{ContainerHome: "/h"}); err == nil || !strings.HasPrefix(err.Error(), "parse .claude.json: ") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestCleanCodexTOML(t *testing.T) {
	in := `model = "gpt-5-codex"
approval_policy = "on-request"

[projects."/home/alice/src/secret"]
trust_level = "trusted"

[projects."/home/alice/src/other"]
trust_level = "untrusted"

[tui]
notifications = true

[mcp_servers.docs]
command = "npx"
args = ["-y", "docs-mcp"]
`
	out, err := CleanCodexTOML([]byte(in), CleanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	if strings.Contains(s, "projects") || strings.Contains(s, "/home/alice") {
		t.Errorf("projects kept:\n%s", s)
	}
	for _, want := range []string{"gpt-5-codex", "on-request", "[tui]", "notifications = true", "docs-mcp"} {
		if !strings.Contains(s, want) {
			t.Errorf("lost %q:\n%s", want, s)
		}
	}
	// Dotted keys and inline tables are the same TOML table.
	for _, in := range []string{
		"projects.\"/x\".trust_level = \"trusted\"\nmodel = \"o3\"\n",
		"projects = { \"/x\" = { trust_level = \"trusted\" } }\nmodel = \"o3\"\n",
	} {
		out, err := CleanCodexTOML([]byte(in), CleanOptions{})
		if err != nil || strings.Contains(string(out), "projects") || !strings.Contains(string(out), "o3") {
			t.Errorf("%q: %v\n%s", in, err, out)
		}
	}
	// A [project_trust] table (what the original looked for) is not Codex's
	// and is kept; an empty file stays empty.
	if out, err := CleanCodexTOML([]byte(""), CleanOptions{}); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("empty: %v %q", err, out)
	}
	if _, err := CleanCodexTOML([]byte("model = \"o3\"\n\n[projects\n"), CleanOptions{}); err == nil || !strings.HasPrefix(err.Error(), "parse config.toml: line 3, column ") {
		t.Errorf("no position in %v", err)
	}
	for _, bad := range []string{"[projects", "model = ", "a = 1\na = 2\n", "= 3"} {
		if _, err := CleanCodexTOML([]byte(bad), CleanOptions{}); err == nil || !strings.HasPrefix(err.Error(), "parse config.toml: ") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
