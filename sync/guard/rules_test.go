package guard

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
	"github.com/caw-dev/caw/internal/testenv"
	"github.com/caw-dev/caw/sync/policy"
	"golang.org/x/sys/unix"
)

// Namespace tests of the sync rules against a hostile container user: real
// files, real inotify, the real guard (the rules themselves are table-tested
// in sync/policy).

// forgedClaude is a Claude credential the container user made up: far-future
// expiry, its own tokens, an extra key.
var forgedClaude = []byte(`{"claudeAiOauth":{"accessToken":"evil","refreshToken":"evil","expiresAt":9999999999999},"mcpOAuth":{"x":{"accessToken":"evil"}}}` + "\n")

func unsignedJWT(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(claims)) + "."
}

// TestForgedFreshnessNeverReachesTheHost: a far-future Claude expiry, a
// Codex token for another account, and one that names no account where the
// host's does, are never written to the host, and are reported.
func TestForgedFreshnessNeverReachesTheHost(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	codexHost := f.bindDir("codex", ".codex/auth.json", codexTok(1))
	s := f.geminiSentinel()
	f.start()
	homeFile, codexHome := f.homePath(".claude/.credentials.json"), f.homePath(".codex/auth.json")
	renameOwned(t, homeFile, forgedClaude, userUID, userGID)
	future := time.Now().Add(24 * 365 * time.Hour).Unix()
	attacker := fmt.Appendf(nil, `{"OPENAI_API_KEY":null,"tokens":{"id_token":"x","access_token":%q,"refresh_token":"evil","account_id":"attacker"},"last_refresh":%q}`,
		unsignedJWT(fmt.Sprintf(`{"exp":%d}`, future)), time.Now().UTC().Format(time.RFC3339))
	renameOwned(t, codexHome, attacker, userUID, userGID)
	// Another account within a plausible lifetime: still refused.
	plausible := fmt.Appendf(nil, `{"OPENAI_API_KEY":null,"tokens":{"id_token":"x","access_token":%q,"refresh_token":"evil","account_id":"attacker"},"last_refresh":%q}`,
		unsignedJWT(fmt.Sprintf(`{"exp":%d}`, time.Now().Add(48*time.Hour).Unix())), time.Now().UTC().Format(time.RFC3339))
	s.barrier()
	renameOwned(t, codexHome, plausible, userUID, userGID)
	s.barrier()
	// No account_id, an id token without claims: whose it is cannot be told.
	unnamed := fmt.Appendf(nil, `{"OPENAI_API_KEY":null,"tokens":{"id_token":"x","access_token":%q,"refresh_token":"evil2"},"last_refresh":%q}`,
		unsignedJWT(fmt.Sprintf(`{"exp":%d}`, time.Now().Add(49*time.Hour).Unix())), time.Now().UTC().Format(time.RFC3339))
	renameOwned(t, codexHome, unnamed, userUID, userGID)
	s.barrier()
	assertContent(t, hostFile, claudeTok(1))
	assertContent(t, codexHost, codexTok(1))
	if r := f.report("claude"); r.Implausible == 0 || r.HostWrites != 0 {
		t.Fatalf("the forged Claude token was not refused as implausible: %+v", r)
	}
	if r := f.report("codex"); r.OtherAccount < 2 || r.HostWrites != 0 {
		t.Fatalf("the other account's Codex token, and the unnamed one, were not refused as such: %+v", r)
	}
}

// TestHostLoginWins: a host login after the container planted a token
// claiming to be fresher goes into the container, and the container cannot
// put its old token back on the host; a refresh it makes afterwards can.
func TestHostLoginWins(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	s := f.sentinel()
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	// A plausible token far fresher than the host's: it reaches the host
	// (the guard cannot tell it from a refresh).
	renameOwned(t, homeFile, claudeTok(5000), userUID, userGID)
	waitContent(t, hostFile, claudeTok(5000))
	time.Sleep(policy.RaceWindow + 100*time.Millisecond) // the person logs in later
	for i := 2; i < 5; i++ {
		writeOwned(t, hostFile, claudeTok(i), hostUID, hostGID, 0o600)
		waitContent(t, homeFile, claudeTok(i))
		// The container writes its planted token back: never to the host.
		renameOwned(t, homeFile, claudeTok(5000), userUID, userGID)
		s.barrier()
		waitContent(t, homeFile, claudeTok(i))
		assertContent(t, hostFile, claudeTok(i))
		time.Sleep(policy.RaceWindow + 100*time.Millisecond)
	}
	if err := f.start().Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	renameOwned(t, homeFile, claudeTok(6000), userUID, userGID)
	waitContent(t, hostFile, claudeTok(6000))
}

