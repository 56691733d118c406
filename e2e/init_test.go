package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/e2e/images"
	"github.com/caw-dev/caw/internal/fakeagent"
	"github.com/caw-dev/caw/internal/testenv"
)

// Stock images: docker-flags --init runs images that know nothing of caw
// (Debian, whose passwd has no uid 1000 and no /home/playground, and a
// FROM-scratch busybox with no /etc at all) under caw-init, without a
// rebuild. The host user is uid 1000, the default CAW_USER.

const hostUser = "1000:1000"

// stockImages builds the two images that know nothing of caw.
func stockImages(t *testing.T, s *suite) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	deb, err := s.b.DebianImage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := s.b.BusyboxImage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"debian": deb, "busybox": bb}
}

// initHome is a host home of uid 1000, set up by that user (locked mounts).
func initHome(t *testing.T, s *suite) *hostHome {
	t.Helper()
	h := newHome(t, s, images.TestUID, images.TestGID, 0o600)
	h.setupAsOwner(t)
	return h
}

// cawAsOwner runs caw as the home's owner, as the user types it.
func (h *hostHome) cawAsOwner(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.s.caw, args...)
	cmd.Env = append(os.Environ(), "HOME="+h.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(h.uid), Gid: uint32(h.gid)}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("caw %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// initFlags is `caw docker-flags --init --format json` run by the host user.
func (h *hostHome) initFlags(t *testing.T, extra ...string) []string {
	t.Helper()
	out := h.cawAsOwner(t, append([]string{"docker-flags", "--init", "--format", "json", "--auth-dir", h.auth}, extra...)...)
	var argv []string
	if err := json.Unmarshal([]byte(out), &argv); err != nil {
		t.Fatalf("docker-flags --init --format json: %v\n%s", err, out)
	}
	if !strings.Contains(strings.Join(argv, " "), "-e CAW_USER="+hostUser) {
		t.Fatalf("docker-flags --init run by uid 1000 does not default to CAW_USER=%s: %q", hostUser, argv)
	}
	return argv
}

// project is a host directory the container writes into.
func project(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "project")
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(p, images.TestUID, images.TestGID)
	os.Chmod(filepath.Dir(p), 0o755)
	return p
}

const startScript = `id; echo HOME=$HOME; echo pid1=$(cat /proc/1/cmdline | tr '\0' ' '); touch /project/made-here; echo journey-ready; exec sleep 1000`

// checkStarted asserts what every stock-image container shows at start.
func checkStarted(t *testing.T, c *container, proj string) {
	t.Helper()
	// Not "started": the devcontainer CLI's wrapper says "Container started".
	r := c.waitLog("journey-ready", 60*time.Second)
	c.user = hostUser
	for _, want := range []string{"uid=1000", "gid=1000", "HOME=" + home, "pid1=" + "/.caw/caw-init"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("container output lacks %q:\n%s", want, r)
		}
	}
	if strings.Contains(r.stderr, "not synced") || strings.Contains(r.stderr, "no home directory") {
		t.Errorf("caw-init reports a problem:\n%s", r.stderr)
	}
	if uid, gid, _, _ := statOwner(t, filepath.Join(proj, "made-here")); uid != images.TestUID || gid != images.TestGID {
		t.Errorf("a file written into the mounted project is %d:%d, want the host user's 1000:1000", uid, gid)
	}
	// caw-init made the home the image lacks, private to the user.
	if uid, gid, mode, _ := statOwner(t, filepath.Join("/proc", fmt.Sprint(c.pid()), "root", home)); uid != images.TestUID || gid != images.TestGID || mode != 0o700 {
		t.Errorf("container home is %d:%d %v, want 1000:1000 -rwx------", uid, gid, mode)
	}
}

