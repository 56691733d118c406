package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/caw-dev/caw/internal/harness"
)

// benchIdle starts caw-init with a live guard next to the shell guard and a
// plain tini, lets each sync once, then measures all of them over the same
// idle window: CPU time, wake-ups (context switches, summed over threads)
// and memory.
func benchIdle(cfg *config, t *Table) error {
	gs, err := guards(cfg, t, true)
	if err != nil {
		return err
	}
	var live []*guardSubject
	for i, g := range gs {
		if g.name == "floor (bare inotify copier)" {
			continue
		}
		defer g.stop()
		if err := g.start(filepath.Join(cfg.tmp, fmt.Sprintf("idle%d", i))); err != nil {
			t.Note("idle: %v", err)
			continue
		}
		live = append(live, g)
	}
	if p, err := peerTini.path(); err == nil {
		g := &guardSubject{name: "tini (no guard)", argv: func(*harness.Container) []string {
			return append([]string{p, "--"}, harness.ChildArgv...)
		}}
		host, err := harness.NewHost(filepath.Join(cfg.tmp, "idle-tini"), 1, hostUID, hostGID)
		if err != nil {
			return err
		}
		if g.c, err = harness.Start(filepath.Join(cfg.tmp, "idle-tini"), host, harness.Spec{Argv: g.argv}, 10*time.Second); err != nil {
			t.Note("idle: tini: %v", err)
		} else {
			defer g.c.Kill()
			live = append(live, g)
		}
	}
	// What belongs to each subject: caw-init and tini themselves (their
	// child is the idle agent, not them); the shell guard's whole tree.
	read := func(g *guardSubject) (harness.Proc, error) {
		if g.name == "shell guard" {
			return harness.ReadTree(g.c.PID())
		}
		return harness.ReadProc(g.c.PID())
	}
	time.Sleep(200 * time.Millisecond)
	before := make([]harness.Proc, len(live))
	for i, g := range live {
		if before[i], err = read(g); err != nil {
			return err
		}
	}
	time.Sleep(cfg.idle)
	after := make([]harness.Proc, len(live))
	for i, g := range live {
		if after[i], err = read(g); err != nil {
			return err
		}
	}
	window := fmt.Sprintf("%v", cfg.idle)
	var peerIdx = -1
	for i, g := range live {
		if g.name == "shell guard" {
			peerIdx = i
		}
	}
	metrics := []struct {
		label string
		val   func(b, a harness.Proc) float64
		str   func(v float64) string
		goal  func(v float64) string
	}{
		{"idle: CPU time", func(b, a harness.Proc) float64 { return float64(a.CPU - b.CPU) },
			func(v float64) string { return fmtDur(time.Duration(v)) },
			func(v float64) string { return verdict("< 5 ms", v < float64(5*time.Millisecond)) }},
		{"idle: wake-ups (ctx switches)", func(b, a harness.Proc) float64 { return float64(a.Switches - b.Switches) },
			func(v float64) string { return fmt.Sprintf("%.0f", v) },
			func(v float64) string { return verdict("no polling (< 1/s)", v < cfg.idle.Seconds()) }},
		{"idle: RSS at end (peak)", func(b, a harness.Proc) float64 { return float64(a.RSS) },
			func(v float64) string { return fmtBytes(int64(v) << 10) },
			func(v float64) string { return verdict("< 8 MiB", v < 8<<10) }},
	}
	for _, m := range metrics {
		for i, g := range live {
			v := m.val(before[i], after[i])
			r := Row{Subject: g.name, N: window, Median: m.str(v)}
			if m.label == "idle: RSS at end (peak)" {
				r.Median += " (" + fmtBytes(after[i].HWM<<10) + ")"
			}
			if i == 0 {
				r.Measure = m.label
			}
			if peerIdx >= 0 {
				r.Ratio = ratio(v, m.val(before[peerIdx], after[peerIdx])) + " shell"
			}
			if g.name == "caw-init" {
				r.Goal = m.goal(v)
			}
			t.Add(r)
		}
	}
	for i, g := range live {
		t.Note("idle: %s: %d process(es), %d threads, %d open fds at the end", g.name, after[i].Procs, after[i].Threads, after[i].FDs)
		if exited, err := g.c.Exited(); exited {
			fmt.Fprintf(os.Stderr, "bench: idle: %s exited early: %v\n", g.name, err)
		}
	}
	return nil
}
