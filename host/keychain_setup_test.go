package host

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caw-dev/caw/host/bridge"
	"github.com/caw-dev/caw/host/keychain"
	"github.com/caw-dev/caw/host/keychain/keychaintest"
	"github.com/caw-dev/caw/manifest"
)

// macHome is a home as Claude Code and Codex (keyring mode) leave it on a
// Mac: configs on disk, the logins in the Keychain only.
func macHome(t *testing.T) (string, *keychaintest.Fake) {
	t.Helper()
	home := fakeHome(t)
	os.Remove(filepath.Join(home, ".claude/.credentials.json"))
	os.Remove(filepath.Join(home, ".codex/auth.json"))
	f := keychaintest.New(t)
	f.Set(keychain.ClaudeItem("alice", ""), []byte(claudeCred(now.Add(5*time.Hour))))
	f.Set(keychain.CodexItem(filepath.Join(home, ".codex")), []byte(codexCred(now.Add(time.Hour))))
	return home, f
}

func withKeychain(f *keychaintest.Fake) func(*SetupOptions) {
	return func(o *SetupOptions) { o.Keychain = f.Store(); o.KeychainUser = "alice" }
}

func TestSetupKeychainMirrors(t *testing.T) {
	home, f := macHome(t)
	res, dir := setup(t, home, withKeychain(f))
	mirrors := filepath.Join(home, ".caw", "keychain")
	want := map[string]string{
		"claude": filepath.Join(mirrors, "claude", ".credentials.json"),
		"codex":  filepath.Join(mirrors, "codex", "auth.json"),
	}
	for _, a := range res.Agents {
		w, ok := want[a.Name]
		if !ok {
			if a.Keychain != nil {
				t.Errorf("%s: mirrored, but its login is a file", a.Name)
			}
			continue
		}
		if a.Credential != w || a.Keychain == nil || !a.Status.State.Usable() {
			t.Errorf("%s: credential %s (%v, keychain %v), want the mirror %s", a.Name, a.Credential, a.Status.State, a.Keychain, w)
		}
		kc, _ := f.Get(*a.Keychain)
		data, err := os.ReadFile(w)
		if err != nil || string(data) != string(kc) {
			t.Errorf("%s: mirror holds %q (%v), want the Keychain's %q", a.Name, data, err, kc)
		}
		if fi, _ := os.Stat(w); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mirror mode %v", a.Name, fi.Mode().Perm())
		}
		if fi, _ := os.Stat(filepath.Dir(w)); fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mirror dir mode %v", a.Name, fi.Mode().Perm())
		}
	}
	m, err := manifest.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range m.Entries() {
		if e.Type == manifest.TypeCredential && want[e.Agent] != "" {
			if rel, _ := filepath.Rel(home, want[e.Agent]); e.HostOriginal != rel {
				t.Errorf("%s: host_original %s, want %s", e.Agent, e.HostOriginal, rel)
			}
		}
	}
	for p, v := range snapshot(t, dir) {
		for _, s := range secrets {
			if strings.Contains(v, s) {
				t.Errorf("staging %s holds a secret (%s)", p, s)
			}
		}
	}
	// docker-flags mounts the mirrors like any host credential.
	mounts, err := DockerFlags(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, mt := range mounts[1:] {
		got[mt.Target] = mt.Source
	}
	if got["/tmp/caw_auth/claude/mnt/config-dir"] != filepath.Join(mirrors, "claude") || got["/tmp/caw_auth/codex/mnt/auth.json"] != want["codex"] {
		t.Errorf("mounts %v", got)
	}
	// The bridge's config names both pairs, and no secret.
	cfg, err := bridge.LoadConfig(res.BridgeConfig)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Pairs) != 2 || cfg.Pairs[0].Agent != "claude" || cfg.Pairs[0].Mirror != want["claude"] || cfg.Pairs[0].Item.Service != keychain.ClaudeService ||
		cfg.Pairs[1].Agent != "codex" || cfg.Pairs[1].Item.Service != keychain.CodexService {
		t.Errorf("bridge config %+v", cfg)
	}
	raw, _ := os.ReadFile(res.BridgeConfig)
	for _, s := range secrets {
		if strings.Contains(string(raw), s) {
			t.Errorf("bridge config holds a secret (%s)", s)
		}
	}
	f.CheckArgv([]byte(claudeAccess), []byte(claudeRefresh), []byte(codexRefresh))
}

