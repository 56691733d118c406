package bridge_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/caw-dev/caw/host/keychain/keychaintest"
	"github.com/caw-dev/caw/sync/policy"
)

// The guard's rules (sync/policy), played by the real bridge against a
// fake security: the Keychain is the host, the mirror the home a container
// can write anything into.

func (r *rig) keychainWrites() int { _, w := r.fake.Counts(); return w }

// At start-up the Keychain is the source of truth: a mirror left from
// before, even one claiming a fresher login, is replaced and never pushed,
// not even when a container writes it again.
func TestStartKeychainWins(t *testing.T) {
	a, b := cred("a", 1), cred("b", 2)
	r := start(t, a, b, 20*time.Millisecond)
	if !bytes.Equal(r.readMirror(), a) {
		t.Fatalf("the mirror holds %q after start, want the Keychain's %q", r.readMirror(), a)
	}
	r.writeInPlace(b) // a container still holding the old mirror's token
	r.eventually("the Keychain's login written back over it", func() bool {
		return bytes.Equal(r.readMirror(), a) || !bytes.Equal(r.keychain(), a)
	})
	if !bytes.Equal(r.keychain(), a) || r.keychainWrites() != 0 {
		t.Fatalf("the mirror's content was pushed: the Keychain holds %q after %d writes", r.keychain(), r.keychainWrites())
	}
	r.stop()
	r.stop = nil
	r2 := start(t, b, a, time.Hour)
	if !bytes.Equal(r2.readMirror(), b) {
		t.Fatalf("the mirror holds %q after start, want the Keychain's %q", r2.readMirror(), b)
	}
}

// A keychain locked when the bridge starts defers the start-up decision,
// not its rule: once unlocked, the Keychain's login replaces the mirror.
func TestStartWithLockedKeychain(t *testing.T) {
	a, b := cred("a", 1), cred("b", 2)
	r := start(t, a, b, 20*time.Millisecond, func(r *rig) { r.fake.SetMode(keychaintest.Locked) })
	r.eventually("a locked-keychain message", func() bool { return r.log.has("the keychain is locked") })
	r.fake.SetMode(keychaintest.Unlocked)
	r.eventually("a decision once unlocked", func() bool {
		return bytes.Equal(r.readMirror(), a) || !bytes.Equal(r.keychain(), a)
	})
	if !bytes.Equal(r.keychain(), a) || r.keychainWrites() != 0 {
		t.Fatalf("the mirror's content was pushed once the keychain was unlocked: %q", r.keychain())
	}
}

// A container can write anything into the mirror: a far-future expiry is
// refused for the Keychain, and said once.
func TestForgedExpiryNeverReachesKeychain(t *testing.T) {
	a := cred("a", 1)
	forged := []byte(`{"claudeAiOauth":{"accessToken":"at-evil-SECRET","refreshToken":"rt-evil-SECRET","expiresAt":9999999999999},"mcpOAuth":{}}`)
	r := start(t, a, a, 20*time.Millisecond)
	r.writeInPlace(forged)
	r.eventually("a decision on the forged mirror", func() bool {
		return r.log.has("not written to the Keychain") || !bytes.Equal(r.keychain(), a)
	})
	r.waitRuns(5)
	if !bytes.Equal(r.keychain(), a) || r.keychainWrites() != 0 {
		t.Fatalf("the forged credential reached the Keychain: %q", r.keychain())
	}
	if !r.log.has("a forged or broken credential") {
		t.Fatal("the refusal was not reported")
	}
}

// A new token in the Keychain (a login on the Mac) goes to the mirror even
// when the mirror claims a fresher one, and the container cannot put its
// own token back.
func TestKeychainLoginWins(t *testing.T) {
	a, ctr, login := cred("a", 1), cred("container", 5), cred("login", 2)
	r := start(t, a, a, 20*time.Millisecond)
	r.writeInPlace(ctr) // a container's refresh
	r.eventually("the Keychain to take the container's refresh", func() bool { return bytes.Equal(r.keychain(), ctr) })
	time.Sleep(policy.RaceWindow + 100*time.Millisecond) // the person logs in later
	r.fake.Set(r.item, login)
	r.eventually("the login to reach the mirror", func() bool { return bytes.Equal(r.readMirror(), login) })
	r.writeInPlace(ctr) // the container writes back the token it holds
	r.eventually("the login written back over it", func() bool {
		return bytes.Equal(r.readMirror(), login) && r.log.has("went back to an older token")
	})
	if !bytes.Equal(r.keychain(), login) {
		t.Fatalf("the Keychain lost the login: %q", r.keychain())
	}
}

