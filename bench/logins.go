package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caw-dev/caw/internal/fakeagent"
	"github.com/caw-dev/caw/internal/harness"
	"github.com/caw-dev/caw/internal/tokenserver"
)

// The logins scenario (issue 12): one Claude login used at once by the
// host's agent and by N containers' agents, against a fake token server
// with single-use rotating refresh tokens. It counts what a person feels:
// refresh collisions (invalid_grant), logouts, lost logins.
type loginScenario struct {
	agent      string // fakeagent.Claude or fakeagent.Codex
	containers int
	lifetime   time.Duration // access-token lifetime
	margin     time.Duration // agents refresh this long before expiry
	cycles     int           // expiry cycles: the run lasts cycles * (lifetime - margin)
	reqMin     time.Duration
	reqMax     time.Duration
	traceDir   string // if set: agents trace, guards log -vv, all kept here
}

// loginMode is one way of running the agents.
type loginMode struct {
	name string
	// how: "alone" (the host's agent only), "copies" (each container its
	// own copy, no caw), "shared" (every agent on the host's config dir),
	// "caw" (real caw-init, bind-dir).
	how    string
	mirror bool // caw with lock mirroring
}

var loginModes = map[string][]loginMode{
	fakeagent.Claude: {
		{name: "one agent alone (the floor)", how: "alone"},
		{name: "all agents on one config dir", how: "shared"},
		{name: "plain copies, no caw", how: "copies"},
		{name: "caw, lock mirroring off", how: "caw"},
		{name: "caw with lock mirroring", how: "caw", mirror: true},
	},
	// Codex, Gemini CLI and opencode take no cross-process lock: nothing
	// to mirror.
	fakeagent.Codex:    noLockModes,
	fakeagent.Gemini:   noLockModes,
	fakeagent.Opencode: noLockModes,
}

var noLockModes = []loginMode{
	{name: "one agent alone (the floor)", how: "alone"},
	{name: "all agents on one file", how: "shared"},
	{name: "plain copies, no caw", how: "copies"},
	{name: "caw (bind)", how: "caw"},
}

// credPath is where each agent keeps its login under a home.
var credPath = map[string]string{
	fakeagent.Claude:   ".claude/.credentials.json",
	fakeagent.Codex:    ".codex/auth.json",
	fakeagent.Gemini:   ".gemini/oauth_creds.json",
	fakeagent.Opencode: ".local/share/opencode/auth.json",
}

// loginResult is one mode's counts.
type loginResult struct {
	mode          loginMode
	agents        int
	duration      time.Duration
	server        tokenserver.Counts
	invalidGrants int
	stubs         int
	episodes      int
	loggedOut     time.Duration // summed over agents
	longest       time.Duration
	lockGiveUps   int
	endLoggedOut  int  // agents logged out at the end
	lost          bool // the login's newest refresh token is in no file at the end
	revoked       bool
	gaps          Sample // reuse of a refresh token after its first use
}

func (r loginResult) perCycle() float64 {
	if r.server.Granted == 0 {
		return 0
	}
	return float64(r.server.Refreshes) / float64(r.server.Granted)
}

// benchLogins runs every mode of every agent in turn.
func benchLogins(cfg *config, t *Table) error {
	if cfg.cawInit == "" {
		return nil
	}
	bin, err := buildStatic(cfg.tmp, "fake-agent", "github.com/caw-dev/caw/cmd/fake-agent")
	if err != nil {
		return err
	}
	for _, agent := range strings.Split(cfg.loginAgents, ",") {
		agent = strings.TrimSpace(agent)
		if _, ok := loginModes[agent]; !ok {
			return fmt.Errorf("--logins-agents: unknown agent %q (want claude, codex, gemini, opencode)", agent)
		}
		sc := loginScenario{agent: agent, containers: 4, lifetime: 2 * time.Second, margin: 600 * time.Millisecond,
			cycles: cfg.loginCycles, reqMin: 50 * time.Millisecond, reqMax: 150 * time.Millisecond, traceDir: cfg.traceDir}
		if agent != fakeagent.Claude {
			// Their own margins: Codex and opencode refresh once the
			// token has expired, Gemini CLI's library 5 minutes before:
			// scaled like Claude Code's.
			sc.margin = 0
			if agent == fakeagent.Gemini {
				sc.margin = 600 * time.Millisecond
			}
			sc.cycles = min(sc.cycles, 100)
		}
		benchLoginsOf(cfg, t, bin, sc)
	}
	return nil
}

