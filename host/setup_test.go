package host

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/caw-dev/caw/manifest"
)

func TestSetupAllAgents(t *testing.T) {
	home := fakeHome(t)
	res, dir := setup(t, home, func(o *SetupOptions) { o.User = "dev"; o.ContainerHome = "/home/dev" })
	if len(res.Warnings) != 0 {
		t.Errorf("warnings: %q", res.Warnings)
	}
	var names []string
	for _, a := range res.Agents {
		names = append(names, a.Name+":"+a.Strategy+":"+a.Status.State.String())
	}
	if want := []string{"claude:bind-dir:valid", "codex:bind:expired", "gemini:bind:valid", "opencode:bind:valid"}; !reflect.DeepEqual(names, want) {
		t.Errorf("agents %q, want %q", names, want)
	}

	m, err := manifest.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.HostHome != home || m.ContainerHome != "/home/dev" || m.User != "dev" || m.MountPoint != "/tmp/caw_auth" || m.CreatedAt != "2026-11-30T12:00:00Z" {
		t.Errorf("manifest header %+v", m)
	}
	var got []string
	for _, e := range m.Entries() {
		got = append(got, strings.Join([]string{e.Agent, e.Type, e.Strategy, e.Src, e.ContainerTarget, e.HostOriginal, e.Mode, e.Format}, " "))
	}
	want := []string{
		"claude credential bind-dir claude/mnt/config-dir/.credentials.json .claude/.credentials.json .claude/.credentials.json 0600 claude",
		"claude config copy claude/config.json .claude.json .claude.json 0644 ",
		"codex credential bind codex/mnt/auth.json .codex/auth.json .codex/auth.json 0600 codex",
		"codex config copy codex/config.toml .codex/config.toml .codex/config.toml 0644 ",
		"gemini credential bind gemini/mnt/oauth_creds.json .gemini/oauth_creds.json .gemini/oauth_creds.json 0600 gemini",
		"gemini config copy gemini/google_accounts.json .gemini/google_accounts.json .gemini/google_accounts.json 0644 ",
		"gemini config copy gemini/settings.json .gemini/settings.json .gemini/settings.json 0644 ",
		"opencode credential bind opencode/mnt/auth.json .local/share/opencode/auth.json .local/share/opencode/auth.json 0600 opencode",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The layout: 0700 dirs, 0600 files, empty placeholders, no secret.
	snap := snapshot(t, dir)
	var paths []string
	for p, v := range snap {
		paths = append(paths, p+" "+strings.SplitN(v, " ", 2)[0])
		for _, s := range secrets {
			if strings.Contains(v, s) {
				t.Errorf("staging %s holds a secret (%s)", p, s)
			}
		}
	}
	sort.Strings(paths)
	wantPaths := []string{
		". drwx------", "claude drwx------", "claude/config.json -rw-------", "claude/mnt dr--------", "claude/mnt/config-dir drwx------",
		"codex drwx------", "codex/config.toml -rw-------", "codex/mnt dr--------", "codex/mnt/auth.json -rw-------",
		"gemini drwx------", "gemini/google_accounts.json -rw-------", "gemini/mnt dr--------", "gemini/mnt/oauth_creds.json -rw-------", "gemini/settings.json -rw-------",
		"manifest.json -rw-------", "opencode drwx------", "opencode/mnt dr--------", "opencode/mnt/auth.json -rw-------",
	}
	if !reflect.DeepEqual(paths, wantPaths) {
		t.Errorf("staging layout:\n%s\nwant:\n%s", strings.Join(paths, "\n"), strings.Join(wantPaths, "\n"))
	}
	for _, p := range []string{"codex/mnt/auth.json", "gemini/mnt/oauth_creds.json", "opencode/mnt/auth.json"} {
		if snap[p] != "-rw------- " {
			t.Errorf("placeholder %s is not empty: %q", p, snap[p])
		}
	}

	// Cleaned configs: Claude's projects is the container home alone,
	// Codex's projects tables are gone.
	if c := snap["claude/config.json"]; !strings.Contains(c, `"/home/dev"`) || strings.Contains(c, "/home/alice") || strings.Contains(c, "mcpServers") {
		t.Errorf("cleaned .claude.json:\n%s", c)
	}
	var codex map[string]any
	if err := toml.Unmarshal([]byte(strings.SplitN(snap["codex/config.toml"], " ", 2)[1]), &codex); err != nil || codex["projects"] != nil || codex["model"] != "gpt-5-codex" {
		t.Errorf("cleaned config.toml: %v %v", err, codex)
	}
	// The host files are untouched.
	if data, _ := os.ReadFile(filepath.Join(home, ".codex/config.toml")); string(data) != codexTOML {
		t.Error("setup modified the host config.toml")
	}
}

// Agent dirs outside the home (CLAUDE_CONFIG_DIR, CODEX_HOME, XDG_DATA_HOME,
// GEMINI_CLI_HOME) are recorded as absolute host_original paths and mounted
// from there.
func TestSetupAgentDirsFromEnv(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	ext := t.TempDir()
	if err := os.MkdirAll(home, 0o700); err != nil {
		t.Fatal(err)
	}
	claudeDir, codexDir, xdg, gem := filepath.Join(ext, "claude"), filepath.Join(ext, "codex"), filepath.Join(ext, "xdg"), filepath.Join(ext, "gem")
	writeFile(t, filepath.Join(claudeDir, ".credentials.json"), claudeCred(now.Add(time.Hour)))
	writeFile(t, filepath.Join(claudeDir, ".claude.json"), claudeJSON)
	writeFile(t, filepath.Join(codexDir, "auth.json"), codexCred(now.Add(time.Hour)))
	writeFile(t, filepath.Join(xdg, "opencode/auth.json"), opencodeCred)
	writeFile(t, filepath.Join(gem, ".gemini/oauth_creds.json"), geminiCred(now.Add(time.Hour)))
	// Decoys at the default places must be ignored.
	writeFile(t, filepath.Join(home, ".claude/.credentials.json"), claudeStub)
	writeFile(t, filepath.Join(home, ".claude.json"), `{"decoy":true}`)

	getenv := envOf("CLAUDE_CONFIG_DIR", claudeDir, "CODEX_HOME", codexDir, "XDG_DATA_HOME", xdg, "GEMINI_CLI_HOME", gem)
	res, dir := setup(t, home, func(o *SetupOptions) { o.Getenv = getenv })
	if len(res.Agents) != 4 {
		t.Fatalf("agents %+v warnings %q", res.Agents, res.Warnings)
	}
	m, err := manifest.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	hostOrig := map[string]string{}
	for _, e := range m.Entries() {
		hostOrig[e.Agent+"/"+e.Type] = e.HostOriginal
	}
	want := map[string]string{
		"claude/credential":   filepath.Join(claudeDir, ".credentials.json"),
		"claude/config":       filepath.Join(claudeDir, ".claude.json"),
		"codex/credential":    filepath.Join(codexDir, "auth.json"),
		"gemini/credential":   filepath.Join(gem, ".gemini/oauth_creds.json"),
		"opencode/credential": filepath.Join(xdg, "opencode/auth.json"),
	}
	if !reflect.DeepEqual(hostOrig, want) {
		t.Errorf("host_original:\n%v\nwant\n%v", hostOrig, want)
	}
	mounts, err := DockerFlags(dir)
	if err != nil {
		t.Fatal(err)
	}
	var srcs []string
	for _, mt := range mounts[1:] {
		srcs = append(srcs, mt.Source)
	}
	if w := []string{claudeDir, filepath.Join(codexDir, "auth.json"), filepath.Join(gem, ".gemini/oauth_creds.json"), filepath.Join(xdg, "opencode/auth.json")}; !reflect.DeepEqual(srcs, w) {
		t.Errorf("mount sources %q, want %q", srcs, w)
	}
	rep, err := Status(StatusOptions{AuthDir: dir, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Files[0].Source != filepath.Join(claudeDir, ".credentials.json") || rep.Files[0].State != "valid" {
		t.Errorf("status reads %s (%s), want the CLAUDE_CONFIG_DIR credential", rep.Files[0].Source, rep.Files[0].State)
	}
}

func TestSetupStrategyOverride(t *testing.T) {
	home := fakeHome(t)
	strats := map[string]string{"claude": "bind", "codex": "bind-dir"}
	_, dir := setup(t, home, func(o *SetupOptions) { o.Agents = []string{"claude", "codex"}; o.Strategies = strats })
	m, err := manifest.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, x := m.Agents["claude"].Files[0], m.Agents["codex"].Files[0]
	if c.Strategy != "bind" || c.Src != "claude/mnt/credentials.json" || x.Strategy != "bind-dir" || x.Src != "codex/mnt/home/auth.json" {
		t.Errorf("claude %+v codex %+v", c, x)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "claude/mnt/credentials.json")); err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
		t.Errorf("bind placeholder: %v %v", fi, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "codex/mnt/home")); err != nil || !fi.IsDir() {
		t.Errorf("bind-dir placeholder: %v %v", fi, err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "codex/mnt/home")); len(ents) != 0 {
		t.Errorf("bind-dir placeholder not empty: %v", ents)
	}
	mounts, err := DockerFlags(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{Source: dir, Target: "/tmp/caw_auth", ReadOnly: true},
		{Source: filepath.Join(home, ".claude/.credentials.json"), Target: "/tmp/caw_auth/claude/mnt/credentials.json"},
		{Source: filepath.Join(home, ".codex"), Target: "/tmp/caw_auth/codex/mnt/home"},
	}
	if !reflect.DeepEqual(mounts, want) {
		t.Errorf("mounts %+v\nwant %+v", mounts, want)
	}
}

func TestSetupSkipsAndWarns(t *testing.T) {
	t.Run("explicit agent without files", func(t *testing.T) {
		home := fakeHome(t)
		os.Remove(filepath.Join(home, ".codex/auth.json"))
		res, _ := setup(t, home, func(o *SetupOptions) { o.Agents = []string{"claude", "codex"} })
		if len(res.Agents) != 1 || res.Agents[0].Name != "claude" {
			t.Errorf("agents %+v", res.Agents)
		}
		if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "codex: no credential at "+filepath.Join(home, ".codex/auth.json")+", skipped") {
			t.Errorf("warnings %q", res.Warnings)
		}
	})
	t.Run("default skips absent agents silently", func(t *testing.T) {
		home := t.TempDir()
		writeFile(t, filepath.Join(home, ".codex/auth.json"), codexCred(now.Add(time.Hour)))
		res, _ := setup(t, home)
		if len(res.Agents) != 1 || res.Agents[0].Name != "codex" {
			t.Errorf("agents %+v", res.Agents)
		}
		if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "codex: no config at") {
			t.Errorf("warnings %q (want only the missing config.toml)", res.Warnings)
		}
	})
	t.Run("missing configs", func(t *testing.T) {
		home := t.TempDir()
		writeFile(t, filepath.Join(home, ".claude/.credentials.json"), claudeCred(now.Add(time.Hour)))
		res, dir := setup(t, home)
		if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "claude: no config at "+filepath.Join(home, ".claude.json")+", skipped") {
			t.Errorf("warnings %q", res.Warnings)
		}
		m, _ := manifest.Read(dir)
		if len(m.Entries()) != 1 {
			t.Errorf("entries %+v", m.Entries())
		}
	})
	t.Run("credential not usable", func(t *testing.T) {
		for _, tc := range []struct{ content, want string }{
			{claudeStub, "is LOGGED OUT; staged anyway"},
			{`{"claudeAiOauth":`, "is INVALID; staged anyway"},
			{"", "is EMPTY; staged anyway"},
		} {
			home := t.TempDir()
			writeFile(t, filepath.Join(home, ".claude/.credentials.json"), tc.content)
			res, _ := setup(t, home)
			if len(res.Agents) != 1 || len(res.Warnings) != 2 || !strings.Contains(res.Warnings[0], tc.want) {
				t.Errorf("%q: agents %d warnings %q", tc.content, len(res.Agents), res.Warnings)
			}
		}
	})
	t.Run("credential not a regular file", testSetupCredentialNotRegular)
	t.Run("none usable", func(t *testing.T) {
		home := t.TempDir()
		dir := filepath.Join(t.TempDir(), "auth")
		_, err := Setup(SetupOptions{AuthDir: dir, SourceHome: home, Now: clock})
		if err == nil || !strings.Contains(err.Error(), "no agent to set up: found no credential of claude, codex, gemini, opencode under "+home) {
			t.Errorf("err %v", err)
		}
		_, err = Setup(SetupOptions{AuthDir: dir, SourceHome: home, Agents: []string{"gemini"}, Now: clock})
		if err == nil || !strings.Contains(err.Error(), "no agent to set up: none of gemini has a usable credential") {
			t.Errorf("err %v", err)
		}
		if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Error("a failed setup created the staging dir")
		}
	})
}

