package pid1

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestExitCode uses real wait statuses from real processes.
func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"kill -TERM $$", 143},
		{"kill -KILL $$", 137},
	} {
		err := exec.Command("/bin/sh", "-c", tc.script).Run()
		var ws syscall.WaitStatus
		if ee, ok := err.(*exec.ExitError); ok {
			ws = ee.Sys().(syscall.WaitStatus)
		} else if err != nil {
			t.Fatal(err)
		}
		if got := ExitCode(ws); got != tc.want {
			t.Errorf("%q: ExitCode = %d, want %d", tc.script, got, tc.want)
		}
	}
}

// TestSignalSets: early, rest and rawSignals together are every catchable
// signal but SIGCHLD, SIGURG and 33 (the Go runtime's), each once; SIGPROF,
// 32 and 34 go through caw-init's own handler.
func TestSignalSets(t *testing.T) {
	all := append(append([]os.Signal{}, early...), rest()...)
	for _, s := range rawSignals {
		all = append(all, s)
	}
	seen := map[os.Signal]bool{}
	for _, s := range all {
		if seen[s] {
			t.Errorf("%v registered twice", s)
		}
		seen[s] = true
	}
	for n := 1; n <= 64; n++ {
		s := syscall.Signal(n)
		excluded := s == unix.SIGKILL || s == unix.SIGSTOP || s == unix.SIGCHLD || s == unix.SIGURG || n == 33
		if seen[s] == excluded {
			t.Errorf("signal %d (%v): captured %v", n, s, seen[s])
		}
	}
	for _, s := range []syscall.Signal{unix.SIGPROF, 32, 34} {
		if !slices.Contains(rawSignals, s) || slices.Contains(rest(), os.Signal(s)) {
			t.Errorf("signal %d: os/signal cannot deliver it, it must be caught by rawHandler", int(s))
		}
	}
	for _, s := range []syscall.Signal{unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGTERM, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH} {
		if !slices.Contains(early, os.Signal(s)) {
			t.Errorf("%v must be captured before start-up goes on", s)
		}
	}
	if !terminates(unix.SIGTERM) || !terminates(syscall.Signal(40)) || terminates(unix.SIGWINCH) || terminates(unix.SIGCONT) {
		t.Error("terminates() disagrees with the default actions")
	}
}

// TestWithoutKept: a signal the caller left ignored is neither registered
// nor caught, so it stays ignored.
func TestWithoutKept(t *testing.T) {
	kept := []syscall.Signal{unix.SIGHUP, unix.SIGTTOU}
	if got := without(early, kept); slices.Contains(got, os.Signal(unix.SIGHUP)) || len(got) != len(early)-1 {
		t.Errorf("without(early) = %v", got)
	}
	if got := without(rest(), kept); slices.Contains(got, os.Signal(unix.SIGTTOU)) || len(got) != len(rest())-1 {
		t.Errorf("without(rest) = %v", got)
	}
}

// TestThroughEntry: the trampoline is taken exactly when the child would not
// inherit the caller's configuration by itself, and never without the hook.
func TestThroughEntry(t *testing.T) {
	hupInt := maskOf(unix.SIGHUP, unix.SIGINT)
	for _, tc := range []struct {
		name             string
		known            bool
		ignored, blocked sigmask
		kept, forkMask   sigmask
		want             bool
	}{
		{"nothing set", true, 0, 0, 0, 0, false},
		{"no hook", false, maskOf(unix.SIGTERM), 0, 0, 0, false},
		{"nohup: SIGHUP, left ignored", true, maskOf(unix.SIGHUP), 0, maskOf(unix.SIGHUP), 0, false},
		{"cmd &: SIGINT left ignored, SIGQUIT caught", true, maskOf(unix.SIGINT, unix.SIGQUIT), 0, maskOf(unix.SIGINT), 0, true},
		{"SIGSEGV ignored", true, maskOf(unix.SIGSEGV), 0, 0, 0, true},
		{"blocked, kept by the thread", true, hupInt, maskOf(unix.SIGUSR2), hupInt, maskOf(unix.SIGUSR2), false},
		{"blocked, unblocked by the runtime", true, 0, maskOf(unix.SIGTERM, unix.SIGUSR2), 0, maskOf(unix.SIGUSR2), true},
	} {
		c := callerConf{known: tc.known, ignored: tc.ignored, blocked: tc.blocked}
		if got := throughEntry(c, tc.kept, tc.forkMask); got != tc.want {
			t.Errorf("%s: throughEntry = %v, want %v", tc.name, got, tc.want)
		}
	}
	if m := maskOf(unix.SIGHUP, 64); !m.has(unix.SIGHUP) || !m.has(64) || m.has(unix.SIGINT) || m.has(0) || m.has(65) || m != 1|1<<63 {
		t.Errorf("maskOf(SIGHUP, 64) = %#x", uint64(m))
	}
	if got := maskOf(unix.SIGHUP, 40).String(); got != "SIGHUP signal 40" {
		t.Errorf("String() = %q", got)
	}
}

// TestDescendants finds a real process tree, including a process whose
// name holds ") " (parsed after the last parenthesis of /proc/PID/stat).
func TestDescendants(t *testing.T) {
	dir := t.TempDir()
	odd := filepath.Join(dir, "a) b (c")
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(odd, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `"$0" 100 & sleep 100 & echo started; wait`, odd)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Process.Kill()
		cmd.Wait()
	}()
	buf := make([]byte, 8)
	out.Read(buf) // "started": both children exist
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err := descendants(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		var kids int
		for _, p := range pids {
			if ppid, ok := parentOf(p); ok && ppid == cmd.Process.Pid {
				kids++
			}
		}
		if slices.Contains(pids, cmd.Process.Pid) && kids == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("descendants %v: want the shell %d and its 2 children", pids, cmd.Process.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
