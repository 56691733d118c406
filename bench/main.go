// Command bench measures caw-init against its peers and prints one table:
// start-up cost against tini and dumb-init, reaping 10,000 orphans against
// tini, credential sync latency against a shell guard built like the
// original caw's (inotifywait + md5sum + cp) and a bare inotify copier (the
// floor), fan-out to 64 guards, an idle caw-init's CPU, memory and wake-ups,
// the stat poll of a credential shared through FUSE (idle cost, latency),
// and binary sizes. Every row is measured in the same run as its peers.
// The logins rows (one login used by the host's agent and four containers'
// against a fake token server: refresh collisions and logouts, with and
// without caw) take about 35 minutes, so the full run leaves them out unless
// asked for by name.
//
//	go run ./bench                  # the full run docs/FIGURES.md quotes (about 4 minutes)
//	go run ./bench --quick          # the same rows and the logins rows, smaller counts (about 2 minutes)
//	go run ./bench --only logins    # the logins rows of docs/FIGURES.md (about 35 minutes)
//	go run ./bench --only sync,idle # some rows: start,reap,sync,fanout,idle,poll,size,logins
//	go run ./bench --caw-init bin/caw-init   # measure a given binary instead of building one
//
// It needs root (namespaces and bind mounts), util-linux's unshare, Debian's
// busybox-static, bindfs for the poll rows, and for the peers tini, dumb-init and inotify-tools; a
// missing peer is reported with the package to install and its rows are
// skipped.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/caw-dev/caw/internal/initbuild"
)

// config is one run's parameters.
type config struct {
	quick   bool
	tmp     string // scratch dir, removed at the end
	cawInit string // path of the caw-init under test; "" when it failed to build
	cawErr  error  // why cawInit is ""
	// baseline is another caw-init binary (an earlier commit) measured in
	// the same run as cawInit in the start and sync rows: same-run ratios
	// are what survive the machine's drift between runs.
	baseline      string
	baselineFlags []string // the sync flags the baseline accepts
	self          string   // this binary, re-executed for helper modes
	verbose       bool

	startN    int           // runs per subject for the start-up row
	orphans   int           // orphans per reaping run
	reapReps  int           // reaping runs per init
	syncN     int           // rounds per direction for the latency rows
	fanRounds int           // rounds per fan-out size
	fanSizes  []int         // guards per fan-out run
	idle      time.Duration // idle window

	loginCycles int    // token expiry cycles of the logins scenario
	traceDir    string // logins: keep the agents' traces and guards' logs here
	loginAgents string // logins: which agents, comma-separated
}

