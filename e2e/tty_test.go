package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/testenv"
)

// startTerm runs the docker client under a pseudo-terminal, as a user's
// terminal runs `docker run -it`.
func startTerm(t *testing.T, args ...string) *testenv.Term {
	t.Helper()
	return testenv.StartTerm(t, exec.Command("docker", noPull(args)...))
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
		pos := tm.Expect(0, "$ ", 30*time.Second)
		tm.Write("sleep 4711 &\n")
		pos = tm.Expect(pos, "$ ", 5*time.Second)
		tm.Write("jobs\n")
		pos = tm.Expect(pos, "Running", 5*time.Second)
		tm.Write("kill %1\n")
		pos = tm.Expect(pos, "$ ", 5*time.Second)
		tm.Write("sleep 4712\n")
		waitForeground(t, []string{"sleep", "4712"}, 10*time.Second)
		tm.Write("\x03")
		tm.Write("echo rc=$?\n")
		pos = tm.Expect(pos, "rc=130", 5*time.Second)
		tm.Write("exit 0\n")
		code := tm.Exit(30 * time.Second)
		t.Logf("terminal:\n%s", tm.String())
		if strings.Contains(tm.String(), "job control turned off") {
			t.Errorf("the shell has no job control")
		}
		if code != 0 {
			t.Errorf("exit 0 in the shell gave %d", code)
		}
	})

	t.Run("ctrl-c", func(t *testing.T) {
		tm := startTerm(t, append(append([]string{"run", "-it", "--rm"}, flags...), s.testImage, "sleep", "4713")...)
		waitForeground(t, []string{"sleep", "4713"}, 30*time.Second)
		tm.Write("\x03")
		if code := tm.Exit(30 * time.Second); code != 130 {
			t.Errorf("Ctrl-C gave exit %d, want 130\n%s", code, tm.String())
		}
	})
}
