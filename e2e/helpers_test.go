package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/e2e/images"
	"github.com/caw-dev/caw/internal/fakeagent"
	"github.com/caw-dev/caw/internal/testenv"
)

// home is the container user's home in every image the tests use.
const home = images.TestHome

// suite is what every test shares: the builder, the test image and the host
// binaries, made once per test process.
type suite struct {
	b         *images.Builder
	testImage string
	caw       string // host caw binary
	agent     string // fake-agent binary (static; mounted into the example image)
}

var (
	suiteOnce sync.Once
	suiteVal  *suite
	suiteErr  error
)

// logWriter sends image progress to stderr: a first run in CI builds images
// for a few minutes and should say so.
type logWriter struct{}

func (logWriter) Write(p []byte) (int, error) { return os.Stderr.Write(p) }

func need(t *testing.T) *suite {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireDocker(t)
	testenv.Busybox(t)
	suiteOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		s := &suite{b: images.New(testenv.ModuleRoot(t), logWriter{})}
		if s.caw, suiteErr = s.b.Binary(ctx, "./cmd/caw"); suiteErr != nil {
			return
		}
		if s.agent, suiteErr = s.b.Binary(ctx, "./cmd/fake-agent"); suiteErr != nil {
			return
		}
		if s.testImage, suiteErr = s.b.TestImage(ctx); suiteErr != nil {
			return
		}
		suiteVal = s
	})
	if suiteErr != nil {
		t.Fatalf("e2e set-up: %v", suiteErr)
	}
	if suiteVal == nil {
		t.Fatal("e2e set-up failed in an earlier test")
	}
	return suiteVal
}

// result is a finished command.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs a command with a timeout; only a failure to start or a timeout
// fails the test, a nonzero exit is the caller's to judge.
func run(t *testing.T, timeout time.Duration, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ctx.Err() != nil {
		t.Fatalf("%s %s: timed out after %s\n%s", name, strings.Join(args, " "), timeout, r)
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return r
}

// must runs a command that has to succeed and returns its stdout.
func must(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	r := run(t, timeout, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: %s", name, strings.Join(args, " "), r)
	}
	return r.stdout
}

func docker(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, 2*time.Minute, "docker", noPull(args)...)
}

// noPull makes docker run fail at once on a missing image instead of
// trying a registry (there is none).
func noPull(args []string) []string {
	if len(args) > 0 && args[0] == "run" {
		return append([]string{"run", "--pull", "never"}, args[1:]...)
	}
	return args
}

// hostHome is a throwaway host home holding Claude and Codex logins.
type hostHome struct {
	dir, auth      string
	claude, codex  string // host credential paths
	uid, gid       int
	mode           os.FileMode
	s              *suite
	claudeTok      string
	codexTok       string
	setupStdout    string
	setupStderr    string
	dockerFlagsArg []string
}

