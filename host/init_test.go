package host

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func noPath(string) (string, error) { return "", errors.New("not found") }

func TestFindInit(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "caw")
	inPath := func(string) (string, error) { return "/usr/local/bin/caw-init", nil }
	for _, tc := range []struct {
		name, goos string
		beside     bool
		look       func(string) (string, error)
		want       string
	}{
		{"mac: the volume", "darwin", true, inPath, DefaultInitVolume},
		{"linux: beside caw", "linux", true, inPath, filepath.Join(dir, "caw-init")},
		{"linux: in PATH", "linux", false, inPath, "/usr/local/bin/caw-init"},
		{"linux: none: the volume", "linux", false, noPath, DefaultInitVolume},
	} {
		os.Remove(filepath.Join(dir, "caw-init"))
		if tc.beside {
			os.WriteFile(filepath.Join(dir, "caw-init"), nil, 0o755)
		}
		if got := FindInit(tc.goos, exe, tc.look); got != tc.want {
			t.Errorf("%s: FindInit = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestResolveInit: a static caw-init on the host is e2e's to prove (the
// e2e binaries are static); here, what is refused.
func TestResolveInit(t *testing.T) {
	exe, _ := os.Executable()
	script := filepath.Join(t.TempDir(), "caw-init")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	for _, tc := range []struct {
		name string
		o    InitOptions
		want *Init
		err  string
	}{
		{"volume, default user", InitOptions{From: "caw-init"}, &Init{
			Mount: Mount{Source: "caw-init", Target: InitDir, ReadOnly: true}, Volume: true, Entrypoint: InitPath,
			Env: []Env{{"CAW_USER", "501:20"}}}, ""},
		{"entrypoint, one word", InitOptions{From: "v", User: "0:0", Entrypoint: []string{"/ep.sh"}}, &Init{
			Mount: Mount{Source: "v", Target: InitDir, ReadOnly: true}, Volume: true, Entrypoint: InitPath,
			Env: []Env{{"CAW_USER", "0:0"}, {"CAW_ENTRYPOINT", "/ep.sh"}}}, ""},
		{"entrypoint, words", InitOptions{From: "v", Entrypoint: []string{"tini", "--"}}, &Init{
			Mount: Mount{Source: "v", Target: InitDir, ReadOnly: true}, Volume: true, Entrypoint: InitPath,
			Env: []Env{{"CAW_USER", "501:20"}, {"CAW_ENTRYPOINT", `["tini","--"]`}}}, ""},
		{"user by name", InitOptions{From: "v", User: "node"}, nil, "numeric UID:GID"},
		{"user without gid", InitOptions{From: "v", User: "1000"}, nil, "numeric UID:GID"},
		{"bad volume", InitOptions{From: "-x"}, nil, "volume name"},
		{"not an ELF", InitOptions{From: script}, nil, "caw install-init"},
		{"missing file", InitOptions{From: "/nonexistent/caw-init"}, nil, "caw install-init"},
		{"entrypoint looks like JSON", InitOptions{From: "v", Entrypoint: []string{"[x]"}}, nil, "program's path"},
	} {
		got, err := ResolveInit(tc.o, exe, noPath, 501, 20)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want one containing %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v %v, want %+v", tc.name, got, err, tc.want)
		}
	}
}

func TestRenderInit(t *testing.T) {
	mounts := []Mount{{Source: "/s", Target: "/tmp/caw_auth", ReadOnly: true}, {Source: "/h/.codex/auth.json", Target: "/tmp/caw_auth/codex/mnt/auth.json"}}
	bind := &Init{Mount: Mount{Source: "/usr/local/bin/caw-init", Target: InitPath, ReadOnly: true}, Entrypoint: InitPath,
		Env: []Env{{"CAW_USER", "1000:1000"}}}
	vol := &Init{Mount: Mount{Source: "caw-init", Target: InitDir, ReadOnly: true}, Volume: true, Entrypoint: InitPath,
		Env: []Env{{"CAW_USER", "1000:1000"}, {"CAW_ENTRYPOINT", "/ep.sh"}}}

	shell, err := RenderInit(mounts, bind, FormatShell)
	if want := "-v /s:/tmp/caw_auth:ro\n-v /h/.codex/auth.json:/tmp/caw_auth/codex/mnt/auth.json:rw\n" +
		"-v /usr/local/bin/caw-init:/.caw/caw-init:ro\n--entrypoint /.caw/caw-init\n-e CAW_USER=1000:1000\n"; err != nil || shell != want {
		t.Errorf("shell: %v\n%s\nwant\n%s", err, shell, want)
	}
	js, err := RenderInit(mounts, vol, FormatJSON)
	var argv []string
	json.Unmarshal([]byte(js), &argv)
	if want := []string{"-v", "/s:/tmp/caw_auth:ro", "-v", "/h/.codex/auth.json:/tmp/caw_auth/codex/mnt/auth.json:rw", "-v", "caw-init:/.caw:ro",
		"--entrypoint", "/.caw/caw-init", "-e", "CAW_USER=1000:1000", "-e", "CAW_ENTRYPOINT=/ep.sh"}; err != nil || !reflect.DeepEqual(argv, want) {
		t.Errorf("json: %v\n%q\nwant\n%q", err, argv, want)
	}
	// The shell's own word splitting gives the same argv.
	shell, _ = RenderInit(mounts, vol, FormatShell)
	if got := shellSplit(t, shell); !reflect.DeepEqual(got, argv) {
		t.Errorf("sh splits the shell output into\n%q\nnot\n%q", got, argv)
	}
	compose, err := RenderInit(mounts[1:], vol, FormatCompose)
	if want := `entrypoint: ["/.caw/caw-init"]
environment:
  CAW_USER: "1000:1000"
  CAW_ENTRYPOINT: "/ep.sh"
volumes:
  - type: bind
    source: "/h/.codex/auth.json"
    target: "/tmp/caw_auth/codex/mnt/auth.json"
    read_only: false
  - type: volume
    source: "caw-init"
    target: "/.caw"
    read_only: true
# and at the top level of the file:
# volumes:
#   caw-init:
#     external: true
`; err != nil || compose != want {
		t.Errorf("compose: %v\n%s\nwant\n%s", err, compose, want)
	}
	dc, err := RenderInit(mounts[1:], vol, FormatDevcontainer)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		OverrideCommand *bool             `json:"overrideCommand"`
		Mounts          []string          `json:"mounts"`
		ContainerEnv    map[string]string `json:"containerEnv"`
	}
	if err := json.Unmarshal([]byte(dc), &got); err != nil {
		t.Fatalf("devcontainer: %v\n%s", err, dc)
	}
	if got.OverrideCommand == nil || *got.OverrideCommand || !reflect.DeepEqual(got.Mounts, []string{
		"source=/h/.codex/auth.json,target=/tmp/caw_auth/codex/mnt/auth.json,type=bind", "source=caw-init,target=/.caw,type=volume,readonly"}) ||
		got.ContainerEnv["CAW_USER"] != "1000:1000" || got.ContainerEnv["CAW_ENTRYPOINT"] != "/ep.sh" {
		t.Errorf("devcontainer:\n%s", dc)
	}
	// A value word splitting would break is refused in shell form.
	spaced := &Init{Mount: vol.Mount, Volume: true, Entrypoint: InitPath, Env: []Env{{"CAW_ENTRYPOINT", `["tini","--"]`}}}
	if _, err := RenderInit(mounts, spaced, FormatShell); err == nil || !strings.Contains(err.Error(), "use format json") {
		t.Errorf("shell with a JSON entrypoint: %v", err)
	}
}

func TestInstallInit(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(src, "caw-init"), []byte("ELF"), 0o600)
	if err := InstallInit(filepath.Join(src, "caw"), dst); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dst, "caw-init"))
	if err != nil || fi.Mode().Perm() != 0o755 || fi.Size() != 3 {
		t.Fatalf("installed: %v %v", fi, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dst, ".caw-init.tmp.*")); len(left) != 0 {
		t.Fatalf("temp left: %v", left)
	}
}
