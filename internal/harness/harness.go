//go:build linux

// Package harness runs credential guards the way a container runs them, for
// caw's bench (go run ./bench) and its torture suite (./torture): a staging
// dir with a manifest.json, a fake host credential bind-mounted into it
// inside a private mount and PID namespace (unshare), a home for the target
// user, and the guard as PID 1 of that namespace running a long sleep. It
// also waits for files to change through inotify (no polling) and reads a
// process's CPU, memory, threads and descriptors from /proc.
//
// The guard is any command: the real caw-init binary, or a peer built the
// way the original caw's shell guard is, so both are measured identically.
package harness

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caw-dev/caw/manifest"
)

// Strategies the harness can mount a host credential with.
const (
	Bind    = manifest.StrategyBind
	BindDir = manifest.StrategyBindDir
)

// Host is a fake host home holding one Claude Code credential.
type Host struct {
	Home string // the host home
	File string // Home/.claude/.credentials.json
}

// NewHost creates dir/host/.claude/.credentials.json holding Cred(seq),
// owned by uid:gid with mode 0600 as a host user's file is.
func NewHost(dir string, seq int64, uid, gid int) (*Host, error) {
	h := &Host{Home: filepath.Join(dir, "host")}
	h.File = filepath.Join(h.Home, ".claude", ".credentials.json")
	if err := os.MkdirAll(filepath.Dir(h.File), 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(h.File, Cred(seq), 0o600); err != nil {
		return nil, err
	}
	for _, p := range []string{h.File, filepath.Dir(h.File)} {
		if err := os.Chown(p, uid, gid); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// Container is one guard set up as in a container.
type Container struct {
	Dir      string // everything of this container lives here
	Staging  string // the staging dir (caw-init's --auth-dir)
	Home     string // the target user's home
	HomeFile string // the credential's copy in Home
	UID, GID int    // the target user
	Host     *Host
	Strategy string

	// MountSrc and MountDst are the bind mount: the host credential (bind)
	// or its directory (bind-dir), onto its place in the staging dir.
	MountSrc, MountDst string
	// Mounted is the credential as the guard sees it through the mount.
	Mounted string
	// Passwd and Group are the container's /etc/passwd and /etc/group,
	// mounted over the machine's inside the namespace: they name the target
	// user "caw-agent" with Home as its home, as an image's files would.
	Passwd, Group string

	cmd     *exec.Cmd
	pid     int // the guard's pid, seen from here
	waitErr chan error
	stderr  *SyncBuffer
}

// Spec is how to start one container's guard.
type Spec struct {
	Strategy string // Bind (default) or BindDir
	// Agent and Target are the agent whose credential is guarded and its
	// path in the home; empty: Claude Code's ~/.claude/.credentials.json.
	Agent, Target string
	UID, GID      int // target user; 0 means 1000
	// PlainStaging leaves the staging dir a plain directory, not the
	// read-only mount a real container has: as in a container started
	// without $(caw docker-flags), where anyone may have made it.
	PlainStaging bool
	// Argv is the guard command line, given the prepared container: it runs
	// as PID 1 of the namespace, after the bind mount is in place, and must
	// print a line "ready" on stdout once it is guarding (CawInit does so by
	// its child's first words).
	Argv func(c *Container) []string
}

// ChildArgv is the command a guard runs as its child: it says ready, then
// sleeps as an idle agent would.
var ChildArgv = []string{"/bin/sh", "-c", "echo ready; exec sleep 1000000"}

// User is the target user's name in the container's /etc/passwd.
const User = "caw-agent"

// CawInit is the argv that runs the real caw-init binary at path with the
// container's staging dir and user, then extra flags.
func CawInit(path string, extra ...string) func(c *Container) []string {
	return func(c *Container) []string {
		argv := []string{path, "--auth-dir", c.Staging, "--user", User}
		argv = append(argv, extra...)
		argv = append(argv, "--")
		return append(argv, ChildArgv...)
	}
}

// Prepare lays out dir for a container on host: staging dir, manifest,
// mount target and an empty home owned by the user. Start runs it.
func Prepare(dir string, host *Host, spec Spec) (*Container, error) {
	c := &Container{Dir: dir, Host: host, Strategy: spec.Strategy, UID: spec.UID, GID: spec.GID}
	if c.Strategy == "" {
		c.Strategy = Bind
	}
	if c.UID == 0 {
		c.UID, c.GID = 1000, 1000
	}
	agent, target, src := "claude", ".claude/.credentials.json", "claude/credentials.json"
	if spec.Agent != "" {
		agent, target = spec.Agent, spec.Target
		src = agent + "/" + filepath.Base(target)
	}
	if c.Strategy == BindDir {
		src = agent + "/config-dir/" + filepath.Base(target)
	}
	c.Staging = filepath.Join(dir, "staging")
	c.Home = filepath.Join(dir, "home")
	c.HomeFile = filepath.Join(c.Home, target)
	m := &manifest.Manifest{
		Version: manifest.Version, CreatedAt: "2026-11-30T00:00:00+00:00",
		HostHome: host.Home, ContainerHome: c.Home, MountPoint: c.Staging,
		Agents: map[string]manifest.Agent{agent: {Files: []manifest.File{{
			Src: src, ContainerTarget: target, HostOriginal: target,
			Type: manifest.TypeCredential, Strategy: c.Strategy, Mode: "0600",
		}}}},
	}
	data, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(c.Staging, agent), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(c.Staging, manifest.FileName), data, 0o644); err != nil {
		return nil, err
	}
	c.Mounted = filepath.Join(c.Staging, src)
	if c.Strategy == BindDir {
		c.MountSrc, c.MountDst = filepath.Dir(host.File), filepath.Dir(c.Mounted)
		err = os.MkdirAll(c.MountDst, 0o755)
	} else {
		// The empty placeholder `caw setup` leaves as Docker's mount target.
		c.MountSrc, c.MountDst = host.File, c.Mounted
		err = os.WriteFile(c.MountDst, nil, 0o600)
	}
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.Home, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chown(c.Home, c.UID, c.GID); err != nil {
		return nil, err
	}
	c.Passwd, c.Group = filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\n%s:x:%d:%d::%s:/bin/sh\n", User, c.UID, c.GID, c.Home)
	group := fmt.Sprintf("root:x:0:\n%s:x:%d:\n", User, c.GID)
	if err := os.WriteFile(c.Passwd, []byte(passwd), 0o644); err != nil {
		return nil, err
	}
	return c, os.WriteFile(c.Group, []byte(group), 0o644)
}

// Start runs the guard as PID 1 of new mount and PID namespaces, with the
// staging dir mounted read-only and the bind mount made inside them, and returns once it printed "ready".
func (c *Container) Start(spec Spec, timeout time.Duration) error {
	// The staging dir is mounted read-only first, as Docker's :ro mount
	// of it is (caw-init trusts nothing else), then the credential into it.
	script := `mount --bind "$5" "$5" && mount -o remount,bind,ro "$5" &&
mount --bind "$1" "$2" && mount --bind "$3" /etc/passwd && mount --bind "$4" /etc/group || exit 97
shift 5; exec "$@"`
	if spec.PlainStaging {
		script = `mount --bind "$1" "$2" && mount --bind "$3" /etc/passwd && mount --bind "$4" /etc/group || exit 97
shift 5; exec "$@"`
	}
	args := []string{"-m", "--propagation", "private", "-p", "-f", "--mount-proc",
		"/bin/sh", "-c", script, "sh", c.MountSrc, c.MountDst, c.Passwd, c.Group, c.Staging}
	args = append(args, spec.Argv(c)...)
	c.cmd = exec.Command("unshare", args...)
	c.stderr = &SyncBuffer{}
	c.cmd.Stderr = c.stderr
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := c.cmd.Start(); err != nil {
		c.cmd = nil
		return fmt.Errorf("start unshare (util-linux): %w", err)
	}
	c.waitErr = make(chan error, 1)
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if !ok && strings.TrimSpace(sc.Text()) == "ready" {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
		c.waitErr <- c.cmd.Wait()
	}()
	select {
	case ok := <-ready:
		if !ok {
			err := <-c.waitErr
			return fmt.Errorf("guard exited before it was ready (%v): %s", err, c.Stderr())
		}
	case <-time.After(timeout):
		c.Kill()
		return fmt.Errorf("guard not ready after %v: %s", timeout, c.Stderr())
	}
	pid, err := firstChild(c.cmd.Process.Pid)
	if err != nil {
		c.Kill()
		return err
	}
	c.pid = pid
	return nil
}

// Start prepares and starts a container in one step.
func Start(dir string, host *Host, spec Spec, timeout time.Duration) (*Container, error) {
	c, err := Prepare(dir, host, spec)
	if err != nil {
		return nil, err
	}
	return c, c.Start(spec, timeout)
}

// firstChild is the pid of unshare's forked child: the namespace's PID 1.
func firstChild(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0, fmt.Errorf("find the guard under unshare: %w", err)
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0, errors.New("find the guard under unshare: no child")
	}
	return strconv.Atoi(f[0])
}

// PID is the guard's pid as seen from outside its namespace.
func (c *Container) PID() int { return c.pid }

// Stderr is what the guard printed on stderr so far.
func (c *Container) Stderr() string { return c.stderr.String() }

// Stop sends sig to the guard (SIGTERM: as docker stop does) and waits for
// the namespace to end; after timeout it kills it. It returns the guard's
// wait error (an *exec.ExitError for a non-zero exit).
func (c *Container) Stop(sig syscall.Signal, timeout time.Duration) error {
	if c.cmd == nil {
		return nil
	}
	if c.pid <= 0 {
		// Never kill(0) or kill(-1): that would signal our own group.
		c.Kill()
		return errors.New("guard was not running")
	}
	_ = syscall.Kill(c.pid, sig)
	select {
	case err := <-c.waitErr:
		c.cmd = nil
		return err
	case <-time.After(timeout):
		c.Kill()
		return fmt.Errorf("guard still running %v after signal %v; killed", timeout, sig)
	}
}

// Kill SIGKILLs the guard, which ends its whole PID namespace, and waits.
func (c *Container) Kill() {
	if c.cmd == nil || c.cmd.Process == nil {
		c.cmd = nil
		return
	}
	if c.pid > 0 {
		_ = syscall.Kill(c.pid, syscall.SIGKILL)
	}
	_ = c.cmd.Process.Kill()
	select {
	case <-c.waitErr:
	case <-time.After(10 * time.Second):
	}
	c.cmd = nil
}

// Exited reports whether the guard has already ended, without waiting.
func (c *Container) Exited() (bool, error) {
	select {
	case err := <-c.waitErr:
		c.cmd = nil
		c.waitErr <- err
		return true, err
	default:
		return c.cmd == nil, nil
	}
}

// WaitSeq waits until path holds sequence number seq, through inotify
// events on dir (a directory or the file itself), until the deadline.
func WaitSeq(w *Watch, path string, seq int64, deadline time.Time) error {
	err := w.Until(deadline, func() bool { return ReadSeq(path) == seq })
	if errors.Is(err, ErrTimeout) {
		return fmt.Errorf("%s: still holds %d, want %d: %w", path, ReadSeq(path), seq, err)
	}
	return err
}

// MkdirAtOnce makes every directory in paths at the same instant, one
// goroutine each released together (as agents on both sides of a mount
// taking their refresh locks), and reports which mkdir succeeded.
func MkdirAtOnce(paths ...string) []bool {
	got := make([]bool, len(paths))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, p := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got[i] = os.Mkdir(p, 0o700) == nil
		}()
	}
	close(start)
	wg.Wait()
	return got
}

// SyncBuffer collects a process's output for several goroutines: writes
// and reads are locked, and it keeps the first MiB.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var _ io.Writer = (*SyncBuffer)(nil)