func TestSetupKeychainClaudeConfigDir(t *testing.T) {
	home, f := macHome(t)
	cfgDir := filepath.Join(home, "work-claude")
	writeFile(t, filepath.Join(cfgDir, ".claude.json"), claudeJSON)
	it := keychain.ClaudeItem("alice", cfgDir)
	f.Set(it, []byte(claudeCred(now.Add(2*time.Hour))))
	res, _ := setup(t, home, withKeychain(f), func(o *SetupOptions) {
		o.Agents = []string{"claude"}
		o.Getenv = envOf("CLAUDE_CONFIG_DIR", cfgDir)
	})
	if a := res.Agents[0]; a.Keychain == nil || *a.Keychain != it {
		t.Fatalf("claude mirrors %v, want %v", a.Keychain, it)
	}
}

// The Keychain is the source of truth, as when the bridge starts: a mirror
// claiming a fresher login is replaced, and said; unless the Keychain still
// holds what both held when last in sync, when the mirror's change is a
// container's refresh that no bridge carried yet: it is kept, and said.
func TestSetupFresherMirror(t *testing.T) {
	for _, tc := range []struct {
		name string
		// change: what happens between the two setups, besides a
		// container writing a fresher token into the mirror.
		change func(home string, f *keychaintest.Fake)
		kept   bool
		warn   string
	}{
		{"keychain unchanged", func(string, *keychaintest.Fake) {}, true, "holds a container's refresh"},
		{"keychain login", func(_ string, f *keychaintest.Fake) {
			f.Set(keychain.ClaudeItem("alice", ""), []byte(claudeCred(now.Add(6*time.Hour))))
		}, false, "claims a fresher login than the Keychain"},
		{"never synced", func(home string, _ *keychaintest.Fake) {
			os.Remove(filepath.Join(home, ".caw/keychain/claude.synced"))
		}, false, "claims a fresher login than the Keychain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home, f := macHome(t)
			setup(t, home, withKeychain(f))
			mirror := filepath.Join(home, ".caw/keychain/claude/.credentials.json")
			ctr := claudeCred(now.Add(7 * time.Hour))
			writeFile(t, mirror, ctr)
			tc.change(home, f)
			kc, _ := f.Get(keychain.ClaudeItem("alice", ""))
			res, _ := setup(t, home, withKeychain(f))
			want := string(kc)
			if tc.kept {
				want = ctr
			}
			if data, _ := os.ReadFile(mirror); string(data) != want {
				t.Fatalf("the mirror holds %q, want %q", data, want)
			}
			if !hasWarning(res.Warnings, tc.warn) {
				t.Errorf("warnings %q, want one with %q", res.Warnings, tc.warn)
			}
		})
	}
}

// The file wins when it is fresher; a locked keychain falls back to files.
func TestSetupKeychainFallbacks(t *testing.T) {
	home, f := macHome(t)
	writeFile(t, filepath.Join(home, ".claude/.credentials.json"), claudeCred(now.Add(8*time.Hour)))
	res, _ := setup(t, home, withKeychain(f), func(o *SetupOptions) { o.Agents = []string{"claude"} })
	if a := res.Agents[0]; a.Keychain != nil || a.Credential != filepath.Join(home, ".claude/.credentials.json") {
		t.Errorf("fresher file: credential %s, keychain %v", a.Credential, a.Keychain)
	}
	f.SetMode(keychaintest.Locked)
	res, _ = setup(t, home, withKeychain(f), func(o *SetupOptions) { o.Agents = []string{"claude"} })
	if a := res.Agents[0]; a.Keychain != nil || !hasWarning(res.Warnings, "keychain is locked") {
		t.Errorf("locked: keychain %v, warnings %q", a.Keychain, res.Warnings)
	}
}

func TestSetupMirrorDirInsideStaging(t *testing.T) {
	home, f := macHome(t)
	auth := filepath.Join(t.TempDir(), "auth")
	_, err := Setup(SetupOptions{AuthDir: auth, SourceHome: home, Now: clock, Keychain: f.Store(), KeychainUser: "alice", MirrorDir: filepath.Join(auth, "kc")})
	var ie *InputError
	if !errors.As(err, &ie) || ie.Option != "AuthDir" {
		t.Fatalf("Setup: %v, want an input error on AuthDir", err)
	}
	if _, err := os.Stat(auth); !errors.Is(err, os.ErrNotExist) {
		t.Error("staging was written")
	}
}

func hasWarning(ws []string, sub string) bool {
	for _, w := range ws {
		if strings.Contains(w, sub) {
			return true
		}
	}
	return false
}
