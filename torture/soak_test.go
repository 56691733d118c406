package torture

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
)

// TestSoak: a long run of sync events through one caw-init, alternating a
// host refresh in place and a container refresh by rename, each waited for
// on the other side (100,000 under CAW_TORTURE=full). caw-init's resident
// memory, threads (goroutines run on them; a leak of blocked ones shows as
// threads) and open descriptors must be flat from the first fifth of the
// run to its end (within 2 MiB, 2 threads, 0 fds), and no event may be lost.
func TestSoak(t *testing.T) {
	bin := cawInit(t)
	events := rounds(5000, 100_000)
	if v, err := strconv.Atoi(os.Getenv("CAW_TORTURE_SOAK")); err == nil && v >= 10 {
		events = v
	}
	d := scratch(t)
	host, err := harness.NewHost(d, 1, hostUID, hostGID)
	must(t, err)
	c := container(t, bin, d, host, harness.Bind)
	toHome, err := harness.NewWatch(syscall.IN_CLOSE_WRITE|syscall.IN_MOVED_TO, filepath.Dir(c.HomeFile))
	must(t, err)
	defer toHome.Close()
	toHost, err := harness.NewWatch(syscall.IN_CLOSE_WRITE|syscall.IN_MOVED_TO, host.File)
	must(t, err)
	defer toHost.Close()

	n := newCounts("events", "lost")
	var start harness.Proc
	var series []string
	begin := time.Now()
	for i := 0; i < events; i++ {
		if i%(events/10) == 0 {
			p, err := harness.ReadProc(c.PID())
			if err != nil {
				t.Fatal(err)
			}
			// The Go heap grows to its working size over the first
			// thousand or so events; flat is measured from a fifth in.
			if i == 2*(events/10) {
				start = p
			}
			series = append(series, fmt.Sprintf("%d:%dK/%dt/%dfd", i, p.RSS, p.Threads, p.FDs))
		}
		seq := int64(i + 2)
		data := harness.Cred(seq)
		w, dst := toHome, c.HomeFile
		if i%2 == 0 {
			toHome.Drain()
			must(t, harness.WriteInPlace(host.File, data))
		} else {
			w, dst = toHost, host.File
			toHost.Drain()
			must(t, harness.WriteRename(c.HomeFile, data, userUID, userGID))
		}
		if err := harness.WaitSeq(w, dst, seq, time.Now().Add(3*time.Second)); err != nil {
			n.add("lost", 1)
			t.Logf("event %d: %v", i, err)
		}
		n.add("events", 1)
	}
	elapsed := time.Since(begin)
	// The last event's echo may still be in flight in caw-init (a read holds
	// a descriptor for a moment); a leak stays, so the end count is the
	// lowest of a few samples.
	end, err := harness.ReadProc(c.PID())
	for try := 0; try < 20 && err == nil && end.FDs > start.FDs; try++ {
		time.Sleep(10 * time.Millisecond)
		end, err = harness.ReadProc(c.PID())
	}
	if err != nil {
		t.Fatal(err)
	}
	n.add("rss_kib_at_20pct", start.RSS)
	n.add("rss_kib_at_end", end.RSS)
	n.add("threads_at_20pct", int64(start.Threads))
	n.add("threads_at_end", int64(end.Threads))
	n.add("fds_at_20pct", int64(start.FDs))
	n.add("fds_at_end", int64(end.FDs))
	n.add("cpu_us_per_event", int64(end.CPU/time.Microsecond)/int64(events))
	n.add("events_per_s", int64(float64(events)/elapsed.Seconds()))
	t.Logf("RSS/threads/fds by event: %s", strings.Join(series, " "))
	n.report(t, "soak", "lost")
	if end.FDs > start.FDs {
		t.Errorf("open descriptors grew from %d to %d", start.FDs, end.FDs)
	}
	if end.Threads > start.Threads+2 {
		t.Errorf("threads grew from %d to %d", start.Threads, end.Threads)
	}
	if end.RSS > start.RSS+2048 {
		t.Errorf("RSS grew from %d KiB to %d KiB", start.RSS, end.RSS)
	}
}
