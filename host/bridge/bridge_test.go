package bridge_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caw-dev/caw/host/bridge"
	"github.com/caw-dev/caw/host/keychain"
	"github.com/caw-dev/caw/host/keychain/keychaintest"
)

// cred is a Claude credential expiring in h hours, with tokens named by tag.
func cred(tag string, h int) []byte {
	exp := time.Now().Add(time.Duration(h) * time.Hour).UnixMilli()
	return []byte(fmt.Sprintf(`{"claudeAiOauth":{"accessToken":"at-%s-SECRET","refreshToken":"rt-%s-SECRET","expiresAt":%d},"mcpOAuth":{}}`, tag, tag, exp))
}

var stub = []byte(`{"claudeAiOauth":{"accessToken":"","refreshToken":"","expiresAt":0}}`)

type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) logf(level int, format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf("%d %s", level, fmt.Sprintf(format, args...)))
	l.mu.Unlock()
}

func (l *logs) has(sub string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

type rig struct {
	t      *testing.T
	fake   *keychaintest.Fake
	item   keychain.Item
	mirror string
	log    *logs
	stop   func()
}

// start makes a keychain holding kc, a mirror holding mir, and runs the
// bridge until the test ends; before runs first (on the fake keychain).
func start(t *testing.T, kc, mir []byte, interval time.Duration, before ...func(*rig)) *rig {
	t.Helper()
	r := &rig{t: t, fake: keychaintest.New(t), item: keychain.ClaudeItem("alice", ""), log: &logs{}}
	dir := filepath.Join(t.TempDir(), "keychain", "claude")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	r.mirror = filepath.Join(dir, ".credentials.json")
	if kc != nil {
		r.fake.Set(r.item, kc)
	}
	if mir != nil {
		if err := os.WriteFile(r.mirror, mir, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range before {
		f(r)
	}
	r.run(interval)
	return r
}

// run runs the bridge on r's keychain and mirror until r.stop, recording
// the synced state beside the mirror's directory as caw bridge does.
func (r *rig) run(interval time.Duration) {
	t := r.t
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- bridge.Run(ctx, bridge.Options{
			Pairs:    []bridge.Pair{{Agent: "claude", Format: "claude", Item: r.item, Mirror: r.mirror}},
			Store:    r.fake.Store(),
			Interval: interval,
			Logf:     r.log.logf,
			Ready:    func() { close(ready) },
			StateDir: filepath.Dir(filepath.Dir(r.mirror)),
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("bridge stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("bridge not ready")
	}
	r.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("bridge: %v", err)
		}
	}
	t.Cleanup(func() {
		if r.stop != nil {
			r.stop()
			r.stop = nil
		}
		if t.Failed() {
			t.Logf("bridge log:\n%s", r.log)
		}
	})
}

func (r *rig) keychain() []byte { d, _ := r.fake.Get(r.item); return d }

func (r *rig) readMirror() []byte {
	d, _ := os.ReadFile(r.mirror)
	return bytes.TrimRight(d, " ")
}

// eventually waits up to 10 s for cond.
func (r *rig) eventually(what string, cond func() bool) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeInPlace writes the mirror as a guard or an agent does: same inode.
func (r *rig) writeInPlace(data []byte) {
	r.t.Helper()
	f, err := os.OpenFile(r.mirror, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		r.t.Fatal(err)
	}
	f.Close()
}

// waitReads waits until the bridge has run security n more times.
func (r *rig) waitRuns(n int) {
	r.t.Helper()
	base := len(r.fake.Argv())
	r.eventually(fmt.Sprintf("%d more security runs", n), func() bool { return len(r.fake.Argv()) >= base+n })
}

func TestKeychainRefreshReachesMirror(t *testing.T) {
	a, b := cred("a", 1), cred("b", 2)
	r := start(t, a, a, 50*time.Millisecond)
	ino := inode(t, r.mirror)
	r.fake.Set(r.item, b)
	r.eventually("the mirror to take the Keychain's refresh", func() bool { return bytes.Equal(r.readMirror(), b) })
	if inode(t, r.mirror) != ino {
		t.Error("the mirror was replaced, not written in place: a file bind mount would be detached")
	}
	if fi, _ := os.Stat(r.mirror); fi.Mode().Perm() != 0o600 {
		t.Errorf("mirror mode %v, want 0600", fi.Mode().Perm())
	}
	r.fake.CheckArgv(a, b, []byte("at-a-SECRET"), []byte("at-b-SECRET"))
}

// The Keychain is read only every hour here: the mirror's change must
// reach it through the file watch.
func TestMirrorRefreshReachesKeychainByEvent(t *testing.T) {
	a, c := cred("a", 1), cred("c", 3)
	r := start(t, a, a, time.Hour)
	t0 := time.Now()
	r.writeInPlace(c)
	r.eventually("the Keychain to take the mirror's refresh", func() bool { return bytes.Equal(r.keychain(), c) })
	t.Logf("mirror to Keychain: %v (polled every 10ms)", time.Since(t0).Round(time.Millisecond))
	r.fake.CheckArgv(a, c, []byte("rt-c-SECRET"))
}

func TestLogoutStubDoesNotCross(t *testing.T) {
	a := cred("a", 1)
	r := start(t, a, a, 30*time.Millisecond)
	r.writeInPlace(stub)
	r.waitRuns(5)
	if !bytes.Equal(r.keychain(), a) {
		t.Fatalf("the Keychain took the mirror's logged-out stub: %q", r.keychain())
	}
	if _, w := r.fake.Counts(); w != 0 {
		t.Fatalf("%d Keychain writes, want none", w)
	}
	// A new login in the Keychain replaces the stub.
	b := cred("b", 2)
	r.fake.Set(r.item, b)
	r.eventually("the new login to replace the stub", func() bool { return bytes.Equal(r.readMirror(), b) })
}

func TestLockedKeychainWaits(t *testing.T) {
	a, c := cred("a", 1), cred("c", 3)
	r := start(t, a, a, 30*time.Millisecond)
	r.fake.SetMode(keychaintest.Locked)
	r.writeInPlace(c)
	r.eventually("a locked-keychain message", func() bool { return r.log.has("the keychain is locked") })
	r.waitRuns(3)
	if got, _ := r.fake.Get(r.item); !bytes.Equal(got, a) {
		t.Fatalf("a locked Keychain changed: %q", got)
	}
	r.fake.SetMode(keychaintest.Unlocked)
	r.eventually("the owed refresh to reach the unlocked Keychain", func() bool { return bytes.Equal(r.keychain(), c) })
	if !r.log.has("unlocked again") {
		t.Error("no message on unlock")
	}
}

// A denied prompt is not asked again: the bridge stops running security
// for that item.
func TestDeniedPromptStopsAsking(t *testing.T) {
	for _, mode := range []string{keychaintest.Deny, keychaintest.Cancel} {
		t.Run(mode, func(t *testing.T) {
			a := cred("a", 1)
			r := start(t, a, a, 20*time.Millisecond)
			r.fake.SetMode(mode)
			r.eventually("a denied message", func() bool { return r.log.has("was denied at the prompt") })
			n := len(r.fake.Argv())
			r.writeInPlace(cred("c", 3))
			time.Sleep(300 * time.Millisecond) // 15 intervals: no run may happen in them
			if m := len(r.fake.Argv()); m != n {
				t.Fatalf("security ran %d more times after the denial", m-n)
			}
			if !bytes.Equal(r.keychain(), a) {
				t.Fatal("the Keychain changed after the denial")
			}
		})
	}
}

// Idle: nothing changes, so nothing is written on either side.
func TestIdleWritesNothing(t *testing.T) {
	a := cred("a", 1)
	r := start(t, a, a, 20*time.Millisecond)
	fi0, _ := os.Stat(r.mirror)
	r.waitRuns(10)
	if _, w := r.fake.Counts(); w != 0 {
		t.Fatalf("%d Keychain writes while idle", w)
	}
	fi1, _ := os.Stat(r.mirror)
	if !fi1.ModTime().Equal(fi0.ModTime()) {
		t.Fatal("the mirror was written while idle")
	}
}

// A regression (the mirror goes back to a token it held before) gets the
// fresher token back, a bounded number of times.
func TestRegressionWrittenBackBounded(t *testing.T) {
	a, b := cred("a", 1), cred("b", 2)
	r := start(t, a, a, time.Hour)
	r.writeInPlace(b)
	r.eventually("the Keychain to take b", func() bool { return bytes.Equal(r.keychain(), b) })
	for i := 0; i < 3; i++ {
		r.writeInPlace(a)
		r.eventually("b written back over the old token", func() bool { return bytes.Equal(r.readMirror(), b) })
	}
	r.writeInPlace(a)
	r.eventually("the give-up message", func() bool { return r.log.has("leaving it alone") })
	if !bytes.Equal(r.keychain(), b) {
		t.Fatal("the Keychain went back to the old token")
	}
}

func TestSymlinkMirrorRefused(t *testing.T) {
	a, b := cred("a", 1), cred("b", 2)
	r := start(t, a, a, 30*time.Millisecond)
	target := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(target, []byte("do not touch"), 0o600)
	os.Remove(r.mirror)
	if err := os.Symlink(target, r.mirror); err != nil {
		t.Fatal(err)
	}
	r.fake.Set(r.item, b)
	// The bridge owes the mirror b, waits for the "torn" mirror to settle,
	// then tries to write: refused, or through the link.
	r.eventually("a write attempt", func() bool {
		got, _ := os.ReadFile(target)
		return string(got) != "do not touch" || r.log.has("cannot write the mirror")
	})
	if got, _ := os.ReadFile(target); string(got) != "do not touch" {
		t.Fatalf("the bridge wrote through a symlink: %q", got)
	}
}

// A mirror left torn (its writer died mid-write) gets the Keychain's
// fresher login once it has stayed quiet, even with reads more frequent
// than the settle delay.
func TestTornMirrorSettles(t *testing.T) {
	a, b := cred("a", 1), cred("b", 2)
	r := start(t, a, a, 20*time.Millisecond)
	r.writeInPlace(a[:len(a)/2])
	r.fake.Set(r.item, b)
	r.eventually("the torn mirror to get the fresher login", func() bool { return bytes.Equal(r.readMirror(), b) })
}

// raceStore is the real backend, plus a refresh on the Mac landing at the
// worst moment: right after the read a decision was taken on.
type raceStore struct {
	keychain.Security
	mu     sync.Mutex
	reads  int
	atRead int
	hit    func()
}

func (s *raceStore) Read(ctx context.Context, it keychain.Item) ([]byte, error) {
	s.mu.Lock()
	s.reads++
	if s.reads == s.atRead && s.hit != nil {
		s.hit()
	}
	s.mu.Unlock()
	return s.Security.Read(ctx, it)
}

// The bridge looks at the Keychain again before writing it: a refresh on
// the Mac between its decision and its write is decided on, not lost.
func TestKeychainRefreshBeforeWriteNotLost(t *testing.T) {
	a, c, d := cred("a", 1), cred("c", 3), cred("d", 4)
	f := keychaintest.New(t)
	item := keychain.ClaudeItem("alice", "")
	f.Set(item, a)
	mirror := filepath.Join(t.TempDir(), ".credentials.json")
	os.WriteFile(mirror, a, 0o600)
	st := &raceStore{Security: f.Store()}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	lg := &logs{}
	go func() {
		done <- bridge.Run(ctx, bridge.Options{
			Pairs: []bridge.Pair{{Agent: "claude", Format: "claude", Item: item, Mirror: mirror}},
			Store: st, Interval: time.Hour, Logf: lg.logf, Ready: func() { close(ready) },
		})
	}()
	<-ready
	st.mu.Lock()
	// The mirror's change makes one read (the decision), then the
	// re-read before the write: the Mac refreshes just before it.
	st.atRead, st.hit = st.reads+2, func() { f.Set(item, d) }
	st.mu.Unlock()
	f2, _ := os.OpenFile(mirror, os.O_WRONLY|os.O_TRUNC, 0)
	f2.Write(c)
	f2.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, _ := os.ReadFile(mirror)
		if bytes.Equal(bytes.TrimRight(got, " "), d) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror holds %q, want the Mac's refresh d; log:\n%s", got, lg)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if got, _ := f.Get(item); !bytes.Equal(got, d) {
		t.Fatalf("the Keychain holds %q: the Mac's refresh was overwritten", got)
	}
}
