package pid1

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/caw-dev/caw/internal/logf"
	"golang.org/x/sys/unix"
)

// Config is the command to supervise.
type Config struct {
	Argv []string // COMMAND [ARG...]; COMMAND is looked up in $PATH
	Env  []string
	// Credential, when set, is applied in the child only (setgroups,
	// setgid, setuid before exec); caw-init keeps its own identity.
	Credential *syscall.Credential
	PGroup     bool          // forward signals to the child's process group
	Grace      time.Duration // leftovers: time between SIGTERM and SIGKILL
	PID1       bool          // caw-init is PID 1 of its namespace
	Logf       logf.Func
}

// StartError is a command that could not be started.
type StartError struct {
	Command string
	Code    int // 127 not found, 126 found but not executable
	Err     error
}

func (e *StartError) Error() string {
	if e.Code == 127 {
		return fmt.Sprintf("%s: command not found (%v)", e.Command, e.Err)
	}
	return fmt.Sprintf("%s: cannot execute (%v)", e.Command, e.Err)
}

func (e *StartError) Unwrap() error { return e.Err }

// Supervisor runs one main child and reaps everything else.
type Supervisor struct {
	cfg  Config
	sigs *Signals
	pid  int
	// pidfd names the main child itself, so a forwarded signal can never
	// hit a process that reused its pid after the reap (-1: kill by pid).
	pidfd int

	mu   sync.Mutex // done vs. forwarding
	done bool
	ws   syscall.WaitStatus
	// noChildren is set when wait4 said ECHILD: no process is left that
	// could be ours to reap, so shutdown has nothing to do.
	noChildren bool

	// jobControl: caw-init is not PID 1 and stdin is its controlling
	// terminal, so it may be a shell's job: when the main child stops,
	// caw-init stops too (as dumb-init does), or the shell would wait on
	// a job that never says it stopped.
	jobControl bool
	// stoppedFg is the terminal's foreground group when caw-init stopped
	// itself, given back on SIGCONT (0: not stopped).
	stoppedFg int
}

// Start spawns the command. It does not wait: Wait's loop owns all waiting,
// so no other wait4 can take the main child's status.
func Start(cfg Config, sigs *Signals) (*Supervisor, error) {
	if cfg.Logf == nil {
		cfg.Logf = func(int, string, ...any) {}
	}
	if len(cfg.Argv) == 0 {
		return nil, errors.New("no command given")
	}
	path, err := exec.LookPath(cfg.Argv[0])
	if err != nil {
		return nil, startError(cfg.Argv[0], err)
	}
	attr := &syscall.SysProcAttr{
		// Its own process group, so -g can signal the child and everything
		// it started, and never caw-init itself.
		Setpgid:    true,
		Credential: cfg.Credential,
	}
	tty := controllingTTY(0)
	if tty && foreground(0) {
		// The child does tcsetpgrp on the terminal before exec (with its
		// signals still blocked, so no SIGTTOU): job control and Ctrl-C
		// reach the command, not caw-init. Not when caw-init was started
		// in the background: the child would take the terminal from
		// the shell.
		attr.Foreground = true
		attr.Ctty = 0
	}
	if err := closeInheritedFDs(); err != nil {
		cfg.Logf(0, "cannot mark inherited descriptors close-on-exec (%v): the command may inherit them", err)
	}
	pid, err := spawn(path, cfg, attr, sigs)
	if err != nil {
		return nil, startError(cfg.Argv[0], err)
	}
	s := &Supervisor{cfg: cfg, sigs: sigs, pid: pid, pidfd: -1, jobControl: tty && !cfg.PID1}
	// Safe: nothing reaps the child before Wait runs.
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		s.pidfd = fd
	}
	cfg.Logf(1, "started %q as pid %d (tty foreground: %v)", path, s.pid, attr.Foreground)
	// The command keeps the working directory it started in; caw-init
	// leaves it, so that it holds no directory busy (a host-side umount
	// of the image's WORKDIR would fail), as dumb-init and catatonit do.
	if err := unix.Chdir("/"); err != nil {
		cfg.Logf(0, "chdir /: %v", err)
	}
	if sigs.rawErr != nil {
		cfg.Logf(0, "signals 32, 34 and SIGPROF are not forwarded: %v", sigs.rawErr)
	}
	return s, nil
}

