package host

import (
	"errors"
	"fmt"
	"github.com/caw-dev/caw/internal/safefs"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/caw-dev/caw/agents"
	"github.com/caw-dev/caw/manifest"
)

// DefaultContainerHome is the container user's home when none is given.
const DefaultContainerHome = "/home/playground"

// Size limits for what caw reads from the host: a credential is a few KiB,
// Claude's .claude.json can reach megabytes.
const (
	maxCredentialSize = 1 << 20
	maxConfigSize     = 32 << 20
)

// UsageError is bad command-line input (an unknown agent, a malformed
// --strategy, an unknown format): the caller should print it and exit 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

func usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// DefaultAuthDir is $CAW_AUTH_DIR when set, else ~/.caw/auth under home.
func DefaultAuthDir(getenv func(string) string, home string) (string, error) {
	if getenv != nil {
		if d := getenv("CAW_AUTH_DIR"); d != "" {
			return absClean(d)
		}
	}
	if home == "" {
		return "", errors.New("cannot find the staging dir: $HOME is not set (set CAW_AUTH_DIR or pass --auth-dir)")
	}
	return filepath.Join(home, ".caw", "auth"), nil
}

func absClean(p string) (string, error) {
	a, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", p, err)
	}
	return a, nil
}

// ParseAgents turns --agents values ("claude,codex", "all", repeated flags)
// into agent names in table order. Empty input gives nil: every agent whose
// credential exists.
func ParseAgents(values []string) ([]string, error) {
	want := map[string]bool{}
	for _, v := range values {
		for _, n := range strings.Split(v, ",") {
			n = strings.TrimSpace(strings.ToLower(n))
			switch {
			case n == "":
			case n == "all":
				for _, a := range agents.Names() {
					want[a] = true
				}
			default:
				if _, ok := agents.Lookup(n); !ok {
					return nil, usagef("unknown agent %q (available: %s, or all)", n, strings.Join(agents.Names(), ", "))
				}
				want[n] = true
			}
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	var out []string
	for _, n := range agents.Names() {
		if want[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

// ParseStrategies turns repeated --strategy AGENT=STRATEGY values into a map.
// Only bind and bind-dir are accepted: copy would put a secret into staging.
func ParseStrategies(values []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range values {
		name, strat, ok := strings.Cut(v, "=")
		name = strings.TrimSpace(strings.ToLower(name))
		strat = strings.TrimSpace(strat)
		if !ok || name == "" || strat == "" {
			return nil, usagef("--strategy %q: want AGENT=STRATEGY, for example claude=bind", v)
		}
		if _, known := agents.Lookup(name); !known {
			return nil, usagef("--strategy %q: unknown agent %q (available: %s)", v, name, strings.Join(agents.Names(), ", "))
		}
		switch strat {
		case manifest.StrategyBind, manifest.StrategyBindDir:
		case manifest.StrategyCopy:
			return nil, usagef("--strategy %q: copy is for configs only; a credential is bind or bind-dir (copy would put the secret into staging)", v)
		default:
			return nil, usagef("--strategy %q: unknown strategy %q (want bind or bind-dir)", v, strat)
		}
		out[name] = strat
	}
	return out, nil
}

// hostPath is where an entry's host_original lives on this host.
func hostPath(m *manifest.Manifest, f manifest.File) string {
	if f.HostOriginal == "" || filepath.IsAbs(f.HostOriginal) {
		return f.HostOriginal
	}
	return filepath.Join(m.HostHome, filepath.FromSlash(f.HostOriginal))
}

// readRegular reads a regular file of at most limit bytes. It never blocks on
// a FIFO or device, and does not follow a final symlink when nofollow is set.
func readRegular(p string, limit int64, nofollow bool) ([]byte, fs.FileInfo, error) {
	flags := os.O_RDONLY | syscall.O_NONBLOCK | syscall.O_CLOEXEC
	if nofollow {
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(p, flags, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, nil, fmt.Errorf("%s is a symlink", p)
		}
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fi, fmt.Errorf("%s is not a regular file (%s)", p, describeType(fi.Mode()))
	}
	if fi.Size() > limit {
		return nil, fi, fmt.Errorf("%s is %d bytes, more than the %d caw reads", p, fi.Size(), limit)
	}
	data, err := safefs.ReadFD(int(f.Fd()), fi.Size(), limit)
	if errors.Is(err, safefs.ErrTooLarge) {
		return nil, fi, fmt.Errorf("%s grew past the %d bytes caw reads", p, limit)
	}
	if err != nil {
		return nil, fi, fmt.Errorf("read %s: %w", p, err)
	}
	return data, fi, nil
}

func describeType(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "not a regular file"
}

// readManifest reads the staging dir's manifest with an error that says
// what to do.
func readManifest(authDir string) (*manifest.Manifest, error) {
	if _, err := checkStagingDir(authDir); err != nil {
		return nil, err
	}
	m, err := manifest.Read(authDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no caw staging at %s (run caw setup first, or pass --auth-dir)", authDir)
	}
	if err != nil {
		return nil, fmt.Errorf("staging %s: %w", authDir, err)
	}
	return m, nil
}
