package e2e

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caw-dev/caw/e2e/images"
	"github.com/caw-dev/caw/internal/fakeagent"
)

// Case 1: `caw setup`, then the copy-paste `docker run $(caw docker-flags)
// IMAGE id` typed in a shell: the child runs as playground with its
// supplementary groups and HOME, and both logins are in its home.
func TestJourneyID(t *testing.T) {
	s := need(t)
	h := newHome(t, s, 4242, 4242, 0o640)
	h.setup(t)
	script := fmt.Sprintf(`docker run --rm $(%s docker-flags --auth-dir %s) %s `+
		`sh -c 'id; echo HOME=$HOME; fake-agent show --agent claude; fake-agent show --agent codex; ls -ln $HOME/.claude/.credentials.json $HOME/.codex/auth.json; cat $HOME/.claude.json $HOME/.codex/config.toml'`,
		s.caw, h.auth, s.testImage)
	r := run(t, 2*time.Minute, "bash", "-c", script)
	t.Logf("$ %s\n%s", script, r)
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	for _, want := range []string{"uid=1000(playground)", "gid=1000(playground)", "2001(agents)", "2002(tools)",
		"HOME=" + home, "claude token=" + h.claudeTok, "codex token=" + h.codexTok} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// The configs arrive cleaned: the host's project paths are gone, the
	// container home is Claude's one project.
	if strings.Contains(r.stdout, "/home/alice/src") || !strings.Contains(r.stdout, `"`+home+`"`) || !strings.Contains(r.stdout, "model = 'o4'") {
		t.Errorf("configs not copied cleaned (want no /home/alice/src, a %q project, codex's model kept)", home)
	}
	// The home copies belong to the user who runs the agent, private.
	re := regexp.MustCompile(`(?m)^-rw------- +1 +1000 +1000 .*(\.credentials\.json|auth\.json)$`)
	if n := len(re.FindAllString(r.stdout, -1)); n != 2 {
		t.Errorf("want both home credentials -rw------- 1000 1000, found %d such lines", n)
	}
}

// Case 2 on a fresh container of the test image.
func TestRefreshBothWays(t *testing.T) {
	s := need(t)
	h := newHome(t, s, 4242, 4242, 0o640)
	h.setup(t)
	c := start(t, append(h.flags(t), s.testImage, "sh", "-c", "echo started; exec sleep 1000")...)
	c.waitLog("started", 30*time.Second)
	refreshJourney(t, c, h)
}

// refreshJourney is case 2: for Codex (bind, written in place) and Claude
// (bind-dir, written by temp + rename), a host refresh shows in the
// container home within a second; a container refresh, in place and by
// rename, reaches the host file, which keeps its owner and mode; and a host
// refresh after those still arrives (no side is left on a stale inode).
// Host writes run as the home's owner, as the host's agent does.
func refreshJourney(t *testing.T, c *container, h *hostHome) {
	for _, tc := range []struct {
		agent, rel, hostMode, initial string
	}{
		{fakeagent.Codex, ".codex/auth.json", fakeagent.InPlace, h.codexTok},
		{fakeagent.Claude, ".claude/.credentials.json", fakeagent.Rename, h.claudeTok},
	} {
		t.Run(tc.agent, func(t *testing.T) {
			hostPath := h.path(tc.agent)
			t.Cleanup(func() {
				if t.Failed() {
					data, err := os.ReadFile(hostPath)
					t.Logf("on failure: host file %s: %q %v\ncontainer logs: %s", hostPath, data, err, c.logs())
				}
			})
			awaitToken(t, tc.agent, c.homeFile(tc.rel), tc.initial, 5*time.Second)
			if uid, gid, mode, _ := statOwner(t, c.homeFile(tc.rel)); uid != 1000 || gid != 1000 || mode != 0o600 {
				t.Errorf("home copy is %d:%d %v, want 1000:1000 -rw-------", uid, gid, mode)
			}
			hostToContainer := func(step string) {
				t.Helper()
				tok := step + "-" + rnd()
				seen := watchToken(t, tc.agent, c.homeFile(tc.rel), tok, 10*time.Second)
				written := h.writeHost(t, tc.agent, tok, tc.hostMode)
				d := seen().Sub(written)
				t.Logf("%s: host refresh (%s) seen in the container home after %s", tc.agent, tc.hostMode, d.Round(100*time.Microsecond))
				if d > time.Second {
					t.Errorf("%s: host refresh took %s to reach the container, want within a second", tc.agent, d)
				}
			}
			hostToContainer("host1")
			for _, mode := range []string{fakeagent.InPlace, fakeagent.Rename} {
				tok := "ctr-" + mode + "-" + rnd()
				uid0, gid0, perm0, _ := statOwner(t, hostPath)
				seen := watchToken(t, tc.agent, hostPath, tok, 10*time.Second)
				r := c.exec("fake-agent", "refresh", "--agent", tc.agent, "--mode", mode, "--token", tok)
				if r.code != 0 || strings.Contains(r.stderr, "rename failed") {
					t.Fatalf("fake-agent refresh --mode %s in the container: %s", mode, r)
				}
				d := seen().Sub(writtenAt(t, r.stdout))
				t.Logf("%s: container refresh (%s) reached the host after %s", tc.agent, mode, d.Round(100*time.Microsecond))
				if d > time.Second {
					t.Errorf("%s: container refresh took %s to reach the host, want within a second", tc.agent, d)
				}
				if uid, gid, perm, _ := statOwner(t, hostPath); uid != uid0 || gid != gid0 || perm != perm0 || uid != h.uid {
					t.Errorf("%s: host file is %d:%d %v after a container refresh (%s), was %d:%d %v",
						tc.agent, uid, gid, perm, mode, uid0, gid0, perm0)
				}
			}
			hostToContainer("host2")
		})
	}
}