// spawn starts the command with the caller's signal configuration: through
// the trampoline when the child would not inherit it (caller.go), else
// directly.
//
// syscall.ForkExec rather than exec.Cmd: nothing else may wait for the
// child, and os.StartProcess's Process bookkeeping and pidfd probing cost
// start-up time; the one pidfd needed is opened afterwards. The same stdio
// descriptors, not copies: no goroutine sits between the child and its
// terminal.
func spawn(path string, cfg Config, attr *syscall.SysProcAttr, sigs *Signals) (int, error) {
	c := sigs.caller
	if !c.known {
		if entryLinkable {
			cfg.Logf(1, "started without the entry hook (built without -ldflags=-E=...pid1.rt0): the command gets the caller's ignored signals and mask only as far as the Go runtime left them")
		}
	} else if mask, err := threadMask(); err != nil || throughEntry(c, sigs.kept, mask) {
		pid, err := spawnThroughEntry(path, cfg.Argv, cfg.Env, attr, c)
		var ee *execError
		if err == nil || errors.As(err, &ee) {
			if err == nil {
				cfg.Logf(2, "started through the entry hook: ignored %v; blocked %v", c.ignored, c.blocked)
			}
			return pid, err
		}
		cfg.Logf(0, "cannot start the command through caw-init's entry hook (%v): it does not get the caller's signal configuration exactly (ignored %v; blocked %v)", err, c.ignored, c.blocked)
	}
	return syscall.ForkExec(path, cfg.Argv, &syscall.ProcAttr{
		Env: cfg.Env, Files: []uintptr{0, 1, 2}, Sys: attr,
	})
}

// controllingTTY reports whether fd is a terminal and the controlling
// terminal of caw-init's session (tcsetpgrp needs both).
func controllingTTY(fd int) bool {
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
		return false
	}
	_, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil
}

// foreground reports whether caw-init's process group is the foreground
// group of the terminal fd.
func foreground(fd int) bool {
	pg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && pg == unix.Getpgrp()
}

func startError(command string, err error) *StartError {
	code := 126
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, exec.ErrDot) || errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		code = 127
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		err = errno
	} else if errors.Is(err, exec.ErrNotFound) {
		err = errors.New("not in $PATH")
	} else if errors.Is(err, exec.ErrDot) {
		// Found only through a relative $PATH entry: not run as root.
		err = errors.New("found only in a relative $PATH entry; give its absolute path")
	}
	return &StartError{Command: command, Code: code, Err: err}
}

// Pid is the main child's pid.
func (s *Supervisor) Pid() int { return s.pid }

// Wait forwards signals and reaps until the main child has exited, and
// returns its status.
//
// While the child runs, this goroutine sits in a blocking wait4(-1): the
// one place that waits, dispatching by pid. It wakes only when a child
// ends (no SIGCHLD round trip through os/signal, measured at ~1 ms of
// start-up for a short command), and costs nothing while idle. Signals
// are forwarded meanwhile from another goroutine.
func (s *Supervisor) Wait() syscall.WaitStatus {
	stop := make(chan struct{})
	forwarded := make(chan struct{})
	go func() {
		defer close(forwarded)
		for {
			select {
			case sig := <-s.sigs.fwd:
				s.forward(sig.(syscall.Signal))
			case <-stop:
				return
			}
		}
	}()
	flags := unix.WALL
	if s.jobControl {
		flags |= unix.WUNTRACED
	}
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, flags, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err == nil && ws.Stopped() {
			if pid == s.pid {
				s.stopSelf(ws.StopSignal())
			}
			continue
		}
		if err != nil {
			// ECHILD with the main child never reaped: cannot happen
			// while we are its only waiter; end rather than spin.
			s.cfg.Logf(0, "wait4: %v", err)
			s.mu.Lock()
			s.done, s.noChildren = true, true
			s.ws = syscall.WaitStatus(0x7f00) // exit 127
			s.mu.Unlock()
			break
		}
		if pid == s.pid {
			s.mu.Lock()
			s.done, s.ws = true, ws
			s.mu.Unlock()
			s.cfg.Logf(1, "main child %d ended: %s", pid, describe(ws))
			break
		}
		s.cfg.Logf(2, "reaped pid %d: %s", pid, describe(ws))
	}
	close(stop)
	<-forwarded
	if s.pidfd >= 0 {
		unix.Close(s.pidfd)
		s.pidfd = -1
	}
	return s.ws
}