// TestInitStockImages: docker run $(caw docker-flags --init) IMAGE COMMAND on
// each stock image runs the refresh journey both ways, with the mounts
// still locked (the guard is root, the command uid 1000).
func TestInitStockImages(t *testing.T) {
	s := need(t)
	for name, img := range stockImages(t, s) {
		t.Run(name, func(t *testing.T) {
			h := initHome(t, s)
			proj := project(t)
			c := start(t, append(h.initFlags(t), "-v", s.agent+":/usr/local/bin/fake-agent:ro", "-v", proj+":/project",
				img, "sh", "-c", startScript)...)
			checkStarted(t, c, proj)
			// uid 1000 cannot reach the mounted host file past the lock.
			if r := c.exec("cat", "/tmp/caw_auth/codex/mnt/auth.json"); r.code == 0 || strings.Contains(r.stdout, h.codexTok) {
				t.Errorf("the container user read the locked mount: %s", r)
			}
			refreshJourney(t, c, h)
		})
	}
}

// TestInitStopFlush: docker stop on a stock image under --init: the agent's
// last refresh is on the host when the container has exited.
func TestInitStopFlush(t *testing.T) {
	s := need(t)
	img := stockImages(t, s)["busybox"]
	h := initHome(t, s)
	final := "final-" + rnd()
	c := start(t, append(h.initFlags(t), "-v", s.agent+":/usr/local/bin/fake-agent:ro", img,
		"fake-agent", "wait", "--agent", "claude", "--refresh-on-term", "--mode", "rename", "--token", final)...)
	r := c.waitLog("fake-agent: ready", 60*time.Second)
	if !strings.Contains(r.stdout, "uid=1000 gid=1000 home="+home) {
		t.Errorf("agent not running as 1000:1000 in %s: %s", home, r.stdout)
	}
	if r := docker(t, "stop", "-t", "20", c.id); r.code != 0 {
		t.Fatalf("docker stop: %s", r)
	}
	if code := c.exitCode(time.Minute); code != 143 {
		t.Errorf("exit status %d after docker stop, want 143", code)
	}
	got, err := fakeagent.Read(fakeagent.Claude, h.claude)
	if err != nil || got.Token != final {
		t.Errorf("host credential after stop: %v %v, want token %s (the final flush)\n%s", got, err, final, c.logs())
	}
}

