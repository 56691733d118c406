package torture

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
)

// observe calls fn with a file's content after every inotify event on it
// or its directory, until the returned stop is called.
func observe(t *testing.T, path string, fn func(data []byte)) (stop func()) {
	t.Helper()
	w, err := harness.NewWatch(harness.MaskWritten, filepath.Dir(path), path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer w.Close()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := w.Next(time.Now().Add(20 * time.Millisecond)); err != nil {
				return
			}
			if data, err := harness.ReadSmall(path); err == nil {
				fn(data)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// side is one side of a sync as the refresh test sees it.
type side struct {
	name string
	mu   sync.Mutex
	max  int64 // the freshest token seen here so far
	last int64 // the token seen at the last read
	// open is a regression seen here and not yet classified: the next
	// change tells whether the guard undid it.
	open *regression
}

// regression is an older token from the other side seen over a fresher
// one (max). It is undone when the side's next content, within undoWithin,
// is a token at least as fresh as max: the guard's swap put back the write
// it displaced (or a writer's next refresh landed first), microseconds
// later. Anything else (the older token stayed, until a later refresh or
// to the end) is a lasting regression, and fails the test.
type regression struct {
	seq, max int64
	at       time.Time
}

// undoWithin is far above the guard's swap (about 100 µs here) and far
// below the time a lasting regression stays (until the next round, 2 s).
const undoWithin = 20 * time.Millisecond

// TestConcurrentRefreshes: an agent on the host and one in the container
// refresh at the same moments, a few times each per round. Every token is
// fresher than the ones taken before it. A token that crossed from the other
// side and is older than one this side already held is a regression: it
// fails the test when it lasts; one the guard undid within microseconds
// (the writer's file it displaced, put back) is counted apart, because
// Linux has no rename that checks the target first (see swapIn). At the
// end of each round both sides must hold the freshest token written. 1,000
// rounds in all under CAW_TORTURE=full, each a burst of four writes per
// side at the same instants (CAW_TORTURE_BURST=N, CAW_TORTURE_SPACING=D
// change it): the file bind-mounted (both sides
// write in place or by rename in the home), and the directory (the host
// agent replaces its file by rename, as Claude Code does).
func TestConcurrentRefreshes(t *testing.T) {
	bin := cawInit(t)
	per := rounds(50, 500)
	// Refreshes per side per round, and the spacing between one side's
	// write and the other's. Full: bursts of four per side at the same
	// instants (0-3 ms apart), racing the guard's own writes. Bounded (CI):
	// two per side, the sides alternating every 25 ms, which checks
	// convergence and ordering but not writes landing inside the guard's
	// own write window (see the full figures in docs/FIGURES.md).
	burst, sep := rounds(2, 4), time.Duration(rounds(25, 0))*time.Millisecond
	if v, err := strconv.Atoi(os.Getenv("CAW_TORTURE_BURST")); err == nil && v > 0 {
		burst = v
	}
	if v, err := time.ParseDuration(os.Getenv("CAW_TORTURE_SPACING")); err == nil {
		sep = v
	}
	t.Logf("%d rounds per strategy, %d writes per side per round, sides %v apart", per, burst, sep)
	for _, strategy := range []string{harness.Bind, harness.BindDir} {
		t.Run(strategy, func(t *testing.T) {
			r := rng(t)
			d := scratch(t)
			host, err := harness.NewHost(d, 1, hostUID, hostGID)
			if err != nil {
				t.Fatal(err)
			}
			c := container(t, bin, d, host, strategy)
			n := newCounts("rounds", "writes", "not_freshest", "regressions", "regressions_undone")
			var wmu sync.Mutex
			var next atomic.Int64
			next.Store(1)
			var origin sync.Map // seq -> *side that wrote it
			hostSide, homeSide := &side{name: "host"}, &side{name: "home"}
			check := func(s *side) func([]byte) {
				return func(data []byte) {
					seq, ok := harness.Seq(data)
					if !ok {
						return // a writer's own truncate-then-write, seen midway
					}
					s.mu.Lock()
					defer s.mu.Unlock()
					if seq == s.last {
						return // counted once per change of content, not per read
					}
					if r := s.open; r != nil {
						s.open = nil
						if d := time.Since(r.at); seq >= r.max && d < undoWithin {
							n.add("regressions_undone", 1)
							n.max("undone_max_us", d.Microseconds())
						} else {
							n.add("regressions", 1)
							t.Logf("%s: token %d from the other side arrived after %d and stayed until %d", s.name, r.seq, r.max, seq)
						}
					}
					if o, _ := origin.Load(seq); o != nil && o.(*side) != s && seq < s.max {
						s.open = &regression{seq: seq, max: s.max, at: time.Now()}
					}
					s.max, s.last = max(s.max, seq), seq
				}
			}
			stopHost := observe(t, host.File, check(hostSide))
			stopHome := observe(t, c.HomeFile, check(homeSide))
			for i := 0; i < per; i++ {
				var wg sync.WaitGroup
				begin := time.Now()
				for si, s := range []*side{hostSide, homeSide} {
					wg.Add(1)
					go func(s *side, seed uint64) {
						defer wg.Done()
						for k := 0; k < burst; k++ {
							at := time.Duration(2*k+si)*sep + time.Duration(seed>>(k*8)%3000)*time.Microsecond
							time.Sleep(time.Until(begin.Add(at)))
							// Taking the token and writing it is one step, so
							// every write is fresher than all before it, as a
							// refresh is when it lands: the writers race the
							// guard, never each other's clocks.
							wmu.Lock()
							seq := next.Add(1)
							origin.Store(seq, s)
							data := harness.Cred(seq)
							var err error
							switch {
							case s == hostSide && strategy == harness.BindDir:
								err = harness.WriteRename(host.File, data, hostUID, hostGID)
							case s == hostSide:
								err = harness.WriteInPlace(host.File, data)
							case k%2 == 0:
								err = harness.WriteRename(c.HomeFile, data, userUID, userGID)
							default:
								err = harness.WriteInPlace(c.HomeFile, data)
							}
							wmu.Unlock()
							if err != nil {
								t.Errorf("%s write: %v", s.name, err)
							}
							n.add("writes", 1)
						}
					}(s, r.Uint64())
				}
				wg.Wait()
				want := next.Load()
				for _, p := range []string{host.File, c.HomeFile} {
					if err := waitSeq(p, want, time.Second); err != nil {
						n.add("not_freshest", 1)
						t.Logf("round %d: %v", i, err)
					}
				}
				n.add("rounds", 1)
			}
			stopHost()
			stopHome()
			for _, s := range []*side{hostSide, homeSide} {
				if r := s.open; r != nil {
					n.add("regressions", 1)
					t.Logf("%s: token %d from the other side arrived after %d and stayed to the end", s.name, r.seq, r.max)
				}
			}
			n.report(t, fmt.Sprintf("concurrent refreshes (%s)", strategy), "not_freshest", "regressions")
		})
	}
}
