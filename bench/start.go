package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// subject is one command measured in a row group.
type subject struct {
	name string
	argv []string
}

// benchStart measures the wall time of `X -- /bin/true`: start the init,
// start the child, reap it, exit. Subjects run interleaved, one run of each
// in turn, so drift on the machine hits them all alike.
func benchStart(cfg *config, t *Table) error {
	truePath, err := exec.LookPath("true")
	if err != nil {
		return fmt.Errorf("no true(1): %w", err)
	}
	subjects := []subject{{"direct exec", []string{truePath}}}
	var missing []string
	// Not PID 1 here: tini is asked to be a subreaper (-s), which caw-init
	// becomes by itself, so neither prints a warning the other does not.
	if p, err := peerTini.path(); err == nil {
		subjects = append(subjects, subject{"tini", []string{p, "-s", "--", truePath}})
	} else {
		missing = append(missing, err.Error())
	}
	if p, err := peerTiniStatic.path(); err == nil {
		subjects = append(subjects, subject{"tini-static", []string{p, "-s", "--", truePath}})
	}
	if p, err := peerDumbInit.path(); err == nil {
		subjects = append(subjects, subject{"dumb-init", []string{p, truePath}})
	} else {
		missing = append(missing, err.Error())
	}
	if p, err := buildEmptyGo(cfg.tmp); err == nil {
		subjects = append(subjects, subject{"empty static Go program", []string{p}})
	} else {
		t.Note("start: the empty Go program floor could not be built: %v", err)
	}
	if cfg.cawInit != "" {
		// No staging dir: caw-init is a plain init, as in an image run
		// without caw's mounts.
		subjects = append(subjects, subject{"caw-init", []string{cfg.cawInit, "--auth-dir", filepath.Join(cfg.tmp, "no-staging"), "--", truePath}})
	}
	if cfg.baseline != "" {
		subjects = append(subjects, subject{baselineName, []string{cfg.baseline, "--auth-dir", filepath.Join(cfg.tmp, "no-staging"), "--", truePath}})
	}
	for _, m := range missing {
		t.Note("start: %s", m)
	}
	samples := make([]Sample, len(subjects))
	failures := make([]string, len(subjects))
	const warm = 10
	for i := -warm; i < cfg.startN; i++ {
		for k := range subjects {
			// Each round starts with the next subject (see benchSync).
			j := (i + warm + k) % len(subjects)
			s := subjects[j]
			cmd := exec.Command(s.argv[0], s.argv[1:]...)
			begin := time.Now()
			err := cmd.Run()
			d := time.Since(begin)
			if err != nil {
				failures[j] = err.Error()
				continue
			}
			if i >= 0 {
				samples[j] = append(samples[j], d)
			}
		}
	}
	var tini, cawInit, base Sample
	for j, s := range subjects {
		switch s.name {
		case "tini":
			tini = samples[j]
		case "caw-init":
			cawInit = samples[j]
		case baselineName:
			base = samples[j]
		}
	}
	noteBaseline(t, "start", cawInit, base)
	for j, s := range subjects {
		r := Row{Subject: s.name, N: fmt.Sprint(len(samples[j])), Median: fmtDur(samples[j].Median()), P99: fmtDur(samples[j].P99())}
		if j == 0 {
			r.Measure = "X -- /bin/true (wall)"
		}
		if tini != nil {
			r.Ratio = ratio(float64(samples[j].Median()), float64(tini.Median())) + " tini"
		}
		if s.name == "caw-init" && tini != nil {
			r.Goal = verdict("<= 2x tini", samples[j].Median() <= 2*tini.Median())
		}
		if failures[j] != "" {
			r.Goal = "FAILED: " + failures[j]
		}
		t.Add(r)
	}
	return nil
}

// buildEmptyGo builds a static Go program that does nothing: what any Go
// init pays before its first line runs.
func buildEmptyGo(dir string) (string, error) {
	src := filepath.Join(dir, "emptygo")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(src, "go.mod"), []byte("module emptygo\n\ngo 1.26\n"), 0o644); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "emptygo.bin")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOTOOLCHAIN=local")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%v: %s", err, firstLine(string(b)))
	}
	return out, nil
}
