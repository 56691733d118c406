package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/caw-dev/caw/internal/safefs"
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

// InputError is bad input to a host function, the caller's to fix rather
// than a failure: an unknown agent, a path that is not a directory, a user
// that is not numeric. Option names the input as the Go API does (the
// options struct's field, such as "ContainerHome"; "" for none), so that a
// front end can name its own flag for it; Msg says what is wrong with it.
type InputError struct {
	Option string
	Msg    string
}

func (e *InputError) Error() string {
	if e.Option == "" {
		return e.Msg
	}
	return e.Option + " " + e.Msg
}

// FixError is a failure the caller can fix by giving an option another
// value. Fix words the fix with a %s standing for the option, so that a
// front end can name its own flag instead (FixWith); Error names the Go
// option (the options field, or the parameter: "AuthDir", "format").
type FixError struct {
	Err    error
	Option string
	Fix    string
}

func (e *FixError) Error() string { return e.FixWith(e.Option) }

// FixWith is the message with name standing for the option.
func (e *FixError) FixWith(name string) string {
	return fmt.Sprintf("%v (%s)", e.Err, fmt.Sprintf(e.Fix, name))
}

func (e *FixError) Unwrap() error { return e.Err }

// withFix is err, fixed by the option named as fix says (%s: the option).
func withFix(err error, option, fix string) error {
	return &FixError{Err: err, Option: option, Fix: fix}
}

func inputErrorf(option, format string, args ...any) error {
	return &InputError{Option: option, Msg: fmt.Sprintf(format, args...)}
}

// DefaultAuthDir is $CAW_AUTH_DIR when set, else ~/.caw/auth under home.
func DefaultAuthDir(getenv func(string) string, home string) (string, error) {
	if getenv != nil {
		if d := getenv("CAW_AUTH_DIR"); d != "" {
			return absClean(d)
		}
	}
	if home == "" {
		return "", withFix(errors.New("cannot find the staging dir: $HOME is not set"), "AuthDir", "set CAW_AUTH_DIR or pass %s")
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
		return nil, withFix(fmt.Errorf("no caw staging at %s", authDir), "AuthDir", "run caw setup first, or pass %s")
	}
	if err != nil {
		return nil, fmt.Errorf("staging %s: %w", authDir, err)
	}
	return m, nil
}
