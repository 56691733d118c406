package main

// The harness runs the real, statically built caw-init as PID 1 of a new PID
// and mount namespace, chrooted into a small busybox root filesystem with
// its own /etc/passwd and /etc/group. The test binary re-executes itself as
// a helper that mounts /proc and /dev in the new namespace, chroots, and
// then execs caw-init, which so keeps PID 1.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/caw-dev/caw/internal/harness"
	"github.com/caw-dev/caw/internal/testenv"
	"golang.org/x/sys/unix"
)

const (
	helperEnv  = "CAW_INIT_TEST_HELPER"
	rootfsEnv  = "CAW_INIT_TEST_ROOTFS"
	cwdEnv     = "CAW_INIT_TEST_CWD"
	asEnv      = "CAW_INIT_TEST_AS"      // uid:gid to become before exec (not-root case)
	mountsEnv  = "CAW_INIT_TEST_MOUNTS"  // mount ops before chroot (see doMounts)
	binEnv     = "CAW_INIT_TEST_BIN"     // caw-init to exec when there is no rootfs
	sigconfEnv = "CAW_INIT_TEST_SIGCONF" // "1": start caw-init with callerIgnored ignored, callerBlocked blocked
	runTimeout = 60 * time.Second
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		helperMain()
		return
	}
	code := m.Run()
	if sharedRoot != "" {
		os.RemoveAll(sharedRoot)
	}
	os.Exit(code)
}

// helperMain runs as PID 1 of the new namespaces and becomes caw-init.
func helperMain() {
	die := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "test helper: %s: %v\n", what, err)
		os.Exit(99)
	}
	root := os.Getenv(rootfsEnv)
	if root == "" {
		// Not PID 1: only here to set up the signal configuration.
		execInit(os.Getenv(binEnv), die)
	}
	// Nothing mounted here may reach the host's mount table.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		die("make / private", err)
	}
	if err := unix.Mount("proc", filepath.Join(root, "proc"), "proc", 0, ""); err != nil {
		die("mount proc", err)
	}
	if err := unix.Mount("/dev", filepath.Join(root, "dev"), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		die("bind /dev", err)
	}
	if err := doMounts(root, os.Getenv(mountsEnv)); err != nil {
		die("mounts", err)
	}
	if err := unix.Chroot(root); err != nil {
		die("chroot", err)
	}
	cwd := os.Getenv(cwdEnv)
	if cwd == "" {
		cwd = "/"
	}
	if err := os.Chdir(cwd); err != nil {
		die("chdir", err)
	}
	if as := os.Getenv(asEnv); as != "" {
		var uid, gid int
		fmt.Sscanf(as, "%d:%d", &uid, &gid)
		if err := syscall.Setgroups([]int{gid}); err != nil {
			die("setgroups", err)
		}
		if err := syscall.Setgid(gid); err != nil {
			die("setgid", err)
		}
		if err := syscall.Setuid(uid); err != nil {
			die("setuid", err)
		}
	}
	execInit("/caw-init", die)
}

// The signal configuration a caller such as nohup or a shell running a
// background job leaves, widened from tini's sigconf test (SIGTTOU, SIGSEGV
// and SIGINT ignored; SIGTTIN and SIGUSR1 blocked) to every kind the Go
// runtime treats differently: the ignored actions it leaves alone (HUP,
// INT, TTOU), the ones it takes over for os/signal (QUIT, USR1, PIPE, ALRM,
// TERM, 35-64), for itself (SEGV, PROF, 33) or that caw-init catches with
// its own handler (32, 34); the blocked signals it unblocks on its threads
// (ILL, TERM, 34) and the ones it does not (TTIN, USR1, USR2, 40).
var (
	callerIgnored = append([]syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1,
		syscall.SIGSEGV, syscall.SIGPIPE, syscall.SIGALRM, syscall.SIGTERM, syscall.SIGTTOU, syscall.SIGPROF},
		sigRange(32, 64)...)
	callerBlocked = []syscall.Signal{syscall.SIGILL, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM,
		syscall.SIGTTIN, 34, 40}
)

func sigRange(from, to syscall.Signal) []syscall.Signal {
	var sigs []syscall.Signal
	for s := from; s <= to; s++ {
		sigs = append(sigs, s)
	}
	return sigs
}

// kernelSigaction is the kernel's struct sigaction on amd64 and arm64.
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