// newHome makes a host home whose credentials are owned by uid:gid with
// mode, so a test can see that syncing back keeps them.
func newHome(t *testing.T, s *suite, uid, gid int, mode os.FileMode) *hostHome {
	t.Helper()
	base := t.TempDir()
	h := &hostHome{dir: filepath.Join(base, "home"), auth: filepath.Join(base, "auth"), s: s, uid: uid, gid: gid, mode: mode}
	h.claude, _ = fakeagent.DefaultPath(fakeagent.Claude, h.dir)
	h.codex, _ = fakeagent.DefaultPath(fakeagent.Codex, h.dir)
	h.claudeTok, h.codexTok = "host-claude-"+rnd(), "host-codex-"+rnd()
	for _, d := range []string{h.dir, filepath.Dir(h.claude), filepath.Dir(h.codex)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string][]byte{
		filepath.Join(h.dir, ".claude.json"):          []byte(`{"oauthAccount":{"emailAddress":"fake@example.invalid"},"hasCompletedOnboarding":true,"userID":"u1","projects":{"/home/alice/src":{}}}` + "\n"),
		filepath.Join(h.dir, ".codex", "config.toml"): []byte("model = \"o4\"\n\n[projects.\"/home/alice/src\"]\ntrust_level = \"trusted\"\n"),
	}
	for p, data := range files {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	h.writeInitial(t, fakeagent.Claude, h.claudeTok)
	h.writeInitial(t, fakeagent.Codex, h.codexTok)
	// The home's owner must reach its home, as on a real machine.
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return h
}

func rnd() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (h *hostHome) path(agent string) string {
	if agent == fakeagent.Claude {
		return h.claude
	}
	return h.codex
}

// writeInitial writes a host credential before any container runs, with the
// owner and mode the home was made with.
func (h *hostHome) writeInitial(t *testing.T, agent, token string) {
	t.Helper()
	p := h.path(agent)
	if _, err := fakeagent.Refresh(agent, p, token, fakeagent.InPlace); err != nil {
		t.Fatalf("host credential: %v", err)
	}
	if err := os.Chown(p, h.uid, h.gid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, h.mode); err != nil {
		t.Fatal(err)
	}
}

// writeHost refreshes a host credential as the host's agent does: the fake
// agent running as the home's owner (a rename then leaves a new file that
// user owns, mode 0600, as Claude Code does). It returns when the write was
// complete.
func (h *hostHome) writeHost(t *testing.T, agent, token, mode string) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.s.agent, "refresh", "--agent", agent, "--file", h.path(agent), "--mode", mode, "--token", token)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(h.uid), Gid: uint32(h.gid)}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("host refresh as uid %d: %v\n%s%s", h.uid, err, out.String(), errb.String())
	}
	if strings.Contains(errb.String(), "unreadable") {
		// The host's agent found a torn credential: something wrote it
		// non-atomically while it read.
		t.Errorf("host refresh of %s: %s", h.path(agent), errb.String())
	}
	return writtenAt(t, out.String())
}

// setup runs caw setup on the home as root; extra flags are appended.
func (h *hostHome) setup(t *testing.T, extra ...string) {
	t.Helper()
	h.setupAs(t, nil, extra...)
}

// setupAsOwner runs caw setup as the owner of the home, as a user does: the
// staging dir is then theirs (mode 0700), not root's.
func (h *hostHome) setupAsOwner(t *testing.T, extra ...string) {
	t.Helper()
	base := filepath.Dir(h.dir)
	if err := os.Chown(base, h.uid, h.gid); err != nil {
		t.Fatal(err)
	}
	h.setupAs(t, &syscall.Credential{Uid: uint32(h.uid), Gid: uint32(h.gid)}, extra...)
}