// testSetupCredentialNotRegular: a directory, a FIFO or a symlink where a
// credential should be is skipped with a warning naming it.
func testSetupCredentialNotRegular(t *testing.T) {
	home := fakeHome(t)
	cred := filepath.Join(home, ".codex/auth.json")
	os.Remove(cred)
	os.Mkdir(cred, 0o700)
	gem := filepath.Join(home, ".gemini/oauth_creds.json")
	os.Remove(gem)
	if err := syscall_mkfifo(gem); err != nil {
		t.Fatal(err)
	}
	oc := filepath.Join(home, ".local/share/opencode/auth.json")
	os.Remove(oc)
	os.Symlink(filepath.Join(home, ".codex/config.toml"), oc)
	res, _ := setup(t, home)
	var names []string
	for _, a := range res.Agents {
		names = append(names, a.Name)
	}
	if strings.Join(names, ",") != "claude" {
		t.Errorf("agents %q", names)
	}
	ws := strings.Join(res.Warnings, "\n")
	for _, want := range []string{
		"codex: cannot use the credential " + cred + ", skipped: " + cred + " is not a regular file (a directory)",
		"gemini: cannot use the credential " + gem + ", skipped: " + gem + " is not a regular file (a FIFO)",
		"opencode: cannot use the credential " + oc + ", skipped: " + oc + " is a symlink",
	} {
		if !strings.Contains(ws, want) {
			t.Errorf("warnings lack %q:\n%s", want, ws)
		}
	}
}

