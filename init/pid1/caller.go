package pid1

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// sigmask is a set of signals, bit n-1 for signal n, as in the kernel's
// sigset_t and /proc/PID/status.
type sigmask uint64

func maskOf(sigs ...syscall.Signal) sigmask {
	var m sigmask
	for _, s := range sigs {
		m |= 1 << (s - 1)
	}
	return m
}

func (m sigmask) has(s syscall.Signal) bool { return s >= 1 && s <= 64 && m&(1<<(s-1)) != 0 }

// String names the signals: "SIGHUP SIGTERM 40", or "none".
func (m sigmask) String() string {
	var names []string
	for n := syscall.Signal(1); n <= 64; n++ {
		if m.has(n) {
			names = append(names, signalName(n))
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, " ")
}

// callerConf is the signal configuration caw-init was started with, as
// its entry hook recorded it (entry.go).
type callerConf struct {
	known            bool // the entry hook ran
	ignored, blocked sigmask
}

func callerSignals() callerConf {
	if entryRan == 0 {
		return callerConf{}
	}
	return callerConf{known: true, ignored: sigmask(entryIgnored), blocked: sigmask(entryBlocked)}
}

// EntryHook reports whether caw-init started through its entry hook, so
// its command gets the caller's ignored signals and mask exactly. Without
// it (a build without the linker flag, see internal/initbuild) the command
// gets SIGHUP, SIGINT, SIGTSTP, SIGTTIN and SIGTTOU ignored if the caller
// ignored them, and the caller's mask minus what the Go runtime unblocks.
func EntryHook() bool { return entryRan != 0 }

// EntryHookBuildable reports whether this platform has the entry hook
// (linux/amd64 and linux/arm64 without cgo).
const EntryHookBuildable = entryLinkable

// trampolineArg0 marks caw-init started as the trampoline: the entry hook
// execs the command after setting the signal configuration.
const trampolineArg0 = "caw-init:sigconf"

// throughEntry reports whether the command must be started through the
// trampoline to get the caller's configuration: a signal the caller
// ignored would be reset to its default in the child (all but kept, the
// ones caw-init itself leaves ignored), or the mask of the forking thread,
// which the child inherits, is not the caller's.
func throughEntry(c callerConf, kept, forkMask sigmask) bool {
	return c.known && (c.ignored&^kept != 0 || c.blocked != forkMask)
}

// threadMask is the calling thread's blocked mask. Every thread of the Go
// runtime that can run a goroutine has the same one.
func threadMask() (sigmask, error) {
	var old unix.Sigset_t
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, nil, &old); err != nil {
		return 0, err
	}
	return sigmask(old.Val[0]), nil
}

// execError is the command's own exec failing in the trampoline.
type execError struct{ errno syscall.Errno }

func (e *execError) Error() string { return e.errno.Error() }
func (e *execError) Unwrap() error { return e.errno }

// spawnThroughEntry starts the command as caw-init's trampoline: the child
// execs /proc/self/exe with argv trampolineArg0, the ignored set, the mask
// (16 hex digits each), path, argv; its entry hook sets the configuration
// and execs path. Fd 3 is a close-on-exec pipe: it closes when that exec
// succeeds, or carries its errno. An error other than *execError means
// the trampoline itself could not start (no /proc, caw-init not executable
// by the command's user); nothing was started then.
func spawnThroughEntry(path string, argv, env []string, attr *syscall.SysProcAttr, c callerConf) (int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return 0, fmt.Errorf("report pipe: %w", err)
	}
	defer unix.Close(p[0])
	args := append([]string{trampolineArg0, fmt.Sprintf("%016x", uint64(c.ignored)), fmt.Sprintf("%016x", uint64(c.blocked)), path}, argv...)
	pid, err := syscall.ForkExec("/proc/self/exe", args, &syscall.ProcAttr{
		Env: env, Files: []uintptr{0, 1, 2, uintptr(p[1])}, Sys: attr,
	})
	unix.Close(p[1])
	if err != nil {
		return 0, fmt.Errorf("exec /proc/self/exe: %w", err)
	}
	var b [4]byte
	n := 0
	for n < len(b) {
		m, err := unix.Read(p[0], b[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || m == 0 {
			break
		}
		n += m
	}
	if n == 0 {
		return pid, nil // the pipe closed at the command's exec
	}
	// The trampoline exits 127 after the report: reap it here, the
	// command never ran.
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(pid, &ws, 0, nil); !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if n < len(b) {
		return 0, &execError{syscall.EIO}
	}
	return 0, &execError{syscall.Errno(binary.NativeEndian.Uint32(b[:]))}
}
