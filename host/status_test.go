package host

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestStatus(t *testing.T) {
	home := fakeHome(t)
	_, dir := setup(t, home)
	// The host side changes after setup: status must see it, because it
	// reads the host credential, not staging.
	writeFile(t, filepath.Join(home, ".gemini/oauth_creds.json"), `{"access_token":"ya29.`) // torn write
	writeFile(t, filepath.Join(home, ".local/share/opencode/auth.json"), `{}`)              // logged out
	mt := now.Add(-(3*time.Hour + 12*time.Minute))
	if err := os.Chtimes(filepath.Join(home, ".claude/.credentials.json"), mt, mt); err != nil {
		t.Fatal(err)
	}
	rep, err := Status(StatusOptions{AuthDir: dir, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, f := range rep.Files {
		rows = append(rows, strings.Join([]string{f.Agent, f.File, f.Type, f.Strategy, strings.TrimPrefix(f.Source, home), f.State, f.Token}, "|"))
	}
	want := []string{
		"claude|.claude/.credentials.json|credential|bind-dir|/.claude/.credentials.json|valid|valid (5h 2m left)",
		"claude|.claude.json|config|copy|staged||-",
		"codex|.codex/auth.json|credential|bind|/.codex/auth.json|expired|EXPIRED (2d 1h ago)",
		"codex|.codex/config.toml|config|copy|staged||-",
		"gemini|.gemini/oauth_creds.json|credential|bind|/.gemini/oauth_creds.json|invalid|INVALID",
		"gemini|.gemini/google_accounts.json|config|copy|staged||-",
		"gemini|.gemini/settings.json|config|copy|staged||-",
		"opencode|.local/share/opencode/auth.json|credential|bind|/.local/share/opencode/auth.json|logged-out|LOGGED OUT",
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
	if rep.OK {
		t.Error("OK with an expired credential")
	}
	if c := rep.Files[0]; c.ModifiedAgo != "3h 12m" || !c.Modified.Equal(mt) || c.ExpiresAt == nil || !c.ExpiresAt.Equal(now.Add(5*time.Hour+2*time.Minute+30*time.Second).Truncate(time.Millisecond)) {
		t.Errorf("claude row %+v", c)
	}
	if rep.Files[1].Path != filepath.Join(dir, "claude/config.json") || !rep.Files[1].Exists {
		t.Errorf("config row %+v", rep.Files[1])
	}

	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	js, err := rep.JSON()
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{table.String(), string(js)} {
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("status prints a secret (%s):\n%s", s, out)
			}
		}
	}
	lines := strings.Split(strings.TrimSpace(table.String()), "\n")
	if len(lines) != 9 || !strings.HasPrefix(lines[0], "AGENT") || !strings.Contains(lines[1], "3h 12m ago") || !strings.Contains(lines[1], "valid (5h 2m left)") {
		t.Errorf("table:\n%s", table.String())
	}

	// Missing host credential.
	os.Remove(filepath.Join(home, ".codex/auth.json"))
	rep, err = Status(StatusOptions{AuthDir: dir, Agents: []string{"codex"}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Files) != 2 || rep.Files[0].State != "missing" || rep.Files[0].Token != "MISSING" || rep.Files[0].Exists || rep.Files[0].Modified != nil {
		t.Errorf("missing: %+v", rep.Files)
	}
}

func TestStatusOK(t *testing.T) {
	home := t.TempDir()
	writeFile(t, filepath.Join(home, ".claude/.credentials.json"), claudeCred(now.Add(time.Hour)))
	_, dir := setup(t, home)
	rep, err := Status(StatusOptions{AuthDir: dir, Now: clock})
	if err != nil || !rep.OK {
		t.Fatalf("ok=%v err=%v", rep != nil && rep.OK, err)
	}
	// The same file an hour later is expired: --check must fail then.
	later := func() time.Time { return now.Add(2 * time.Hour) }
	if rep, _ := Status(StatusOptions{AuthDir: dir, Now: later}); rep.OK || rep.Files[0].Token != "EXPIRED (1h 0m ago)" {
		t.Errorf("later: ok=%v %s", rep.OK, rep.Files[0].Token)
	}
}

// The JSON schema is a contract: exactly these keys, these types.
func TestStatusJSONSchema(t *testing.T) {
	home := fakeHome(t)
	_, dir := setup(t, home)
	rep, err := Status(StatusOptions{AuthDir: dir, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := rep.JSON()
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		t.Fatal(err)
	}
	if got := keys(doc); got != "auth_dir container_home created_at files host_home ok schema" {
		t.Errorf("top-level keys: %s", got)
	}
	if doc["schema"] != float64(1) {
		t.Errorf("schema %v", doc["schema"])
	}
	files := doc["files"].([]any)
	if len(files) != 8 {
		t.Fatalf("%d files", len(files))
	}
	for _, f := range files {
		if got := keys(f.(map[string]any)); got != "agent exists expires_at file modified modified_ago path source state strategy token type" {
			t.Errorf("file keys: %s", got)
		}
	}
	cred, cfg := files[0].(map[string]any), files[1].(map[string]any)
	if cred["state"] != "valid" || cred["expires_at"] != "2026-11-30T17:02:30Z" || cred["source"] != filepath.Join(home, ".claude/.credentials.json") {
		t.Errorf("credential %v", cred)
	}
	if cfg["state"] != "" || cfg["expires_at"] != nil || cfg["source"] != "staged" || cfg["token"] != "-" {
		t.Errorf("config %v", cfg)
	}
}

func keys(m map[string]any) string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestStatusErrors(t *testing.T) {
	home := fakeHome(t)
	_, dir := setup(t, home, func(o *SetupOptions) { o.Agents = []string{"claude"} })
	if _, err := Status(StatusOptions{AuthDir: dir, Agents: []string{"codex"}}); err == nil || !strings.Contains(err.Error(), "agent codex is not in the staging at "+dir+", which has: claude (run caw setup Agents codex)") {
		t.Errorf("agent not staged: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "none")
	if _, err := Status(StatusOptions{AuthDir: empty}); err == nil || err.Error() != "no caw staging at "+empty+" (run caw setup first, or pass AuthDir)" {
		t.Errorf("no staging: %v", err)
	}
	writeFile(t, filepath.Join(dir, "manifest.json"), `{"version":2}`)
	if _, err := Status(StatusOptions{AuthDir: dir}); err == nil || !strings.Contains(err.Error(), `manifest.json: version: "2" is not supported`) {
		t.Errorf("bad manifest: %v", err)
	}
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(dir, link)
	if _, err := Status(StatusOptions{AuthDir: link}); err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Errorf("symlink staging: %v", err)
	}
}

// The original tool's manifest (a single-file bind, no format fields) works
// with status and docker-flags unchanged.
func TestOriginalManifest(t *testing.T) {
	home := fakeHome(t)
	dir := filepath.Join(t.TempDir(), "auth")
	orig, err := os.ReadFile("../manifest/testdata/original-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "manifest.json"), strings.ReplaceAll(string(orig), "/home/alice", home))
	writeFile(t, filepath.Join(dir, "claude/credentials.json"), "")
	writeFile(t, filepath.Join(dir, "codex/auth.json"), "")
	rep, err := Status(StatusOptions{AuthDir: dir, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Files[0].State != "valid" || rep.Files[2].State != "expired" {
		t.Errorf("%+v", rep.Files)
	}
	mounts, err := DockerFlags(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 3 || mounts[1].Source != filepath.Join(home, ".claude/.credentials.json") || mounts[1].Target != "/tmp/caw_auth/claude/credentials.json" {
		t.Errorf("%+v", mounts)
	}
}
