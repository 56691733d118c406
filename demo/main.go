// Command demo shows caw's main job to a new user, on a throwaway host home
// and a small test image, printing every step:
//
//  1. a host home with Claude Code and Codex logins;
//  2. caw setup, then docker run $(caw docker-flags) with caw-init as PID 1;
//  3. the host's Claude Code refreshes (temp file + rename): the container
//     sees the new token;
//  4. the agent in the container refreshes (Codex in place, Claude by
//     rename): the host files get the new tokens and keep owner and mode;
//  5. docker stop: the agent refreshes as it exits, and that last token is
//     on the host when the container is gone.
//
// It builds what images it needs (see e2e/images) and removes everything it
// made. Run it from caw's source tree, as root or a member of the docker
// group:
//
//	go run ./demo
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caw-dev/caw/e2e/images"
	"github.com/caw-dev/caw/internal/fakeagent"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// demo holds what the steps share.
type demo struct {
	ctx       context.Context
	caw       string
	agent     string // fake-agent, the host's agent too
	image     string
	home      string
	auth      string
	container string
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "version", "--format", "{{.Server.Version}}").CombinedOutput(); err != nil {
		return fmt.Errorf("the demo needs a running Docker Engine you may use (root or the docker group): %s", strings.TrimSpace(string(out)))
	}
	root, err := images.ModuleRoot()
	if err != nil {
		return err
	}
	step("0. Build caw and the demo image (FROM scratch: caw-init, busybox, a playground user, a fake agent)")
	b := images.New(root, os.Stdout)
	d := &demo{ctx: ctx}
	if d.caw, err = b.Binary(ctx, "./cmd/caw"); err != nil {
		return err
	}
	if d.agent, err = b.Binary(ctx, "./cmd/fake-agent"); err != nil {
		return err
	}
	if d.image, err = b.TestImage(ctx); err != nil {
		return err
	}
	fmt.Printf("caw: %s\nimage: %s\n", d.caw, d.image)

	base, err := os.MkdirTemp("", "caw-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	if err := os.Chmod(base, 0o755); err != nil { // the home's owner must reach it
		return err
	}
	d.home, d.auth = filepath.Join(base, "home"), filepath.Join(base, "home", ".caw", "auth")
	defer d.cleanup()
	return d.journey()
}

func (d *demo) journey() error {
	step("1. A throwaway host home logged in to Claude Code and Codex")
	claude, _ := fakeagent.DefaultPath(fakeagent.Claude, d.home)
	codex, _ := fakeagent.DefaultPath(fakeagent.Codex, d.home)
	for _, c := range []struct{ agent, path string }{{fakeagent.Claude, claude}, {fakeagent.Codex, codex}} {
		r, err := fakeagent.Refresh(c.agent, c.path, "host-login-"+c.agent, fakeagent.InPlace)
		if err != nil {
			return err
		}
		if os.Geteuid() == 0 {
			// Run as root, the demo's files would be root's; make them a
			// typical user's, to show that syncing back keeps that.
			for _, p := range []string{d.home, filepath.Dir(c.path), c.path} {
				if err := os.Chown(p, 1000, 1000); err != nil {
					return err
				}
			}
		}
		fmt.Printf("%s: %s (%s)\n", c.path, r.Cred, ownerMode(c.path))
	}
	if err := os.WriteFile(filepath.Join(d.home, ".claude.json"), []byte(`{"hasCompletedOnboarding":true,"projects":{"/home/you/src":{}}}`+"\n"), 0o644); err != nil {
		return err
	}

	step("2. caw setup, then docker run $(caw docker-flags) IMAGE")
	if _, err := d.sh("caw", d.caw, "setup", "--source-home", d.home, "--auth-dir", d.auth, "--user", images.TestUser); err != nil {
		return err
	}
	flags, err := d.sh("caw", d.caw, "docker-flags", "--auth-dir", d.auth)
	if err != nil {
		return err
	}
	d.container = "caw-demo-" + strconv.Itoa(os.Getpid())
	args := append(append([]string{"run", "-d", "--name", d.container}, strings.Fields(flags)...),
		d.image, "fake-agent", "wait", "--agent", "claude", "--refresh-on-term", "--token", "last-words")
	if _, err := d.sh("docker", "docker", args...); err != nil {
		return err
	}
	if err := d.waitLog("fake-agent: ready", 30*time.Second); err != nil {
		return err
	}
	if _, err := d.exec("id"); err != nil {
		return err
	}
	if _, err := d.exec("fake-agent", "show", "--agent", "claude"); err != nil {
		return err
	}
	if _, err := d.exec("fake-agent", "show", "--agent", "codex"); err != nil {
		return err
	}

	step("3. The host's Claude Code refreshes by temp file + rename; the container sees it")
	if err := d.hostRefresh(claude); err != nil {
		return err
	}

	step("4. The agent in the container refreshes; the host files follow, owner and mode kept")
	before := ownerMode(claude) + " / " + ownerMode(codex)
	for _, c := range []struct{ agent, mode, path string }{
		{fakeagent.Codex, fakeagent.InPlace, codex}, {fakeagent.Claude, fakeagent.Rename, claude},
	} {
		out, err := d.exec("fake-agent", "refresh", "--agent", c.agent, "--mode", c.mode, "--token", "ctr-"+c.agent)
		if err != nil {
			return err
		}
		written, err := stamp(out)
		if err != nil {
			return err
		}
		seen, err := waitHost(c.agent, c.path, "ctr-"+c.agent, 5*time.Second)
		if err != nil {
			return err
		}
		cred, _ := fakeagent.Read(c.agent, c.path)
		fmt.Printf("host %s: %s (reached the host %s after the write)\n", c.path, cred, seen.Sub(written).Round(100*time.Microsecond))
	}
	fmt.Printf("host owner and mode: before %s, after %s\n", before, ownerMode(claude)+" / "+ownerMode(codex))

	step("5. docker stop: the agent refreshes as it exits; caw-init flushes before the container ends")
	if _, err := d.sh("docker", "docker", "stop", d.container); err != nil {
		return err
	}
	code, err := d.sh("docker", "docker", "wait", d.container)
	if err != nil {
		return err
	}
	logs, _ := d.quiet("docker", "logs", d.container)
	fmt.Printf("agent's output:\n%s", indent(logs))
	cred, err := fakeagent.Read(fakeagent.Claude, claude)
	if err != nil {
		return err
	}
	fmt.Printf("exit status %s (128+SIGTERM); host %s: %s\n", strings.TrimSpace(code), claude, cred)
	if cred.Token != "last-words" {
		return errors.New("the last refresh did not reach the host")
	}
	step("Done: every refresh, on either side, reached the other. The temp home and container are removed.")
	return nil
}

