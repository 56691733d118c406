package fakeagent

// Run plays an agent that is in use: it makes a request every few tens of
// milliseconds and refreshes its login against a token server (see
// internal/tokenserver) the way the real agent does, by the Behaviours
// table. It counts what a person would feel: requests refused, logouts.

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/caw-dev/caw/internal/tokenserver"
)

// Behaviour is how one agent refreshes its login. Every field is a fact
// about the real agent; Sources says where each comes from.
type Behaviour struct {
	Agent string
	// Margin: refresh this long before the access token expires; 0 means
	// only once it has expired (or on a 401). Real values; Run scales them
	// to the test's token lifetime (see RunConfig.Margin).
	Margin time.Duration
	// LockDirs: take the refresh lock directories (proper-lockfile, mkdir
	// style) <config dir>/.oauth_refresh.lock and <realpath(config dir)>.lock
	// before refreshing; stale after LockStale, mtime kept fresh every
	// LockUpdate by the holder, LockRetries attempts, then give up this
	// refresh rather than refresh unlocked.
	LockDirs              bool
	LockStale, LockUpdate time.Duration
	LockRetries           int
	// CompareOnDisk: under the lock, re-read the file and refresh only if
	// the refresh token on disk is still its own; otherwise adopt the file.
	CompareOnDisk bool
	// RereadOn401: on a refused request, re-read the file first and adopt
	// it, instead of refreshing, when it changed.
	RereadOn401 bool
	// ReloadOnMtime: re-read the file whenever its mtime changes.
	ReloadOnMtime bool
	// ReadEachRequest: read the file afresh before every request.
	ReadEachRequest bool
	// Write: Rename (temp file + rename, in place when the rename fails with
	// EBUSY/EXDEV/EPERM/EEXIST) or InPlace (truncate + write, 0600).
	Write string
	// StubOnInvalidGrant: a refused refresh writes the logged-out stub
	// (empty tokens, expiresAt 0) over the file.
	StubOnInvalidGrant bool
	Sources            string
}

// Behaviours is the one table of how each agent refreshes.
var Behaviours = map[string]Behaviour{
	Claude: {
		Agent: Claude, Margin: 5 * time.Minute,
		LockDirs: true, LockStale: 60 * time.Second, LockUpdate: 5 * time.Second, LockRetries: 5,
		CompareOnDisk: true, ReloadOnMtime: true, Write: Rename, StubOnInvalidGrant: true,
		Sources: "closed source, second-hand: refresh ahead of expiresAt and the lock directories, stale 60000 ms, " +
			"update 5000 ms, ~5 retries (tokenmaxxing issue 27, claude-code-cache-fix issue 372); compare-and-swap " +
			"on the stored refresh token and the logged-out stub on invalid_grant (caw's notes/agents.md, from the " +
			"shipped npm code up to 2.1.332); temp + rename from 2.1.118, in-place fallback from 2.1.119, reload on " +
			"mtime (agent-of-empires 3834)",
	},
	Gemini: {
		Agent: Gemini, Margin: 5 * time.Minute, Write: InPlace,
		Sources: "google-gemini/gemini-cli with google-auth-library: OAuth2Client refreshes eagerly 5 min before " +
			"expiry_date (eagerRefreshThresholdMillis default), the CLI writes oauth_creds.json in place with " +
			"fs.writeFile (mode 0600) when the library emits new tokens; no cross-process lock; the file is read at " +
			"start-up only; a refused refresh is an error, the file is left as it is (caw's notes/agents.md)",
	},
	Opencode: {
		Agent: Opencode, Margin: 0, ReadEachRequest: true, Write: InPlace,
		Sources: "sst/opencode packages/opencode/src/auth: auth.json read on every Auth.get, rewritten whole in " +
			"place (0600), no cross-process lock (opencode 37059, 28234); its Anthropic OAuth refreshes when " +
			"expires < now; a refused refresh is an error, the file is left as it is",
	},
	Codex: {
		Agent: Codex, Margin: 0, RereadOn401: true, Write: InPlace,
		Sources: "openai/codex codex-rs/login (auth manager and storage): refresh when the access JWT's exp has " +
			"passed; on a 401 reload auth.json and skip the refresh when it changed; in-process lock only; " +
			"refresh_token_reused is reported, the file is left as it is (the fake does not retry a refused token; " +
			"not verified in the source); auth.json written in place, 0600",
	},
}

