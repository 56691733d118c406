package main

import (
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/caw-dev/caw/internal/harness"
)

// benchFanout starts k caw-init guards on one host credential and measures,
// per host write, the time until every home copy holds the new token.
func benchFanout(cfg *config, t *Table) error {
	if cfg.cawInit == "" {
		return nil
	}
	var base Sample
	for i, k := range cfg.fanSizes {
		s, err := fanout(cfg, k, filepath.Join(cfg.tmp, fmt.Sprintf("fan%d", k)))
		r := Row{Subject: fmt.Sprintf("caw-init x%d", k)}
		if i == 0 {
			r.Measure = "fan-out: host write until all homes have it"
		}
		if err != nil {
			r.Goal = "FAILED: " + err.Error()
			t.Add(r)
			continue
		}
		if i == 0 {
			base = s
		}
		r.N, r.Median, r.P99 = fmt.Sprint(len(s)), fmtDur(s.Median()), fmtDur(s.P99())
		r.Ratio = ratio(float64(s.P99()), float64(base.P99())) + " x1 (p99)"
		if k == 64 {
			r.Goal = verdict("p99 < 20 ms", s.P99() < 20*time.Millisecond)
		}
		t.Add(r)
	}
	return nil
}

func fanout(cfg *config, k int, dir string) (Sample, error) {
	host, err := harness.NewHost(dir, 1, hostUID, hostGID)
	if err != nil {
		return nil, err
	}
	cs := make([]*harness.Container, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			cs[i], errs[i] = harness.Start(filepath.Join(dir, fmt.Sprintf("c%d", i)), host,
				harness.Spec{Argv: harness.CawInit(cfg.cawInit)}, 30*time.Second)
		}()
	}
	wg.Wait()
	defer func() {
		var wg sync.WaitGroup
		for _, c := range cs {
			if c == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if c.Stop(syscall.SIGTERM, 5*time.Second) != nil {
					c.Kill()
				}
			}()
		}
		wg.Wait()
	}()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	w, err := harness.NewWatch(syscall.IN_CLOSE_WRITE | syscall.IN_MOVED_TO)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	for _, c := range cs {
		if err := waitExists(c.HomeFile, 5*time.Second); err != nil {
			return nil, err
		}
		if err := w.Add(filepath.Dir(c.HomeFile), syscall.IN_CLOSE_WRITE|syscall.IN_MOVED_TO); err != nil {
			return nil, err
		}
	}
	var s Sample
	seq := int64(1)
	const warm = 3
	for r := -warm; r < cfg.fanRounds; r++ {
		seq++
		pending := map[*harness.Container]bool{}
		for _, c := range cs {
			pending[c] = true
		}
		w.Drain()
		begin := time.Now()
		if err := harness.WriteInPlace(host.File, harness.Cred(seq)); err != nil {
			return nil, err
		}
		err := w.Until(begin.Add(5*time.Second), func() bool {
			for c := range pending {
				if harness.ReadSeq(c.HomeFile) == seq {
					delete(pending, c)
				}
			}
			return len(pending) == 0
		})
		if err != nil {
			return nil, fmt.Errorf("round %d: %d of %d homes without the new token: %w", r, len(pending), k, err)
		}
		if r >= 0 {
			s = append(s, time.Since(begin))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s, nil
}
