package host

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDockerFlagsRender(t *testing.T) {
	home := fakeHome(t)
	_, dir := setup(t, home)
	mounts, err := DockerFlags(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{Source: dir, Target: "/tmp/caw_auth", ReadOnly: true},
		{Source: filepath.Join(home, ".claude"), Target: "/tmp/caw_auth/claude/mnt/config-dir"},
		{Source: filepath.Join(home, ".codex/auth.json"), Target: "/tmp/caw_auth/codex/mnt/auth.json"},
		{Source: filepath.Join(home, ".gemini/oauth_creds.json"), Target: "/tmp/caw_auth/gemini/mnt/oauth_creds.json"},
		{Source: filepath.Join(home, ".local/share/opencode/auth.json"), Target: "/tmp/caw_auth/opencode/mnt/auth.json"},
	}
	if !reflect.DeepEqual(mounts, want) {
		t.Fatalf("mounts:\n%+v\nwant\n%+v", mounts, want)
	}
	H := func(s string) string { return strings.NewReplacer("$D", dir, "$H", home).Replace(s) }

	shell, err := Render(mounts, FormatShell)
	if err != nil {
		t.Fatal(err)
	}
	if want := H("-v $D:/tmp/caw_auth:ro\n-v $H/.claude:/tmp/caw_auth/claude/mnt/config-dir:rw\n-v $H/.codex/auth.json:/tmp/caw_auth/codex/mnt/auth.json:rw\n" +
		"-v $H/.gemini/oauth_creds.json:/tmp/caw_auth/gemini/mnt/oauth_creds.json:rw\n-v $H/.local/share/opencode/auth.json:/tmp/caw_auth/opencode/mnt/auth.json:rw\n"); shell != want {
		t.Errorf("shell:\n%s\nwant\n%s", shell, want)
	}
	js, err := Render(mounts, FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	var argv []string
	if err := json.Unmarshal([]byte(js), &argv); err != nil {
		t.Fatal(err)
	}
	if len(argv) != 10 || argv[0] != "-v" || argv[1] != dir+":/tmp/caw_auth:ro" || argv[3] != H("$H/.claude:/tmp/caw_auth/claude/mnt/config-dir:rw") {
		t.Errorf("json argv %q", argv)
	}
	// What a real shell makes of $(caw docker-flags) is exactly the argv.
	if got := shellSplit(t, shell); !reflect.DeepEqual(got, argv) {
		t.Errorf("sh splits the shell output into\n%q\nnot\n%q", got, argv)
	}

	compose, err := Render(mounts[:2], FormatCompose)
	if err != nil {
		t.Fatal(err)
	}
	if want := H("volumes:\n  - type: bind\n    source: \"$D\"\n    target: \"/tmp/caw_auth\"\n    read_only: true\n" +
		"  - type: bind\n    source: \"$H/.claude\"\n    target: \"/tmp/caw_auth/claude/mnt/config-dir\"\n    read_only: false\n"); compose != want {
		t.Errorf("compose:\n%s\nwant\n%s", compose, want)
	}
	dc, err := Render(mounts[:2], FormatDevcontainer)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Mounts []string }
	if err := json.Unmarshal([]byte(dc), &doc); err != nil {
		t.Fatal(err)
	}
	if w := []string{H("source=$D,target=/tmp/caw_auth,type=bind,readonly"), H("source=$H/.claude,target=/tmp/caw_auth/claude/mnt/config-dir,type=bind")}; !reflect.DeepEqual(doc.Mounts, w) {
		t.Errorf("devcontainer %q", doc.Mounts)
	}
	if _, err := Render(mounts, "yaml"); err == nil || err.Error() != `unknown format "yaml" (want one of shell, json, compose, devcontainer)` {
		t.Errorf("bad format: %v", err)
	}
}

// shellSplit runs the text through a real sh's unquoted command
// substitution, as docker run $(caw docker-flags) does.
func shellSplit(t *testing.T, text string) []string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "flags")
	os.WriteFile(f, []byte(text), 0o600)
	out, err := exec.Command("sh", "-c", `for a in $(cat "$0"); do printf '%s\0' "$a"; done`, f).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
}

