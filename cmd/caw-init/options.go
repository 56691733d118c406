package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/caw-dev/caw/init/pid1"
	"github.com/caw-dev/caw/internal/initbuild"
	"github.com/caw-dev/caw/manifest"
)

const usage = `usage: caw-init [options] [--] COMMAND [ARG...]
  --user USER[:GROUP]   run COMMAND as this user (env CAW_USER; else the manifest's "user"; else unchanged)
  --auth-dir DIR        where the staging dir is mounted (env CAW_AUTH_DIR, default /tmp/caw_auth)
  -g, --pgroup          forward signals to the child's whole process group (env CAW_PGROUP=1)
  --grace DURATION      at exit, time between SIGTERM and SIGKILL for leftover processes (default 3s)
  --sync-write-every DURATION
                        after a burst of 4, write each host credential from the container at most
                        once per DURATION (default 3s; the final sync at exit is never held back)
  --no-sync             no credential copy or sync: a plain init with privilege drop
  --poll WHEN           stat-poll the host credential files (env CAW_POLL): auto (default) polls every
                        500ms those on a filesystem that reports no host-side changes (FUSE, virtiofs,
                        9p, NFS, SMB: Docker Desktop, OrbStack, Colima); a DURATION (>= 10ms) polls every
                        credential at that interval; off (or 0) never polls
  --entrypoint PROGRAM  run PROGRAM with COMMAND as its arguments: an image's own entrypoint when caw-init
                        replaces it (env CAW_ENTRYPOINT: a path, or a JSON array of strings)
  -v                    more log lines on stderr, repeatable (env CAW_VERBOSITY); quiet by default
  --version
Exit status: COMMAND's; 128+N if it died of signal N; 127 command not found; 126 not executable;
2 for caw-init's own usage or setup errors.
`

type options struct {
	user, authDir string
	pgroup        bool
	grace         time.Duration
	writeEvery    time.Duration
	noSync        bool
	poll          time.Duration // guard.Config.Poll: 0 auto, > 0 forced, < 0 off
	verbosity     int
	argv          []string
}

// count is a repeatable boolean flag: -v -v (and -vv, -vvv as tini has).
type count struct{ n, step *int }

func (c count) String() string   { return "" }
func (c count) IsBoolFlag() bool { return true }
func (c count) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	if b {
		*c.n += *c.step
	}
	return nil
}

