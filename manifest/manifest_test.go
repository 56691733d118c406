package manifest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// The manifest the original Python tool writes must parse unchanged.
func TestParseOriginalManifest(t *testing.T) {
	m, err := Parse(readTestdata(t, "original-v1.json"))
	if err != nil {
		t.Fatalf("original manifest refused: %v", err)
	}
	if m.HostHome != "/home/alice" || m.ContainerHome != "/home/playground" || m.MountPoint != DefaultMountPoint || m.User != "" {
		t.Errorf("header: %+v", m)
	}
	es := m.Entries()
	var got []string
	for _, e := range es {
		got = append(got, e.Agent+":"+e.Src+":"+e.Strategy+":"+e.CredentialFormat())
	}
	want := []string{
		"claude:claude/credentials.json:bind:claude", "claude:claude/config.json:copy:claude",
		"codex:codex/auth.json:bind:codex", "codex:codex/config.toml:copy:codex",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries\n got %q\nwant %q", got, want)
	}
	cred := es[0]
	if cred.Perm() != 0o600 || es[1].Perm() != 0o644 {
		t.Errorf("perm: %v %v", cred.Perm(), es[1].Perm())
	}
	if !cred.Synced() || es[1].Synced() {
		t.Error("Synced: credential must be synced, config not")
	}
	if cred.MountSrc() != "claude/credentials.json" || es[1].MountSrc() != "" {
		t.Errorf("MountSrc: %q %q", cred.MountSrc(), es[1].MountSrc())
	}
	if got := cred.HostMountSource(m.HostHome); got != "/home/alice/.claude/.credentials.json" {
		t.Errorf("HostMountSource: %q", got)
	}
	if cred.Field("src") != "agents.claude.files[0].src" {
		t.Errorf("Field: %q", cred.Field("src"))
	}
}