func benchLoginsOf(cfg *config, t *Table, bin string, sc loginScenario) {
	var floor float64
	for i, m := range loginModes[sc.agent] {
		cfg.logf("logins: %s: %s ...", sc.agent, m.name)
		msc := sc
		if !m.mirror {
			// The baselines settle within 100 cycles; the goal is
			// measured over the whole run.
			msc.cycles = min(sc.cycles, 100)
		}
		r, err := runLogins(cfg, bin, filepath.Join(cfg.tmp, fmt.Sprintf("logins-%s%d", sc.agent, i)), msc, m)
		row := Row{Subject: m.name}
		if i == 0 {
			row.Measure = fmt.Sprintf("logins (%s): host + %d containers, %v tokens", sc.agent, sc.containers, sc.lifetime)
		}
		if err != nil {
			row.Goal = "FAILED: " + err.Error()
			t.Add(row)
			continue
		}
		if i == 0 {
			floor = r.perCycle()
		}
		row.N = fmt.Sprintf("%d cycles", r.server.Granted)
		row.Median = fmt.Sprintf("%.2f refr/cycle", r.perCycle())
		row.P99 = fmt.Sprintf("%d logouts", r.episodes)
		row.Ratio = ratio(r.perCycle(), floor) + " alone"
		if m.mirror {
			row.Goal = verdict("0 logouts, <= 1.05 refr/cycle", r.episodes == 0 && r.perCycle() <= 1.05)
		}
		t.Add(row)
		t.Note("logins (%s), %s: %d agents, %v: %d refreshes for %d new tokens, %d invalid_grant, %d logged-out stubs, "+
			"%d logouts (%.1f s logged out in all, longest %.2f s), %d refreshes given up for want of the lock, "+
			"%d agents logged out at the end, login lost: %v%s",
			sc.agent, m.name, r.agents, r.duration.Round(time.Second), r.server.Refreshes, r.server.Granted, r.invalidGrants, r.stubs,
			r.episodes, r.loggedOut.Seconds(), r.longest.Seconds(), r.lockGiveUps, r.endLoggedOut, r.lost,
			map[bool]string{true: " (family revoked)", false: ""}[r.revoked])
		if len(r.gaps) > 0 && m.how == "caw" {
			t.Note("logins (%s), %s: the colliding refresh arrived %s after the winner's (median; min %s, max %s)",
				sc.agent, m.name, fmtDur(r.gaps.Median()), fmtDur(r.gaps.Quantile(0)), fmtDur(r.gaps.Max()))
		}
	}
	t.Note("logins (%s): agents as in internal/fakeagent Behaviours, a request every %v-%v, refresh %v before expiry, "+
		"refresh round trip 40-160 ms; refr/cycle = refresh calls per new token; a logout = an agent without a usable token for 2 requests or more",
		sc.agent, sc.reqMin, sc.reqMax, sc.margin)
}

// buildStatic builds a static binary of pkg into dir.
func buildStatic(dir, name, pkg string) (string, error) {
	out := filepath.Join(dir, name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v: %s", pkg, err, firstLine(string(b)))
	}
	return out, nil
}