// TestStubRepair: Claude Code writing a logged-out stub (its invalid_grant)
// over a token the guard had just handed it gets the token back at once; a
// deleted file (its logout) is left deleted.
func TestStubRepair(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	s := f.sentinel()
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	writeOwned(t, hostFile, claudeTok(2), hostUID, hostGID, 0o600)
	waitContent(t, homeFile, claudeTok(2))
	renameOwned(t, homeFile, claudeStub, userUID, userGID)
	waitContent(t, homeFile, claudeTok(2))
	assertContent(t, hostFile, claudeTok(2))
	// A refresh in the container, then a logout there: the file is gone
	// and stays gone; the host keeps its token.
	renameOwned(t, homeFile, claudeTok(3), userUID, userGID)
	waitContent(t, hostFile, claudeTok(3))
	if err := removeFile(homeFile); err != nil {
		t.Fatal(err)
	}
	s.barrier()
	if got := readFile(homeFile); got != nil {
		t.Fatalf("a logout in the container was undone: %.60q", got)
	}
	assertContent(t, hostFile, claudeTok(3))
}

// TestHostWritesRateLimited: a container rewriting a fresher credential in
// a loop gets a burst of host writes, then one per interval, and the host
// ends with the latest content.
func TestHostWritesRateLimited(t *testing.T) {
	f := newFx(t)
	f.limited, f.every = true, 300*time.Millisecond
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	begin := time.Now()
	n := 1
	for time.Since(begin) < time.Second {
		n++
		renameOwned(t, homeFile, claudeTok(n), userUID, userGID)
		time.Sleep(2 * time.Millisecond)
	}
	waitContent(t, hostFile, claudeTok(n))
	elapsed := time.Since(begin)
	writes := f.report("claude").HostWrites
	// The burst of 4, then one per 300 ms, plus the one delivering the last.
	if most := 4 + int(elapsed/f.every) + 1; writes > most || n < 2*most {
		t.Fatalf("%d host writes for %d rewrites in %v, want at most %d:\n%s", writes, n-1, elapsed, most, f.log)
	}
	t.Logf("%d rewrites in %v: %d host writes", n-1, elapsed, writes)
}

func removeFile(p string) error { return os.Remove(p) }

// geminiSentinel is a sentinel (see sentinel) on a Gemini credential, for
// tests that use the Codex one themselves.
func (f *fx) geminiSentinel() *sentinel {
	s := &sentinel{f: f, n: 1, home: f.homePath(".gemini/oauth_creds.json"), gemini: true}
	s.hostFile = f.bind("gemini", ".gemini/oauth_creds.json", geminiTok(1))
	return s
}

func geminiTok(n int) []byte {
	return append(harness.GeminiJSON(fmt.Sprint("ya29.", n), "1//r", time.Now().Add(30*time.Minute).UnixMilli()+int64(n)), '\n')
}

// TestMergeKeepsBothSides: an MCP server's login in the container and a
// Claude refresh on the host both survive, on both sides; a Gemini refresh
// written without its refresh token keeps the other side's.
func TestMergeKeepsBothSides(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	gemHost := f.bind("gemini", ".gemini/oauth_creds.json", geminiTok(1))
	f.start()
	homeFile, gemHome := f.homePath(".claude/.credentials.json"), f.homePath(".gemini/oauth_creds.json")
	mcp := func(n int) []byte {
		b := claudeTok(n)
		return append(b[:len(b)-2], []byte(`,"mcpOAuth":{"srv":{"accessToken":"mcp"}}}`+"\n")...)
	}
	renameOwned(t, homeFile, mcp(1), userUID, userGID)
	waitContent(t, hostFile, mcp(1))
	// The host's agent refreshes from the file it read before the MCP
	// login reached it.
	writeOwned(t, hostFile, claudeTok(2), hostUID, hostGID, 0o600)
	waitContent(t, homeFile, mcp(2))
	waitContent(t, hostFile, mcp(2))

	noRefresh := fmt.Appendf(nil, `{"access_token":"ya29.new","expiry_date":%d}`+"\n", time.Now().Add(50*time.Minute).UnixMilli())
	renameOwned(t, gemHome, noRefresh, userUID, userGID)
	want := append(noRefresh[:len(noRefresh)-2], []byte(`,"refresh_token":"1//r"}`+"\n")...)
	waitContent(t, gemHost, want)
	waitContent(t, gemHome, want)
}