// RunConfig is one agent's run.
type RunConfig struct {
	Agent  string
	File   string // the credential file
	Socket string // the token server's Unix socket
	Name   string // the caller's name in the server's counts (host, c1, ...)
	// Duration of the run; Run also stops when Stop is closed.
	Duration time.Duration
	Stop     <-chan struct{}
	// RequestMin/Max: the pause between requests, drawn uniformly.
	RequestMin, RequestMax time.Duration
	// Margin overrides the behaviour's refresh margin (a test's tokens
	// live seconds, not hours); negative keeps the table's.
	Margin time.Duration
	// LockRetryWait is the first wait between lock attempts (doubling);
	// proper-lockfile's retry defaults are seconds, scaled down like Margin.
	LockRetryWait time.Duration
	Logf          func(format string, args ...any)
	// Trace logs every lock, refresh and reload with a timestamp.
	Trace bool
}

// Report is what a run counted.
type Report struct {
	Name, Agent    string
	Requests       int // requests made
	Failed         int // requests refused or not sent (no usable token)
	Refreshes      int // refresh calls to the server
	InvalidGrants  int
	Stubs          int     // logged-out stubs written
	Episodes       int     // logouts: unusable for longer than one request
	LoggedOutMs    float64 // total time of those episodes
	LongestMs      float64
	LockGiveUps    int // refreshes abandoned for want of the lock
	LockWaits      int // lock attempts that found it taken
	Adopted        int // refreshes skipped because the file held a newer token
	Reloads        int // files re-read on mtime (or 401) with a new token
	FinalRefresh   string
	FinalLoggedOut bool
}

// creds is the agent's in-memory login.
type creds struct {
	access, refresh string
	expires         time.Time
}

type runner struct {
	cfg    RunConfig
	b      Behaviour
	cl     *tokenserver.Client
	cur    creds
	mtime  time.Time
	ino    uint64
	force  bool   // a 401 asks for a refresh
	failed string // a refresh token the server refused: not tried again
	loaded bool   // the file was read once
	rep    Report
	outage time.Time // start of the current run of failed requests
	nfail  int
}

