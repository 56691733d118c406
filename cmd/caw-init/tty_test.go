package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/caw-dev/caw/internal/testenv"
)

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
	tm, slave := testenv.OpenTerm(t)
	r := launch{root: rootfs(t), tty: slave}
	r.args = []string{"--", "sh", "-c", `read -r l < /proc/$$/stat; echo "child-stat: $l"; exec sleep 1000`}
	p := start(t, r)
	r.tty.Close()
	m, _ := tm.Match(statRe("child-stat"), 0, runTimeout)
	pid, pgrp, tpgid := atoi(t, m[1]), atoi(t, m[2]), atoi(t, m[3])
	if pgrp != pid || tpgid != pgrp || pgrp == 1 {
		t.Errorf("child pid %d pgrp %d, terminal foreground %d: want its own group (not caw-init's, 1) in the foreground", pid, pgrp, tpgid)
	}
	tm.Write("\x03")
	if code := p.wait(); code != 130 {
		t.Errorf("Ctrl-C: exit %d, want 130; terminal:\n%q", code, tm)
	}
}

// TestTTYInteractiveShell: `sh -i` under caw-init has job control (a job
// gets its own foreground group), Ctrl-C ends the job with 130 while the
// shell lives on, and `exit 0` typed at the prompt exits 0.
func TestTTYInteractiveShell(t *testing.T) {
	tm, slave := testenv.OpenTerm(t)
	r := launch{root: rootfs(t), tty: slave}
	r.env = append([]string{"PS1=PROMPT> "}, baseEnv...)
	r.args = []string{"--", "sh", "-i"}
	p := start(t, r)
	r.tty.Close()
	prompt := regexp.MustCompile(`PROMPT> `)
	_, at := tm.Match(prompt, 0, runTimeout)

	tm.Write(`read -r l < /proc/$$/stat; echo "shell-stat: $l"` + "\n")
	m, at := tm.Match(statRe("shell-stat"), at, runTimeout)
	shellPid, shellPgrp := atoi(t, m[1]), atoi(t, m[2])
	if shellPgrp != shellPid || atoi(t, m[3]) != shellPgrp {
		t.Errorf("shell pid %d pgrp %d foreground %s: want its own foreground group", shellPid, shellPgrp, m[3])
	}
	_, at = tm.Match(prompt, at, runTimeout)

	tm.Write(`sh -c 'read -r l < /proc/$$/stat; echo "job-stat: $l"; exec sleep 1000'` + "\n")
	m, at = tm.Match(statRe("job-stat"), at, runTimeout)
	jobPid, jobPgrp, fg := atoi(t, m[1]), atoi(t, m[2]), atoi(t, m[3])
	if jobPgrp != jobPid || jobPgrp == shellPgrp || fg != jobPgrp {
		t.Errorf("job pid %d pgrp %d foreground %d (shell pgrp %d): want job control, the job in its own foreground group", jobPid, jobPgrp, fg, shellPgrp)
	}
	tm.Write("\x03")
	_, at = tm.Match(prompt, at, runTimeout)
	tm.Write(`echo "rc=$?"` + "\n")
	_, at = tm.Match(regexp.MustCompile(`rc=130`), at, runTimeout)
	_, _ = tm.Match(prompt, at, runTimeout)
	tm.Write("exit 0\n")
	if code := p.wait(); code != 0 {
		t.Errorf("exit 0 typed: caw-init exit %d; terminal:\n%q", code, tm)
	}
	if strings.Contains(tm.String(), "job control turned off") {
		t.Errorf("the shell has no job control:\n%q", tm)
	}
}
