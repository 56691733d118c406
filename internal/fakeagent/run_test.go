package fakeagent

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/tokenserver"
)

// login starts a token server and writes its first tokens to each file.
func login(t *testing.T, agent string, lifetime time.Duration, files ...string) *tokenserver.Server {
	t.Helper()
	s, err := tokenserver.Start(filepath.Join(t.TempDir(), "token.sock"), tokenserver.Config{
		Lifetime: lifetime, RefreshDelayMin: 40 * time.Millisecond, RefreshDelayMax: 160 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	tok := s.Issue()
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			t.Fatal(err)
		}
		data, err := TokensContent(agent, tok.Access, tok.Refresh, tok.Expires, f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// runAll runs one agent per file at once.
func runAll(t *testing.T, s *tokenserver.Server, agent string, d time.Duration, files ...string) []Report {
	t.Helper()
	reps := make([]Report, len(files))
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := Run(RunConfig{Agent: agent, File: f, Socket: s.Path(), Name: filepath.Base(filepath.Dir(filepath.Dir(f))),
				Duration: d, RequestMin: 50 * time.Millisecond, RequestMax: 150 * time.Millisecond, Margin: 600 * time.Millisecond})
			if err != nil {
				t.Error(err)
			}
			reps[i] = r
		}()
	}
	wg.Wait()
	return reps
}

func sum(reps []Report) (ig, episodes int) {
	for _, r := range reps {
		ig += r.InvalidGrants
		episodes += r.Episodes
	}
	return
}

// TestRunAlone: one Claude agent refreshes once per token, never refused.
func TestRunAlone(t *testing.T) {
	f := filepath.Join(t.TempDir(), "a", ".claude", ".credentials.json")
	s := login(t, Claude, 2*time.Second, f)
	reps := runAll(t, s, Claude, 5*time.Second, f)
	c := s.Total("")
	if ig, ep := sum(reps); ig != 0 || ep != 0 || c.Granted < 2 || c.Refreshes != c.Granted {
		t.Fatalf("alone: %+v, server %+v", reps, c)
	}
}

// TestRunCopiesCollide: Claude agents on their own copies of one login
// collide, and the loser stays logged out (what people see without caw).
func TestRunCopiesCollide(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a", ".claude", ".credentials.json")
	b := filepath.Join(dir, "b", ".claude", ".credentials.json")
	s := login(t, Claude, 2*time.Second, a, b)
	reps := runAll(t, s, Claude, 4*time.Second, a, b)
	ig, ep := sum(reps)
	if ig == 0 || ep == 0 || (!reps[0].FinalLoggedOut && !reps[1].FinalLoggedOut) {
		t.Fatalf("copies did not collide: %+v", reps)
	}
}

// TestRunSharedFile: agents on one config dir share its lock and file, so
// they never collide (the floor caw aims at).
func TestRunSharedFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "a", ".claude", ".credentials.json")
	s := login(t, Claude, 2*time.Second, f)
	reps := runAll(t, s, Claude, 5*time.Second, f, f, f)
	c := s.Total("")
	if ig, ep := sum(reps); ig != 0 || ep != 0 || c.Refreshes != c.Granted {
		t.Fatalf("shared: %+v, server %+v", reps, c)
	}
}

// TestRunCodexShared: Codex agents on one auth.json take no cross-process
// lock, so they collide when the JWT expires; a loser keeps the old token,
// and on the 401 re-reads the file and adopts the winner's token.
func TestRunCodexShared(t *testing.T) {
	f := filepath.Join(t.TempDir(), "a", ".codex", "auth.json")
	s := login(t, Codex, 2*time.Second, f)
	reps := runAll(t, s, Codex, 5*time.Second, f, f, f)
	c := s.Total("")
	reloads := 0
	for _, r := range reps {
		reloads += r.Reloads
		if r.FinalLoggedOut {
			t.Fatalf("a codex agent ended logged out: %+v", r)
		}
	}
	if c.Granted < 2 || reloads == 0 {
		t.Fatalf("codex shared: %+v, server %+v", reps, c)
	}
	t.Logf("codex shared: %d refreshes for %d tokens, %d reloads", c.Refreshes, c.Granted, reloads)
}

// TestRunAloneEveryAgent: every agent of the table, alone on its file,
// refreshes its login and is never refused.
func TestRunAloneEveryAgent(t *testing.T) {
	for agent := range Behaviours {
		t.Run(agent, func(t *testing.T) {
			t.Parallel()
			f := filepath.Join(t.TempDir(), "a", "x", "cred.json")
			s := login(t, agent, 2*time.Second, f)
			reps := runAll(t, s, agent, 4500*time.Millisecond, f)
			c := s.Total("")
			if ig, ep := sum(reps); ig != 0 || ep != 0 || c.Granted < 1 || c.Refreshes != c.Granted || reps[0].FinalLoggedOut {
				t.Fatalf("%s alone: %+v, server %+v", agent, reps, c)
			}
		})
	}
}
