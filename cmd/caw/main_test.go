package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/testenv"
)

type result struct {
	stdout, stderr string
	code           int
}

// caw runs the real, statically built binary with HOME=home and no
// CAW_AUTH_DIR unless env sets one.
func caw(t *testing.T, home string, env []string, args ...string) result {
	t.Helper()
	return cawAs(t, home, env, nil, args...)
}

func cawAs(t *testing.T, home string, env []string, cred *syscall.Credential, args ...string) result {
	t.Helper()
	bin := testenv.Build(t, "github.com/caw-dev/caw/cmd/caw")
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}, env...)
	cmd.Dir = home
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{out.String(), errb.String(), code}
}

func (r result) want(t *testing.T, code int, stdoutHas, stderrHas string) {
	t.Helper()
	if r.code != code || !strings.Contains(r.stdout, stdoutHas) || !strings.Contains(r.stderr, stderrHas) {
		t.Errorf("exit %d (want %d)\nstdout (want %q):\n%s\nstderr (want %q):\n%s", r.code, code, stdoutHas, r.stdout, stderrHas, r.stderr)
	}
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fakeHome: Claude valid for 5 hours, Codex expired, fake tokens.
func fakeHome(t *testing.T, dir string) string {
	t.Helper()
	home := filepath.Join(dir, "alice")
	exp := time.Now().Add(5*time.Hour + time.Minute).UnixMilli()
	writeFile(t, filepath.Join(home, ".claude/.credentials.json"),
		fmt.Sprintf(`{"claudeAiOauth":{"accessToken":"sk-ant-oat01-SECRET","refreshToken":"sk-ant-ort01-SECRET","expiresAt":%d}}`, exp))
	writeFile(t, filepath.Join(home, ".claude.json"), `{"numStartups":3,"projects":{"/home/alice/p":{}}}`)
	writeFile(t, filepath.Join(home, ".codex/auth.json"), `{"OPENAI_API_KEY":null,"tokens":{"access_token":"SECRET","refresh_token":"rt_SECRET"},"last_refresh":"2026-01-01T00:00:00Z"}`)
	writeFile(t, filepath.Join(home, ".codex/config.toml"), "model = \"o3\"\n")
	return home
}

func TestWorkflow(t *testing.T) {
	home := fakeHome(t, t.TempDir())
	staging := filepath.Join(home, ".caw/auth")

	r := caw(t, home, nil, "setup")
	r.want(t, 0, "Staged in "+staging, "")
	if !strings.HasSuffix(r.stdout, "Run a container with: docker run $(caw docker-flags) IMAGE\n") {
		t.Errorf("setup hint:\n%s", r.stdout)
	}
	if r.stderr != "" {
		t.Errorf("setup warned: %s", r.stderr)
	}
	if !strings.Contains(r.stdout, "Mounts locked: only caw-init as root") {
		t.Errorf("setup does not say the mounts are locked:\n%s", r.stdout)
	}
	for _, s := range []string{"claude  credential  bind-dir", "valid (5h 0m left)", "codex   credential  bind"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("setup output lacks %q:\n%s", s, r.stdout)
		}
	}
	if fi, err := os.Stat(staging); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("staging: %v %v", fi, err)
	}

	r = caw(t, home, nil, "status")
	r.want(t, 0, "SOURCE OF TRUTH", "")
	for _, s := range []string{filepath.Join(home, ".claude/.credentials.json"), "valid (5h 0m left)", "staged", "valid"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("status lacks %q:\n%s", s, r.stdout)
		}
	}
	if strings.Contains(r.stdout+r.stderr, "SECRET") {
		t.Errorf("status printed a token:\n%s", r.stdout)
	}
	// Codex's token has no expiry (opaque), so everything is valid: --check
	// passes; an expired Claude token makes it fail.
	caw(t, home, nil, "status", "--check").want(t, 0, "", "")
	writeFile(t, filepath.Join(home, ".claude/.credentials.json"), `{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":1000}}`)
	caw(t, home, nil, "status", "--check").want(t, 1, "EXPIRED", "check failed: not every credential is valid")
	caw(t, home, nil, "status", "--agents", "codex", "--check").want(t, 0, "codex", "")
	caw(t, home, nil, "status", "--agents", "all").want(t, 0, "claude", "")

	r = caw(t, home, nil, "status", "--json")
	var rep struct {
		Schema int
		OK     bool
		Files  []struct{ Agent, File, State, Source string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || rep.Schema != 1 || rep.OK || len(rep.Files) != 4 || rep.Files[0].State != "expired" {
		t.Errorf("status --json: %v %+v\n%s", err, rep, r.stdout)
	}

	r = caw(t, home, nil, "docker-flags")
	r.want(t, 0, "-v "+staging+":/tmp/caw_auth:ro\n-v "+filepath.Join(home, ".claude")+":/tmp/caw_auth/claude/mnt/config-dir:rw\n", "")
	r = caw(t, home, nil, "docker-flags", "--format", "json")
	var argv []string
	if err := json.Unmarshal([]byte(r.stdout), &argv); err != nil || len(argv) != 6 || argv[5] != filepath.Join(home, ".codex/auth.json")+":/tmp/caw_auth/codex/mnt/auth.json:rw" {
		t.Errorf("json: %v %q", err, argv)
	}
	caw(t, home, nil, "docker-flags", "--format", "compose").want(t, 0, "volumes:\n  - type: bind\n", "")
	caw(t, home, nil, "docker-flags", "--format", "devcontainer").want(t, 0, `"mounts": [`, "")

	// The original's spelling works too.
	caw(t, home, nil, "auth", "status").want(t, 0, "SOURCE OF TRUTH", "")
	caw(t, home, nil, "auth", "docker-flags", "--format=json").want(t, 0, `"-v"`, "")

	caw(t, home, nil, "teardown", "--dry-run").want(t, 0, "Would remove "+staging, "")
	if _, err := os.Stat(staging); err != nil {
		t.Fatal("dry run removed staging")
	}
	caw(t, home, nil, "auth", "teardown").want(t, 0, "Removed "+staging, "")
	if _, err := os.Stat(staging); !errors.Is(err, os.ErrNotExist) {
		t.Error("teardown left staging")
	}
	if _, err := os.Stat(filepath.Join(home, ".codex/auth.json")); err != nil {
		t.Error("teardown touched a host credential")
	}
	caw(t, home, nil, "teardown").want(t, 0, "Nothing to remove", "")
	caw(t, home, nil, "status").want(t, 1, "", "no caw staging at "+staging+" (run caw setup first, or pass --auth-dir)")
}

func TestAuthDirAndOptions(t *testing.T) {
	tmp := t.TempDir()
	home := fakeHome(t, tmp)
	user := filepath.Join(tmp, "runner")
	os.MkdirAll(user, 0o755)
	viaEnv, viaFlag := filepath.Join(tmp, "env-auth"), filepath.Join(tmp, "flag-auth")

	// --source-home reads another home; CAW_AUTH_DIR picks the staging.
	caw(t, user, []string{"CAW_AUTH_DIR=" + viaEnv}, "setup", "--source-home", home, "--agents", "codex",
		"--container-home", "/home/dev", "--user", "dev").want(t, 0, "Staged in "+viaEnv, "")
	data, err := os.ReadFile(filepath.Join(viaEnv, "manifest.json"))
	if err != nil || !strings.Contains(string(data), `"container_home": "/home/dev"`) || !strings.Contains(string(data), `"user": "dev"`) || strings.Contains(string(data), "claude") {
		t.Errorf("manifest: %v\n%s", err, data)
	}
	// --auth-dir wins over the environment.
	caw(t, user, []string{"CAW_AUTH_DIR=" + viaEnv}, "setup", "--source-home", home, "--auth-dir", viaFlag,
		"--strategy", "claude=bind").want(t, 0, "Staged in "+viaFlag, "")
	caw(t, user, nil, "setup", "--source-home", home, "--auth-dir", viaFlag, "--strategy", "claude=bind").want(t, 0, "Run a container with: docker run $(caw docker-flags --auth-dir "+viaFlag+") IMAGE", "")
	caw(t, user, nil, "docker-flags", "--auth-dir", viaFlag).want(t, 0, filepath.Join(home, ".claude/.credentials.json")+":/tmp/caw_auth/claude/mnt/credentials.json:rw", "")
	caw(t, user, []string{"CAW_AUTH_DIR=" + viaEnv}, "status").want(t, 0, "codex", "")

	// Warnings go to stderr, and do not fail setup.
	caw(t, user, []string{"CAW_AUTH_DIR=" + viaEnv}, "setup", "--source-home", home, "--agents", "claude,gemini").
		want(t, 0, "claude", "caw: warning: gemini: no credential at "+filepath.Join(home, ".gemini/oauth_creds.json"))
}

func TestExitCodes(t *testing.T) {
	tmp := t.TempDir()
	home := fakeHome(t, tmp)
	empty := filepath.Join(tmp, "empty")
	os.MkdirAll(empty, 0o755)
	tests := []struct {
		home   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{home, nil, 2, "COMMANDS:", "caw: no command given"},
		{home, []string{"bogus"}, 2, "", `caw: unknown command "bogus"`},
		{home, []string{"auth", "bogus"}, 2, "", `caw: unknown command "bogus"`},
		{home, []string{"setup", "--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{home, []string{"setup", "extra"}, 2, "", `setup: unexpected argument "extra"`},
		{home, []string{"setup", "--agents", "cursor"}, 2, "", `unknown agent "cursor" (available: claude, codex, gemini, opencode, or all)`},
		{home, []string{"setup", "--strategy", "claude=copy"}, 2, "", "copy is for configs only"},
		{home, []string{"setup", "--container-home", "rel"}, 2, "", `--container-home "rel": want a clean absolute path`},
		{home, []string{"setup", "--source-home", "/nonexistent"}, 2, "", "caw: --source-home /nonexistent is not a directory"},
		{home, []string{"docker-flags", "--format", "yaml"}, 2, "", `unknown --format "yaml" (want one of shell, json, compose, devcontainer)`},
		{home, []string{"status", "--agents", "cursor"}, 2, "", `unknown agent "cursor"`},
		{home, []string{"version"}, 0, "caw dev (go", ""},
		{home, []string{"--help"}, 0, "EXIT CODES:\n   0  success", ""},
		{home, []string{"setup", "--help"}, 0, "--strategy value", ""},
		{home, []string{"setup", "--help"}, 0, "--unlocked-mounts", ""},
		{home, []string{"docker-flags", "--help"}, 0, "EXIT CODES:", ""},
		{home, []string{"auth", "--help"}, 0, "teardown", ""},
		{home, []string{"status"}, 1, "", "no caw staging at"},
		{home, []string{"docker-flags"}, 1, "", "no caw staging at"},
		{empty, []string{"setup"}, 1, "", "caw: error: no agent to set up: found no credential of claude, codex, gemini, opencode under " + empty},
		{empty, []string{"setup", "--agents", "all"}, 1, "", "caw: warning: claude: no credential at"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			caw(t, tc.home, nil, tc.args...).want(t, tc.code, tc.stdout, tc.stderr)
		})
	}
}

func TestCompletion(t *testing.T) {
	home := t.TempDir()
	r := caw(t, home, nil, "--generate-bash-completion")
	for _, c := range []string{"setup", "status", "docker-flags", "teardown", "version", "completion", "auth"} {
		if !strings.Contains(r.stdout, c+"\n") {
			t.Errorf("completion lacks %s:\n%s", c, r.stdout)
		}
	}
	// The script bash sources completes through the binary itself.
	script := caw(t, home, nil, "completion")
	if script.code != 0 || !strings.Contains(script.stdout, "complete -o bashdefault -o default -F _caw_complete caw") {
		t.Errorf("completion script: %+v", script)
	}
	if bash, err := exec.LookPath("bash"); err == nil {
		bin := testenv.Build(t, "github.com/caw-dev/caw/cmd/caw")
		cmd := exec.Command(bash, "-c", `source /dev/stdin; COMP_WORDS=(caw sta); COMP_CWORD=1; _caw_complete; echo "${COMPREPLY[@]}"`)
		cmd.Stdin = strings.NewReader(script.stdout)
		cmd.Env = []string{"PATH=" + filepath.Dir(bin) + ":" + os.Getenv("PATH"), "HOME=" + home}
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "status" {
			t.Errorf("bash completion of 'caw sta': %q %v", out, err)
		}
	}
	r = caw(t, home, nil, "docker-flags", "--fo", "--generate-bash-completion")
	if r.stdout != "--format\n" {
		t.Errorf("flag completion:\n%s", r.stdout)
	}
}

func TestHomeWithSpace(t *testing.T) {
	home := fakeHome(t, filepath.Join(t.TempDir(), "Alice Smith"))
	caw(t, home, nil, "setup").want(t, 0, "Paths here need quoting: build docker run's argv from caw docker-flags --format json", "")
	caw(t, home, nil, "docker-flags").want(t, 1, "", `contains " ", which an unquoted $(caw docker-flags) would split or glob (use --format json`)
	r := caw(t, home, nil, "docker-flags", "--format", "json")
	var argv []string
	if err := json.Unmarshal([]byte(r.stdout), &argv); r.code != 0 || err != nil || !strings.HasPrefix(argv[1], filepath.Join(home, ".caw/auth")+":") {
		t.Errorf("json: %d %v %q", r.code, err, argv)
	}
}

func TestStagingSymlinkRefused(t *testing.T) {
	tmp := t.TempDir()
	home := fakeHome(t, tmp)
	target := filepath.Join(tmp, "elsewhere")
	os.MkdirAll(target, 0o755)
	os.MkdirAll(filepath.Join(home, ".caw"), 0o700)
	os.Symlink(target, filepath.Join(home, ".caw/auth"))
	for _, cmd := range []string{"setup", "status", "docker-flags", "teardown"} {
		caw(t, home, nil, cmd).want(t, 1, "", "is a symlink; caw refuses to write or delete through it")
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Errorf("wrote through the symlink: %v", ents)
	}
}

// Unreadable host files, with the permission check real: caw runs as an
// unprivileged user (root would read anything).
func TestUnreadableFiles(t *testing.T) {
	testenv.RequireRoot(t)
	tmp := t.TempDir()
	// t.TempDir's parent is 0700: open both to the unprivileged user.
	os.Chmod(filepath.Dir(tmp), 0o755)
	os.Chmod(tmp, 0o755)
	home := fakeHome(t, tmp)
	const uid, gid = 65534, 65534
	filepath.Walk(home, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			os.Chown(p, uid, gid)
		}
		return nil
	})
	// Claude's credential is unreadable: skipped with a warning; Codex works.
	os.Chmod(filepath.Join(home, ".claude/.credentials.json"), 0)
	nobody := &syscall.Credential{Uid: uid, Gid: gid}
	cawAs(t, home, nil, nobody, "setup").want(t, 0, "codex", "caw: warning: claude: cannot use the credential "+filepath.Join(home, ".claude/.credentials.json")+", skipped: permission denied")
	// An unreadable config is an error, and the previous staging stays.
	os.Chmod(filepath.Join(home, ".codex/config.toml"), 0)
	before, _ := os.ReadFile(filepath.Join(home, ".caw/auth/manifest.json"))
	cawAs(t, home, nil, nobody, "setup").want(t, 1, "", "codex: config "+filepath.Join(home, ".codex/config.toml")+": permission denied")
	after, _ := os.ReadFile(filepath.Join(home, ".caw/auth/manifest.json"))
	if len(before) == 0 || !bytes.Equal(before, after) {
		t.Error("failed setup changed the previous staging")
	}
	// status shows the unreadable credential as a problem, without failing.
	os.Chmod(filepath.Join(home, ".codex/auth.json"), 0)
	r := cawAs(t, home, nil, nobody, "status", "--json")
	if r.code != 0 || !strings.Contains(r.stdout, `"problem": "permission denied"`) || !strings.Contains(r.stdout, `"exists": true`) {
		t.Errorf("status of an unreadable credential: %+v", r)
	}
	cawAs(t, home, nil, nobody, "status").want(t, 0, "INVALID (permission denied)", "")
}

func TestDockerFlagsInitUsage(t *testing.T) {
	for _, args := range [][]string{
		{"docker-flags", "--user", "1:1"},
		{"docker-flags", "--init-from", "v"},
		{"docker-flags", "--", "/ep.sh"},
		{"docker-flags", "stray"},
	} {
		var out, errb strings.Builder
		if code := run(append([]string{"caw"}, args...), &out, &errb); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (usage)\n%s", args, code, exitUsage, errb.String())
		}
	}
}
