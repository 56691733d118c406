package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/caw-dev/caw/internal/harness"
	"golang.org/x/sys/unix"
)

// pollInterval is caw-init's default stat poll (guard.DefaultPollInterval).
const pollInterval = 500 * time.Millisecond

// benchPoll runs caw-init on a credential whose host file is shared through
// FUSE, as Docker Desktop shares a Mac's files through virtiofs: a bindfs
// view of the host directory, written on the host side directly, so no
// inotify event reaches the guard and its stat poll does the work. It
// measures the poll's idle cost and the host-to-home latency.
func benchPoll(cfg *config, t *Table) error {
	if cfg.cawInit == "" {
		return nil
	}
	bindfs, err := exec.LookPath("bindfs")
	if err != nil {
		t.Note("poll: skipped: bindfs not installed (apt-get install bindfs)")
		return nil
	}
	dir := filepath.Join(cfg.tmp, "poll")
	host, err := harness.NewHost(dir, 1, hostUID, hostGID)
	if err != nil {
		return err
	}
	view := filepath.Join(dir, "view")
	if err := os.MkdirAll(view, 0o755); err != nil {
		return err
	}
	fuse := exec.Command(bindfs, "-f", "-o", "allow_other", filepath.Dir(host.File), view)
	fuse.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := fuse.Start(); err != nil {
		return fmt.Errorf("bindfs: %w", err)
	}
	defer func() {
		unix.Unmount(view, unix.MNT_DETACH)
		fuse.Process.Kill()
		fuse.Wait()
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var sf unix.Statfs_t
		if unix.Statfs(view, &sf) == nil && sf.Type == unix.FUSE_SUPER_MAGIC {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bindfs view %s not mounted after 10s", view)
		}
	}
	// The default poll, and a slower one (--poll 5s) for the idle rows.
	var cs []*harness.Container
	for i, extra := range [][]string{nil, {"--poll", "5s"}} {
		spec := harness.Spec{Argv: harness.CawInit(cfg.cawInit, extra...)}
		c, err := harness.Prepare(filepath.Join(dir, fmt.Sprint("c", i)), host, spec)
		if err != nil {
			return err
		}
		c.MountSrc = filepath.Join(view, filepath.Base(host.File))
		if err := c.Start(spec, 20*time.Second); err != nil {
			return err
		}
		defer func() {
			if err := c.Stop(syscall.SIGTERM, 5*time.Second); err != nil {
				c.Kill()
			}
		}()
		if err := waitExists(c.HomeFile, 5*time.Second); err != nil {
			return fmt.Errorf("no home copy: %w", err)
		}
		cs = append(cs, c)
	}
	c := cs[0]
	subjects := []string{"caw-init [bind on FUSE]", "caw-init --poll 5s"}
	subject := subjects[0]

	// Idle: nothing changes; the poll's stat every interval is the cost.
	time.Sleep(2 * pollInterval)
	before := make([]harness.Proc, len(cs))
	for i, c := range cs {
		if before[i], err = harness.ReadProc(c.PID()); err != nil {
			return err
		}
	}
	time.Sleep(cfg.idle)
	perMin := func(v float64) float64 { return v * float64(time.Minute) / float64(cfg.idle) }
	for i, c := range cs {
		after, err := harness.ReadProc(c.PID())
		if err != nil {
			return err
		}
		cpu := time.Duration(perMin(float64(after.CPU - before[i].CPU)))
		wakes := perMin(float64(after.Switches - before[i].Switches))
		r := Row{Subject: subjects[i], N: fmt.Sprint(cfg.idle), Median: fmtDur(cpu),
			Goal: verdict("< 1 ms/min", cpu < time.Millisecond) + fmt.Sprintf("; %.0f wake-ups/min", wakes)}
		if i == 0 {
			r.Measure = "poll: idle CPU per minute"
		}
		t.Add(r)
	}

	// The slower guard would also read every host write: only the default
	// one runs for the latency rows.
	if err := cs[1].Stop(syscall.SIGTERM, 5*time.Second); err != nil {
		cs[1].Kill()
	}

	// Latency: a host write lands at a random phase of the poll.
	w, err := harness.NewWatch(syscall.IN_CLOSE_WRITE|syscall.IN_MOVED_TO, filepath.Dir(c.HomeFile))
	if err != nil {
		return err
	}
	defer w.Close()
	n := 100
	if cfg.quick {
		n = 10
	}
	seq := int64(1)
	for _, rename := range []bool{false, true} {
		var s Sample
		lost := 0
		for i := 0; i < n; i++ {
			time.Sleep(rand.N(pollInterval))
			seq++
			w.Drain()
			begin := time.Now()
			if rename {
				err = harness.WriteRename(host.File, harness.Cred(seq), hostUID, hostGID)
			} else {
				err = harness.WriteInPlace(host.File, harness.Cred(seq))
			}
			if err != nil {
				return err
			}
			if err := harness.WaitSeq(w, c.HomeFile, seq, begin.Add(4*pollInterval)); err != nil {
				lost++
				continue
			}
			s = append(s, time.Since(begin))
		}
		label := "poll: host->container via FUSE, in place"
		if rename {
			label = "poll: host->container via FUSE, rename"
		}
		r := Row{Measure: label, Subject: subject, N: fmt.Sprint(len(s)), Median: fmtDur(s.Median()), P99: fmtDur(s.P99()),
			Goal: verdict(fmt.Sprintf("p99 < %v (the interval + 100 ms)", pollInterval+100*time.Millisecond),
				lost == 0 && len(s) > 0 && s.P99() < pollInterval+100*time.Millisecond)}
		if lost > 0 {
			r.Goal += fmt.Sprintf(" LOST %d of %d", lost, n)
		}
		t.Add(r)
		if len(s) > 0 {
			t.Note("%s: p10 %s, p50 %s, p90 %s, max %s (uniform over the %v interval expected)", label,
				fmtDur(s.Quantile(0.1)), fmtDur(s.Median()), fmtDur(s.Quantile(0.9)), fmtDur(s.Max()), pollInterval)
		}
	}
	t.Note("poll: a bindfs (FUSE) view of the host dir, written on the host side directly (no inotify event in the container, as with Docker Desktop's virtiofs); caw-init's own CPU from schedstat, bindfs's (the host side's, virtiofsd's on a Mac) not counted; each write at a random phase of the poll")
	return nil
}