// Case 3: docker stop forwards SIGTERM; the agent refreshes just before it
// dies of it; the container exits 143 and the token is on the host by then
// (the final flush). docker kill -s USR1 / HUP reach the agent.
func TestStopFlushAndSignals(t *testing.T) {
	s := need(t)
	h := newHome(t, s, 4242, 4242, 0o640)
	h.setup(t)
	final := "final-" + rnd()
	c := start(t, append(h.flags(t), s.testImage,
		"fake-agent", "wait", "--agent", "claude", "--refresh-on-term", "--mode", "rename", "--token", final)...)
	r := c.waitLog("fake-agent: ready", 30*time.Second)
	if !strings.Contains(r.stdout, "uid=1000 gid=1000 home="+home) {
		t.Errorf("agent not running as playground: %s", r.stdout)
	}
	for _, sig := range []string{"USR1", "HUP", "USR2", "WINCH"} {
		if r := docker(t, "kill", "-s", sig, c.id); r.code != 0 {
			t.Fatalf("docker kill -s %s: %s", sig, r)
		}
		c.waitLog("fake-agent: got SIG"+sig, 5*time.Second)
	}
	begin := time.Now()
	if r := docker(t, "stop", "-t", "20", c.id); r.code != 0 {
		t.Fatalf("docker stop: %s", r)
	}
	took := time.Since(begin)
	code := c.exitCode(time.Minute)
	logs := c.logs()
	t.Logf("docker stop took %s, exit %d\n%s", took.Round(time.Millisecond), code, logs)
	if code != 143 {
		t.Errorf("exit status %d after docker stop, want 143 (128+SIGTERM)", code)
	}
	if !strings.Contains(logs.stdout, "fake-agent: got SIGTERM") || !strings.Contains(logs.stdout, "refreshed claude token="+final) {
		t.Errorf("the agent did not see SIGTERM and refresh:\n%s", logs)
	}
	// No waiting: the container has exited, so the flush must be done.
	got, err := fakeagent.Read(fakeagent.Claude, h.claude)
	if err != nil || got.Token != final {
		t.Errorf("host credential after stop: %v %v, want token %s (the final flush)", got, err, final)
	}
	if uid, gid, perm, _ := statOwner(t, h.claude); uid != h.uid || gid != h.gid || perm != h.mode {
		t.Errorf("host file is %d:%d %v after the final flush, want %d:%d %v", uid, gid, perm, h.uid, h.gid, h.mode)
	}
}

// Case 5: a storm of orphans re-parented to caw-init; none is left a zombie,
// and the main child's exit status is the container's.
func TestOrphanStorm(t *testing.T) {
	s := need(t)
	h := newHome(t, s, 4242, 4242, 0o640)
	h.setup(t)
	const script = `i=0; while [ $i -lt 100 ]; do sh -c 'sleep 0.5 &'; i=$((i+1)); done
echo adopted=$(ps -o ppid,comm | grep -c '^ *1 sleep')
sleep 2
ps -o stat,pid,ppid,comm
exit 7`
	r := docker(t, append(append([]string{"run", "--rm"}, h.flags(t)...), s.testImage, "sh", "-c", script)...)
	t.Logf("%s", r)
	if r.code != 7 {
		t.Errorf("exit %d, want the main child's 7", r.code)
	}
	m := regexp.MustCompile(`adopted=(\d+)`).FindStringSubmatch(r.stdout)
	if m == nil || m[1] == "0" {
		t.Fatalf("the storm did not leave orphans with PID 1 as parent; the test proves nothing:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "STAT") {
		t.Fatalf("no ps output")
	}
	for _, l := range lines(r.stdout) {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "Z") {
			t.Errorf("zombie left: %s", l)
		}
	}
}