// TestStuckHostFileDelaysOnlyItself: while another process holds the flock
// of one credential's host file (the guard waits up to 2 s for it), another
// credential still syncs at once.
func TestStuckHostFileDelaysOnlyItself(t *testing.T) {
	f := newFx(t)
	stuck := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	other := f.bind("gemini", ".gemini/oauth_creds.json", geminiTok(1))
	f.start()
	fh, err := os.Open(stuck)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if err := unix.Flock(int(fh.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	renameOwned(t, f.homePath(".claude/.credentials.json"), claudeTok(2), userUID, userGID)
	time.Sleep(50 * time.Millisecond) // the guard is now waiting for the lock
	begin := time.Now()
	tok := geminiTok(2) // its expiry is taken from the clock: build it once
	renameOwned(t, f.homePath(".gemini/oauth_creds.json"), tok, userUID, userGID)
	waitContent(t, other, tok)
	if d := time.Since(begin); d > time.Second {
		t.Fatalf("the other credential took %v behind the stuck one", d)
	}
	unix.Flock(int(fh.Fd()), unix.LOCK_UN)
	waitContent(t, stuck, claudeTok(2))
}

// TestMergeCarriesNothingRefused: an opencode entry the host refuses (a
// forged expiry; another account than the host's for that provider) does
// not reach it inside the merge the guard writes back when the host's own
// refresh wins: the merge keeps the home's entries for the home only.
func TestMergeCarriesNothingRefused(t *testing.T) {
	entry := func(refresh string, expires time.Time, account string) string {
		return fmt.Sprintf(`{"type":"oauth","refresh":%q,"access":"a-%s","expires":%d,"accountId":%q}`, refresh, refresh, expires.UnixMilli(), account)
	}
	anthropic := func(n int) string {
		return entry(fmt.Sprint("rt-host-", n), time.Now().Add(time.Duration(n)*time.Minute+time.Hour), "me")
	}
	for name, c := range map[string]struct{ hostOpenAI, forged string }{
		"forged expiry": {"", entry("rt-attacker", time.Now().Add(1000*24*time.Hour), "me")},
		"another account": {`,"openai":` + entry("rt-host-openai", time.Now().Add(10*time.Minute), "me"),
			entry("rt-attacker", time.Now().Add(30*time.Minute), "attacker")},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFx(t)
			hostFile := f.bind("opencode", ".local/share/opencode/auth.json", fmt.Appendf(nil, `{"anthropic":%s%s}`, anthropic(1), c.hostOpenAI))
			s := f.sentinel()
			f.start()
			homeFile := f.homePath(".local/share/opencode/auth.json")
			renameOwned(t, homeFile, fmt.Appendf(nil, `{"anthropic":%s,"openai":%s}`, anthropic(1), c.forged), userUID, userGID)
			s.barrier()
			time.Sleep(policy.RaceWindow + 100*time.Millisecond) // the host refreshes later
			writeOwned(t, hostFile, fmt.Appendf(nil, `{"anthropic":%s%s}`, anthropic(2), c.hostOpenAI), hostUID, hostGID, 0o600)
			testenv.WaitFor(t, "the host's refresh to reach the home", func() bool {
				return bytes.Contains(readFile(homeFile), []byte("rt-host-2"))
			})
			s.barrier()
			if got := readFile(hostFile); bytes.Contains(got, []byte("rt-attacker")) {
				t.Fatalf("the refused entry reached the host inside a merge: %s", got)
			}
		})
	}
}
