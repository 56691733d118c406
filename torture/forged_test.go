package torture

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
)

// The forged-freshness journeys with the real caw-init: a container user
// who plants a credential claiming to be fresher must not keep the host
// logged out, nor on the attacker's token.

// forged is a Claude credential claiming an expiry in 2286.
var forged = []byte(`{"claudeAiOauth":{"accessToken":"evil","refreshToken":"evil","expiresAt":9999999999999},"mcpOAuth":{"x":{"accessToken":"evil"}}}`)

// stays fails when path does not hold seq throughout d.
func stays(t *testing.T, path string, seq int64, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if got := harness.ReadSeq(path); got != seq {
			t.Fatalf("%s holds %d (data %.80q), want %d to stay", path, got, readSmall(path), seq)
		}
	}
}

func readSmall(p string) []byte { b, _ := harness.ReadSmall(p); return b }

// TestHostReloginWins: the container plants a far-future token (refused for
// the host, reported), then a plausible fresher one (indistinguishable from
// a refresh: it reaches the host). The host logs in again five times, in
// place, each time with a token older than the planted one: each login
// reaches the container and stays on the host, although the container
// writes its planted token back after each.
func TestHostReloginWins(t *testing.T) {
	bin := cawInit(t)
	d := scratch(t)
	host, err := harness.NewHost(d, 1, hostUID, hostGID)
	must(t, err)
	spec := harness.Spec{Strategy: harness.Bind, UID: userUID, GID: userGID, Argv: harness.CawInit(bin)}
	c, err := harness.Start(d, host, spec, 30*time.Second)
	must(t, err)
	t.Cleanup(func() { c.Stop(syscall.SIGTERM, 10*time.Second) })
	must(t, waitSeq(c.HomeFile, 1, 5*time.Second))

	must(t, harness.WriteRename(c.HomeFile, forged, userUID, userGID))
	stays(t, host.File, 1, 300*time.Millisecond)
	if !strings.Contains(c.Stderr(), "not written to the host") {
		t.Fatalf("the forged expiry was not reported:\n%s", c.Stderr())
	}
	const planted = 1_000_000 // plausible: about 17 min fresher than the host's
	must(t, harness.WriteRename(c.HomeFile, harness.Cred(planted), userUID, userGID))
	must(t, waitSeq(host.File, planted, 5*time.Second))
	for i := int64(2); i < 7; i++ {
		time.Sleep(1200 * time.Millisecond) // the person logs in later
		must(t, harness.WriteInPlace(host.File, harness.Cred(i)))
		must(t, waitSeq(c.HomeFile, i, 5*time.Second))
		must(t, harness.WriteRename(c.HomeFile, harness.Cred(planted), userUID, userGID))
		// Written back over, until the write-back budget is spent: then
		// the home is left alone (reported), the host still keeps the login.
		if err := waitSeq(c.HomeFile, i, 2*time.Second); err != nil && !strings.Contains(c.Stderr(), "leaving it alone") {
			t.Fatal(err)
		}
		stays(t, host.File, i, 300*time.Millisecond)
	}
	// At stop, the final flush does not push it either.
	c.Stop(syscall.SIGTERM, 10*time.Second)
	if got := harness.ReadSeq(host.File); got != 6 {
		t.Fatalf("after the stop the host holds %d, want 6", got)
	}
}

// TestNoPushAtStartUp: docker stop, a host re-login, docker start: the
// home copy left from the earlier run (fresher than the login) is replaced
// by the host's, and never pushed, not even by the final flush.
func TestNoPushAtStartUp(t *testing.T) {
	bin := cawInit(t)
	d := scratch(t)
	host, err := harness.NewHost(d, 1, hostUID, hostGID)
	must(t, err)
	spec := harness.Spec{Strategy: harness.Bind, UID: userUID, GID: userGID, Argv: harness.CawInit(bin)}
	c, err := harness.Start(d, host, spec, 30*time.Second)
	must(t, err)
	t.Cleanup(func() { c.Stop(syscall.SIGTERM, 10*time.Second) })
	must(t, waitSeq(c.HomeFile, 1, 5*time.Second))
	must(t, harness.WriteRename(c.HomeFile, harness.Cred(500), userUID, userGID))
	must(t, waitSeq(host.File, 500, 5*time.Second))
	c.Stop(syscall.SIGTERM, 10*time.Second) // the child's exit status is SIGTERM's

	must(t, harness.WriteInPlace(host.File, harness.Cred(40))) // the re-login
	if fi, err := os.Stat(c.HomeFile); err != nil || harness.ReadSeq(c.HomeFile) != 500 {
		t.Fatalf("the home copy of the earlier run: %v %v", fi, err)
	}
	must(t, c.Start(spec, 30*time.Second))
	must(t, waitSeq(c.HomeFile, 40, 5*time.Second))
	stays(t, host.File, 40, 300*time.Millisecond)
	c.Stop(syscall.SIGTERM, 10*time.Second)
	if got := harness.ReadSeq(host.File); got != 40 {
		t.Fatalf("after the stop the host holds %d, want 40", got)
	}
}
