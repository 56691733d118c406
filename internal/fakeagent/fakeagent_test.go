package fakeagent

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/agents"
)

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestRefreshModes checks that inplace keeps the inode and rename replaces
// it, that every refresh moves the expiry strictly later, and that caw's own
// classifier sees the result as a valid, fresher credential.
func TestRefreshModes(t *testing.T) {
	for _, agent := range []string{Claude, Codex} {
		t.Run(agent, func(t *testing.T) {
			p, _ := DefaultPath(agent, t.TempDir())
			if _, err := Refresh(agent, p, "first", InPlace); err != nil {
				t.Fatal(err)
			}
			before, _ := Read(agent, p)
			beforeData, _ := os.ReadFile(p)
			i0 := ino(t, p)
			if _, err := Refresh(agent, p, "second", InPlace); err != nil {
				t.Fatal(err)
			}
			if ino(t, p) != i0 {
				t.Fatalf("inplace refresh replaced the inode")
			}
			if _, err := Refresh(agent, p, "third", Rename); err != nil {
				t.Fatal(err)
			}
			if ino(t, p) == i0 {
				t.Fatalf("rename refresh kept the inode")
			}
			after, err := Read(agent, p)
			if err != nil || after.Token != "third" {
				t.Fatalf("read after refresh: %v %v", after, err)
			}
			if !after.Expires.After(before.Expires) {
				t.Fatalf("expiry did not move later: %v then %v", before.Expires, after.Expires)
			}
			if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
				t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
			}
			afterData, _ := os.ReadFile(p)
			now := time.Now()
			sb, sa := agents.Classify(agent, beforeData, now), agents.Classify(agent, afterData, now)
			if sa.State != agents.Valid || agents.Compare(sa, sb) <= 0 {
				t.Fatalf("caw classifies the refresh as %v (before %v), want valid and fresher", sa, sb)
			}
			m, _ := filepath.Glob(p + ".tmp.*")
			if len(m) != 0 {
				t.Fatalf("temp files left: %v", m)
			}
		})
	}
}

// TestClaudeRefreshKeepsOtherKeys: a real refresh rewrites the whole file but
// keeps keys other than claudeAiOauth.
func TestClaudeRefreshKeepsOtherKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), ".credentials.json")
	if err := os.WriteFile(p, []byte(`{"mcpOAuth":{"x":1},"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":1}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Refresh(Claude, p, "n", Rename); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p)
	if c, err := Parse(Claude, data); err != nil || c.Token != "n" {
		t.Fatalf("parse: %v %v", c, err)
	}
	if !strings.Contains(string(data), `"mcpOAuth"`) || !strings.Contains(string(data), `"x": 1`) {
		t.Fatalf("mcpOAuth lost: %s", data)
	}
}
