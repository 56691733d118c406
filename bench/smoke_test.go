package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caw-dev/caw/internal/testenv"
)

// TestQuickBenchRuns builds the bench and runs `bench --quick` end to end
// against the real caw-init and peers, so a broken bench fails CI. It checks
// that every row is there and that none errored; the goals and the lost
// counts are figures, not pass/fail conditions on a shared CI machine.
func TestQuickBenchRuns(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.Busybox(t)
	for _, c := range [][2]string{{"tini", "tini"}, {"dumb-init", "dumb-init"}, {"inotifywait", "inotify-tools"}, {"unshare", "util-linux"}, {"bindfs", "bindfs"}} {
		testenv.LookPath(t, c[0], c[1])
	}
	cawInit := testenv.Build(t, "github.com/caw-dev/caw/cmd/caw-init")
	bin := filepath.Join(t.TempDir(), "bench")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./bench: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--quick", "--caw-init", cawInit).CombinedOutput()
	t.Logf("bench --quick:\n%s", out)
	if err != nil {
		t.Fatalf("bench --quick: %v", err)
	}
	text := string(out)
	for _, want := range []string{
		"X -- /bin/true", "reap 1000 orphans", "sync host->container, in place", "sync container->host, in place",
		"rename in home", "rename on host", "fan-out", "caw-init x64", "idle: CPU time", "idle: wake-ups", "idle: RSS",
		"binary size", "logins (claude): host + 4 containers", "logins (codex)", "logins (gemini)", "logins (opencode)", "plain copies, no caw", "caw with lock mirroring", "poll: idle CPU per minute", "poll: host->container via FUSE, in place", "poll: host->container via FUSE, rename",
		"tini-static", "dumb-init", "shell guard", "floor (bare inotify copier)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("bench output lacks %q", want)
		}
	}
	for _, bad := range []string{"ERROR", "FAILED", "could not be built", "not found: apt-get"} {
		if strings.Contains(text, bad) {
			t.Errorf("bench output reports %q", bad)
		}
	}
	// Lost writes are a figure here (a write slower than 1 s on a loaded CI
	// machine counts as lost); ./torture fails on real losses.
}