func (h *hostHome) setupAs(t *testing.T, cred *syscall.Credential, extra ...string) {
	t.Helper()
	args := append([]string{"setup", "--source-home", h.dir, "--container-home", home,
		"--auth-dir", h.auth, "--user", images.TestUser}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.s.caw, args...)
	cmd.Env = append(os.Environ(), "HOME="+h.dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("caw %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	h.setupStdout, h.setupStderr = out.String(), errb.String()
}

// flags is `caw docker-flags --format json`: the docker run arguments.
func (h *hostHome) flags(t *testing.T) []string {
	t.Helper()
	out := must(t, time.Minute, h.s.caw, "docker-flags", "--format", "json", "--auth-dir", h.auth)
	var argv []string
	if err := json.Unmarshal([]byte(out), &argv); err != nil {
		t.Fatalf("caw docker-flags --format json: not a JSON array of strings: %v\n%s", err, out)
	}
	return argv
}

// container is one running container started by a test.
type container struct {
	t    *testing.T
	id   string
	user string // docker exec -u; "" is the test image's playground
}

// start runs a detached container and removes it when the test ends.
func start(t *testing.T, args ...string) *container {
	t.Helper()
	name := "caw-e2e-" + rnd()
	r := docker(t, append([]string{"run", "-d", "--name", name}, args...)...)
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", "-v", name).Run() })
	if r.code != 0 {
		t.Fatalf("docker run: %s", r)
	}
	return &container{t: t, id: name}
}

// logs is the container's output so far.
func (c *container) logs() result {
	return docker(c.t, "logs", c.id)
}

// waitLog waits for substr in the container's stdout or stderr.
func (c *container) waitLog(substr string, timeout time.Duration) result {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := c.logs()
		if strings.Contains(r.stdout, substr) || strings.Contains(r.stderr, substr) {
			return r
		}
		if time.Now().After(deadline) {
			st := docker(c.t, "inspect", "-f", "{{.State.Status}} exit={{.State.ExitCode}}", c.id)
			c.t.Fatalf("%q not in the logs of %s within %s (state %s)\n%s", substr, c.id, timeout, strings.TrimSpace(st.stdout), r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exec runs a command in the container as the playground user.
func (c *container) exec(args ...string) result {
	c.t.Helper()
	user := images.TestUser
	if c.user != "" {
		user = c.user
	}
	return docker(c.t, append([]string{"exec", "-u", user, "-e", "HOME=" + home, c.id}, args...)...)
}

// pid is the host pid of the container's PID 1 (caw-init).
func (c *container) pid() int {
	c.t.Helper()
	out := must(c.t, time.Minute, "docker", "inspect", "-f", "{{.State.Pid}}", c.id)
	p, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil || p <= 0 {
		c.t.Fatalf("container %s has no pid (%q): is it running?\n%s", c.id, out, c.logs())
	}
	return p
}

// homeFile is where the host sees a file of the container user's home,
// through the container's root (no docker exec latency in a timing).
func (c *container) homeFile(rel string) string {
	return filepath.Join("/proc", strconv.Itoa(c.pid()), "root", home, rel)
}

// exitCode waits for the container to stop and returns its exit status.
func (c *container) exitCode(timeout time.Duration) int {
	c.t.Helper()
	out := must(c.t, timeout, "docker", "wait", c.id)
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		c.t.Fatalf("docker wait: %q", out)
	}
	return n
}

// awaitToken polls a credential file until it holds token and returns how
// long that took; it fails the test after timeout.
func awaitToken(t *testing.T, agent, path, token string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		c, err := fakeagent.Read(agent, path)
		if err == nil && c.Token == token {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: token %s not in %s within %s (last: %v, %v)", agent, token, path, timeout, c, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// watchToken polls a credential file every millisecond from now on, and
// returns a function that waits for token to appear and returns when it was
// first seen; it fails the test after timeout. Started before a write, it
// times a sync without the latency of docker exec.
func watchToken(t *testing.T, agent, path, token string, timeout time.Duration) func() time.Time {
	t.Helper()
	seen := make(chan time.Time, 1)
	var last string
	go func() {
		deadline := time.Now().Add(timeout)
		for time.Now().Before(deadline) {
			c, err := fakeagent.Read(agent, path)
			if err == nil && c.Token == token {
				seen <- time.Now()
				return
			}
			last = fmt.Sprint(c, err)
			time.Sleep(time.Millisecond)
		}
		close(seen)
	}()
	return func() time.Time {
		t.Helper()
		at, ok := <-seen
		if !ok {
			t.Fatalf("%s: token %s not in %s within %s (last: %s)", agent, token, path, timeout, last)
		}
		return at
	}
}

// writtenAt parses the write time fake-agent refresh prints.
func writtenAt(t *testing.T, out string) time.Time {
	t.Helper()
	m := regexp.MustCompile(`at=(\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no write time in fake-agent output: %q", out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return time.Unix(0, n)
}

// statOwner returns a file's uid, gid, mode and inode.
func statOwner(t *testing.T, p string) (uid, gid int, mode os.FileMode, ino uint64) {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return int(st.Uid), int(st.Gid), fi.Mode().Perm(), st.Ino
}

// lines splits output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}
