package torture

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
	"github.com/caw-dev/caw/internal/testenv"
)

// rounds is the bounded count, or the full one under CAW_TORTURE=full.
var rounds = testenv.Rounds

// rng gives each test its own reproducible random source; the seed is
// logged so a failure can be replayed with CAW_TORTURE_SEED.
func rng(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CAW_TORTURE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CAW_TORTURE_SEED=%q: not a number", s)
		}
		seed = v
	}
	t.Logf("seed %d (replay with CAW_TORTURE_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// The container user and the host user: neither is root, and they differ,
// as on a real machine with Docker.
const (
	userUID, userGID = 1000, 1000
	hostUID, hostGID = 1001, 1001
)

// fastWrites lifts caw-init's rate limit on host writes: the torture
// writes faster than any agent refreshes, and the limit (tested on its own
// in sync/guard) would only slow it down.
var fastWrites = []string{"--sync-write-every", "1ms"}

// cawInit builds the real caw-init once and checks what the suite needs.
func cawInit(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.LookPath(t, "unshare", "util-linux")
	testenv.LookPath(t, "mount", "mount")
	return testenv.Build(t, "github.com/caw-dev/caw/cmd/caw-init")
}

// scratch is a temp dir the container user can traverse.
func scratch(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return d
}

// container starts caw-init guarding host's credential in dir; it is
// stopped (SIGTERM, as docker stop) when the test ends.
func container(t *testing.T, bin, dir string, host *harness.Host, strategy string) *harness.Container {
	t.Helper()
	extra := append([]string(nil), fastWrites...)
	if v := os.Getenv("CAW_TORTURE_VERBOSE"); v != "" {
		extra = append(extra, "-"+strings.Repeat("v", max(1, len(v))))
	}
	c, err := harness.Start(dir, host, harness.Spec{Strategy: strategy, UID: userUID, GID: userGID, Argv: harness.CawInit(bin, extra...)}, 30*time.Second)
	if err != nil {
		t.Fatalf("start caw-init: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Stop(syscall.SIGTERM, 10*time.Second); err != nil && !strings.Contains(err.Error(), "exit status 143") {
			t.Logf("caw-init stop: %v", err)
		}
		if s := c.Stderr(); s != "" {
			t.Logf("caw-init stderr:\n%s", tail(s, 40))
		}
	})
	if err := waitSeq(c.HomeFile, harness.ReadSeq(host.File), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitSeq waits until path holds seq (inotify on it and its directory).
func waitSeq(path string, seq int64, timeout time.Duration) error {
	w, err := harness.NewWatch(harness.MaskWritten, filepath.Dir(path))
	if err != nil {
		return err
	}
	defer w.Close()
	if _, err := os.Stat(path); err == nil {
		_ = w.Add(path, harness.MaskWritten)
	}
	return harness.WaitSeq(w, path, seq, time.Now().Add(timeout))
}

// counts are a test's tallies, printed in one line at its end.
type counts struct {
	mu sync.Mutex
	m  map[string]int64
}

func newCounts(keys ...string) *counts {
	c := &counts{m: map[string]int64{}}
	for _, k := range keys {
		c.m[k] = 0
	}
	return c
}

func (c *counts) add(k string, n int64) {
	c.mu.Lock()
	c.m[k] += n
	c.mu.Unlock()
}

// max raises k to v if v is larger.
func (c *counts) max(k string, v int64) {
	c.mu.Lock()
	c.m[k] = max(c.m[k], v)
	c.mu.Unlock()
}

func (c *counts) get(k string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[k]
}

// report logs "TORTURE name: k=v ..." and fails the test if any of the
// loss keys is non-zero.
func (c *counts) report(t *testing.T, name string, losses ...string) {
	t.Helper()
	c.mu.Lock()
	keys := make([]string, 0, len(c.m))
	for k := range c.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, c.m[k])
	}
	c.mu.Unlock()
	mode := "bounded"
	if testenv.TortureFull() {
		mode = "full"
	}
	t.Logf("TORTURE %s (%s):%s", name, mode, b.String())
	for _, k := range losses {
		if v := c.get(k); v != 0 {
			t.Errorf("%s: %s = %d, want 0", name, k, v)
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... %d lines before", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