// runLogins runs one mode: a token server, the host's agent, and the
// containers' agents, all for the same duration.
func runLogins(cfg *config, agentBin, dir string, sc loginScenario, m loginMode) (loginResult, error) {
	res := loginResult{mode: m}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	reports := filepath.Join(dir, "reports")
	if err := os.Mkdir(reports, 0o777); err != nil {
		return res, err
	}
	if err := os.Chmod(reports, 0o777); err != nil {
		return res, err
	}
	srv, err := tokenserver.Start(filepath.Join(dir, "token.sock"), tokenserver.Config{
		Lifetime: sc.lifetime, RefreshDelayMin: 40 * time.Millisecond, RefreshDelayMax: 160 * time.Millisecond})
	if err != nil {
		return res, err
	}
	defer srv.Close()
	host, err := harness.NewHost(dir, 1, hostUID, hostGID)
	if err != nil {
		return res, err
	}
	if sc.agent != fakeagent.Claude {
		host.File = filepath.Join(host.Home, credPath[sc.agent])
	}
	// The host's agent runs as the host user and takes its legacy lock
	// beside its config dir.
	if err := os.Chown(host.Home, hostUID, hostGID); err != nil {
		return res, err
	}
	first := srv.Issue()
	// writeLogin writes the first tokens to home/credPath, the file and
	// every directory from home down owned by the agent's user.
	writeLogin := func(home string, uid, gid int) error {
		file := filepath.Join(home, credPath[sc.agent])
		data, err := fakeagent.TokensContent(sc.agent, first.Access, first.Refresh, first.Expires, file)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(file, data, 0o600); err != nil {
			return err
		}
		for p := file; ; p = filepath.Dir(p) {
			if err := os.Chown(p, uid, gid); err != nil {
				return err
			}
			if p == home {
				return nil
			}
		}
	}
	if err := writeLogin(host.Home, hostUID, hostGID); err != nil {
		return res, err
	}
	// A cycle: the token's life before the margin, then the wait for the
	// next request (100 ms on average) and the refresh (100 ms).
	cycle := sc.lifetime - sc.margin + 200*time.Millisecond
	if sc.agent == fakeagent.Codex {
		// Codex's JWT exp is in whole seconds: a token lives 1-2 s.
		cycle = sc.lifetime - 500*time.Millisecond + 200*time.Millisecond
	}
	duration := time.Duration(sc.cycles) * cycle
	argv := func(name, file string) []string {
		return []string{agentBin, "run", "--agent", sc.agent, "--file", file, "--socket", srv.Path(),
			"--name", name, "--duration", duration.String(), "--margin", sc.margin.String(),
			"--request-min", sc.reqMin.String(), "--request-max", sc.reqMax.String(),
			"--report", filepath.Join(reports, name+".json"), fmt.Sprintf("--trace=%v", sc.traceDir != "")}
	}
	var procs []*exec.Cmd
	var cs []*harness.Container
	defer func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
		for _, c := range cs {
			c.Kill()
		}
	}()
	startProc := func(name, file string, uid, gid int) error {
		a := argv(name, file)
		cmd := exec.Command(a[0], a[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		if sc.traceDir != "" {
			f, err := os.Create(filepath.Join(sc.traceDir, fmt.Sprintf("%s-%s%v-%s.log", sc.agent, m.how, m.mirror, name)))
			if err != nil {
				return err
			}
			defer f.Close()
			cmd.Stderr = f
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		procs = append(procs, cmd)
		return nil
	}
	names := []string{"host"}
	switch m.how {
	case "alone":
	case "copies", "shared":
		for i := range sc.containers {
			name := fmt.Sprintf("c%d", i+1)
			names = append(names, name)
		}
	case "caw":
		for i := range sc.containers {
			names = append(names, fmt.Sprintf("c%d", i+1))
		}
	}
	// Containers first (caw-init's start-up is not part of the run), then
	// the host's agent.
	for _, name := range names[1:] {
		switch m.how {
		case "copies":
			file := filepath.Join(dir, name, credPath[sc.agent])
			if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
				return res, err
			}
			if err := writeLogin(filepath.Join(dir, name), 1000, 1000); err != nil {
				return res, err
			}
			if err := startProc(name, file, 1000, 1000); err != nil {
				return res, err
			}
		case "shared":
			if err := startProc(name, host.File, hostUID, hostGID); err != nil {
				return res, err
			}
		case "caw":
			spec := harness.Spec{Strategy: harness.BindDir, Argv: func(c *harness.Container) []string {
				// The scenario runs time about 14,000 times faster than
				// real tokens (2 s for 8 h), so the guard's home-to-host
				// rate limit (one write per 3 s after a burst, meant for a
				// container rewriting in a loop, never reached by real
				// refreshes hours apart) is scaled down with it, as in the
				// sync rows.
				a := append([]string{cfg.cawInit, "--auth-dir", c.Staging, "--user", harness.User}, syncBenchFlags...)
				if sc.traceDir != "" {
					a = append(a, "-vv")
				}
				a = append(a, "--")
				if !m.mirror {
					a = append([]string{"/usr/bin/env", "CAW_LOCK_MIRROR=off"}, a...)
				}
				return append(a, argv(name, c.HomeFile)...)
			}}
			var c *harness.Container
			var err error
			if sc.agent == fakeagent.Claude {
				c, err = harness.Start(filepath.Join(dir, name), host, spec, 30*time.Second)
			} else if c, err = harness.Prepare(filepath.Join(dir, name), host, harness.Spec{Agent: sc.agent, Target: credPath[sc.agent]}); err == nil {
				err = c.Start(spec, 30*time.Second)
			}
			if err != nil {
				return res, fmt.Errorf("%s: %w", name, err)
			}
			cs = append(cs, c)
		}
	}
	if err := startProc("host", host.File, hostUID, hostGID); err != nil {
		return res, err
	}
	begin := time.Now()
	// Every agent stops by itself after the duration and writes its report.
	deadline := begin.Add(duration + 30*time.Second)
	for _, p := range procs {
		done := make(chan error, 1)
		go func() { done <- p.Wait() }()
		select {
		case <-done:
		case <-time.After(time.Until(deadline)):
			p.Process.Kill()
			<-done
		}
	}
	procs = nil
	for _, c := range cs {
		for {
			if ok, _ := c.Exited(); ok || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	res.duration = time.Since(begin)
	if sc.traceDir != "" {
		for i, c := range cs {
			_ = os.WriteFile(filepath.Join(sc.traceDir, fmt.Sprintf("%s-%s%v-c%d.log", sc.agent, m.how, m.mirror, i+1)), []byte(c.Stderr()), 0o644)
		}
	}
	var files []string
	files = append(files, host.File)
	for _, c := range cs {
		files = append(files, c.HomeFile)
	}
	for _, name := range names {
		if m.how == "copies" && name != "host" {
			files = append(files, filepath.Join(dir, name, credPath[sc.agent]))
		}
	}
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(reports, name+".json"))
		if err != nil {
			return res, fmt.Errorf("%s wrote no report: %w", name, err)
		}
		var r fakeagent.Report
		if err := json.Unmarshal(data, &r); err != nil {
			return res, fmt.Errorf("%s: report: %w", name, err)
		}
		res.agents++
		res.invalidGrants += r.InvalidGrants
		res.stubs += r.Stubs
		res.episodes += r.Episodes
		res.loggedOut += time.Duration(r.LoggedOutMs * float64(time.Millisecond))
		res.longest = max(res.longest, time.Duration(r.LongestMs*float64(time.Millisecond)))
		res.lockGiveUps += r.LockGiveUps
		if r.FinalLoggedOut {
			res.endLoggedOut++
		}
	}
	res.server = srv.Total("")
	res.gaps = Sample(srv.ReuseGaps())
	head := srv.Head(first.Refresh)
	res.revoked = srv.Revoked(first.Refresh)
	res.lost = true
	for _, f := range files {
		if data, err := os.ReadFile(f); err == nil && bytes.Contains(data, []byte(strconv.Quote(head))) {
			res.lost = false
		}
	}
	return res, nil
}