// Run plays the agent until Duration has passed or Stop is closed.
func Run(cfg RunConfig) (Report, error) {
	b, ok := Behaviours[cfg.Agent]
	if !ok {
		return Report{}, fmt.Errorf("unknown agent %q (want %s, %s, %s or %s)", cfg.Agent, Claude, Codex, Gemini, Opencode)
	}
	if cfg.Margin >= 0 {
		b.Margin = cfg.Margin
	}
	if cfg.RequestMax < cfg.RequestMin {
		cfg.RequestMax = cfg.RequestMin
	}
	if cfg.LockRetryWait <= 0 {
		cfg.LockRetryWait = 50 * time.Millisecond
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	r := &runner{cfg: cfg, b: b, cl: tokenserver.NewClient(cfg.Socket, cfg.Name)}
	r.rep.Name, r.rep.Agent = cfg.Name, cfg.Agent
	r.reload(true)
	end := time.Now().Add(cfg.Duration)
	for time.Now().Before(end) {
		select {
		case <-cfg.Stop:
			end = time.Now()
			continue
		default:
		}
		r.step()
		d := cfg.RequestMin + time.Duration(rand.Int64N(int64(cfg.RequestMax-cfg.RequestMin)+1))
		select {
		case <-time.After(d):
		case <-cfg.Stop:
			end = time.Now()
		}
	}
	// Logged out at the end: a stub, or requests still refused.
	r.rep.FinalLoggedOut = r.cur.refresh == "" || r.nfail >= 2
	r.endOutage(time.Now())
	r.rep.FinalRefresh = r.cur.refresh
	return r.rep, nil
}

func (r *runner) trace(format string, args ...any) {
	if r.cfg.Trace {
		now := time.Now()
		r.cfg.Logf("%d.%06d %s: "+format, append([]any{now.Unix() % 1000, now.Nanosecond() / 1000, r.cfg.Name}, args...)...)
	}
}

// step is one request, with whatever refresh the agent does before it.
func (r *runner) step() {
	now := time.Now()
	if r.b.ReloadOnMtime || r.b.ReadEachRequest {
		r.reload(r.b.ReadEachRequest)
	}
	if r.cur.refresh != "" && r.cur.refresh != r.failed && (r.force || !now.Add(r.b.Margin).Before(r.cur.expires)) {
		r.refresh()
	}
	r.rep.Requests++
	ok := false
	if r.cur.access != "" {
		err := r.cl.Call(r.cur.access)
		ok = err == nil
		if errors.Is(err, tokenserver.ErrUnauthorized) {
			if r.b.RereadOn401 && r.reload(false) {
				// The file changed: the next request uses it.
			} else {
				r.force = true
			}
		}
	} else if r.b.RereadOn401 {
		r.reload(false)
	}
	now = time.Now()
	if ok {
		r.endOutage(now)
		return
	}
	r.trace("request failed (have %s)", short(r.cur.refresh))
	r.rep.Failed++
	if r.nfail == 0 {
		r.outage = now
	}
	r.nfail++
}

// endOutage closes a run of failed requests: two or more is a logout.
func (r *runner) endOutage(now time.Time) {
	if r.nfail >= 2 {
		ms := float64(now.Sub(r.outage)) / float64(time.Millisecond)
		r.rep.Episodes++
		r.rep.LoggedOutMs += ms
		r.rep.LongestMs = max(r.rep.LongestMs, ms)
	}
	r.nfail = 0
}

// reload re-reads the file when it changed (or always when forced) and
// adopts what it says; it reports whether that is a different login.
func (r *runner) reload(always bool) bool {
	fi, err := os.Stat(r.cfg.File)
	if err != nil {
		return false
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	var ino uint64
	if st != nil {
		ino = st.Ino
	}
	if !always && fi.ModTime().Equal(r.mtime) && ino == r.ino {
		return false
	}
	c, err := readCreds(r.cfg.Agent, r.cfg.File)
	if err != nil {
		return false // torn or foreign: try again on the next change
	}
	r.mtime, r.ino = fi.ModTime(), ino
	if c == r.cur {
		return false
	}
	if r.loaded {
		r.rep.Reloads++
		r.trace("reload %s", short(c.refresh))
	}
	r.loaded = true
	r.cur = c
	r.force = false
	return true
}

func (r *runner) refresh() {
	if r.b.LockDirs {
		unlock, ok := r.lock()
		if !ok {
			r.rep.LockGiveUps++
			return
		}
		defer func() { unlock(); r.trace("unlock") }()
		r.trace("locked")
	}
	if r.b.CompareOnDisk {
		if c, err := readCreds(r.cfg.Agent, r.cfg.File); err == nil && c.refresh != "" && c.refresh != r.cur.refresh {
			r.cur = c
			r.force = false
			r.rep.Adopted++
			r.trace("adopt %s", short(c.refresh))
			if fi, err := os.Stat(r.cfg.File); err == nil {
				r.mtime = fi.ModTime()
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					r.ino = st.Ino
				}
			}
			return
		}
	}
	r.rep.Refreshes++
	r.trace("refresh %s", short(r.cur.refresh))
	t, err := r.cl.Refresh(r.cur.refresh)
	var ig *tokenserver.ErrInvalidGrant
	switch {
	case errors.As(err, &ig):
		r.rep.InvalidGrants++
		r.cfg.Logf("%s: invalid_grant (%s)", r.cfg.Name, ig.Code)
		if r.b.StubOnInvalidGrant {
			r.rep.Stubs++
			r.cur = creds{}
			r.write(r.cur)
		} else {
			// Codex reports the error and keeps its state; it does not
			// try a refused refresh token again (only a changed file,
			// read on a 401, gives it a new one).
			r.failed = r.cur.refresh
			r.force = false
		}
	case err != nil:
		r.cfg.Logf("%s: refresh: %v", r.cfg.Name, err)
	default:
		r.cur = creds{access: t.Access, refresh: t.Refresh, expires: time.Now().Add(time.Duration(t.ExpiresIn) * time.Second)}
		r.force = false
		r.write(r.cur)
		r.trace("wrote %s", short(t.Refresh))
	}
}

func short(tok string) string {
	if len(tok) > 8 {
		return tok[:8]
	}
	return tok
}

// write stores c the agent's way and notes the file's new mtime as its own.
func (r *runner) write(c creds) {
	data, err := credsContent(r.cfg.Agent, r.cfg.File, c)
	if err == nil {
		switch r.b.Write {
		case Rename:
			err = WriteRename(r.cfg.File, data)
			var errno syscall.Errno
			if errors.As(err, &errno) && (errno == syscall.EXDEV || errno == syscall.EPERM || errno == syscall.EEXIST || errno == syscall.EBUSY) {
				err = WriteInPlace(r.cfg.File, data)
			}
		default:
			err = WriteInPlace(r.cfg.File, data)
		}
	}
	if err != nil {
		r.cfg.Logf("%s: write: %v", r.cfg.Name, err)
		return
	}
	if fi, err := os.Stat(r.cfg.File); err == nil {
		r.mtime = fi.ModTime()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			r.ino = st.Ino
		}
	}
}

