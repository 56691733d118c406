package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/caw-dev/caw/e2e/images"
	"github.com/caw-dev/caw/internal/fakeagent"
)

// cawLines are caw-init's own lines on stderr (the child's are the test's).
func cawLines(stderr string) []string {
	var out []string
	for _, l := range lines(stderr) {
		if strings.HasPrefix(l, "caw-init") {
			out = append(out, l)
		}
	}
	return out
}

// Case 7: each bad set-up gives one clear line and either a running
// container or a documented exit status.
func TestBadSetups(t *testing.T) {
	s := need(t)

	// No staging dir mounted at all: the image still works as a plain init.
	t.Run("no-manifest", func(t *testing.T) {
		r := docker(t, "run", "--rm", s.testImage, "sh", "-c", "id -u; echo ran")
		t.Logf("%s", r)
		if r.code != 0 || !strings.Contains(r.stdout, "ran") {
			t.Fatalf("the command did not run: %s", r)
		}
		if n := len(cawLines(r.stderr)); n > 1 {
			t.Errorf("%d caw-init lines, want at most one:\n%s", n, r.stderr)
		}
	})

	// The staging dir without the credential mounts (the original tool's
	// silent failure): say which mount is missing, never sync against the
	// staging placeholder.
	t.Run("manifest-without-credential-mounts", func(t *testing.T) {
		h := newHome(t, s, 4242, 4242, 0o640)
		h.setup(t)
		flags := h.flags(t)
		r := docker(t, "run", "--rm", flags[0], flags[1], s.testImage, "sh", "-c", "id; echo ran; cat $HOME/.codex/auth.json 2>&1 | head -c 200")
		t.Logf("%s", r)
		// One line per credential left without its mount (here both), each
		// naming the mount and the fix.
		cl := cawLines(r.stderr)
		if len(cl) == 0 || len(cl) > 2 {
			t.Errorf("want one caw-init line per missing credential mount, got %d:\n%s", len(cl), r.stderr)
		}
		for _, l := range cl {
			if !strings.Contains(l, "mount") || !strings.Contains(l, "docker-flags") {
				t.Errorf("the line does not say what is missing and how to fix it: %s", l)
			}
		}
		if r.code == 0 && strings.Contains(r.stdout, h.codexTok) {
			t.Errorf("a credential reached the home without its mount")
		}
	})

	// An unknown user is refused with exit 2 and a line naming it, from the
	// flag and from CAW_USER.
	t.Run("unknown-user", func(t *testing.T) {
		h := newHome(t, s, 4242, 4242, 0o640)
		h.setup(t)
		flags := h.flags(t)
		for _, args := range [][]string{
			append(append(append([]string{"run", "--rm"}, flags...), "--entrypoint", "/usr/local/bin/caw-init", s.testImage), "--user", "nosuchuser", "--", "id"),
			append(append(append([]string{"run", "--rm"}, flags...), "-e", "CAW_USER=nosuchuser"), s.testImage, "id"),
		} {
			r := docker(t, args...)
			t.Logf("%s", r)
			if r.code != 2 {
				t.Errorf("exit %d for an unknown user, want 2", r.code)
			}
			if cl := cawLines(r.stderr); len(cl) != 1 || !strings.Contains(cl[0], "nosuchuser") {
				t.Errorf("want one caw-init line naming nosuchuser:\n%s", r.stderr)
			}
			if strings.Contains(r.stdout, "uid=") {
				t.Errorf("the command ran anyway")
			}
		}
	})

	// docker run --user 1000: caw-init is not root, so there is no drop; the
	// host files are the user's own, so sync still works both ways. A
	// non-root caw-init cannot traverse the lock dirs, so this needs
	// caw setup --unlocked-mounts.
	t.Run("docker-user-1000", func(t *testing.T) {
		h := newHome(t, s, images.TestUID, images.TestGID, 0o600)
		h.setupAsOwner(t, "--unlocked-mounts")
		c := start(t, append(h.flags(t), "--user", "1000", s.testImage, "sh", "-c", "id; echo started; exec sleep 1000")...)
		r := c.waitLog("started", 30*time.Second)
		if !strings.Contains(r.stdout, "uid=1000(playground)") {
			t.Errorf("not running as 1000: %s", r)
		}
		if cl := cawLines(r.stderr); len(cl) > 1 {
			t.Errorf("want at most one caw-init line:\n%s", r.stderr)
		}
		refreshJourney(t, c, h)
	})

	// docker run --user 1000 on locked mounts (the default): caw-init cannot
	// reach the credential mounts, so nothing is synced; the command still
	// runs and caw-init says so, one line per credential.
	t.Run("docker-user-1000-locked-mounts", func(t *testing.T) {
		h := newHome(t, s, images.TestUID, images.TestGID, 0o600)
		h.setupAsOwner(t)
		r := docker(t, append(append([]string{"run", "--rm"}, h.flags(t)...), "--user", "1000", s.testImage,
			"sh", "-c", "echo ran; cat $HOME/.codex/auth.json 2>&1 | head -c 300")...)
		t.Logf("%s", r)
		if r.code != 0 || !strings.Contains(r.stdout, "ran") {
			t.Errorf("exit %d, want the command to run", r.code)
		}
		if strings.Contains(r.stdout, h.codexTok) {
			t.Errorf("a non-root caw-init synced through a lock dir")
		}
		cl := cawLines(r.stderr)
		if len(cl) == 0 || len(cl) > 2 {
			t.Errorf("want one caw-init line per credential it cannot reach, got %d:\n%s", len(cl), r.stderr)
		}
		for _, l := range cl {
			if !strings.Contains(l, "caw setup --unlocked-mounts") {
				t.Errorf("the line does not name the fix (caw setup --unlocked-mounts): %s", l)
			}
		}
	})

	// docker run --user 1000 with a staging dir only root can read (caw
	// setup was run by root): a documented exit 2 naming the manifest,
	// before anything runs.
	t.Run("docker-user-1000-unreadable-staging", func(t *testing.T) {
		h := newHome(t, s, 4242, 4242, 0o640)
		h.setup(t)
		r := docker(t, append(append([]string{"run", "--rm"}, h.flags(t)...), "--user", "1000", s.testImage, "echo", "ran")...)
		t.Logf("%s", r)
		if r.code != 2 || strings.Contains(r.stdout, "ran") {
			t.Errorf("exit %d, want 2 without running the command", r.code)
		}
		if cl := cawLines(r.stderr); len(cl) != 1 || !strings.Contains(cl[0], "manifest.json") {
			t.Errorf("want one caw-init line naming manifest.json:\n%s", r.stderr)
		}
	})

	// A credential mounted read-only: the container starts with the login,
	// host refreshes still arrive, a container refresh cannot reach the host
	// and caw-init says so in one line instead of dying or retrying loudly.
	t.Run("read-only-credential", func(t *testing.T) {
		h := newHome(t, s, 4242, 4242, 0o640)
		h.setup(t)
		flags := h.flags(t)
		for i := 1; i < len(flags); i += 2 {
			if flags[i-1] == "-v" && !strings.HasSuffix(flags[i], ":ro") {
				flags[i] = strings.TrimSuffix(flags[i], ":rw") + ":ro"
			}
		}
		c := start(t, append(flags, s.testImage, "sh", "-c", "echo started; exec sleep 1000")...)
		c.waitLog("started", 30*time.Second)
		awaitToken(t, fakeagent.Codex, c.homeFile(".codex/auth.json"), h.codexTok, 5*time.Second)
		tok := "host-ro-" + rnd()
		h.writeHost(t, fakeagent.Codex, tok, fakeagent.InPlace)
		awaitToken(t, fakeagent.Codex, c.homeFile(".codex/auth.json"), tok, 5*time.Second)

		lost := "lost-" + rnd()
		if r := c.exec("fake-agent", "refresh", "--agent", "codex", "--mode", "inplace", "--token", lost); r.code != 0 {
			t.Fatalf("refresh in the container: %s", r)
		}
		logs := c.waitLog("read-only", 10*time.Second)
		if got, _ := fakeagent.Read(fakeagent.Codex, h.codex); got.Token != tok {
			t.Errorf("host file changed through a read-only mount: %v", got)
		}
		st := must(t, time.Minute, "docker", "inspect", "-f", "{{.State.Running}}", c.id)
		if strings.TrimSpace(st) != "true" {
			t.Errorf("the container stopped:\n%s", logs)
		}
		t.Logf("%s", logs)
	})
}
