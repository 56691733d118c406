package main

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/caw-dev/caw/internal/harness"
)

//go:embed shellguard.sh
var shellGuard []byte

// hostUID owns the fake host credential: not the container user, not root,
// as on a real host.
const hostUID, hostGID = 1001, 1001

// guardSubject is one guard under test in the sync rows.
type guardSubject struct {
	name     string
	strategy string
	argv     func(c *harness.Container) []string
	c        *harness.Container
	seq      int64
	toHome   *harness.Watch // the home copy's directory
	toHost   *harness.Watch // the host file and its directory
}

// guards lists caw-init and its peers, each with the given strategy.
func guards(cfg *config, t *Table, withPeers bool) ([]*guardSubject, error) {
	var gs []*guardSubject
	if cfg.cawInit != "" {
		gs = append(gs, &guardSubject{name: "caw-init", argv: harness.CawInit(cfg.cawInit, syncBenchFlags...)})
	}
	if !withPeers {
		return gs, nil
	}
	if cfg.baseline != "" {
		gs = append(gs, &guardSubject{name: baselineName, argv: harness.CawInit(cfg.baseline, cfg.baselineFlags...)})
	}
	if _, err := peerInotify.path(); err == nil {
		script := filepath.Join(cfg.tmp, "shellguard.sh")
		if err := os.WriteFile(script, shellGuard, 0o755); err != nil {
			return nil, err
		}
		gs = append(gs, &guardSubject{name: "shell guard", argv: func(c *harness.Container) []string {
			return []string{"/bin/sh", script, c.Mounted, c.HomeFile, strconv.Itoa(c.UID), strconv.Itoa(c.GID)}
		}})
	} else {
		t.Note("sync: shell guard skipped: %v", err)
	}
	gs = append(gs, &guardSubject{name: "floor (bare inotify copier)", argv: func(c *harness.Container) []string {
		return []string{cfg.self, "__floor", c.Mounted, c.HomeFile, strconv.Itoa(c.UID), strconv.Itoa(c.GID)}
	}})
	return gs, nil
}

// start sets the guard up in dir and waits until it syncs both ways.
func (g *guardSubject) start(dir string) error {
	host, err := harness.NewHost(dir, 1, hostUID, hostGID)
	if err != nil {
		return err
	}
	spec := harness.Spec{Strategy: g.strategy, Argv: g.argv}
	if g.c, err = harness.Start(dir, host, spec, 20*time.Second); err != nil {
		return fmt.Errorf("%s: %w", g.name, err)
	}
	g.seq = 1
	if err := waitExists(g.c.HomeFile, 5*time.Second); err != nil {
		return fmt.Errorf("%s: no home copy: %w", g.name, err)
	}
	if g.toHome, err = harness.NewWatch(syscall.IN_CLOSE_WRITE|syscall.IN_MOVED_TO, filepath.Dir(g.c.HomeFile)); err != nil {
		return err
	}
	if g.toHost, err = harness.NewWatch(syscall.IN_CLOSE_WRITE|syscall.IN_MOVED_TO, host.File, filepath.Dir(host.File)); err != nil {
		return err
	}
	// Warm up: the first writes both ways, retried until the guard has its
	// watches in place (the shell guard says ready before inotifywait does).
	for _, toHost := range []bool{false, true, false, true} {
		var err error
		for try := 0; try < 50; try++ {
			if _, err = g.round(toHost, false, 200*time.Millisecond); err == nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("%s: warm-up: %w: %s", g.name, err, g.c.Stderr())
		}
	}
	return nil
}

// round writes the next token on one side and returns the time until the
// other side holds it completely.
func (g *guardSubject) round(toHost, rename bool, timeout time.Duration) (time.Duration, error) {
	g.seq++
	src, dst, w := g.c.Host.File, g.c.HomeFile, g.toHome
	uid, gid := hostUID, hostGID
	if toHost {
		src, dst, w = g.c.HomeFile, g.c.Host.File, g.toHost
		uid, gid = g.c.UID, g.c.GID
	}
	w.Drain()
	data := harness.Cred(g.seq)
	begin := time.Now()
	var err error
	if rename {
		err = harness.WriteRename(src, data, uid, gid)
	} else {
		err = harness.WriteInPlace(src, data)
	}
	if err != nil {
		return 0, err
	}
	if err := harness.WaitSeq(w, dst, g.seq, begin.Add(timeout)); err != nil {
		return 0, err
	}
	return time.Since(begin), nil
}