// lock takes the refresh lock directories as proper-lockfile does, and
// returns their release.
func (r *runner) lock() (func(), bool) {
	dir := filepath.Dir(r.cfg.File)
	paths := []string{filepath.Join(dir, ".oauth_refresh.lock")}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		paths = append(paths, real+".lock")
	}
	var held []string
	release := func() {
		for i := len(held) - 1; i >= 0; i-- {
			_ = os.Remove(held[i])
		}
	}
	for _, p := range paths {
		if !r.lockOne(p) {
			release()
			return nil, false
		}
		held = append(held, p)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		// The holder keeps its locks' mtime fresh so nobody takes them
		// for stale.
		defer close(done)
		t := time.NewTicker(r.b.LockUpdate)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				now := time.Now()
				for _, p := range held {
					_ = os.Chtimes(p, now, now)
				}
			}
		}
	}()
	return func() { close(stop); <-done; release() }, true
}

func (r *runner) lockOne(p string) bool {
	wait := r.cfg.LockRetryWait
	for try := 0; ; try++ {
		err := os.Mkdir(p, 0o700)
		if err == nil {
			return true
		}
		if !errors.Is(err, os.ErrExist) {
			r.cfg.Logf("%s: lock %s: %v", r.cfg.Name, p, err)
			return false
		}
		if fi, err := os.Stat(p); err == nil && time.Since(fi.ModTime()) > r.b.LockStale {
			// proper-lockfile removes a stale lock and tries again at once.
			_ = os.Remove(p)
			continue
		}
		r.rep.LockWaits++
		r.trace("lock busy %s", filepath.Base(p))
		if try >= r.b.LockRetries {
			return false
		}
		time.Sleep(wait)
		wait *= 2
	}
}

// opencodeProvider is the provider entry the fake opencode logs in with.
const opencodeProvider = "anthropic"