// ignoreRaw sets sig's action to SIG_IGN with rt_sigaction itself:
// signal.Ignore leaves alone the signals the Go runtime keeps for itself
// (SEGV, PROF, 32-34), and an ignored action is what survives exec.
func ignoreRaw(sig syscall.Signal) error {
	sa := kernelSigaction{handler: 1} // SIG_IGN
	_, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// defaultSignals sets every ignored action back to the default and
// unblocks every signal on the calling (locked) thread.
func defaultSignals() error {
	for s := 1; s <= 64; s++ {
		if s == int(unix.SIGKILL) || s == int(unix.SIGSTOP) {
			continue
		}
		var old kernelSigaction
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 {
			return e
		}
		if old.handler != 1 { // SIG_IGN
			continue
		}
		dfl := kernelSigaction{}
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(s), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0); e != 0 {
			return e
		}
	}
	var none unix.Sigset_t
	return unix.PthreadSigmask(unix.SIG_SETMASK, &none, nil)
}

// execInit execs caw-init with the test's arguments and environment, minus
// the harness's own variables, after setting the caller's signal
// configuration if asked.
func execInit(bin string, die func(string, error)) {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CAW_INIT_TEST_") {
			env = append(env, kv)
		}
	}
	// Ignored actions survive exec; the mask is the exec'ing thread's.
	// Nothing runs in this process from here to the exec: an ignored
	// SIGURG (no preemption) or 33 (no setuid) does no harm.
	runtime.LockOSThread()
	// First what Docker gives a container's first process: nothing
	// ignored, nothing blocked. The test's own caller may have left
	// something (GNU make runs its recipes with 32 and 33 ignored).
	if err := defaultSignals(); err != nil {
		die("reset signals", err)
	}
	if os.Getenv(sigconfEnv) == "1" {
		for _, s := range callerIgnored {
			if err := ignoreRaw(s); err != nil {
				die(fmt.Sprintf("ignore signal %d", int(s)), err)
			}
		}
		var set unix.Sigset_t
		for _, s := range callerBlocked {
			set.Val[(s-1)/64] |= 1 << ((s - 1) % 64)
		}
		if err := unix.PthreadSigmask(unix.SIG_BLOCK, &set, nil); err != nil {
			die("block signals", err)
		}
	}
	err := unix.Exec(bin, append([]string{filepath.Base(bin)}, os.Args[1:]...), env)
	die("exec caw-init", err)
}

