// Package testenv holds what caw's tests need from the machine: root, Linux
// namespaces, Docker, Debian's static busybox, and static builds of caw's own
// commands. A missing requirement fails the test with a line saying what to
// install, because a test that can only skip guards nothing; set
// CAW_TEST_ALLOW_SKIP=1 to skip instead on a machine that cannot run them.
package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/caw-dev/caw/internal/initbuild"
)

// missing fails (or, with CAW_TEST_ALLOW_SKIP=1, skips) the test.
func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CAW_TEST_ALLOW_SKIP") == "1" {
		t.Skip("skipped (CAW_TEST_ALLOW_SKIP=1): " + what)
	}
	t.Fatal(what + " (set CAW_TEST_ALLOW_SKIP=1 to skip such tests on a machine without it)")
}

// RequireRoot needs uid 0: bind mounts, namespaces, chown, privilege drop.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "this test needs root (run the suite as root, as CI does)")
	}
}

// RequireDocker needs a reachable Docker Engine.
func RequireDocker(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		missing(t, "this test needs Docker: install docker.io and start the daemon")
	}
	if out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		missing(t, "this test needs a running Docker daemon: "+strings.TrimSpace(string(out)))
	}
}

// LookPath finds a command from a Debian package, or fails naming the package.
func LookPath(t testing.TB, cmd, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(cmd)
	if err != nil {
		missing(t, "this test needs "+cmd+": apt-get install "+pkg)
	}
	return p
}

// Busybox is the path of a static busybox (Debian's busybox-static).
func Busybox(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if isStatic(p) {
			return p
		}
	}
	missing(t, "this test needs a static busybox: apt-get install busybox-static")
	return ""
}

// isStatic reports whether an ELF file has no program interpreter.
func isStatic(p string) bool {
	data, err := os.ReadFile(p)
	if err != nil {
		return false
	}
	return !strings.Contains(string(data[:min(len(data), 4096)]), "/lib64/ld-linux")
}

var buildMu sync.Mutex

// Build compiles the main package pkg (an import path such as
// github.com/caw-dev/caw/cmd/caw-init) as a static binary, once per test
// binary and source tree, and returns its path. caw-init is linked as a
// release is (internal/initbuild).
func Build(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	root := ModuleRoot(t)
	sum := sha256.Sum256([]byte(root + "\x00" + pkg))
	dir := filepath.Join(os.TempDir(), "caw-test-bin", hex.EncodeToString(sum[:8]))
	out := filepath.Join(dir, filepath.Base(pkg))
	if p, ok := built.Load(out); ok {
		return p.(string)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := out + ".tmp." + strconv.Itoa(os.Getpid()) + "." + strings.ReplaceAll(t.Name(), "/", "_")
	ldflags := "-s -w"
	if pkg == "github.com/caw-dev/caw/cmd/caw-init" {
		ldflags = initbuild.LDFlags
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags="+ldflags, "-o", tmp, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatal(err)
	}
	built.Store(out, out)
	return out
}

var built sync.Map

// ModuleRoot is the directory holding caw's go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testenv: cannot locate the module root")
	}
	return filepath.Dir(filepath.Dir(filepath.Dir(file)))
}

// TortureFull reports whether CAW_TORTURE=full asks the torture and storm
// tests for the counts docs/FIGURES.md quotes; otherwise they run a bounded
// form sized for CI. It is the one knob for their size.
func TortureFull() bool { return os.Getenv("CAW_TORTURE") == "full" }

// Rounds is bounded, or full under CAW_TORTURE=full.
func Rounds(bounded, full int) int {
	if TortureFull() {
		return full
	}
	return bounded
}
