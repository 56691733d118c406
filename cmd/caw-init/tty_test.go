package main

import (
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// term is the master side of a pty whose slave is caw-init's terminal.
type term struct {
	t      *testing.T
	master io.ReadWriteCloser
	mu     sync.Mutex
	buf    strings.Builder
	more   chan struct{} // a token after each read
}

func openTerm(t *testing.T) (*term, launch) {
	t.Helper()
	master, slave, err := pty.Open()
	must(t, err)
	tm := &term{t: t, master: master, more: make(chan struct{}, 1)}
	t.Cleanup(func() { master.Close() })
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			tm.mu.Lock()
			tm.buf.Write(b[:n])
			tm.mu.Unlock()
			select {
			case tm.more <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return tm, launch{root: rootfs(t), tty: slave}
}

func (tm *term) String() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.buf.String()
}

func (tm *term) write(s string) {
	tm.t.Helper()
	if _, err := tm.master.Write([]byte(s)); err != nil {
		tm.t.Fatalf("write to terminal: %v", err)
	}
}

// waitFor waits until the terminal output matches re and returns the
// submatches of the first match after offset from.
func (tm *term) waitFor(re *regexp.Regexp, from int) ([]string, int) {
	tm.t.Helper()
	deadline := time.NewTimer(runTimeout)
	defer deadline.Stop()
	for {
		s := tm.String()
		if from <= len(s) {
			if loc := re.FindStringSubmatchIndex(s[from:]); loc != nil {
				m := make([]string, 0, len(loc)/2)
				for i := 0; i < len(loc); i += 2 {
					m = append(m, s[from+loc[i]:from+loc[i+1]])
				}
				return m, from + loc[1]
			}
		}
		select {
		case <-tm.more:
		case <-deadline.C:
			tm.t.Fatalf("terminal never showed %v; it shows:\n%q", re, s)
		}
	}
}

// statRe picks pid, pgrp and tpgid out of a /proc/PID/stat line echoed
// after a marker: "pid (comm) state ppid pgrp session tty_nr tpgid ...".
func statRe(marker string) *regexp.Regexp {
	return regexp.MustCompile(marker + `: (\d+) \([^)]*\) \S+ \d+ (\d+) \d+ \d+ (-?\d+) `)
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	must(t, err)
	return n
}

// TestTTYForegroundAndCtrlC: with a terminal on stdin the child runs in its
// own process group, which is the terminal's foreground group; Ctrl-C
// reaches it from the terminal and caw-init exits 130.
func TestTTYForegroundAndCtrlC(t *testing.T) {
	tm, r := openTerm(t)
	r.args = []string{"--", "sh", "-c", `read -r l < /proc/$$/stat; echo "child-stat: $l"; exec sleep 1000`}
	p := start(t, r)
	r.tty.Close()
	m, _ := tm.waitFor(statRe("child-stat"), 0)
	pid, pgrp, tpgid := atoi(t, m[1]), atoi(t, m[2]), atoi(t, m[3])
	if pgrp != pid || tpgid != pgrp || pgrp == 1 {
		t.Errorf("child pid %d pgrp %d, terminal foreground %d: want its own group (not caw-init's, 1) in the foreground", pid, pgrp, tpgid)
	}
	tm.write("\x03")
	if code := p.wait(); code != 130 {
		t.Errorf("Ctrl-C: exit %d, want 130; terminal:\n%q", code, tm)
	}
}

// TestTTYInteractiveShell: `sh -i` under caw-init has job control (a job
// gets its own foreground group), Ctrl-C ends the job with 130 while the
// shell lives on, and `exit 0` typed at the prompt exits 0.
func TestTTYInteractiveShell(t *testing.T) {
	tm, r := openTerm(t)
	r.env = append([]string{"PS1=PROMPT> "}, baseEnv...)
	r.args = []string{"--", "sh", "-i"}
	p := start(t, r)
	r.tty.Close()
	prompt := regexp.MustCompile(`PROMPT> `)
	_, at := tm.waitFor(prompt, 0)

	tm.write(`read -r l < /proc/$$/stat; echo "shell-stat: $l"` + "\n")
	m, at := tm.waitFor(statRe("shell-stat"), at)
	shellPid, shellPgrp := atoi(t, m[1]), atoi(t, m[2])
	if shellPgrp != shellPid || atoi(t, m[3]) != shellPgrp {
		t.Errorf("shell pid %d pgrp %d foreground %s: want its own foreground group", shellPid, shellPgrp, m[3])
	}
	_, at = tm.waitFor(prompt, at)

	tm.write(`sh -c 'read -r l < /proc/$$/stat; echo "job-stat: $l"; exec sleep 1000'` + "\n")
	m, at = tm.waitFor(statRe("job-stat"), at)
	jobPid, jobPgrp, fg := atoi(t, m[1]), atoi(t, m[2]), atoi(t, m[3])
	if jobPgrp != jobPid || jobPgrp == shellPgrp || fg != jobPgrp {
		t.Errorf("job pid %d pgrp %d foreground %d (shell pgrp %d): want job control, the job in its own foreground group", jobPid, jobPgrp, fg, shellPgrp)
	}
	tm.write("\x03")
	_, at = tm.waitFor(prompt, at)
	tm.write(`echo "rc=$?"` + "\n")
	_, at = tm.waitFor(regexp.MustCompile(`rc=130`), at)
	_, _ = tm.waitFor(prompt, at)
	tm.write("exit 0\n")
	if code := p.wait(); code != 0 {
		t.Errorf("exit 0 typed: caw-init exit %d; terminal:\n%q", code, tm)
	}
	if strings.Contains(tm.String(), "job control turned off") {
		t.Errorf("the shell has no job control:\n%q", tm)
	}
}