// doMounts sets up mounts inside the new namespace, one op a line, paths
// inside root: "ro DIR" bind-mounts DIR on itself read-only (as Docker's
// :ro does), "bind SRC DST", "tmpfs DIR BYTES", "copy SRC DST" (a file,
// mode 0644, uid:gid 1000:1000... kept as SRC's), "fill FILE" writes FILE
// until the filesystem is full.
func doMounts(root, ops string) error {
	for _, line := range strings.Split(ops, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		at := func(i int) string { return filepath.Join(root, f[i]) }
		var err error
		switch f[0] {
		case "ro":
			if err = unix.Mount(at(1), at(1), "", unix.MS_BIND, ""); err == nil {
				err = unix.Mount("", at(1), "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
			}
		case "bind":
			err = unix.Mount(at(1), at(2), "", unix.MS_BIND, "")
		case "tmpfs":
			err = unix.Mount("tmpfs", at(1), "tmpfs", 0, "size="+f[2]+",mode=0755")
		case "copy":
			var data []byte
			if data, err = os.ReadFile(at(1)); err == nil {
				if err = os.WriteFile(at(2), data, 0o644); err == nil {
					err = os.Chown(at(2), 1000, 1000)
				}
			}
		case "fill":
			var w *os.File
			if w, err = os.Create(at(1)); err == nil {
				buf := make([]byte, 4096)
				for err == nil {
					_, err = w.Write(buf)
				}
				w.Close()
				if errors.Is(err, syscall.ENOSPC) {
					err = nil
				}
			}
		default:
			err = fmt.Errorf("unknown op %q", f[0])
		}
		if err != nil {
			return fmt.Errorf("%s: %w", line, err)
		}
	}
	return nil
}

const rootPasswd = `root:x:0:0:root:/root:/bin/sh
playground:x:1000:1000:Playground:/home/playground:/bin/sh
alice:x:1001:1001::/home/alice:/bin/sh
`

const rootGroup = `root:x:0:
playground:x:1000:
alice:x:1001:
dev:x:2000:playground,alice
docker:x:2001:playground
staff:x:50:
`

var applets = []string{"sh", "cat", "ls", "ps", "sleep", "kill", "id", "grep", "echo", "true", "false",
	"env", "pwd", "readlink", "mkfifo", "wc", "test", "[", "printf", "tr", "cut", "head"}

type rootfsOpts struct {
	fifoEtc bool // /etc/passwd and /etc/group are FIFOs (to hold caw-init in start-up)
}

// newRootfs builds a root filesystem in a fresh temp dir.
func newRootfs(t *testing.T, o rootfsOpts) string {
	t.Helper()
	return buildRootfs(t, t.TempDir(), o)
}

// buildRootfs builds a root filesystem in root: static busybox and its
// applets, caw-init at /caw-init, the credential probe at /probe, passwd and
// group.
func buildRootfs(t *testing.T, root string, o rootfsOpts) string {
	t.Helper()
	testenv.RequireRoot(t)
	bb := testenv.Busybox(t)
	initBin := testenv.Build(t, "github.com/caw-dev/caw/cmd/caw-init")
	probe := testenv.Build(t, "github.com/caw-dev/caw/init/internal/credprobe")
	// TempDir is 0700: the dropped child must be able to enter /.
	must(t, os.Chmod(root, 0o755))
	for _, d := range []string{"bin", "etc", "proc", "dev", "tmp", "root", "work", "home/playground", "home/alice"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.Chmod(filepath.Join(root, "tmp"), 0o1777))
	must(t, os.Chown(filepath.Join(root, "home/playground"), 1000, 1000))
	copyFile(t, bb, filepath.Join(root, "bin/busybox"))
	copyFile(t, initBin, filepath.Join(root, "caw-init"))
	copyFile(t, probe, filepath.Join(root, "probe"))
	for _, a := range applets {
		must(t, os.Symlink("busybox", filepath.Join(root, "bin", a)))
	}
	// A file that exists but is not executable, for 126.
	must(t, os.WriteFile(filepath.Join(root, "bin/notexec"), []byte("#!/bin/sh\n"), 0o644))
	if o.fifoEtc {
		must(t, unix.Mkfifo(filepath.Join(root, "etc/passwd"), 0o644))
		must(t, unix.Mkfifo(filepath.Join(root, "etc/group"), 0o644))
	} else {
		must(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(rootPasswd), 0o644))
		must(t, os.WriteFile(filepath.Join(root, "etc/group"), []byte(rootGroup), 0o644))
	}
	return root
}

var (
	sharedMu   sync.Mutex
	sharedRoot string // removed by TestMain
)

// rootfs is a root filesystem shared by the tests that do not change it.
func rootfs(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedRoot == "" {
		dir, err := os.MkdirTemp("", "caw-init-rootfs-")
		must(t, err)
		buildRootfs(t, dir, rootfsOpts{})
		sharedRoot = dir
	}
	return sharedRoot
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	must(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	must(t, err)
	_, err = io.Copy(out, in)
	must(t, err)
	must(t, out.Close())
}

// launch describes one caw-init run.
type launch struct {
	root  string   // rootfs; "" runs caw-init on the host, not as PID 1
	cwd   string   // working directory (inside the rootfs if any)
	env   []string // caw-init's whole environment
	stdin io.Reader
	as    string // "uid:gid": start caw-init without root
	// mounts are doMounts ops made in caw-init's mount namespace.
	mounts []string
	tty    *os.File   // pty slave: stdio, session leader, controlling tty
	args   []string   // caw-init's arguments
	extra  []*os.File // inherited by caw-init as fds 3... without close-on-exec
	// sigconf starts caw-init with callerIgnored ignored and callerBlocked
	// blocked, as nohup or a shell's background job would.
	sigconf bool
	// bin, with no root, is what the caller execs instead of
	// caw-init (to see the configuration the caller itself gives).
	bin string
	// timeout replaces runTimeout for a run whose own work is slow on a
	// slow machine (forking thousands of shells).
	timeout time.Duration
}

// proc is a running caw-init.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	lines   chan string
	stdout  strings.Builder // every stdout line seen, for failure messages
	mu      sync.Mutex
	stderr  *harness.SyncBuffer
	waited  chan struct{}
	stdinW  *os.File // write end of stdin when the launch gave none
	err     error
	start   time.Time
	timeout time.Duration
}

var baseEnv = []string{"PATH=/bin", "HOME=/root", "USER=root", "LOGNAME=root"}

