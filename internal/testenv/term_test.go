package testenv

import (
	"os/exec"
	"regexp"
	"testing"
	"time"
)

func TestTermTypesAndReads(t *testing.T) {
	tm := StartTerm(t, exec.Command("sh", "-c", `read -r l; echo "got:$l"; exit 3`))
	tm.Write("hi there\n")
	m, _ := tm.Match(regexp.MustCompile(`got:(\w+) (\w+)`), 0, 10*time.Second)
	if m[1] != "hi" || m[2] != "there" {
		t.Fatalf("submatches %q", m)
	}
	if code := tm.Exit(10 * time.Second); code != 3 {
		t.Fatalf("exit %d, want 3", code)
	}
}
