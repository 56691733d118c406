package testenv

import (
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// Term is the master side of a pseudo-terminal, as a user's terminal: what
// a test types, and everything the process on the other side printed.
type Term struct {
	t      testing.TB
	master *os.File
	mu     sync.Mutex
	buf    strings.Builder
	more   chan struct{} // a token after each read
	done   chan error    // StartTerm's command's exit
}

// OpenTerm opens a pty and returns its master side and its slave, the
// terminal to hand the process under test. The master closes when the test
// ends.
func OpenTerm(t testing.TB) (*Term, *os.File) {
	t.Helper()
	master, slave, err := pty.Open()
	if err != nil {
		t.Fatalf("open a pty: %v", err)
	}
	return newTerm(t, master), slave
}

// StartTerm starts cmd with a new 40x120 pty as its controlling terminal;
// it is killed when the test ends.
func StartTerm(t testing.TB, cmd *exec.Cmd) *Term {
	t.Helper()
	master, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 120})
	if err != nil {
		t.Fatalf("start %s under a pty: %v", cmd.Path, err)
	}
	tm := newTerm(t, master)
	tm.done = make(chan error, 1)
	go func() { tm.done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	return tm
}

func newTerm(t testing.TB, master *os.File) *Term {
	tm := &Term{t: t, master: master, more: make(chan struct{}, 1)}
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
	return tm
}

// String is everything the terminal showed so far.
func (tm *Term) String() string {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	return tm.buf.String()
}

// Write types s.
func (tm *Term) Write(s string) {
	tm.t.Helper()
	if _, err := tm.master.WriteString(s); err != nil {
		tm.t.Fatalf("write to the terminal: %v", err)
	}
}

// Match waits until the output after offset from matches re, and returns
// the submatches of the first match and the offset after it.
func (tm *Term) Match(re *regexp.Regexp, from int, timeout time.Duration) ([]string, int) {
	tm.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s := tm.String()
		from = min(from, len(s))
		if loc := re.FindStringSubmatchIndex(s[from:]); loc != nil {
			m := make([]string, 0, len(loc)/2)
			for i := 0; i < len(loc); i += 2 {
				m = append(m, s[from+loc[i]:from+loc[i+1]])
			}
			return m, from + loc[1]
		}
		select {
		case <-tm.more:
		case <-deadline.C:
			tm.t.Fatalf("the terminal did not show %v within %s; it shows:\n%s", re, timeout, s)
		}
	}
}

// Expect waits until substr shows after offset from, and returns the
// offset after it.
func (tm *Term) Expect(from int, substr string, timeout time.Duration) int {
	tm.t.Helper()
	_, end := tm.Match(regexp.MustCompile(regexp.QuoteMeta(substr)), from, timeout)
	return end
}

// Exit waits for StartTerm's command to end and returns its exit status.
func (tm *Term) Exit(timeout time.Duration) int {
	tm.t.Helper()
	select {
	case err := <-tm.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			tm.t.Fatalf("%v", err)
		}
		return 0
	case <-time.After(timeout):
		tm.t.Fatalf("the command did not exit within %s; terminal:\n%s", timeout, tm.String())
	}
	return -1
}