// Case 6: two containers on one identity: a refresh in one reaches the host
// and the other, both ways and for both agents.
func TestTwoContainers(t *testing.T) {
	s := need(t)
	h := newHome(t, s, 4242, 4242, 0o640)
	h.setup(t)
	flags := h.flags(t)
	a := start(t, append(flags, s.testImage, "sh", "-c", "echo started; exec sleep 1000")...)
	b := start(t, append(flags, s.testImage, "sh", "-c", "echo started; exec sleep 1000")...)
	a.waitLog("started", 30*time.Second)
	b.waitLog("started", 30*time.Second)
	for _, tc := range []struct {
		agent, rel, mode string
		from, to         *container
	}{
		{fakeagent.Codex, ".codex/auth.json", fakeagent.InPlace, a, b},
		{fakeagent.Claude, ".claude/.credentials.json", fakeagent.Rename, a, b},
		{fakeagent.Codex, ".codex/auth.json", fakeagent.InPlace, b, a},
		{fakeagent.Claude, ".claude/.credentials.json", fakeagent.Rename, b, a},
	} {
		tok := "two-" + rnd()
		onHost := watchToken(t, tc.agent, h.path(tc.agent), tok, 10*time.Second)
		inOther := watchToken(t, tc.agent, tc.to.homeFile(tc.rel), tok, 10*time.Second)
		r := tc.from.exec("fake-agent", "refresh", "--agent", tc.agent, "--mode", tc.mode, "--token", tok)
		if r.code != 0 {
			t.Fatalf("refresh in %s: %s", tc.from.id, r)
		}
		w := writtenAt(t, r.stdout)
		dh, do := onHost().Sub(w), inOther().Sub(w)
		t.Logf("%s refresh (%s) in one container: on the host after %s, in the other container after %s", tc.agent, tc.mode,
			dh.Round(100*time.Microsecond), do.Round(100*time.Microsecond))
		if do > 2*time.Second {
			t.Errorf("%s: the other container saw the refresh after %s", tc.agent, do)
		}
	}
}

// Locked mounts: with caw setup run by a host user whose uid is the
// container user's (1000 on both sides), that user still cannot read or
// write the mounted host credentials past the guard (not through the
// staging mount, not through /proc/1), while root's guard syncs as usual.
func TestLockedMountsSameUID(t *testing.T) {
	s := need(t)
	h := newHome(t, s, images.TestUID, images.TestGID, 0o600)
	h.setupAsOwner(t)
	c := start(t, append(h.flags(t), s.testImage, "sh", "-c", "echo started; exec sleep 1000")...)
	c.waitLog("started", 30*time.Second)
	awaitToken(t, fakeagent.Codex, c.homeFile(".codex/auth.json"), h.codexTok, 10*time.Second)
	for _, p := range []string{
		"/tmp/caw_auth/codex/mnt/auth.json", "/tmp/caw_auth/claude/mnt/config-dir/.credentials.json",
		"/tmp/caw_auth/claude/mnt/config-dir/settings.json", "/proc/1/root/tmp/caw_auth/codex/mnt/auth.json",
	} {
		r := c.exec("sh", "-c", "id -u; cat "+p+"; echo planted > "+p+"; chmod 700 "+path.Dir(p)+"; ls /proc/1/fd")
		t.Logf("%s", r)
		if !strings.HasPrefix(r.stdout, "1000\n") {
			t.Fatalf("exec did not run as the container user: %s", r)
		}
		if strings.Contains(r.stdout, h.codexTok) || strings.Contains(r.stdout, h.claudeTok) || !strings.Contains(r.stderr, "denied") {
			t.Errorf("uid 1000 reached %s: %s", p, r)
		}
	}
	if got, _ := fakeagent.Read(fakeagent.Codex, h.codex); got.Token != h.codexTok {
		t.Errorf("the host codex credential changed: %v", got)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(h.claude), "settings.json")); err == nil {
		t.Errorf("a file was planted in the host's claude dir")
	}
	refreshJourney(t, c, h)
}
