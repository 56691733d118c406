package torture

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
)

// TestKillDuringStorm: an agent in the container refreshes its credential
// in a storm (temp + rename, and in place), and caw-init is SIGKILLed at a
// random instant while it copies them to the host. After every kill the
// host file must be a complete credential that was really written: never
// empty, torn, or a mix of two. 1,000 rounds under CAW_TORTURE=full, one
// in four with the credential's directory mounted (bind-dir), the rest with
// the file itself (bind, written in place).
func TestKillDuringStorm(t *testing.T) {
	bin := cawInit(t)
	r := rng(t)
	d := scratch(t)
	host, err := harness.NewHost(d, 1, hostUID, hostGID)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	written := map[int64]bool{1: true}
	var next atomic.Int64
	next.Store(1)
	n := newCounts("rounds", "host_invalid", "host_never_written", "host_changed", "storm_writes", "host_temp_files_left")
	total := rounds(100, 1000)
	for i := 0; i < total; i++ {
		strategy := harness.Bind
		if i%4 == 3 {
			strategy = harness.BindDir
		}
		c, err := harness.Start(filepath.Join(d, fmt.Sprintf("r%d", i)), host,
			harness.Spec{Strategy: strategy, UID: userUID, GID: userGID, Argv: harness.CawInit(bin, fastWrites...)}, 30*time.Second)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		before := harness.ReadSeq(host.File)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				seq := next.Add(1)
				mu.Lock()
				written[seq] = true
				mu.Unlock()
				if k%2 == 0 {
					_ = harness.WriteRename(c.HomeFile, harness.Cred(seq), userUID, userGID)
				} else {
					_ = harness.WriteInPlace(c.HomeFile, harness.Cred(seq))
				}
				n.add("storm_writes", 1)
				time.Sleep(time.Duration(seed%500+uint64(k%7)*50) * time.Microsecond)
			}
		}(r.Uint64())
		time.Sleep(time.Duration(r.Int64N(int64(30 * time.Millisecond))))
		c.Kill()
		close(stop)
		wg.Wait()

		data, err := os.ReadFile(host.File)
		if err != nil {
			t.Fatalf("round %d: read host file: %v", i, err)
		}
		seq, ok := harness.Seq(data)
		mu.Lock()
		known := written[seq]
		mu.Unlock()
		switch {
		case !ok:
			n.add("host_invalid", 1)
			t.Logf("round %d (%s): host file holds %q", i, strategy, data)
		case !known:
			n.add("host_never_written", 1)
			t.Logf("round %d (%s): host file holds token %d, which nobody wrote", i, strategy, seq)
		case seq != before:
			n.add("host_changed", 1)
		}
		n.add("rounds", 1)
	}
	// A guard killed between creating its temp file in a bind-dir mount and
	// renaming it leaves that file in the user's real directory; count what
	// is still there after one more caw-init has started and stopped.
	c := container(t, bin, filepath.Join(d, "last"), host, harness.BindDir)
	if err := c.Stop(syscall.SIGTERM, 10*time.Second); err != nil && !strings.Contains(err.Error(), "143") {
		t.Logf("last caw-init: %v", err)
	}
	if left := tempFiles(t, filepath.Dir(host.File)); len(left) > 0 {
		n.add("host_temp_files_left", int64(len(left)))
		t.Logf("left in the host dir after a clean restart: %v", left[:min(len(left), 5)])
	}
	n.report(t, "SIGKILL during refresh storms", "host_invalid", "host_never_written")
	if n.get("host_changed") == 0 {
		t.Error("no round changed the host file: the kills never hit a sync in progress")
	}
}

// tempFiles counts files other than the credential in the host dir: what a
// killed guard could leave behind.
func tempFiles(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if e.Name() != ".credentials.json" {
			out = append(out, e.Name())
		}
	}
	return out
}