func TestSetupBadInput(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(home string)
		opts   func(*SetupOptions)
		want   string
		usage  bool
	}{
		{"malformed .claude.json", func(h string) { writeFile(t, filepath.Join(h, ".claude.json"), `{"numStartups": 3,`) }, nil,
			"claude: config %H/.claude.json: parse .claude.json: unexpected end of JSON input (fix the file, or leave claude out with Agents)", false},
		{"malformed config.toml", func(h string) { writeFile(t, filepath.Join(h, ".codex/config.toml"), "[projects\nmodel = 1\n") }, nil,
			"codex: config %H/.codex/config.toml: parse config.toml:", false},
		{"config is a directory", func(h string) {
			os.Remove(filepath.Join(h, ".gemini/settings.json"))
			os.Mkdir(filepath.Join(h, ".gemini/settings.json"), 0o700)
		}, nil, "gemini: config %H/.gemini/settings.json: %H/.gemini/settings.json is not a regular file (a directory) (fix or remove it, or leave gemini out with Agents)", false},
		{"relative container home", nil, func(o *SetupOptions) { o.ContainerHome = "home/dev" },
			`ContainerHome "home/dev": want a clean absolute path such as /home/playground`, true},
		{"unclean container home", nil, func(o *SetupOptions) { o.ContainerHome = "/home/dev/" },
			`ContainerHome "/home/dev/": want a clean absolute path such as /home/playground`, true},
		{"source home missing", nil, func(o *SetupOptions) { o.SourceHome = "/nonexistent/home" },
			"SourceHome /nonexistent/home is not a directory", true},
		{"unknown agent", nil, func(o *SetupOptions) { o.Agents = []string{"cursor"} },
			`Agents "cursor": unknown agent (available: claude, codex, gemini, opencode)`, true},
		{"copy strategy", nil, func(o *SetupOptions) { o.Strategies = map[string]string{"claude": "copy"} },
			`Strategies "claude=copy": want bind or bind-dir (copy would put the secret into staging)`, true},
		{"user with newline", nil, func(o *SetupOptions) { o.User = "dev\nroot" },
			`setup: manifest.json: user: "dev\nroot" contains a control character`, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			home := fakeHome(t)
			// A previous good staging must survive the failed setup.
			_, dir := setup(t, home)
			before := snapshot(t, dir)
			if tc.break_ != nil {
				tc.break_(home)
			}
			opts := SetupOptions{AuthDir: dir, SourceHome: home, Now: clock}
			if tc.opts != nil {
				tc.opts(&opts)
			}
			_, err := Setup(opts)
			want := strings.ReplaceAll(tc.want, "%H", home)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("err\n got %v\nwant %s", err, want)
			}
			var ie *InputError
			if errors.As(err, &ie) != tc.usage {
				t.Errorf("input error = %v, want %v", !tc.usage, tc.usage)
			}
			if after := snapshot(t, dir); !reflect.DeepEqual(before, after) {
				t.Errorf("failed setup changed the previous staging")
			}
			assertNoTempDirs(t, filepath.Dir(dir))
		})
	}
}

