//go:build linux && !cgo && (amd64 || arm64)

package pid1

import (
	"errors"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The Go runtime has signals os/signal cannot deliver: 32 and 34, which it
// keeps for a C library's threads (glibc's SIGCANCEL, musl's SIGSYNCCALL)
// and so leaves at their default action, death, in a binary without cgo;
// and SIGPROF, which its handler keeps for the profiler and never passes
// on. caw-init installs its own handler for them, in assembly: it writes the
// signal number as one byte to a pipe, and a goroutine turns the bytes into
// signals to forward. Nothing else in caw-init uses these signals (no cgo,
// no profiler). 33 stays the runtime's: it uses it to run syscalls on every
// thread (syscall.AllThreadsSyscall, Setuid), and ignores it otherwise.

// rawPipe is the write end the handler writes to (non-blocking: a full
// pipe loses the signal, as a pending standard signal coalesces).
var rawPipe int32 = -1

func rawHandler()
func rawRestorer()

// rawAddrs is the entry of rawHandler and rawRestorer themselves (ABI0),
// not of Go wrappers around them.
func rawAddrs() (handler, restorer uintptr)

const (
	saRestorer = 0x04000000
	saOnstack  = 0x08000000
	saRestart  = 0x10000000
	sigIgn     = 1 // SIG_IGN
)

// kernelSigaction is the kernel's struct sigaction on amd64 and arm64.
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

// catchRaw installs the handler for sigs; what it catches waits in the pipe
// for readRaw.
func catchRaw(sigs []syscall.Signal) (readFD int, err error) {
	if len(sigs) == 0 {
		return -1, nil
	}
	var p [2]int
	// Both ends non-blocking (one syscall): a full pipe must not block the
	// handler; readRaw makes its own end blocking.
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return -1, err
	}
	rawPipe = int32(p[1])
	h, r := rawAddrs()
	// On the thread's alternate stack: the handler may interrupt a
	// goroutine on a small stack. Every signal blocked while it runs.
	sa := kernelSigaction{handler: h, flags: saOnstack | saRestart, restorer: r, mask: ^uint64(0)}
	if r != 0 {
		sa.flags |= saRestorer
	}
	for _, s := range sigs {
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0); e != 0 {
			return p[0], e
		}
	}
	return p[0], nil
}

// readRaw passes the signals the handler caught on to out, for ever,
// blocked in read(2) on a thread of its own. Started by Capture, that
// thread's creation overlaps caw-init's start-up; the runtime's poller
// instead, or the same reader started after the spawn, cost 0.04-0.05x
// tini on the start-up row (docs/FIGURES.md).
func readRaw(fd int, out chan<- os.Signal) {
	if err := unix.SetNonblock(fd, false); err != nil {
		return
	}
	b := make([]byte, 64)
	for {
		n, err := unix.Read(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		for _, c := range b[:n] {
			out <- syscall.Signal(c)
		}
	}
}

// ignored reports whether sig's action is SIG_IGN right now.
func ignored(sig syscall.Signal) bool {
	var old kernelSigaction
	_, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0)
	return e == 0 && old.handler == sigIgn
}
