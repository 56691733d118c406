package e2e

import (
	"context"
	"strings"
	"testing"
	"time"
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

	// The default CMD is an interactive bash that exits cleanly on EOF.
	out := docker(t, append(append([]string{"run", "--rm", "-i"}, h.flags(t)...), tag)...)
	if out.code != 0 {
		t.Errorf("docker run -i %s (default CMD) with closed stdin: %s", tag, out)
	}
}
