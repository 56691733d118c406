package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// benchReap measures each init as PID 1 of a new PID namespace reaping N
// orphans killed at one instant (see helperReap). Both inits run the same
// helper, alternately, rep after rep.
func benchReap(cfg *config, t *Table) error {
	bb, err := peerBusybox.path()
	if err != nil {
		return err
	}
	if _, err := peerUnshare.path(); err != nil {
		return err
	}
	child := []string{"--", cfg.self, "__reap", strconv.Itoa(cfg.orphans), bb}
	var subjects []subject
	if p, err := peerTini.path(); err == nil {
		subjects = append(subjects, subject{"tini", append([]string{p}, child...)})
	} else {
		t.Note("reap: %v", err)
	}
	if cfg.cawInit != "" {
		subjects = append(subjects, subject{"caw-init", append([]string{cfg.cawInit, "--auth-dir", filepath.Join(cfg.tmp, "no-staging")}, child...)})
	}
	samples := make([]Sample, len(subjects))
	failures := make([]string, len(subjects))
	for rep := 0; rep < cfg.reapReps; rep++ {
		for j, s := range subjects {
			d, err := reapOnce(s.argv)
			if err != nil {
				failures[j] = err.Error()
				continue
			}
			samples[j] = append(samples[j], d)
		}
	}
	var tini Sample
	if len(subjects) > 0 && subjects[0].name == "tini" {
		tini = samples[0]
	}
	for j, s := range subjects {
		// With a handful of runs the p99 column shows the slowest one.
		r := Row{Subject: s.name, N: fmt.Sprintf("%d runs", len(samples[j])), Median: fmtDur(samples[j].Median()), P99: fmtDur(samples[j].Max())}
		if j == 0 {
			r.Measure = fmt.Sprintf("reap %d orphans killed at once", cfg.orphans)
		}
		if tini != nil {
			r.Ratio = ratio(float64(samples[j].Median()), float64(tini.Median())) + " tini"
		}
		if s.name == "caw-init" && tini != nil {
			// Within 10%: the runs' own spread is larger than that.
			r.Goal = verdict("no slower than tini (+10%)", float64(samples[j].Median()) <= 1.1*float64(tini.Median()))
		}
		if failures[j] != "" {
			r.Goal = "FAILED: " + failures[j]
		}
		t.Add(r)
	}
	t.Note("reap: each run is a fresh PID namespace; the time runs from one kill(-1, SIGKILL) of all %d orphans until /proc lists none of them (zombies are listed until reaped); the median of %d runs, the p99 column is the slowest run", cfg.orphans, cfg.reapReps)
	return nil
}

func reapOnce(argv []string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"-p", "-f", "--mount-proc"}, argv...)
	out, err := exec.CommandContext(ctx, "unshare", args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s: %v: %s", filepath.Base(argv[0]), err, firstLine(string(out)))
	}
	fields := strings.Fields(string(out))
	if len(fields) == 0 {
		return 0, fmt.Errorf("%s: no result printed", filepath.Base(argv[0]))
	}
	ns, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: unexpected output %q", filepath.Base(argv[0]), firstLine(string(out)))
	}
	return time.Duration(ns), nil
}