func (g *guardSubject) stop() {
	if g.c != nil {
		if err := g.c.Stop(syscall.SIGTERM, 5*time.Second); err != nil {
			g.c.Kill()
		}
	}
	if g.toHome != nil {
		g.toHome.Close()
	}
	if g.toHost != nil {
		g.toHost.Close()
	}
}

func waitExists(p string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(p); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settle is the pause after a round before the same guard's next write, so
// each round measures a lone write, not a queue behind the guard's handling
// of its own previous copy (the echo it must ignore): three times the
// guard's last latency, at least 2 ms. A slow guard gets a longer pause.
// Capped at 50 ms so that an outlier (a busy machine) does not stall the run.
func settle(last time.Duration) time.Duration {
	return min(max(2*time.Millisecond, 3*last), 50*time.Millisecond)
}

// syncBenchFlags lift caw-init's rate limit on host writes (a burst of 4,
// then one per 3 s): the rows measure the latency of a lone write, and
// their rounds, a few milliseconds apart, are far faster than any refresh.
var syncBenchFlags = []string{"--sync-write-every", "1ms"}

// lostAfter is how long a write may take before it counts as lost.
const lostAfter = time.Second

// benchSync measures write-to-finished-write latency both ways, caw-init
// against the shell guard and the floor, rounds interleaved.
func benchSync(cfg *config, t *Table) error {
	gs, err := guards(cfg, t, true)
	if err != nil {
		return err
	}
	if cfg.cawInit != "" {
		gs = append(gs, &guardSubject{name: "caw-init", strategy: harness.BindDir, argv: harness.CawInit(cfg.cawInit, syncBenchFlags...)})
	}
	var live []*guardSubject
	for i, g := range gs {
		defer g.stop()
		if err := g.start(filepath.Join(cfg.tmp, fmt.Sprintf("sync%d", i))); err != nil {
			t.Note("sync: %v", err)
			continue
		}
		live = append(live, g)
	}
	type series struct {
		label   string
		toHost  bool
		rename  bool
		bindDir bool // only the bind-dir caw-init
		peers   bool // caw-init (bind) and its peers
	}
	all := []series{
		{"sync host->container, in place", false, false, false, true},
		{"sync container->host, in place", true, false, false, true},
		{"sync container->host, rename in home", true, true, false, false},
		{"sync host->container, rename on host", false, true, true, false},
		{"sync container->host, rename in home", true, true, true, false},
	}
	for _, s := range all {
		var subj []*guardSubject
		for _, g := range live {
			isDir := g.strategy == harness.BindDir
			switch {
			case s.bindDir && isDir, !s.bindDir && !isDir && (s.peers || g.name == "caw-init"):
				subj = append(subj, g)
			}
		}
		samples := make([]Sample, len(subj))
		lost := make([]int, len(subj))
		for i := 0; i < cfg.syncN; i++ {
			// Each round starts with the next subject: a round's first
			// write lands on a disk the previous round's last fsync left
			// busy, which measurably slows whoever always goes first.
			for k := range subj {
				j := (i + k) % len(subj)
				g := subj[j]
				d, err := g.round(s.toHost, s.rename, lostAfter)
				if err != nil {
					lost[j]++
					if !errors.Is(err, harness.ErrTimeout) {
						return fmt.Errorf("%s: %w", g.name, err)
					}
					d = 10 * time.Millisecond
				} else {
					samples[j] = append(samples[j], d)
				}
				time.Sleep(settle(d))
			}
		}
		var shell, floor, cawInit, base Sample
		for j, g := range subj {
			switch g.name {
			case "shell guard":
				shell = samples[j]
			case "floor (bare inotify copier)":
				floor = samples[j]
			case "caw-init":
				cawInit = samples[j]
			case baselineName:
				base = samples[j]
			}
		}
		noteBaseline(t, s.label, cawInit, base)
		for j, g := range subj {
			r := Row{Subject: g.name, N: fmt.Sprint(len(samples[j])), Median: fmtDur(samples[j].Median()), P99: fmtDur(samples[j].P99())}
			if g.strategy == harness.BindDir {
				r.Subject += " [bind-dir]"
			} else if !s.peers {
				r.Subject += " [bind]"
			}
			if j == 0 {
				r.Measure = s.label
			}
			if shell != nil {
				r.Ratio = ratio(float64(samples[j].Median()), float64(shell.Median())) + " shell"
			}
			if g.name == "caw-init" {
				p99ok := samples[j].P99() < 2*time.Millisecond && len(samples[j]) > 0
				goal, ok := "p99 < 2 ms", p99ok
				if shell != nil {
					goal, ok = "<= 0.25x shell, p99 < 2 ms", p99ok && 4*samples[j].Median() <= shell.Median()
				}
				r.Goal = verdict(goal, ok && lost[j] == 0)
				if floor != nil && len(samples[j]) > 0 {
					t.Note("%s: caw-init p50 %s the floor's (%s vs %s), p99 %s vs %s", s.label,
						ratio(float64(samples[j].Median()), float64(floor.Median())), fmtDur(samples[j].Median()), fmtDur(floor.Median()),
						fmtDur(samples[j].P99()), fmtDur(floor.P99()))
				}
			}
			if lost[j] > 0 {
				r.Goal += fmt.Sprintf(" LOST %d of %d writes (not there after %v)", lost[j], cfg.syncN, lostAfter)
			}
			t.Add(r)
		}
	}
	for _, g := range live {
		if g.name == "caw-init" && g.strategy != harness.BindDir {
			if err := leaseRow(cfg, t, g); err != nil {
				return err
			}
		}
	}
	t.Note("sync: from the start of the write on one side until the other side's file holds the whole new token (seen through inotify, no polling); after each round the guard gets 3x its latency (2 to 50 ms) to settle; [bind] mounts the host file, [bind-dir] its directory; the shell guard and the floor watch the file's inode and so see no renames")
	return nil
}

// leaseRow measures how long caw-init's write lease on the host file holds
// a host process's open(2) (a host agent about to write): while the guard
// writes a refresh from the home, a host reader opens the file (blocking)
// every 200 us; each round's sample is its longest open.
func leaseRow(cfg *config, t *Table, g *guardSubject) error {
	var waits Sample
	blocked := 0
	for i := 0; i < cfg.syncN; i++ {
		stop := make(chan struct{})
		longest := make(chan time.Duration, 1)
		go func() {
			var m time.Duration
			for {
				select {
				case <-stop:
					longest <- m
					return
				default:
				}
				begin := time.Now()
				if fd, err := syscall.Open(g.c.Host.File, syscall.O_RDONLY|syscall.O_CLOEXEC, 0); err == nil {
					syscall.Close(fd)
				}
				m = max(m, time.Since(begin))
				time.Sleep(200 * time.Microsecond)
			}
		}()
		d, err := g.round(true, false, lostAfter)
		close(stop)
		m := <-longest
		if err != nil && !errors.Is(err, harness.ErrTimeout) {
			return fmt.Errorf("%s: %w", g.name, err)
		}
		waits = append(waits, m)
		if m > 100*time.Microsecond {
			blocked++
		}
		time.Sleep(settle(d))
	}
	t.Add(Row{Measure: "host open held by the write lease", Subject: "caw-init [bind]", N: fmt.Sprint(len(waits)),
		Median: fmtDur(waits.Median()), P99: fmtDur(waits.P99())})
	t.Note("lease: a host process opening the host file every 200 us while caw-init writes a refresh from the home in place; each round's longest open; %d of %d rounds had an open over 100 us", blocked, len(waits))
	return nil
}
