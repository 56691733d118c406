// Package tokenserver is a fake OAuth token endpoint for caw's tests and
// bench: single-use rotating refresh tokens, as Anthropic's and OpenAI's
// servers issue them, so that two agents refreshing with the same refresh
// token collide exactly as they do in real life.
//
// It serves HTTP on a Unix socket only (a path in the test's scratch dir,
// reachable from the namespaced containers that share the filesystem), never
// on a network address.
//
//	POST /token   grant_type=refresh_token&refresh_token=R  -> 200 {access_token, refresh_token, expires_in}
//	                                                          -> 400 {error: invalid_grant, code: refresh_token_reused}
//	GET  /api     Authorization: Bearer A                    -> 200, or 401 when A is unknown, expired or revoked
//
// A request may name its caller in an X-Agent header; the counts are kept
// per caller.
package tokenserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config is how the server behaves.
type Config struct {
	// Lifetime of an access token.
	Lifetime time.Duration
	// RefreshDelay is the round trip of a refresh, drawn uniformly from
	// [Min, Max]: the window in which another agent can still use the old
	// refresh token.
	RefreshDelayMin, RefreshDelayMax time.Duration
	// RevokeFamilyOnReuse makes the reuse of a refresh token revoke every
	// token of its family (OAuth 2.1 section 4.3.1 recommends it); without
	// it a reused token is only refused.
	RevokeFamilyOnReuse bool
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Tokens is what a successful refresh (or Issue) hands out.
type Tokens struct {
	Access    string    `json:"access_token"`
	Refresh   string    `json:"refresh_token"`
	ExpiresIn int64     `json:"expires_in"` // seconds, rounded up
	Expires   time.Time `json:"-"`
}

// Counts is what one caller (or all of them) did.
type Counts struct {
	Refreshes     int // refresh requests, successful or not
	Granted       int // refreshes that issued new tokens
	InvalidGrants int // refreshes refused
	Requests      int // /api calls
	Rejected      int // /api calls refused with 401
}

func (c *Counts) add(o Counts) {
	c.Refreshes += o.Refreshes
	c.Granted += o.Granted
	c.InvalidGrants += o.InvalidGrants
	c.Requests += o.Requests
	c.Rejected += o.Rejected
}

type refreshToken struct {
	family int
	used   bool
	first  time.Time // when its first use arrived
}

type accessToken struct {
	family  int
	expires time.Time
}

// Server is a running fake token endpoint.
type Server struct {
	cfg  Config
	path string
	ln   net.Listener
	srv  *http.Server

	mu       sync.Mutex
	refresh  map[string]*refreshToken
	access   map[string]*accessToken
	revoked  map[int]bool
	families int
	head     map[int]string // a family's newest refresh token
	counts   map[string]*Counts
	gaps     []time.Duration
}

// Start listens on the Unix socket path (mode 0666, so container users can
// connect) and serves until Close.
func Start(path string, cfg Config) (*Server, error) {
	if cfg.Lifetime <= 0 {
		return nil, errors.New("tokenserver: Lifetime must be positive")
	}
	if cfg.RefreshDelayMax < cfg.RefreshDelayMin {
		cfg.RefreshDelayMax = cfg.RefreshDelayMin
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("tokenserver: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("tokenserver: %w", err)
	}
	s := &Server{cfg: cfg, path: path, ln: ln,
		refresh: map[string]*refreshToken{}, access: map[string]*accessToken{},
		revoked: map[int]bool{}, head: map[int]string{}, counts: map[string]*Counts{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", s.token)
	mux.HandleFunc("GET /api", s.api)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops the server and removes its socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	_ = os.Remove(s.path)
	return err
}

// Issue starts a new token family (a login) and returns its first tokens.
func (s *Server) Issue() Tokens {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.families++
	return s.issueLocked(s.families)
}

func (s *Server) issueLocked(family int) Tokens {
	now := s.cfg.Now()
	t := Tokens{Access: "at-" + random(), Refresh: "rt-" + random(), Expires: now.Add(s.cfg.Lifetime)}
	t.ExpiresIn = int64((s.cfg.Lifetime + time.Second - 1) / time.Second)
	s.refresh[t.Refresh] = &refreshToken{family: family}
	s.access[t.Access] = &accessToken{family: family, expires: t.Expires}
	s.head[family] = t.Refresh
	return t
}

// Head is the newest refresh token of the family the given refresh token
// belongs to ("" if unknown): the one a file must hold for the login to
// survive.
func (s *Server) Head(anyRefresh string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refresh[anyRefresh]
	if !ok {
		return ""
	}
	return s.head[r.family]
}

// Revoked reports whether the family of the given refresh token was revoked.
func (s *Server) Revoked(anyRefresh string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.refresh[anyRefresh]
	return ok && s.revoked[r.family]
}

// ReuseGaps lists, for every reuse of a refresh token, how long after the
// token's first use it arrived: a collision closer than an agent's lock can
// be seen is one no lock mirroring can prevent.
func (s *Server) ReuseGaps() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.gaps...)
}

// Counts returns the counts per caller (X-Agent header, "" for none).
func (s *Server) Counts() map[string]Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Counts, len(s.counts))
	for k, v := range s.counts {
		out[k] = *v
	}
	return out
}