// TestInitCompose: the compose output of --init, in a compose file, under
// docker-compose.
func TestInitCompose(t *testing.T) {
	s := need(t)
	testenv.LookPath(t, "docker-compose", "docker-compose")
	img := stockImages(t, s)["debian"]
	h := initHome(t, s)
	proj := project(t)
	snippet := h.cawAsOwner(t, "docker-flags", "--init", "--format", "compose", "--auth-dir", h.auth)
	var b strings.Builder
	fmt.Fprintf(&b, "services:\n  agent:\n    image: %q\n    command: [\"sh\", \"-c\", %q]\n", img, strings.ReplaceAll(startScript, "$", "$$"))
	for _, l := range lines(snippet) {
		b.WriteString("    " + l + "\n")
	}
	fmt.Fprintf(&b, "      - {type: bind, source: %q, target: /usr/local/bin/fake-agent, read_only: true}\n", s.agent)
	fmt.Fprintf(&b, "      - {type: bind, source: %q, target: /project}\n", proj)
	file := filepath.Join(t.TempDir(), "compose.yml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("compose file:\n%s", b.String())
	project := "caw-e2e-" + rnd()
	compose := func(args ...string) result {
		return run(t, 2*time.Minute, "docker-compose", append([]string{"-p", project, "-f", file}, args...)...)
	}
	t.Cleanup(func() { compose("down", "-t", "1") })
	if r := compose("up", "-d"); r.code != 0 {
		t.Fatalf("docker-compose up: %s", r)
	}
	id := strings.TrimSpace(compose("ps", "-q", "agent").stdout)
	if id == "" {
		t.Fatalf("docker-compose ps: no container")
	}
	c := &container{t: t, id: id}
	checkStarted(t, c, proj)
	refreshJourney(t, c, h)
}

// TestInitDevcontainer: the devcontainer output of --init, started the way
// the devcontainer CLI starts a Docker Compose dev container with
// "overrideCommand": false: its mounts and containerEnv, its own /bin/sh
// entrypoint, which execs the service's entrypoint (caw-init) and command.
func TestInitDevcontainer(t *testing.T) {
	s := need(t)
	img := stockImages(t, s)["busybox"]
	h := initHome(t, s)
	proj := project(t)
	out := h.cawAsOwner(t, "docker-flags", "--init", "--format", "devcontainer", "--auth-dir", h.auth)
	var dc struct {
		OverrideCommand *bool             `json:"overrideCommand"`
		Mounts          []string          `json:"mounts"`
		ContainerEnv    map[string]string `json:"containerEnv"`
	}
	if err := json.Unmarshal([]byte(out), &dc); err != nil || dc.OverrideCommand == nil || *dc.OverrideCommand {
		t.Fatalf("devcontainer output: %v\n%s", err, out)
	}
	args := []string{"--sig-proxy=false"}
	for _, m := range dc.Mounts {
		args = append(args, "--mount", m)
	}
	for k, v := range dc.ContainerEnv {
		args = append(args, "-e", k+"="+v)
	}
	// The devcontainer CLI's keep-alive entrypoint (devcontainers/cli,
	// dockerCompose.ts), then the service's entrypoint and command.
	const cliScript = "echo Container started\ntrap \"exit 0\" 15\n\nexec \"$@\"\nwhile sleep 1 & wait $!; do :; done"
	args = append(args, "-v", s.agent+":/usr/local/bin/fake-agent:ro", "-v", proj+":/project",
		"--entrypoint", "/bin/sh", img, "-c", cliScript, "-", "/.caw/caw-init", "sh", "-c", startScript)
	c := start(t, args...)
	checkStarted(t, c, proj)
	refreshJourney(t, c, h)
}

// TestInstallInit: caw install-init fills a volume from the caw image, and
// --init-from VOLUME runs a stock image from it (the way on a Mac, where the
// host's caw-init cannot run in the engine's VM).
func TestInstallInit(t *testing.T) {
	s := need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cawImg, err := s.b.CawImage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	img := stockImages(t, s)["busybox"]
	vol := "caw-init-e2e-" + rnd()
	t.Cleanup(func() { exec.Command("docker", "volume", "rm", "-f", vol).Run() })
	out := must(t, 2*time.Minute, s.caw, "install-init", "--volume", vol, "--image", cawImg)
	t.Logf("%s", out)
	h := initHome(t, s)
	flags := h.initFlags(t, "--init-from", vol)
	if !strings.Contains(strings.Join(flags, " "), vol+":/.caw:ro") {
		t.Fatalf("--init-from %s does not mount the volume: %q", vol, flags)
	}
	r := docker(t, append(append([]string{"run", "--rm"}, flags...), "-v", s.agent+":/usr/local/bin/fake-agent:ro", img,
		"sh", "-c", "id -u; fake-agent show --agent codex")...)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "1000\n") || !strings.Contains(r.stdout, "codex token="+h.codexTok) {
		t.Fatalf("stock image with caw-init from the volume: %s", r)
	}
}

// TestInitImageEntrypoint: the image's own entrypoint, named after --, runs
// under caw-init with the command as its arguments, as the user.
func TestInitImageEntrypoint(t *testing.T) {
	s := need(t)
	img := stockImages(t, s)["busybox"]
	h := initHome(t, s)
	ep := filepath.Join(t.TempDir(), "entrypoint.sh")
	if err := os.WriteFile(ep, []byte("#!/bin/sh\necho \"entrypoint as $(id -u) with: $*\"\nexec \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(ep), 0o755)
	flags := h.initFlags(t, "--", "/docker-entrypoint.sh")
	r := docker(t, append(append([]string{"run", "--rm"}, flags...), "-v", ep+":/docker-entrypoint.sh:ro",
		"-v", s.agent+":/usr/local/bin/fake-agent:ro", img, "fake-agent", "show", "--agent", "codex")...)
	if r.code != 0 || !strings.Contains(r.stdout, "entrypoint as 1000 with: fake-agent show --agent codex") ||
		!strings.Contains(r.stdout, "codex token="+h.codexTok) {
		t.Fatalf("image entrypoint under caw-init: %s", r)
	}
}