// Keychain writes from the mirror are rate-limited; what the limit holds
// back is written when the limit allows, or when the bridge stops (the next
// start takes the Keychain's).
func TestMirrorWritesRateLimited(t *testing.T) {
	for _, how := range []string{"limit", "stop"} {
		t.Run(how, func(t *testing.T) {
			a := cred("a", 1)
			r := start(t, a, a, time.Hour)
			for i := range policy.DefaultLimits.Burst {
				c := cred(fmt.Sprint("c", i), 2+i)
				r.writeInPlace(c)
				r.eventually(fmt.Sprintf("write %d to reach the Keychain", i+1), func() bool { return bytes.Equal(r.keychain(), c) })
			}
			last := cred("last", 7)
			r.writeInPlace(last)
			r.eventually("a decision on the write past the burst", func() bool {
				return r.log.has("held back") || bytes.Equal(r.keychain(), last)
			})
			if bytes.Equal(r.keychain(), last) {
				t.Fatal("a write past the burst reached the Keychain at once")
			}
			if how == "limit" {
				r.eventually("the limit to let the held-back write through", func() bool { return bytes.Equal(r.keychain(), last) })
				return
			}
			r.stop()
			r.stop = nil
			if !bytes.Equal(r.keychain(), last) {
				t.Fatalf("the bridge stopped without writing what the limit held back: the Keychain holds %q", r.keychain())
			}
		})
	}
}

// A container's refresh that lands in the mirror while no bridge runs is
// carried to the Keychain when the bridge starts again, as long as the
// Keychain still holds what both sides held when last in sync: its token
// was spent by that refresh, so replacing the mirror would log both out.
func TestStartCarriesRefreshMadeWhileStopped(t *testing.T) {
	a, ctr := cred("a", 1), cred("container", 3)
	r := start(t, a, a, 20*time.Millisecond)
	r.waitRuns(2)
	r.stop()
	r.stop = nil
	r.writeInPlace(ctr) // the container refreshes; no bridge runs
	r.run(20 * time.Millisecond)
	r.eventually("the container's refresh to reach the Keychain", func() bool { return bytes.Equal(r.keychain(), ctr) })
	if !bytes.Equal(r.readMirror(), ctr) {
		t.Fatalf("the mirror holds %q, want the container's refresh", r.readMirror())
	}
}

// What is carried over still passes every rule: a forged expiry written
// into the mirror while no bridge runs never reaches the Keychain (it is
// refused and said, as by a running bridge); and a login on the Mac while
// no bridge runs wins over the mirror's change.
func TestStartCarriesOnlyWhatRulesAllow(t *testing.T) {
	forged := []byte(`{"claudeAiOauth":{"accessToken":"at-evil","refreshToken":"rt-evil","expiresAt":9999999999999}}`)
	for _, tc := range []struct {
		name  string
		login bool
		mir   []byte
	}{{"forged", false, forged}, {"login on the Mac", true, cred("container", 3)}} {
		t.Run(tc.name, func(t *testing.T) {
			a, login := cred("a", 1), cred("login", 2)
			r := start(t, a, a, 20*time.Millisecond)
			r.waitRuns(2)
			r.stop()
			r.stop = nil
			r.writeInPlace(tc.mir)
			want := a
			if tc.login {
				r.fake.Set(r.item, login)
				want = login
			}
			writes := r.keychainWrites()
			r.run(20 * time.Millisecond)
			if tc.login {
				r.eventually("the login to replace the mirror", func() bool { return bytes.Equal(r.readMirror(), want) })
			} else {
				// Refused and said, as by a running bridge; the mirror
				// is the container's to mend.
				r.eventually("the refusal", func() bool { return r.log.has("a forged or broken credential") })
			}
			r.waitRuns(3)
			if !bytes.Equal(r.keychain(), want) || r.keychainWrites() != writes {
				t.Fatalf("the Keychain holds %q after %d more writes, want %q untouched", r.keychain(), r.keychainWrites()-writes, want)
			}
		})
	}
}
