package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/testenv"
)

// Case 8: Dockerfile.example, built exactly as written after the caw image
// (itself built from the root Dockerfile), runs the journey of case 2. The
// fake agent is mounted in: the example image holds only what a user writes.
func TestDockerfileExample(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	tag, err := s.b.ExampleImage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := newHome(t, s, 4242, 4242, 0o640)
	h.setup(t)
	c := start(t, append(h.flags(t), "-v", s.agent+":/usr/local/bin/fake-agent:ro", tag,
		"bash", "-c", "id; echo started; exec sleep 1000")...)
	r := c.waitLog("started", 60*time.Second)
	if !strings.Contains(r.stdout, "uid=1000(playground)") {
		t.Errorf("the example's CMD does not run as playground:\n%s", r)
	}
	refreshJourney(t, c, h)

	// Issue 10, finding 6: without the staging mount and without CAW_USER
	// given, the command still runs as playground (the image sets
	// CAW_USER), never as root; a /tmp/caw_auth the container made itself
	// is ignored with one line.
	out := docker(t, "run", "--rm", tag, "id", "-u")
	if out.code != 0 || strings.TrimSpace(out.stdout) != "1000" {
		t.Errorf("docker run %s id -u without the staging mount: %s, want 1000", tag, out)
	}
	out = docker(t, "run", "--rm", "--entrypoint", "bash", tag, "-c",
		"mkdir -p /tmp/caw_auth && echo '{}' > /tmp/caw_auth/manifest.json && exec caw-init -- id -u")
	if out.code != 0 || strings.TrimSpace(out.stdout) != "1000" || !strings.Contains(out.stderr, "$(caw docker-flags)") {
		t.Errorf("a planted /tmp/caw_auth: %s, want 1000 and one line naming $(caw docker-flags)", out)
	}

	// The default CMD is an interactive bash that exits cleanly on EOF.
	out = docker(t, append(append([]string{"run", "--rm", "-i"}, h.flags(t)...), tag)...)
	if out.code != 0 {
		t.Errorf("docker run -i %s (default CMD) with closed stdin: %s", tag, out)
	}
}

// The caw image holds exactly the two static binaries, and both run in an
// otherwise empty image.
func TestCawImage(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	img, err := s.b.CawImage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(must(t, time.Minute, "docker", "create", img))
	t.Cleanup(func() { docker(t, "rm", "-f", id) })
	files := must(t, time.Minute, "sh", "-c", "docker export "+id+" | tar -t | grep -v -E '^(dev|proc|sys|etc)/|^\\.dockerenv$|^(dev|proc|sys|etc)/?$' | sort")
	if got := strings.Fields(files); strings.Join(got, " ") != "caw caw-init" {
		t.Errorf("caw image files: %q, want caw and caw-init only", got)
	}
	if out := docker(t, "run", "--rm", img, "version"); out.code != 0 || out.stdout == "" {
		t.Errorf("caw version in the caw image: %s", out)
	}
	if out := docker(t, "run", "--rm", "--entrypoint", "/caw-init", img, "--", "/caw", "version"); out.code != 0 {
		t.Errorf("caw-init -- /caw version in the caw image: %s", out)
	}
	t.Logf("%s", must(t, time.Minute, "docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}", "caw"))
}

// The README's demo runs to its end.
func TestDemo(t *testing.T) {
	need(t)
	r := run(t, 10*time.Minute, "go", "-C", testenv.ModuleRoot(t), "run", "./demo")
	if r.code != 0 || !strings.Contains(r.stdout, "== Done") {
		t.Fatalf("go run ./demo: %s", r)
	}
}
