// Package pid1 is the init half of caw-init: it captures signals from the
// first instant, makes caw-init a child subreaper when it is not PID 1,
// spawns the command (in its own process group, the terminal's foreground
// group when stdin is a terminal), owns the single wait4(-1) loop that reaps
// every orphan and picks the main child's status out by pid, forwards signals,
// and at the end terminates leftover processes (SIGTERM, grace, SIGKILL).
//
// It knows nothing about credentials or users: the caller passes the child's
// credentials and environment. Nothing here polls: while the child runs, the
// loop blocks in wait4(-1) and wakes only when some child ends (reaping an
// orphan, or returning the main child's status); a second goroutine
// forwards signals meanwhile, woken only by their arrival.
package pid1

import (
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Signals holds every catchable signal from the moment Capture returns, so
// none that arrives during start-up is lost or takes Go's default action
// (for SIGTERM that is exit status 2).
type Signals struct {
	// chld receives SIGCHLD only during shutdown (while the main child
	// runs, a blocking wait4 needs none). It has room for one: SIGCHLDs
	// coalesce, and one pending means a reap pass is already due.
	chld chan os.Signal
	// fwd holds the signals to forward, in arrival order.
	fwd chan os.Signal
	// rawErr is why 32, 34 and SIGPROF could not be caught (see rawsig.go).
	rawErr error
	// caller is the signal configuration caw-init was started with, and
	// kept the signals it ignored that caw-init leaves ignored; both
	// known only with the entry hook (caller.go).
	caller callerConf
	kept   sigmask
}

// early are the signals registered before Capture returns: the ones Go
// would turn into caw-init's own death (HUP INT TERM make it exit 2, QUIT
// ABRT crash it) and the others users and Docker send in practice.
//
// Each registration is a round trip to the Go runtime's signal thread, and
// registering all 60 before the spawn measured +1.7 ms on a 1.5 ms tini run.
// So the rarer rest (real-time signals, XCPU, PWR, TSTP, ...) is registered
// by a goroutine Capture starts, alongside start-up and the spawn: one of
// those arriving before it is registered is ignored by the Go runtime (not
// fatal, not forwarded). Started there rather than after the spawn, its
// round trips overlap caw-init's own start-up instead of the child's
// (measured -0.08 to -0.11 ms per `caw-init -- /bin/true`).
var early = []os.Signal{
	unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGABRT, unix.SIGTERM,
	unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH, unix.SIGCONT, unix.SIGALRM,
}

// rawSignals are caught by caw-init's own handler (rawsig.go), not through
// os/signal, which cannot deliver them. It installs in a few microseconds
// (no round trip to the runtime), so before anything else.
var rawSignals = []syscall.Signal{unix.SIGPROF, sigRT32, sigRT34}

const (
	sigRT32 = syscall.Signal(32) // glibc's SIGCANCEL; unused without cgo
	// sigPerThreadSyscall is the runtime's (SIGRTMIN+1): it runs syscalls
	// on every thread with it and ignores it otherwise. Not forwarded.
	sigPerThreadSyscall = syscall.Signal(33)
	sigRT34             = syscall.Signal(34) // SIGRTMIN to a glibc program
)

// A signal the caller left ignored is not caught, so it stays ignored for
// caw-init and, through fork and exec, for the command: SIGHUP (nohup),
// SIGINT (a shell's `cmd &`) and the job-control signals, the ones the Go
// runtime leaves as the caller set them until something registers them.
// Every other signal the runtime takes over before main runs, ignored or
// not; caw-init catches and forwards it, and the command gets it ignored
// through the entry hook (caller.go).
var (
	// keptEarly are checked before the early registrations. Without the
	// entry hook the runtime reports them itself: no syscall.
	keptEarly = []syscall.Signal{unix.SIGHUP, unix.SIGINT}
	// keptRest, the job-control signals, are checked before rest is
	// registered. Without the entry hook, that takes a syscall each, made
	// alongside start-up.
	keptRest = []syscall.Signal{unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU}
)

// Capture starts capturing signals. Call it first thing in main.
func Capture() *Signals {
	s := &Signals{chld: make(chan os.Signal, 1), fwd: make(chan os.Signal, 128), caller: callerSignals()}
	var kept []syscall.Signal
	for _, sig := range keptEarly {
		if (s.caller.known && s.caller.ignored.has(sig)) || (!s.caller.known && signal.Ignored(sig)) {
			kept = append(kept, sig)
		}
	}
	if s.caller.known {
		for _, sig := range keptRest {
			if s.caller.ignored.has(sig) {
				kept = append(kept, sig)
			}
		}
		s.kept = maskOf(kept...)
	}
	signal.Notify(s.fwd, without(early, kept)...)
	rawFD, err := catchRaw(rawSignals)
	if s.rawErr = err; rawFD >= 0 {
		go readRaw(rawFD, s.fwd)
	}
	go func() {
		if !s.caller.known {
			for _, sig := range keptRest {
				if ignored(sig) {
					kept = append(kept, sig)
				}
			}
		}
		signal.Notify(s.fwd, without(rest(), kept)...)
	}()
	return s
}

// rest is every other catchable signal, minus SIGCHLD (the wait loop's),
// SIGURG (the Go runtime sends it to itself for preemption; a child
// receiving it would be a bug, runc 3364), 33 (the runtime's own) and
// rawSignals.
func rest() []os.Signal {
	var sigs []os.Signal
	for n := 1; n <= 64; n++ {
		s := syscall.Signal(n)
		switch s {
		case unix.SIGKILL, unix.SIGSTOP, unix.SIGCHLD, unix.SIGURG, sigPerThreadSyscall:
			continue
		}
		if !slices.Contains(early, os.Signal(s)) && !slices.Contains(rawSignals, s) {
			sigs = append(sigs, s)
		}
	}
	return sigs
}

// without is sigs minus the kept ones.
func without(sigs []os.Signal, kept []syscall.Signal) []os.Signal {
	return slices.DeleteFunc(slices.Clone(sigs), func(sig os.Signal) bool {
		return slices.Contains(kept, sig.(syscall.Signal))
	})
}

// PendingTermination reports the first signal received so far whose default
// action ends a process. caw-init uses it when no child could be started, to
// end with 128+N as the signal asked rather than with a start-up error code.
// It consumes the signals it looks at. Call it only before the child is
// started.
//
// A signal the kernel has delivered still takes a hop through the runtime's
// signal thread and the os/signal goroutine before it is in the channel, and
// on a loaded machine that hop takes many milliseconds, so no fixed wait is
// enough. Instead caw-init sends itself a marker signal and waits for it:
// the kernel hands a thread the lowest pending signal first, and the runtime
// passes signals on in order (a snapshot at a time, lowest number first), so
// by the time the marker, the highest signal number, comes out, every signal
// received before it is in the channel. markerWait only bounds a marker that
// never comes.
func (s *Signals) PendingTermination() (syscall.Signal, bool) {
	marker := make(chan os.Signal, 1)
	signal.Notify(marker, sigMarker)
	defer signal.Stop(marker)
	if err := syscall.Kill(os.Getpid(), sigMarker); err != nil {
		marker <- sigMarker // cannot happen; look at what is there already
	}
	t := time.NewTimer(markerWait)
	defer t.Stop()
	for {
		select {
		case sig := <-s.fwd:
			if n, ok := sig.(syscall.Signal); ok && n != sigMarker && terminates(n) {
				return n, true
			}
		case <-marker:
			for {
				select {
				case sig := <-s.fwd:
					if n, ok := sig.(syscall.Signal); ok && n != sigMarker && terminates(n) {
						return n, true
					}
				default:
					return 0, false
				}
			}
		case <-t.C:
			return 0, false
		}
	}
}

// sigMarker is SIGRTMAX, which nobody sends to an init in practice. It is
// one of rest, so it comes through fwd too, where it is no termination.
const sigMarker = syscall.Signal(64)

// markerWait bounds PendingTermination's wait for its own marker signal.
const markerWait = 5 * time.Second

// terminates reports whether the default action of n ends the process.
func terminates(n syscall.Signal) bool {
	switch n {
	case unix.SIGCHLD, unix.SIGCONT, unix.SIGSTOP, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU,
		unix.SIGURG, unix.SIGWINCH:
		return false
	}
	return n >= 1 && n <= 64
}

// SetSubreaper makes the caller the reaper of its orphaned descendants when
// it is not PID 1 (PID 1 of a namespace is that already). It reports whether
// caw-init is PID 1.
func SetSubreaper() (pid1 bool, err error) {
	if os.Getpid() == 1 {
		return true, nil
	}
	return false, unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// signalName is "SIGTERM" rather than Go's "terminated".
func signalName(sig os.Signal) string {
	if n, ok := sig.(syscall.Signal); ok {
		if name := unix.SignalName(n); name != "" {
			return name
		}
	}
	return sig.String()
}
