package testenv

import (
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
)

// WaitFor waits until cond holds, re-checking it on every inotify event on
// paths (and every 5 ms), and fails the test after 10 seconds.
func WaitFor(t testing.TB, what string, cond func() bool, paths ...string) {
	t.Helper()
	if err := harness.WaitFor(time.Now().Add(10*time.Second), cond, paths...); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