func TestParseCawFields(t *testing.T) {
	m, err := Parse(readTestdata(t, "caw-v1-full.json"))
	if err != nil {
		t.Fatal(err)
	}
	if m.User != "dev" {
		t.Errorf("user %q", m.User)
	}
	claude := Entry{Agent: "claude", File: m.Agents["claude"].Files[0]}
	if claude.MountSrc() != "claude/config-dir" {
		t.Errorf("bind-dir MountSrc %q", claude.MountSrc())
	}
	// Absolute host_original (CLAUDE_CONFIG_DIR) ignores the host home.
	if got := claude.HostMountSource("/home/alice"); got != "/srv/claude-config" {
		t.Errorf("bind-dir HostMountSource %q", got)
	}
	gem := Entry{Agent: "gemini", File: m.Agents["gemini"].Files[0]}
	if gem.CredentialFormat() != "gemini" {
		t.Errorf("empty format must default to the agent name, got %q", gem.CredentialFormat())
	}
	if _, err := Parse(readTestdata(t, "caw-v1.json")); err != nil {
		t.Errorf("caw-v1.json: %v", err)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, name := range []string{"original-v1.json", "caw-v1.json", "caw-v1-full.json"} {
		m, err := Parse(readTestdata(t, name))
		if err != nil {
			t.Fatal(err)
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("%s: marshal: %v", name, err)
		}
		m2, err := Parse(out)
		if err != nil {
			t.Fatalf("%s: reparse: %v\n%s", name, err, out)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Errorf("%s: round trip changed the manifest\n%+v\n%+v", name, m, m2)
		}
		// Old readers ignore new fields, so writing must not add any when
		// none were set: the original's manifest comes back without them.
		if name == "original-v1.json" && (strings.Contains(string(out), `"user"`) || strings.Contains(string(out), `"format"`)) {
			t.Errorf("marshal added optional fields that were empty:\n%s", out)
		}
	}
	bad := &Manifest{Version: 2, ContainerHome: "/h"}
	if _, err := bad.Marshal(); err == nil {
		t.Error("Marshal must validate")
	}
}

// base is a valid manifest the table below breaks one field at a time.
func base() *Manifest {
	return &Manifest{
		Version: 1, HostHome: "/home/alice", ContainerHome: "/home/playground", MountPoint: "/tmp/caw_auth",
		Agents: map[string]Agent{
			"claude": {Files: []File{
				{Src: "claude/config-dir/.credentials.json", ContainerTarget: ".claude/.credentials.json",
					HostOriginal: ".claude/.credentials.json", Type: "credential", Strategy: "bind-dir", Mode: "0600"},
				{Src: "claude/config.json", ContainerTarget: ".claude.json", HostOriginal: ".claude.json",
					Type: "config", Strategy: "copy", Mode: "0644"},
			}},
			"codex": {Files: []File{
				{Src: "codex/auth.json", ContainerTarget: ".codex/auth.json", HostOriginal: ".codex/auth.json",
					Type: "credential", Strategy: "bind", Mode: "0600"},
			}},
		},
	}
}

func TestValidate(t *testing.T) {
	if err := base().Validate(); err != nil {
		t.Fatalf("base manifest invalid: %v", err)
	}
	c0 := func(f func(*File)) func(*Manifest) {
		return func(m *Manifest) { f(&m.Agents["claude"].Files[0]) }
	}
	x0 := func(f func(*File)) func(*Manifest) {
		return func(m *Manifest) { f(&m.Agents["codex"].Files[0]) }
	}
	tests := []struct {
		name   string
		change func(*Manifest)
		want   string
	}{
		{"version 0", func(m *Manifest) { m.Version = 0 }, `manifest.json: version: "0" is not supported (this caw reads version 1; use a matching caw)`},
		{"version 2", func(m *Manifest) { m.Version = 2 }, `manifest.json: version: "2" is not supported (this caw reads version 1; use a matching caw)`},
		{"container_home empty", func(m *Manifest) { m.ContainerHome = "" }, `manifest.json: container_home: "" is empty (want an absolute path)`},
		{"container_home relative", func(m *Manifest) { m.ContainerHome = "home/x" }, `manifest.json: container_home: "home/x" is not an absolute path`},
		{"container_home unclean", func(m *Manifest) { m.ContainerHome = "/home/x/../root" }, `manifest.json: container_home: "/home/x/../root" is not a clean path`},
		{"container_home NUL", func(m *Manifest) { m.ContainerHome = "/home/\x00" }, `manifest.json: container_home: "/home/\x00" contains a NUL byte`},
		{"mount_point relative", func(m *Manifest) { m.MountPoint = "tmp" }, `manifest.json: mount_point: "tmp" is not an absolute path`},
		{"host_home relative", func(m *Manifest) { m.HostHome = "alice" }, `manifest.json: host_home: "alice" is not an absolute path`},
		{"user newline", func(m *Manifest) { m.User = "dev\nroot" }, `manifest.json: user: "dev\nroot" contains a control character`},
		{"user NUL", func(m *Manifest) { m.User = "dev\x00" }, `manifest.json: user: "dev\x00" contains a control character`},
		{"agent name", func(m *Manifest) { m.Agents["Bad Name"] = Agent{} }, `manifest.json: agents: "Bad Name" is not a valid agent name (lower-case letters, digits, '-' and '_')`},
		{"too many files", func(m *Manifest) {
			fs := make([]File, MaxFiles)
			m.Agents["many"] = Agent{Files: fs}
		}, `manifest.json: more than 256 files`},
		{"container_target escapes", c0(func(f *File) { f.ContainerTarget = "../../etc/passwd" }), `manifest.json: agents.claude.files[0].container_target: "../../etc/passwd" escapes the home directory`},
		{"container_target inner ..", c0(func(f *File) { f.ContainerTarget = ".claude/../../x" }), `manifest.json: agents.claude.files[0].container_target: ".claude/../../x" escapes the home directory`},
		{"container_target absolute", c0(func(f *File) { f.ContainerTarget = "/etc/shadow" }), `manifest.json: agents.claude.files[0].container_target: "/etc/shadow" is absolute (it must be relative to the home directory)`},
		{"container_target empty", c0(func(f *File) { f.ContainerTarget = "" }), `manifest.json: agents.claude.files[0].container_target: "" is empty`},
		{"container_target NUL", c0(func(f *File) { f.ContainerTarget = ".claude/x\x00y" }), `manifest.json: agents.claude.files[0].container_target: ".claude/x\x00y" contains a NUL byte`},
		{"container_target unclean", c0(func(f *File) { f.ContainerTarget = ".claude//x" }), `manifest.json: agents.claude.files[0].container_target: ".claude//x" is not a clean path (no '.', '//' or trailing '/')`},
		{"container_target dot", c0(func(f *File) { f.ContainerTarget = "." }), `manifest.json: agents.claude.files[0].container_target: "." is not a clean path (no '.', '//' or trailing '/')`},
		{"container_target trailing slash", c0(func(f *File) { f.ContainerTarget = ".claude/" }), `manifest.json: agents.claude.files[0].container_target: ".claude/" is not a clean path (no '.', '//' or trailing '/')`},
		{"src escapes", x0(func(f *File) { f.Src = "../auth.json" }), `manifest.json: agents.codex.files[0].src: "../auth.json" escapes the staging dir`},
		{"src absolute", x0(func(f *File) { f.Src = "/etc/passwd" }), `manifest.json: agents.codex.files[0].src: "/etc/passwd" is absolute (it must be relative to the staging dir)`},
		{"src NUL", x0(func(f *File) { f.Src = "a\x00" }), `manifest.json: agents.codex.files[0].src: "a\x00" contains a NUL byte`},
		{"src unclean", x0(func(f *File) { f.Src = "./codex/auth.json" }), `manifest.json: agents.codex.files[0].src: "./codex/auth.json" is not a clean path (no '.', '//' or trailing '/')`},
		{"host_original escapes", x0(func(f *File) { f.HostOriginal = "../bob/.codex/auth.json" }), `manifest.json: agents.codex.files[0].host_original: "../bob/.codex/auth.json" escapes the host home`},
		{"host_original absolute unclean", x0(func(f *File) { f.HostOriginal = "/opt/../etc/x" }), `manifest.json: agents.codex.files[0].host_original: "/opt/../etc/x" is not a clean path`},
		{"type", x0(func(f *File) { f.Type = "secret" }), `manifest.json: agents.codex.files[0].type: "secret" is not one of credential, config`},
		{"strategy", x0(func(f *File) { f.Strategy = "symlink" }), `manifest.json: agents.codex.files[0].strategy: "symlink" is not one of bind, bind-dir, copy`},
		{"config not copy", func(m *Manifest) { m.Agents["claude"].Files[1].Strategy = "bind" }, `manifest.json: agents.claude.files[1].strategy: "bind" is not allowed for a config file (use copy)`},
		{"bind-dir without parent", c0(func(f *File) { f.Src = ".credentials.json" }), `manifest.json: agents.claude.files[0].src: ".credentials.json" must have a parent directory under the staging dir for strategy bind-dir`},
		{"bind-dir base mismatch", c0(func(f *File) { f.Src = "claude/config-dir/creds.json" }), `manifest.json: agents.claude.files[0].src: "claude/config-dir/creds.json" must have the same base name as host_original for strategy bind-dir`},
		{"mode empty", x0(func(f *File) { f.Mode = "" }), `manifest.json: agents.codex.files[0].mode: "" is empty (want an octal mode such as "0600")`},
		{"mode not octal", x0(func(f *File) { f.Mode = "0689" }), `manifest.json: agents.codex.files[0].mode: "0689" is not an octal mode such as "0600"`},
		{"mode prefix", x0(func(f *File) { f.Mode = "0o600" }), `manifest.json: agents.codex.files[0].mode: "0o600" is not an octal mode such as "0600"`},
		{"mode negative", x0(func(f *File) { f.Mode = "-600" }), `manifest.json: agents.codex.files[0].mode: "-600" is not an octal mode such as "0600"`},
		{"mode setuid", x0(func(f *File) { f.Mode = "4755" }), `manifest.json: agents.codex.files[0].mode: "4755" has setuid, setgid, sticky or unknown bits (allowed: 0000-0777)`},
		{"mode setgid", x0(func(f *File) { f.Mode = "2755" }), `manifest.json: agents.codex.files[0].mode: "2755" has setuid, setgid, sticky or unknown bits (allowed: 0000-0777)`},
		{"mode sticky", x0(func(f *File) { f.Mode = "1777" }), `manifest.json: agents.codex.files[0].mode: "1777" has setuid, setgid, sticky or unknown bits (allowed: 0000-0777)`},
		{"src not UTF-8", x0(func(f *File) { f.Src = "codex/\xff" }), `manifest.json: agents.codex.files[0].src: "codex/\xff" is not valid UTF-8`},
		{"host_original not UTF-8", x0(func(f *File) { f.HostOriginal = "/opt/\xfe" }), `manifest.json: agents.codex.files[0].host_original: "/opt/\xfe" is not valid UTF-8`},
		{"container_home not UTF-8", func(m *Manifest) { m.ContainerHome = "/home/\xff" }, `manifest.json: container_home: "/home/\xff" is not valid UTF-8`},
		{"user not UTF-8", func(m *Manifest) { m.User = "d\xffv" }, `manifest.json: user: "d\xffv" is not valid UTF-8`},
		{"format", x0(func(f *File) { f.Format = "../x" }), `manifest.json: agents.codex.files[0].format: "../x" is not a valid format name`},
		{"duplicate target", x0(func(f *File) { f.ContainerTarget = ".claude.json" }), `manifest.json: agents.codex.files[0].container_target: ".claude.json" is also the target of agents.claude.files[1].container_target`},
		{"duplicate src", x0(func(f *File) { f.Src = "claude/config.json" }), `manifest.json: agents.codex.files[0].src: "claude/config.json" is also the src of agents.claude.files[1].src`},
		{"src inside a file", x0(func(f *File) { f.Src = "claude/config.json/auth.json" }), `manifest.json: agents.codex.files[0].src: "claude/config.json/auth.json" is inside agents.claude.files[1].src, which is a file`},
		{"src hidden by bind-dir", x0(func(f *File) { f.Src = "claude/config-dir/auth.json" }), `manifest.json: agents.codex.files[0].src: "claude/config-dir/auth.json" is inside the bind-dir mount "claude/config-dir" of agents.claude.files[0].src, which would hide it`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := base()
			tc.change(m)
			err := m.Validate()
			if err == nil {
				t.Fatalf("accepted; want %s", tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got %s\nwant %s", err, tc.want)
			}
			// Parse gives the same error for the same manifest on disk
			// (JSON cannot carry invalid UTF-8: the encoder replaces it).
			if data, merr := jsonOf(m); merr == nil && !strings.Contains(tc.want, "UTF-8") {
				if _, perr := Parse(data); perr == nil || perr.Error() != tc.want {
					t.Errorf("Parse: %v", perr)
				}
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	for name, change := range map[string]func(*Manifest){
		"absolute host_original": func(m *Manifest) { m.Agents["codex"].Files[0].HostOriginal = "/opt/codex/auth.json" },
		"no host_original":       func(m *Manifest) { m.Agents["codex"].Files[0].HostOriginal = "" },
		"no mount_point":         func(m *Manifest) { m.MountPoint = "" },
		"mode 0000":              func(m *Manifest) { m.Agents["codex"].Files[0].Mode = "0000" },
		"mode without zero":      func(m *Manifest) { m.Agents["codex"].Files[0].Mode = "600" },
		"no agents":              func(m *Manifest) { m.Agents = nil },
		"user with dash":         func(m *Manifest) { m.User = "play-ground" },
		"exactly MaxFiles":       func(m *Manifest) { m.Agents = map[string]Agent{"many": {Files: manyFiles(MaxFiles)}} },
	} {
		m := base()
		change(m)
		if err := m.Validate(); err != nil {
			t.Errorf("%s: refused: %v", name, err)
		}
	}
}

func manyFiles(n int) []File {
	out := make([]File, n)
	for i := range out {
		name := "f" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + itoa(i)
		out[i] = File{Src: "many/" + name, ContainerTarget: ".many/" + name, Type: "config", Strategy: "copy", Mode: "0644"}
	}
	return out
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

func TestParseRejects(t *testing.T) {
	orig := readTestdata(t, "original-v1.json")
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "manifest.json: not valid JSON"},
		{"null", []byte("null"), `manifest.json: version: "0" is not supported`},
		{"array", []byte("[]"), "manifest.json: not valid JSON"},
		{"truncated", orig[:len(orig)/2], "manifest.json: not valid JSON"},
		{"trailing object", append(append([]byte{}, orig...), []byte("{}")...), "manifest.json: not valid JSON: trailing data after the object"},
		{"trailing garbage", append(append([]byte{}, orig...), []byte("x")...), "manifest.json: not valid JSON"},
		{"version string", []byte(`{"version":"1"}`), "manifest.json: not valid JSON"},
		{"version float", []byte(`{"version":1.5}`), "manifest.json: not valid JSON"},
		{"too large", append([]byte(`{"version":1,"x":"`), append(make([]byte, MaxSize), '"', '}')...), "manifest.json: larger than 1048576 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.data)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("got %v, want prefix %q", err, tc.want)
			}
		})
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	if _, err := Read(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing manifest: %v, want ErrNotExist", err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), readTestdata(t, "original-v1.json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if m, err := Read(dir); err != nil || len(m.Entries()) != 4 {
		t.Errorf("Read: %v", err)
	}

	// A FIFO in place of the manifest must fail at once, not block.
	fifoDir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(fifoDir, FileName), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(fifoDir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("FIFO: %v", err)
	}
	// So must a directory.
	dirDir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dirDir, FileName), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dirDir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	// And one over the size limit, without reading all of it.
	bigDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(bigDir, FileName), make([]byte, MaxSize+10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(bigDir); !errors.Is(err, ErrTooLarge) {
		t.Errorf("large: %v", err)
	}
}
