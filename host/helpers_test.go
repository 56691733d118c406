package host

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
)

// now is the clock of every test, so token states are exact.
var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return now }

// Fake but realistic secrets. Tests assert none of them ever reaches
// staging or status output.
const (
	claudeAccess  = "sk-ant-oat01-SECRETaccessCLAUDE"
	claudeRefresh = "sk-ant-ort01-SECRETrefreshCLAUDE"
	codexRefresh  = "rt_SECRETrefreshCODEX"
	geminiAccess  = "ya29.SECRETaccessGEMINI"
	geminiRefresh = "1//SECRETrefreshGEMINI"
	opencodeKey   = "sk-or-SECRETkeyOPENCODE"
)

var secrets = []string{claudeAccess, claudeRefresh, codexRefresh, geminiAccess, geminiRefresh, opencodeKey, "SECRET"}

func claudeCred(expires time.Time) string {
	return string(harness.ClaudeJSON(claudeAccess, claudeRefresh, expires.UnixMilli()))
}

const claudeStub = harness.ClaudeStub

func codexCred(exp time.Time) string {
	claims := base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf(`{"exp":%d}`, exp.Unix())))
	return string(harness.CodexJSON("h.e30.s", "h."+claims+".SECRETsig", codexRefresh, "acct", "2026-11-29T12:00:00Z"))
}

func geminiCred(exp time.Time) string {
	return string(harness.GeminiJSON(geminiAccess, geminiRefresh, exp.UnixMilli()))
}

const opencodeCred = `{"openrouter":{"type":"api","key":"` + opencodeKey + `"}}`

const claudeJSON = `{"numStartups":7,"userID":"u1","hasCompletedOnboarding":true,"oauthAccount":{"emailAddress":"alice@example.com"},
"projects":{"/home/alice/src/private":{"history":[{"display":"SECRET prompt"}]}},"mcpServers":{"x":{"command":"/home/alice/bin/x"}}}`

const codexTOML = `model = "gpt-5-codex"

[projects."/home/alice/src/private"]
trust_level = "trusted"

[tui]
notifications = true
`

// writeFile creates p (and its parents) with data.
func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fakeHome makes a throwaway home with every agent logged in: claude valid
// for 5h, codex expired 2 days ago, gemini valid, opencode an API key.
func fakeHome(t *testing.T) string {
	t.Helper()
	home := filepath.Join(t.TempDir(), "alice")
	writeFile(t, filepath.Join(home, ".claude/.credentials.json"), claudeCred(now.Add(5*time.Hour+2*time.Minute+30*time.Second)))
	writeFile(t, filepath.Join(home, ".claude/settings.json"), `{}`)
	writeFile(t, filepath.Join(home, ".claude.json"), claudeJSON)
	writeFile(t, filepath.Join(home, ".codex/auth.json"), codexCred(now.Add(-49*time.Hour)))
	writeFile(t, filepath.Join(home, ".codex/config.toml"), codexTOML)
	writeFile(t, filepath.Join(home, ".gemini/oauth_creds.json"), geminiCred(now.Add(30*time.Minute)))
	writeFile(t, filepath.Join(home, ".gemini/google_accounts.json"), `{"active":"alice@example.com","old":[]}`)
	writeFile(t, filepath.Join(home, ".gemini/settings.json"), `{"selectedAuthType":"oauth-personal"}`)
	writeFile(t, filepath.Join(home, ".local/share/opencode/auth.json"), opencodeCred)
	return home
}

// setup runs Setup on home into a fresh staging dir under its own temp dir.
func setup(t *testing.T, home string, mod ...func(*SetupOptions)) (*SetupResult, string) {
	t.Helper()
	opts := SetupOptions{AuthDir: filepath.Join(t.TempDir(), "auth"), SourceHome: home, Now: clock}
	for _, f := range mod {
		f(&opts)
	}
	res, err := Setup(opts)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	return res, opts.AuthDir
}

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

// snapshot maps every path under dir to its type, mode and content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		v := fi.Mode().String()
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(data)
		}
		out[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func syscall_mkfifo(p string) error { return syscall.Mkfifo(p, 0o600) }