// reap collects every child that has exited, without blocking.
func (s *Supervisor) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG|unix.WALL, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil { // ECHILD: nothing left to wait for
			s.noChildren = true
			return
		}
		if pid <= 0 {
			return
		}

		s.cfg.Logf(2, "reaped pid %d: %s", pid, describe(ws))
	}
}

// stopSelf stops caw-init after its main child stopped (Ctrl-Z, or a read
// from the terminal in the background), so the shell that runs caw-init as
// a job sees it stopped and takes the terminal back. The SIGCONT that
// resumes caw-init (fg, bg) is forwarded to the child.
func (s *Supervisor) stopSelf(by syscall.Signal) {
	// The group to give the terminal back to: the one that has it now if
	// it is on the child's side (the child's, or a job of a child shell),
	// else the child's own (it stopped reading the terminal from the
	// background, and fg means it should now have it).
	fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	if ppg, perr := unix.Getpgid(os.Getppid()); err != nil || fg == unix.Getpgrp() || (perr == nil && fg == ppg) {
		fg = s.pid
	}
	s.mu.Lock()
	s.stoppedFg = fg
	s.mu.Unlock()
	s.cfg.Logf(1, "main child %d stopped by %s: stopping caw-init too", s.pid, signalName(by))
	if err := syscall.Kill(os.Getpid(), syscall.SIGSTOP); err != nil {
		s.cfg.Logf(0, "cannot stop (%v): the shell will not see the job stopped", err)
	}
}

// resumeForeground gives the terminal back to the group that had it when
// caw-init stopped itself, if caw-init was resumed in the foreground (fg):
// the shell gave the terminal to caw-init's group, not to the child's.
// Called with s.mu held, before SIGCONT is forwarded, so the child does not
// run one instant in the background.
func (s *Supervisor) resumeForeground() {
	fg := s.stoppedFg
	s.stoppedFg = 0
	if fg <= 0 || !foreground(0) {
		return // not stopped by stopSelf, or resumed in the background (bg)
	}
	if err := unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, fg); err != nil {
		s.cfg.Logf(1, "giving the terminal back to group %d: %v", fg, err)
	}
}

func (s *Supervisor) forward(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return
	}
	if sig == syscall.SIGCONT && s.jobControl {
		s.resumeForeground()
	}
	target := s.pid
	var err error
	switch {
	case s.cfg.PGroup:
		target = -s.pid
		err = syscall.Kill(target, sig)
		if errors.Is(err, syscall.ESRCH) {
			// The child left its group (setsid, setpgid): reach it at least.
			target, err = s.pid, syscall.Kill(s.pid, sig)
		}
	case s.pidfd >= 0:
		err = unix.PidfdSendSignal(s.pidfd, sig, nil, 0)
	default:
		err = syscall.Kill(target, sig)
	}
	if err != nil {
		s.cfg.Logf(1, "forward %s to %d: %v", signalName(sig), target, err)
		return
	}
	s.cfg.Logf(1, "forwarded %s to %d", signalName(sig), target)
}

// ExitCode is the shell's view of a wait status: the exit code, or 128+N
// for a death by signal N.
func ExitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

func describe(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + signalName(ws.Signal())
	}
	return fmt.Sprintf("exit %d", ws.ExitStatus())
}
