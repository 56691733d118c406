package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/host/keychain"
	"github.com/caw-dev/caw/host/keychain/keychaintest"
	"github.com/caw-dev/caw/internal/testenv"
)

func claudeLogin(tag string, h int) []byte {
	return []byte(fmt.Sprintf(`{"claudeAiOauth":{"accessToken":"at-%s-SECRET","refreshToken":"rt-%s-SECRET","expiresAt":%d},"mcpOAuth":{}}`,
		tag, tag, time.Now().Add(time.Duration(h)*time.Hour).UnixMilli()))
}

// The Mac journey on Linux, against a fake security tool and launchctl:
// setup finds the login in the Keychain and mirrors it, docker-flags
// mounts the mirror, --install-agent loads the bridge agent, and caw bridge
// carries refreshes both ways until SIGTERM.
func TestKeychainJourney(t *testing.T) {
	dir := t.TempDir()
	home := fakeHome(t, dir)
	os.Remove(filepath.Join(home, ".claude/.credentials.json"))
	f := keychaintest.New(t)
	item := keychain.ClaudeItem("alice", "")
	a := claudeLogin("a", 2)
	f.Set(item, a)
	lclog := filepath.Join(dir, "launchctl.log")
	lc := filepath.Join(dir, "launchctl")
	writeFile(t, lc, "#!/bin/sh\necho \"$@\" >> '"+lclog+"'\n")
	os.Chmod(lc, 0o755)
	env := []string{"CAW_SECURITY=" + f.Path, "USER=alice", "CAW_LAUNCHCTL=" + lc}

	r := caw(t, home, env, "setup", "--agents", "claude", "--install-agent")
	r.want(t, 0, "the login is in the Keychain", "")
	mirror := filepath.Join(home, ".caw/keychain/claude/.credentials.json")
	if got, _ := os.ReadFile(mirror); !bytes.Equal(got, a) {
		t.Fatalf("mirror %q, want the Keychain's login", got)
	}
	if !strings.Contains(r.stdout, "Bridge agent dev.caw.bridge loaded") {
		t.Errorf("setup --install-agent said:\n%s", r.stdout)
	}
	plist, err := os.ReadFile(filepath.Join(home, "Library/LaunchAgents/dev.caw.bridge.plist"))
	if err != nil || !strings.Contains(string(plist), "<string>bridge</string>") {
		t.Errorf("plist: %v\n%s", err, plist)
	}
	if calls, _ := os.ReadFile(lclog); !strings.Contains(string(calls), "bootstrap gui/") {
		t.Errorf("launchctl calls: %s", calls)
	}
	r = caw(t, home, env, "docker-flags")
	r.want(t, 0, "-v "+filepath.Dir(mirror)+":/tmp/caw_auth/claude/mnt/config-dir:rw", "")
	r = caw(t, home, env, "status", "--check")
	r.want(t, 0, mirror, "")

	// caw bridge, foreground, reading the Keychain every second.
	bin := testenv.Build(t, "github.com/caw-dev/caw/cmd/caw")
	cmd := exec.Command(bin, "bridge", "-v", "--interval", "1s")
	cmd.Env = append([]string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; bridge log:\n%s", what, stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	b := claudeLogin("b", 4) // refreshed on the Mac
	f.Set(item, b)
	waitFor("the Mac's refresh in the mirror", func() bool { got, _ := os.ReadFile(mirror); return bytes.Equal(bytes.TrimRight(got, " "), b) })
	c := claudeLogin("c", 6) // refreshed in a container, through the mount
	if err := os.WriteFile(mirror, c, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("the container's refresh in the Keychain", func() bool { got, _ := f.Get(item); return bytes.Equal(got, c) })
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("caw bridge exited: %v\n%s", err, stderr.String())
	}
	for _, s := range []string{"caw bridge: started", "caw bridge: claude: wrote the mirror's", "caw bridge: stopped"} {
		if !strings.Contains(stderr.String(), s) {
			t.Errorf("bridge log lacks %q:\n%s", s, stderr.String())
		}
	}
	f.CheckArgv(a, b, c, []byte("rt-a-SECRET"), []byte("rt-b-SECRET"), []byte("rt-c-SECRET"))
}

func TestBridgeWithoutKeychain(t *testing.T) {
	home := fakeHome(t, t.TempDir())
	caw(t, home, nil, "bridge").want(t, 1, "", "no security tool here")
	caw(t, home, []string{"CAW_SECURITY=/nonexistent"}, "bridge").want(t, 1, "", "run caw setup first")
	caw(t, home, nil, "setup", "--install-agent").want(t, 0, "No login is in the Keychain", "")
	// An empty config ends with success, so launchd does not restart it.
	writeFile(t, filepath.Join(home, ".caw/keychain/bridge.json"), `{"version":1,"pairs":[]}`)
	caw(t, home, []string{"CAW_SECURITY=/nonexistent"}, "bridge").want(t, 0, "", "nothing to bridge")
}
