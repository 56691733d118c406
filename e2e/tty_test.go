package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// term is a docker client running under a pseudo-terminal, as a user's
// terminal runs `docker run -it`.
type term struct {
	t    *testing.T
	f    *os.File
	cmd  *exec.Cmd
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan error
}

func startTerm(t *testing.T, args ...string) *term {
	t.Helper()
	cmd := exec.Command("docker", noPull(args)...)
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Fatalf("start docker under a pty: %v", err)
	}
	tm := &term{t: t, f: f, cmd: cmd, done: make(chan error, 1)}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := f.Read(b)
			tm.mu.Lock()
			tm.buf.Write(b[:n])
			tm.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() { tm.done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		f.Close()
	})
	return tm
}

func (tm *term) output() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.buf.String()
}

// expect waits for substr in the terminal output after position from, and
// returns the position after it.
func (tm *term) expect(from int, substr string, timeout time.Duration) int {
	tm.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := tm.output()
		if from > len(out) {
			from = len(out)
		}
		if i := strings.Index(out[from:], substr); i >= 0 {
			return from + i + len(substr)
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("%q not on the terminal within %s; terminal so far:\n%s", substr, timeout, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (tm *term) send(s string) {
	tm.t.Helper()
	if _, err := tm.f.WriteString(s); err != nil {
		tm.t.Fatalf("write to the terminal: %v", err)
	}
}

// exit waits for the docker client to end and returns its status.
func (tm *term) exit(timeout time.Duration) int {
	tm.t.Helper()
	select {
	case err := <-tm.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			tm.t.Fatalf("docker: %v", err)
		}
		return 0
	case <-time.After(timeout):
		tm.t.Fatalf("docker did not exit within %s; terminal:\n%s", timeout, tm.output())
	}
	return -1
}

// waitForeground waits until a process running exactly argv exists on this
// machine (containers' processes are visible from the host) and owns its
// terminal's foreground process group: what job control hands a job.
func waitForeground(t *testing.T, argv []string, timeout time.Duration) int {
	t.Helper()
	want := strings.Join(argv, "\x00") + "\x00"
	deadline := time.Now().Add(timeout)
	for {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			cmdline, err := os.ReadFile(p)
			if err != nil || string(cmdline) != want {
				continue
			}
			stat, err := os.ReadFile(filepath.Join(filepath.Dir(p), "stat"))
			if err != nil {
				continue
			}
			// Fields after "(comm)": state ppid pgrp session tty_nr tpgid ...
			f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
			if len(f) > 5 && f[2] == f[5] {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no process %q in its terminal's foreground within %s", strings.Join(argv, " "), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Case 4: `docker run -it` through a pty: an interactive shell with job
// control (a job gets the terminal's foreground, Ctrl-C ends that job with
// 130 and not the shell), and `exit 0` gives 0; Ctrl-C to a foreground
// command run directly gives 130.
func TestTTY(t *testing.T) {
	s := need(t)
	h := newHome(t, s, 4242, 4242, 0o640)
	h.setup(t)
	flags := h.flags(t)

	t.Run("shell", func(t *testing.T) {
		tm := startTerm(t, append(append([]string{"run", "-it", "--rm"}, flags...), s.testImage, "sh")...)
		pos := tm.expect(0, "$ ", 30*time.Second)
		tm.send("sleep 4711 &\n")
		pos = tm.expect(pos, "$ ", 5*time.Second)
		tm.send("jobs\n")
		pos = tm.expect(pos, "Running", 5*time.Second)
		tm.send("kill %1\n")
		pos = tm.expect(pos, "$ ", 5*time.Second)
		tm.send("sleep 4712\n")
		waitForeground(t, []string{"sleep", "4712"}, 10*time.Second)
		tm.send("\x03")
		tm.send("echo rc=$?\n")
		pos = tm.expect(pos, "rc=130", 5*time.Second)
		tm.send("exit 0\n")
		code := tm.exit(30 * time.Second)
		t.Logf("terminal:\n%s", tm.output())
		if strings.Contains(tm.output(), "job control turned off") {
			t.Errorf("the shell has no job control")
		}
		if code != 0 {
			t.Errorf("exit 0 in the shell gave %d", code)
		}
	})

	t.Run("ctrl-c", func(t *testing.T) {
		tm := startTerm(t, append(append([]string{"run", "-it", "--rm"}, flags...), s.testImage, "sleep", "4713")...)
		waitForeground(t, []string{"sleep", "4713"}, 30*time.Second)
		tm.send("\x03")
		if code := tm.exit(30 * time.Second); code != 130 {
			t.Errorf("Ctrl-C gave exit %d, want 130\n%s", code, tm.output())
		}
	})
}
