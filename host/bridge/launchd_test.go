package bridge_test

import (
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caw-dev/caw/host/bridge"
)

func TestInstallAgent(t *testing.T) {
	home := t.TempDir()
	log := filepath.Join(t.TempDir(), "launchctl.log")
	lc := filepath.Join(t.TempDir(), "launchctl")
	// A fake launchctl: logs its argv; bootout fails as when nothing is
	// loaded (exit 113, "Could not find service").
	script := "#!/bin/sh\necho \"$@\" >> '" + log + "'\n[ \"$1\" = bootout ] && exit 113\nexit 0\n"
	if err := os.WriteFile(lc, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	o := bridge.AgentOptions{
		Home: home, UID: 501, Launchctl: lc,
		Program: []string{"/opt/caw & co/bin/caw", "bridge", "--config", "/Users/a/.caw/keychain/bridge.json"},
		Env:     map[string]string{"CAW_SECURITY": "/usr/bin/security"},
	}
	p, err := bridge.InstallAgent(o)
	if err != nil {
		t.Fatal(err)
	}
	if p != filepath.Join(home, "Library/LaunchAgents/dev.caw.bridge.plist") {
		t.Errorf("plist at %s", p)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// Well-formed XML whose strings are the argv, escaped.
	var doc struct {
		Dict struct {
			Strings []string `xml:"array>string"`
		} `xml:"dict"`
	}
	if err := xml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("plist is not XML: %v\n%s", err, data)
	}
	if strings.Join(doc.Dict.Strings, "|") != strings.Join(o.Program, "|") {
		t.Errorf("ProgramArguments %q, want %q", doc.Dict.Strings, o.Program)
	}
	for _, s := range []string{"<key>RunAtLoad</key>", "<key>SuccessfulExit</key>", filepath.Join(home, "Library/Logs/caw-bridge.log"), "<key>CAW_SECURITY</key>"} {
		if !strings.Contains(string(data), s) {
			t.Errorf("plist lacks %s", s)
		}
	}
	calls, _ := os.ReadFile(log)
	want := "bootout gui/501/dev.caw.bridge\nbootstrap gui/501 " + p + "\n"
	if string(calls) != want {
		t.Errorf("launchctl calls:\n%s\nwant:\n%s", calls, want)
	}
}