func main() {
	if len(os.Args) > 1 && strings.HasPrefix(os.Args[1], "__") {
		os.Exit(helper(os.Args[1], os.Args[2:]))
	}
	quick := flag.Bool("quick", false, "small counts, finishes in under a minute (CI smoke run)")
	cawInit := flag.String("caw-init", "", "use this caw-init binary instead of building ./cmd/caw-init")
	only := flag.String("only", "", "comma-separated rows to run: start,reap,sync,fanout,idle,poll,size,logins (default all but logins)")
	verbose := flag.Bool("v", false, "progress on stderr")
	loginCycles := flag.Int("logins-cycles", 0, "token expiry cycles of the logins rows (default 500, --quick 3)")
	traceDir := flag.String("logins-trace", "", "logins: keep the agents' traces and the guards' -vv logs in this directory")
	loginAgents := flag.String("logins-agents", "claude,codex,gemini,opencode", "logins: the agents to run")
	baseline := flag.String("baseline", "", "start and sync rows: also measure this caw-init binary (say, an earlier commit's), rounds interleaved with the one under test")
	flag.Parse()
	if err := run(*quick, *cawInit, *only, *verbose, *loginCycles, *traceDir, *loginAgents, *baseline); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(quick bool, cawInit, only string, verbose bool, loginCycles int, traceDir, loginAgents, baseline string) error {
	cfg := &config{quick: quick, verbose: verbose,
		startN: 1000, orphans: 10000, reapReps: 5, syncN: 1000, fanRounds: 200, fanSizes: []int{1, 8, 64}, idle: 60 * time.Second,
		loginCycles: 500}
	if quick {
		cfg.startN, cfg.orphans, cfg.reapReps, cfg.syncN, cfg.fanRounds, cfg.fanSizes, cfg.idle =
			100, 1000, 1, 50, 10, []int{1, 8, 64}, 3*time.Second
		cfg.loginCycles = 3
	}
	cfg.traceDir, cfg.loginAgents = traceDir, loginAgents
	if loginCycles > 0 {
		cfg.loginCycles = loginCycles
	}
	var err error
	if cfg.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find this binary for helper runs: %w", err)
	}
	if cfg.tmp, err = os.MkdirTemp("", "caw-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(cfg.tmp)
	// Helpers and guards run as other users inside the scratch dir.
	if err := os.Chmod(cfg.tmp, 0o755); err != nil {
		return err
	}
	cfg.cawInit = cawInit
	if cawInit == "" {
		cfg.cawInit, cfg.cawErr = buildCawInit(cfg.tmp)
	}
	if baseline != "" {
		if cfg.baseline, err = filepath.Abs(baseline); err != nil {
			return err
		}
		cfg.baselineFlags = acceptedFlags(cfg.baseline, syncBenchFlags)
	}

	mode := "full"
	if quick {
		mode = "quick (small counts: use the full run for figures)"
	}
	t := &Table{Title: fmt.Sprintf("caw bench, %s; %s", mode, machine())}
	if cfg.cawErr != nil {
		t.Note("caw-init could not be built, its rows are skipped: %v", cfg.cawErr)
	}
	if os.Geteuid() != 0 {
		t.Note("not root: rows needing namespaces and bind mounts (reap, sync, fanout, idle) are skipped; run as root")
	}
	want := map[string]bool{}
	for _, r := range strings.Split(only, ",") {
		if r = strings.TrimSpace(r); r != "" {
			want[r] = true
		}
	}
	steps := []struct {
		name string
		root bool
		fn   func(*config, *Table) error
	}{
		{"start", false, benchStart},
		{"reap", true, benchReap},
		{"sync", true, benchSync},
		{"fanout", true, benchFanout},
		{"idle", true, benchIdle},
		{"poll", true, benchPoll},
		{"size", false, benchSize},
		{"logins", true, benchLogins},
	}
	for _, s := range steps {
		if len(want) > 0 && !want[s.name] {
			continue
		}
		if s.name == "logins" && len(want) == 0 && !quick {
			t.Note("logins rows skipped (about 35 minutes): go run ./bench --only logins")
			continue
		}
		if s.root && os.Geteuid() != 0 {
			continue
		}
		start := time.Now()
		cfg.logf("%s ...", s.name)
		if err := s.fn(cfg, t); err != nil {
			t.Add(Row{Measure: s.name, Subject: "ERROR", Goal: err.Error()})
		}
		cfg.logf("%s done in %v", s.name, time.Since(start).Round(time.Millisecond))
	}
	t.Note("reproduce: go run ./bench%s (as root, on an otherwise idle machine)", map[bool]string{true: " --quick", false: ""}[quick])
	return t.Write(os.Stdout)
}

// acceptedFlags is flags if bin accepts them (an older caw-init may not
// know a flag the bench passes), else nothing.
func acceptedFlags(bin string, flags []string) []string {
	args := append(append([]string{}, flags...), "--version")
	if exec.Command(bin, args...).Run() != nil {
		return nil
	}
	return flags
}

func (c *config) logf(format string, args ...any) {
	if c.verbose {
		fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	}
}

// buildCawInit builds ./cmd/caw-init the way a release is built: static,
// stripped, trimmed paths, entered through its entry hook.
func buildCawInit(dir string) (string, error) {
	out := filepath.Join(dir, "caw-init")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags="+initbuild.LDFlags, "-o", out, "github.com/caw-dev/caw/cmd/caw-init")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/caw-init: %v: %s", err, firstLine(string(b)))
	}
	return out, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

// machine names what the figures were measured on.
func machine() string {
	cpu := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown kernel"
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(data))
	}
	return fmt.Sprintf("%d CPUs (%s), Linux %s, %s", runtime.NumCPU(), cpu, kernel, runtime.Version())
}

// peer finds a peer command, or says which Debian package provides it.
type peer struct {
	name, pkg string
}

func (p peer) path() (string, error) {
	path, err := exec.LookPath(p.name)
	if err != nil {
		return "", errors.New(p.name + " not found: apt-get install " + p.pkg)
	}
	return path, nil
}

var (
	peerTini       = peer{"tini", "tini"}
	peerTiniStatic = peer{"tini-static", "tini"}
	peerDumbInit   = peer{"dumb-init", "dumb-init"}
	peerInotify    = peer{"inotifywait", "inotify-tools"}
	peerBusybox    = peer{"busybox", "busybox-static"}
	peerUnshare    = peer{"unshare", "util-linux"}
	peerGosu       = peer{"gosu", "gosu"}
)