// Total sums the counts of the callers whose name starts with prefix.
func (s *Server) Total(prefix string) Counts {
	var t Counts
	m := s.Counts()
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			t.add(m[k])
		}
	}
	return t
}

func (s *Server) countsLocked(who string) *Counts {
	c := s.counts[who]
	if c == nil {
		c = &Counts{}
		s.counts[who] = c
	}
	return c
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	who := r.Header.Get("X-Agent")
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "refresh_token" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	rt := r.PostForm.Get("refresh_token")
	arrived := s.cfg.Now()
	s.mu.Lock()
	if tok, ok := s.refresh[rt]; ok {
		if tok.first.IsZero() {
			tok.first = arrived
		} else {
			s.gaps = append(s.gaps, arrived.Sub(tok.first))
		}
	}
	s.mu.Unlock()
	// The round trip: the old token stays usable by others meanwhile, which
	// is the window collisions happen in.
	time.Sleep(s.delay())
	s.mu.Lock()
	c := s.countsLocked(who)
	c.Refreshes++
	tok, ok := s.refresh[rt]
	if !ok || tok.used || s.revoked[tok.family] {
		c.InvalidGrants++
		code := "refresh_token_invalidated"
		if ok && tok.used {
			code = "refresh_token_reused"
			if s.cfg.RevokeFamilyOnReuse {
				s.revoked[tok.family] = true
			}
		}
		s.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "code": code})
		return
	}
	tok.used = true
	c.Granted++
	t := s.issueLocked(tok.family)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, t)
}

func (s *Server) api(w http.ResponseWriter, r *http.Request) {
	who := r.Header.Get("X-Agent")
	at, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	c := s.countsLocked(who)
	c.Requests++
	a, ok := s.access[at]
	good := ok && !s.revoked[a.family] && s.cfg.Now().Before(a.expires)
	if !good {
		c.Rejected++
	}
	s.mu.Unlock()
	if !good {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"ok": "yes"})
}

func (s *Server) delay() time.Duration {
	span := s.cfg.RefreshDelayMax - s.cfg.RefreshDelayMin
	if span <= 0 {
		return s.cfg.RefreshDelayMin
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(int64(span)))
	return s.cfg.RefreshDelayMin + time.Duration(n.Int64())
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func random() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Client talks to a server on its socket, naming itself as agent.
type Client struct {
	Agent string
	hc    *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path, agent string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{Agent: agent, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// ErrInvalidGrant is a refused refresh; Code says why (refresh_token_reused, ...).
type ErrInvalidGrant struct{ Code string }

func (e *ErrInvalidGrant) Error() string { return "invalid_grant: " + e.Code }

// Refresh trades a refresh token for new tokens.
func (c *Client) Refresh(refresh string) (Tokens, error) {
	req, err := http.NewRequest("POST", "http://fake/token",
		strings.NewReader("grant_type=refresh_token&refresh_token="+refresh))
	if err != nil {
		return Tokens{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Agent", c.Agent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return Tokens{}, fmt.Errorf("refresh: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusBadRequest {
		var e struct{ Error, Code string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		if e.Error == "invalid_grant" {
			return Tokens{}, &ErrInvalidGrant{Code: e.Code}
		}
		return Tokens{}, fmt.Errorf("refresh: %s", e.Error)
	}
	if resp.StatusCode != http.StatusOK {
		return Tokens{}, fmt.Errorf("refresh: HTTP %d", resp.StatusCode)
	}
	var t Tokens
	if err := json.NewDecoder(resp.Body).Decode(&t); err != nil {
		return Tokens{}, fmt.Errorf("refresh: %w", err)
	}
	return t, nil
}

// Call makes one API request with the access token: nil if it was accepted,
// ErrUnauthorized if refused.
func (c *Client) Call(access string) error {
	req, err := http.NewRequest("GET", "http://fake/api", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+access)
	req.Header.Set("X-Agent", c.Agent)
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		return ErrUnauthorized
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("api: HTTP %d", resp.StatusCode)
	}
	return nil
}

// ErrUnauthorized is a 401 from /api.
var ErrUnauthorized = errors.New("401 unauthorized")
