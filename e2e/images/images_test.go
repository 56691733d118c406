package images

import (
	"context"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/testenv"
)

func builder(t *testing.T) *Builder {
	testenv.RequireRoot(t)
	testenv.RequireDocker(t)
	return New(testenv.ModuleRoot(t), os.Stderr)
}

func dockerRun(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", append([]string{"run", "--rm"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker run %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// The base images the Dockerfiles name exist under those names and are what
// they claim: Debian 12, and a Go toolchain matching this machine's that can
// reach the module proxy (its CA bundle is in place).
func TestBaseImages(t *testing.T) {
	b := builder(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if _, err := b.GolangImage(ctx); err != nil {
		t.Fatal(err)
	}
	if out := dockerRun(t, Debian, "cat", "/etc/debian_version"); !strings.HasPrefix(out, "12.") {
		t.Errorf("%s is not Debian 12: %q", Debian, out)
	}
	out := dockerRun(t, Golang, "sh", "-c", "go version && go env GOTOOLCHAIN && test -s /etc/ssl/certs/ca-certificates.crt && echo ca-ok")
	if !strings.Contains(out, runtime.Version()) || !strings.Contains(out, "local") || !strings.Contains(out, "ca-ok") {
		t.Errorf("%s: want %s, GOTOOLCHAIN=local and a CA bundle, got:\n%s", Golang, runtime.Version(), out)
	}
	// A second call finds them present and is quick.
	begin := time.Now()
	if _, err := b.GolangImage(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > 20*time.Second {
		t.Errorf("a present image was rebuilt (%s)", d)
	}
}