func start(t *testing.T, r launch) *proc {
	t.Helper()
	env := r.env
	if env == nil {
		env = baseEnv
	}
	var cmd *exec.Cmd
	if r.root == "" {
		// Through execInit too, for the caller's signal configuration.
		bin := r.bin
		if bin == "" {
			bin = testenv.Build(t, "github.com/caw-dev/caw/cmd/caw-init")
		}
		cmd = exec.Command(os.Args[0], r.args...)
		cmd.Env = append(append([]string{}, env...), helperEnv+"=1", binEnv+"="+bin)
		if r.sigconf {
			cmd.Env = append(cmd.Env, sigconfEnv+"=1")
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{}
		cmd.Dir = r.cwd
	} else {
		cmd = exec.Command(os.Args[0], r.args...)
		cmd.Env = append(append([]string{}, env...), helperEnv+"=1", rootfsEnv+"="+r.root, cwdEnv+"="+r.cwd, asEnv+"="+r.as, mountsEnv+"="+strings.Join(r.mounts, "\n"))
		if r.sigconf {
			cmd.Env = append(cmd.Env, sigconfEnv+"=1")
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS}
	}
	p := &proc{t: t, cmd: cmd, lines: make(chan string, 1024), stderr: &harness.SyncBuffer{}, waited: make(chan struct{}), timeout: r.timeout}
	if p.timeout == 0 {
		p.timeout = runTimeout
	}
	cmd.Stdin = r.stdin
	cmd.ExtraFiles = r.extra
	if r.stdin == nil && r.tty == nil {
		pr, pw, err := os.Pipe()
		must(t, err)
		cmd.Stdin, p.stdinW = pr, pw
		defer pr.Close()
		t.Cleanup(func() { pw.Close() })
	}
	cmd.Stderr = p.stderr
	var stdout io.ReadCloser
	if r.tty != nil {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = r.tty, r.tty, r.tty
		cmd.SysProcAttr.Setsid = true
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
	} else {
		var err error
		stdout, err = cmd.StdoutPipe()
		must(t, err)
	}
	// A caw-init that died (not PID 1) leaves its child holding stderr:
	// Wait must not wait for that forever.
	cmd.WaitDelay = 5 * time.Second
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start caw-init: %v", err)
	}
	if stdout == nil {
		close(p.lines)
	} else {
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				p.mu.Lock()
				p.stdout.WriteString(sc.Text() + "\n")
				p.mu.Unlock()
				p.lines <- sc.Text()
			}
			close(p.lines)
		}()
	}
	go func() {
		p.err = cmd.Wait()
		close(p.waited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.waited:
		default:
			_ = cmd.Process.Kill() // PID 1: the whole namespace goes with it
			<-p.waited
		}
	})
	return p
}

// expect reads stdout lines until one equals want.
func (p *proc) expect(want string) {
	p.t.Helper()
	timer := time.NewTimer(runTimeout)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("stdout ended before %q; stdout:\n%sstderr:\n%s", want, p.out(), p.stderr)
			}
			if l == want {
				return
			}
		case <-timer.C:
			p.t.Fatalf("no %q on stdout after %v; stdout:\n%sstderr:\n%s", want, runTimeout, p.out(), p.stderr)
		}
	}
}

// next is the next stdout line.
func (p *proc) next() string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("stdout ended; stdout:\n%sstderr:\n%s", p.out(), p.stderr)
		}
		return l
	case <-time.After(runTimeout):
		p.t.Fatalf("no stdout line after %v; stderr:\n%s", runTimeout, p.stderr)
	}
	return ""
}

func (p *proc) out() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

// signal sends sig to caw-init (from outside its PID namespace, as Docker does).
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait returns caw-init's exit code; death by a signal fails the test.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.waited:
	case <-time.After(p.timeout):
		_ = p.cmd.Process.Kill()
		<-p.waited
		p.t.Fatalf("caw-init still running after %v; stdout:\n%sstderr:\n%s", p.timeout, p.out(), p.stderr)
	}
	// Drain stdout so out() has everything.
	for range p.lines {
	}
	ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		p.t.Fatalf("caw-init itself died of %v; stderr:\n%s", ws.Signal(), p.stderr)
	}
	return ws.ExitStatus()
}

// runInit runs caw-init to the end and returns its exit code, stdout, stderr.
func runInit(t *testing.T, r launch) (int, string, string) {
	t.Helper()
	p := start(t, r)
	code := p.wait()
	return code, p.out(), p.stderr.String()
}

// inRoot is a run in the shared rootfs with these caw-init arguments.
func inRoot(t *testing.T, args ...string) launch {
	return launch{root: rootfs(t), args: args}
}