// parseOptions parses flags and their environment fallbacks. It returns
// code -1 to go on, or the exit code after printing help, the version or a
// one-line usage error.
func parseOptions(args []string, getenv func(string) string) (*options, int) {
	o := &options{authDir: manifest.DefaultMountPoint, grace: 3 * time.Second}
	if v := getenv("CAW_AUTH_DIR"); v != "" {
		o.authDir = v
	}
	o.user = getenv("CAW_USER")
	if v := getenv("CAW_PGROUP"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, usageError("CAW_PGROUP=%q: want 1 or 0", v)
		}
		o.pgroup = b
	}
	if v := getenv("CAW_VERBOSITY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, usageError("CAW_VERBOSITY=%q: want a number such as 1", v)
		}
		o.verbosity = n
	}

	if v := getenv("CAW_POLL"); v != "" {
		d, err := parsePoll(v)
		if err != nil {
			return nil, usageError("CAW_POLL=%q: %v", v, err)
		}
		o.poll = d
	}

	var entrypoint []string
	if v := getenv("CAW_ENTRYPOINT"); v != "" {
		ep, err := parseEntrypoint(v)
		if err != nil {
			return nil, usageError("CAW_ENTRYPOINT=%q: %v", v, err)
		}
		entrypoint = ep
	}

	fs := flag.NewFlagSet("caw-init", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.user, "user", o.user, "")
	fs.StringVar(&o.authDir, "auth-dir", o.authDir, "")
	fs.BoolVar(&o.pgroup, "g", o.pgroup, "")
	fs.BoolVar(&o.pgroup, "pgroup", o.pgroup, "")
	fs.DurationVar(&o.grace, "grace", o.grace, "")
	fs.DurationVar(&o.writeEvery, "sync-write-every", 0, "")
	fs.BoolVar(&o.noSync, "no-sync", false, "")
	fs.Func("entrypoint", "", func(v string) error {
		ep, err := parseEntrypoint(v)
		entrypoint = ep
		return err
	})
	fs.Func("poll", "", func(v string) error {
		d, err := parsePoll(v)
		o.poll = d
		return err
	})
	for i, name := range []string{"v", "vv", "vvv"} {
		step := i + 1
		fs.Var(count{&o.verbosity, &step}, name, "")
	}
	version := fs.Bool("version", false, "")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fmt.Fprint(os.Stdout, usage)
			return nil, 0
		}
		return nil, usageError("%v", err)
	}
	if *version {
		fmt.Println("caw-init", buildVersion())
		fmt.Println(entryHookLine())
		return nil, 0
	}
	if o.writeEvery < 0 {
		return nil, usageError("--sync-write-every %v: must not be negative", o.writeEvery)
	}
	if o.grace < 0 {
		return nil, usageError("--grace %v: must not be negative", o.grace)
	}
	if o.authDir == "" {
		return nil, usageError("--auth-dir is empty: give the directory the staging dir is mounted at")
	}
	// caw-init leaves its working directory once the command runs: a
	// relative --auth-dir would then name another directory.
	if !filepath.IsAbs(o.authDir) {
		if abs, err := filepath.Abs(o.authDir); err == nil {
			o.authDir = abs
		}
	}
	o.argv = append(entrypoint, fs.Args()...)
	if len(o.argv) == 0 {
		return nil, usageError("no COMMAND given: caw-init [options] [--] COMMAND [ARG...]")
	}
	return o, -1
}

// parseEntrypoint reads --entrypoint: a JSON array of strings (as a
// Dockerfile's exec-form ENTRYPOINT), or else one program path.
func parseEntrypoint(v string) ([]string, error) {
	if !strings.HasPrefix(v, "[") {
		return []string{v}, nil
	}
	var argv []string
	if err := json.Unmarshal([]byte(v), &argv); err != nil || len(argv) == 0 || argv[0] == "" {
		return nil, fmt.Errorf("want a program path or a JSON array such as [\"/entrypoint.sh\",\"--\"]")
	}
	return argv, nil
}

// minPoll keeps a typo (--poll 1ns) from spinning a core.
const minPoll = 10 * time.Millisecond

// parsePoll reads --poll: auto, off (or 0), or an interval of at least
// minPoll; the result is guard.Config.Poll.
func parsePoll(v string) (time.Duration, error) {
	switch v {
	case "auto":
		return 0, nil
	case "off", "0":
		return -1, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < minPoll {
		return 0, fmt.Errorf("want auto, off, or an interval of at least %v such as 2s", minPoll)
	}
	return d, nil
}

func usageError(format string, args ...any) int {
	fmt.Fprintf(os.Stderr, "caw-init: "+format+" (see caw-init --help)\n", args...)
	return 2
}

// version is set at release builds: -ldflags "-X main.version=v1.2.3".
var version string

// entryHookLine says whether this caw-init was linked with its entry hook,
// without which the command does not get the caller's ignored signals and
// mask exactly (README, Signals).
func entryHookLine() string {
	switch {
	case pid1.EntryHook():
		return "entry hook: linked"
	case pid1.EntryHookBuildable:
		return "entry hook: missing (link with -ldflags='" + initbuild.LDFlags + "'): the command gets the caller's ignored signals and mask only as far as the Go runtime leaves them"
	default:
		return "entry hook: not available in this build (linux/amd64 and linux/arm64 without cgo only)"
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += " " + s.Value[:12]
		}
	}
	return v
}
