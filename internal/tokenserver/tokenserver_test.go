package tokenserver

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func start(t *testing.T, cfg Config) (*Server, *Client) {
	t.Helper()
	s, err := Start(filepath.Join(t.TempDir(), "s.sock"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, NewClient(s.Path(), "test")
}

// TestSingleUse: a refresh token works once; its reuse is invalid_grant
// (refresh_token_reused), and the new one works.
func TestSingleUse(t *testing.T) {
	s, c := start(t, Config{Lifetime: time.Hour})
	first := s.Issue()
	next, err := c.Refresh(first.Refresh)
	if err != nil || next.Refresh == first.Refresh || next.ExpiresIn != 3600 {
		t.Fatalf("refresh: %+v %v", next, err)
	}
	var ig *ErrInvalidGrant
	if _, err := c.Refresh(first.Refresh); !errors.As(err, &ig) || ig.Code != "refresh_token_reused" {
		t.Fatalf("reuse: %v", err)
	}
	if _, err := c.Refresh(next.Refresh); err != nil {
		t.Fatalf("the new token: %v", err)
	}
	if _, err := c.Refresh("rt-unknown"); !errors.As(err, &ig) {
		t.Fatalf("unknown token: %v", err)
	}
	got := s.Total("")
	if got.Refreshes != 4 || got.Granted != 2 || got.InvalidGrants != 2 || len(s.ReuseGaps()) != 1 {
		t.Fatalf("counts %+v gaps %v", got, s.ReuseGaps())
	}
}

// TestConcurrentRefresh: of many agents refreshing the same token at once,
// exactly one wins.
func TestConcurrentRefresh(t *testing.T) {
	s, _ := start(t, Config{Lifetime: time.Hour, RefreshDelayMin: 10 * time.Millisecond, RefreshDelayMax: 50 * time.Millisecond})
	first := s.Issue()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := NewClient(s.Path(), "x").Refresh(first.Refresh); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d refreshes of one token won", wins)
	}
}

// TestRevokeFamily: with the switch, a reuse revokes the whole family: the
// winner's new tokens stop working too.
func TestRevokeFamily(t *testing.T) {
	for _, revoke := range []bool{false, true} {
		s, c := start(t, Config{Lifetime: time.Hour, RevokeFamilyOnReuse: revoke})
		first := s.Issue()
		next, _ := c.Refresh(first.Refresh)
		c.Refresh(first.Refresh)
		_, err := c.Refresh(next.Refresh)
		apiErr := c.Call(next.Access)
		if revoke != (err != nil) || revoke != (apiErr != nil) || revoke != s.Revoked(first.Refresh) {
			t.Fatalf("revoke=%v: refresh %v, api %v", revoke, err, apiErr)
		}
	}
}

// TestAccessExpires: an access token is refused once its lifetime passed.
func TestAccessExpires(t *testing.T) {
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, c := start(t, Config{Lifetime: 2 * time.Second, Now: clock})
	tok := s.Issue()
	if err := c.Call(tok.Access); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	if err := c.Call(tok.Access); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("expired token accepted: %v", err)
	}
	if err := c.Call("at-unknown"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("unknown token accepted: %v", err)
	}
}