func assertNoTempDirs(t *testing.T, parent string) {
	t.Helper()
	ents, _ := os.ReadDir(parent)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".new-") || strings.Contains(e.Name(), ".old-") {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestSetupReplaces(t *testing.T) {
	home := fakeHome(t)
	_, dir := setup(t, home)
	// A file dropped into staging and an agent no longer asked for both
	// disappear: setup replaces the dir, it does not merge into it.
	writeFile(t, filepath.Join(dir, "stray"), "x")
	if _, err := Setup(SetupOptions{AuthDir: dir, SourceHome: home, Agents: []string{"codex"}, Now: clock}); err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Agents) != 1 || m.Agents["codex"].Files == nil {
		t.Errorf("agents after re-setup: %v", m.Agents)
	}
	for _, p := range []string{"stray", "claude", "gemini"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s survived the re-setup", p)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("staging mode %v", fi.Mode())
	}
	assertNoTempDirs(t, filepath.Dir(dir))
}

func TestSetupRefusesStaging(t *testing.T) {
	home := fakeHome(t)
	t.Run("symlink", func(t *testing.T) {
		real := t.TempDir()
		writeFile(t, filepath.Join(real, "keep"), "mine")
		link := filepath.Join(t.TempDir(), "auth")
		if err := os.Symlink(real, link); err != nil {
			t.Fatal(err)
		}
		_, err := Setup(SetupOptions{AuthDir: link, SourceHome: home, Now: clock})
		if err == nil || err.Error() != "staging dir "+link+" is a symlink; caw refuses to write or delete through it (remove the link, or pass AuthDir a real directory)" {
			t.Errorf("err %v", err)
		}
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Error("the symlink was replaced")
		}
		if ents, _ := os.ReadDir(real); len(ents) != 1 {
			t.Errorf("wrote through the symlink: %v", ents)
		}
	})
	t.Run("not a caw dir", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "thesis.tex"), "precious")
		_, err := Setup(SetupOptions{AuthDir: dir, SourceHome: home, Now: clock})
		if err == nil || !strings.Contains(err.Error(), "is not a caw staging dir") {
			t.Errorf("err %v", err)
		}
		if data, _ := os.ReadFile(filepath.Join(dir, "thesis.tex")); string(data) != "precious" {
			t.Error("replaced a foreign directory")
		}
	})
	t.Run("a file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "auth")
		writeFile(t, p, "x")
		_, err := Setup(SetupOptions{AuthDir: p, SourceHome: home, Now: clock})
		if err == nil || err.Error() != "staging dir "+p+" is not a regular file, not a directory (remove it, or pass another --auth-dir)" && !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("empty dir is fine", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := Setup(SetupOptions{AuthDir: dir, SourceHome: home, Now: clock}); err != nil {
			t.Errorf("empty existing dir: %v", err)
		}
	})
}

// Concurrent setups of one staging dir serialise: the result is exactly one
// of them, with no file of another left over or missing.
func TestSetupConcurrent(t *testing.T) {
	home := fakeHome(t)
	_, dir := setup(t, home)
	sets := [][]string{{"claude"}, {"codex"}, {"gemini", "opencode"}, {"claude", "codex", "gemini", "opencode"}}
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		go func(agents []string) {
			_, err := Setup(SetupOptions{AuthDir: dir, SourceHome: home, Agents: agents, Now: clock})
			errs <- err
		}(sets[i%len(sets)])
	}
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	m, err := manifest.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{".": true, "manifest.json": true}
	for _, e := range m.Entries() {
		p := e.Src
		if e.Strategy == manifest.StrategyBindDir {
			p = e.MountSrc()
		}
		for ; p != "."; p = filepath.Dir(p) {
			want[p] = true
		}
	}
	for p := range snapshot(t, dir) {
		if !want[p] {
			t.Errorf("%s is in staging but not in its manifest", p)
		}
		delete(want, p)
	}
	for p := range want {
		t.Errorf("%s is in the manifest but not in staging", p)
	}
	assertNoTempDirs(t, filepath.Dir(dir))
}