// A home path with a space: shell refuses and names --format json; json,
// compose and devcontainer carry it.
func TestDockerFlagsUnsafePaths(t *testing.T) {
	for _, name := range []string{"alice smith", "tab\there", "star*", "q?", "br[a]", "quo'te", `dq"`, "dollar$HOME", `back\slash`, "tick`", "new\nline"} {
		t.Run(name, func(t *testing.T) {
			home := filepath.Join(t.TempDir(), name)
			writeFile(t, filepath.Join(home, ".codex/auth.json"), codexCred(now))
			_, dir := setup(t, home)
			mounts, err := DockerFlags(dir)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Render(mounts, FormatShell)
			if err == nil || !strings.Contains(err.Error(), "use format json") || !strings.Contains(err.Error(), "would split or glob") {
				t.Errorf("shell: %v", err)
			}
			js, err := Render(mounts, FormatJSON)
			if err != nil {
				t.Fatal(err)
			}
			var argv []string
			if err := json.Unmarshal([]byte(js), &argv); err != nil || argv[3] != filepath.Join(home, ".codex/auth.json")+":/tmp/caw_auth/codex/mnt/auth.json:rw" {
				t.Errorf("json %q %v", argv, err)
			}
			if _, err := Render(mounts, FormatCompose); err != nil {
				t.Errorf("compose: %v", err)
			}
		})
	}
	t.Run("colon", func(t *testing.T) {
		home := filepath.Join(t.TempDir(), "a:b")
		writeFile(t, filepath.Join(home, ".codex/auth.json"), codexCred(now))
		_, dir := setup(t, home)
		mounts, _ := DockerFlags(dir)
		for _, f := range []string{FormatShell, FormatJSON, FormatDevcontainer} {
			if _, err := Render(mounts, f); err == nil || !strings.Contains(err.Error(), "contains ':'") {
				t.Errorf("%s: %v", f, err)
			}
		}
		if _, err := Render(mounts, FormatCompose); err != nil {
			t.Errorf("compose carries a colon: %v", err)
		}
	})
	t.Run("comma", func(t *testing.T) {
		mounts := []Mount{{Source: "/home/a,b", Target: "/t"}}
		if _, err := Render(mounts, FormatDevcontainer); err == nil || !strings.Contains(err.Error(), "contains ','") {
			t.Errorf("devcontainer: %v", err)
		}
		if _, err := Render(mounts, FormatShell); err != nil {
			t.Errorf("shell: %v", err)
		}
	})
}

func TestDockerFlagsMissingHostFiles(t *testing.T) {
	home := fakeHome(t)
	_, dir := setup(t, home)
	cred := filepath.Join(home, ".codex/auth.json")
	os.Remove(cred)
	_, err := DockerFlags(dir)
	if err == nil || err.Error() != "codex: the host credential "+cred+" no longer exists; Docker would create a directory in its place (log in to codex on the host, then re-run caw setup)" {
		t.Errorf("missing credential: %v", err)
	}
	os.Mkdir(cred, 0o700)
	if _, err := DockerFlags(dir); err == nil || !strings.Contains(err.Error(), "is a directory, not a regular file") {
		t.Errorf("directory credential: %v", err)
	}
	os.Remove(cred)
	writeFile(t, cred, codexCred(now))

	// bind-dir: the directory itself must exist.
	os.RemoveAll(filepath.Join(home, ".claude"))
	if _, err := DockerFlags(dir); err == nil || !strings.Contains(err.Error(), "claude: the host credential "+filepath.Join(home, ".claude")+" no longer exists") {
		t.Errorf("missing bind-dir: %v", err)
	}
	writeFile(t, filepath.Join(home, ".claude/.credentials.json"), claudeCred(now))

	// A placeholder removed from staging cannot be created by Docker in a
	// read-only mount.
	os.Remove(filepath.Join(dir, "gemini/mnt/oauth_creds.json"))
	if _, err := DockerFlags(dir); err == nil || !strings.Contains(err.Error(), "is missing or of the wrong type in staging (re-run caw setup)") {
		t.Errorf("missing placeholder: %v", err)
	}
	if _, err := DockerFlags(filepath.Join(t.TempDir(), "nothing")); err == nil || !strings.Contains(err.Error(), "run caw setup first") {
		t.Errorf("no staging: %v", err)
	}
}