// readCreds reads the login a credential file holds.
func readCreds(agent, path string) (creds, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return creds{}, err
	}
	switch agent {
	case Claude:
		var doc struct {
			OAuth *struct {
				AccessToken  string `json:"accessToken"`
				RefreshToken string `json:"refreshToken"`
				ExpiresAt    int64  `json:"expiresAt"`
			} `json:"claudeAiOauth"`
		}
		if err := json.Unmarshal(data, &doc); err != nil || doc.OAuth == nil {
			return creds{}, fmt.Errorf("not a Claude credential: %q", clip(data))
		}
		c := creds{access: doc.OAuth.AccessToken, refresh: doc.OAuth.RefreshToken}
		if doc.OAuth.ExpiresAt > 0 {
			c.expires = time.UnixMilli(doc.OAuth.ExpiresAt)
		}
		return c, nil
	case Codex:
		var doc struct {
			Tokens *struct {
				AccessToken  string `json:"access_token"`
				RefreshToken string `json:"refresh_token"`
			} `json:"tokens"`
		}
		if err := json.Unmarshal(data, &doc); err != nil || doc.Tokens == nil {
			return creds{}, fmt.Errorf("not a Codex credential: %q", clip(data))
		}
		sub, exp := jwtClaims(doc.Tokens.AccessToken)
		return creds{access: sub, refresh: doc.Tokens.RefreshToken, expires: exp}, nil
	case Gemini:
		var doc struct {
			AccessToken  *string `json:"access_token"`
			RefreshToken string  `json:"refresh_token"`
			ExpiryDate   int64   `json:"expiry_date"`
		}
		if err := json.Unmarshal(data, &doc); err != nil || doc.AccessToken == nil {
			return creds{}, fmt.Errorf("not a Gemini credential: %q", clip(data))
		}
		return creds{access: *doc.AccessToken, refresh: doc.RefreshToken, expires: time.UnixMilli(doc.ExpiryDate)}, nil
	case Opencode:
		var doc map[string]struct {
			Type    string `json:"type"`
			Refresh string `json:"refresh"`
			Access  string `json:"access"`
			Expires int64  `json:"expires"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			return creds{}, fmt.Errorf("not an opencode credential: %q", clip(data))
		}
		p, ok := doc[opencodeProvider]
		if !ok || p.Type != "oauth" {
			return creds{}, fmt.Errorf("no %s OAuth entry in the opencode credential", opencodeProvider)
		}
		return creds{access: p.Access, refresh: p.Refresh, expires: time.UnixMilli(p.Expires)}, nil
	}
	return creds{}, fmt.Errorf("unknown agent %q", agent)
}

// credsContent is the file holding c, keeping the other top-level keys of
// the current file (a Claude file's mcpOAuth, ...). An empty c is Claude's
// logged-out stub.
func credsContent(agent, path string, c creds) ([]byte, error) {
	return TokensContent(agent, c.access, c.refresh, c.expires, path)
}

// TokensContent is a credential file holding the given tokens, keeping the
// other top-level keys of the file at path if it exists. Empty tokens make
// Claude's logged-out stub.
func TokensContent(agent, access, refresh string, exp time.Time, path string) ([]byte, error) {
	var doc map[string]any
	switch agent {
	case Claude:
		doc = map[string]any{}
		if data, err := os.ReadFile(path); err == nil {
			var extra map[string]json.RawMessage
			if json.Unmarshal(data, &extra) == nil {
				for k, v := range extra {
					doc[k] = v
				}
			}
		}
		o := map[string]any{"accessToken": access, "refreshToken": refresh, "expiresAt": 0,
			"scopes": []string{"user:inference", "user:profile"}, "subscriptionType": "max"}
		if access != "" {
			o["expiresAt"] = exp.UnixMilli()
			o["refreshTokenExpiresAt"] = exp.Add(30 * 24 * time.Hour).UnixMilli()
		}
		doc["claudeAiOauth"] = o
	case Gemini:
		doc = map[string]any{"access_token": access, "refresh_token": refresh, "expiry_date": exp.UnixMilli(),
			"token_type": "Bearer", "scope": "https://www.googleapis.com/auth/cloud-platform"}
	case Opencode:
		doc = map[string]any{}
		if data, err := os.ReadFile(path); err == nil {
			var other map[string]json.RawMessage
			if json.Unmarshal(data, &other) == nil {
				for k, v := range other {
					doc[k] = v
				}
			}
		}
		doc[opencodeProvider] = map[string]any{"type": "oauth", "refresh": refresh, "access": access, "expires": exp.UnixMilli()}
	case Codex:
		doc = map[string]any{
			"OPENAI_API_KEY": nil,
			"tokens": map[string]any{
				"id_token":      jwt(map[string]any{"sub": access, "exp": exp.Unix(), "email": "fake@example.invalid"}),
				"access_token":  jwt(map[string]any{"sub": access, "exp": exp.Unix()}),
				"refresh_token": refresh,
				"account_id":    "acct-fake",
			},
			"last_refresh": time.Now().UTC().Format(time.RFC3339Nano),
		}
	default:
		return nil, fmt.Errorf("unknown agent %q", agent)
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