// hostRefresh refreshes the host's Claude credential the way Claude Code
// 2.1.118+ does, while a watcher in the container waits for the new token.
func (d *demo) hostRefresh(path string) error {
	tok := "host-refresh-" + strconv.FormatInt(time.Now().Unix(), 36)
	ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", "exec", "-u", images.TestUser, "-e", "HOME="+images.TestHome, d.container,
		"fake-agent", "await", "--agent", "claude", "--token", tok, "--timeout", "10s")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	lines := bufio.NewScanner(out)
	if !lines.Scan() {
		return errors.New("the watcher in the container did not start")
	}
	fmt.Printf("in the container: %s\n", lines.Text())
	// The host's agent runs as the user who owns the file.
	host := exec.CommandContext(ctx, d.agent, "refresh", "--agent", "claude", "--file", path, "--mode", "rename", "--token", tok)
	if fi, err := os.Stat(path); err == nil && os.Geteuid() == 0 {
		st := fi.Sys().(*syscall.Stat_t)
		host.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: st.Uid, Gid: st.Gid}}
	}
	hostOut, err := host.CombinedOutput()
	if err != nil {
		return fmt.Errorf("host refresh: %w\n%s", err, hostOut)
	}
	written, err := stamp(string(hostOut))
	if err != nil {
		return err
	}
	fmt.Printf("host: %s", hostOut)
	if !lines.Scan() {
		return errors.New("the container never saw the host's refresh")
	}
	seen, err := stamp(lines.Text())
	if err != nil {
		return err
	}
	fmt.Printf("in the container: %s (%s after the host's rename)\n", strings.Split(lines.Text(), " at=")[0],
		seen.Sub(written).Round(100*time.Microsecond))
	return nil
}

func (d *demo) cleanup() {
	if d.container != "" {
		exec.Command("docker", "rm", "-f", d.container).Run()
	}
}

// sh prints a command as a user would type it (shown is the program's
// name), runs it and prints its output.
func (d *demo) sh(shown, prog string, args ...string) (string, error) {
	fmt.Printf("$ %s %s\n", shown, strings.Join(args, " "))
	out, err := d.quiet(prog, args...)
	fmt.Print(indent(out))
	return out, err
}

func (d *demo) quiet(prog string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(d.ctx, 2*time.Minute)
	defer cancel()
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return buf.String(), fmt.Errorf("%s %s: %w\n%s", prog, strings.Join(args, " "), err, buf.String())
	}
	return buf.String(), nil
}

func (d *demo) exec(args ...string) (string, error) {
	return d.sh("docker", "docker", append([]string{"exec", "-u", images.TestUser, "-e", "HOME=" + images.TestHome, d.container}, args...)...)
}

func (d *demo) waitLog(substr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		out, _ := d.quiet("docker", "logs", d.container)
		if strings.Contains(out, substr) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	out, _ := d.quiet("docker", "logs", d.container)
	return fmt.Errorf("the container did not start its agent within %s:\n%s", timeout, out)
}

func waitHost(agent, path, token string, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := fakeagent.Read(agent, path); err == nil && c.Token == token {
			return time.Now(), nil
		}
		time.Sleep(time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("%s: the container's refresh did not reach %s within %s", agent, path, timeout)
}

var stampRe = regexp.MustCompile(`at=(\d+)`)

// stamp reads the wall-clock instant fake-agent prints (containers share the
// host's clock).
func stamp(out string) (time.Time, error) {
	m := stampRe.FindStringSubmatch(out)
	if m == nil {
		return time.Time{}, fmt.Errorf("no time stamp in %q", out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return time.Unix(0, n), nil
}

func ownerMode(p string) string {
	fi, err := os.Stat(p)
	if err != nil {
		return err.Error()
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%s %d:%d %v", filepath.Base(p), st.Uid, st.Gid, fi.Mode().Perm())
}

func step(s string) { fmt.Printf("\n== %s\n", s) }

func indent(s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}
