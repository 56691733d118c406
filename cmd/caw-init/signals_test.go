package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/initbuild"
	"github.com/caw-dev/caw/internal/testenv"
)

// modes are the two ways caw-init runs: PID 1 of a PID namespace, and an
// ordinary process (under docker run --init, another init, a shell), where
// signals the Go runtime leaves at their default action would kill it.
func modes(t *testing.T) []struct {
	name string
	r    func(args ...string) launch
} {
	testenv.RequireRoot(t)
	testenv.Busybox(t)
	return []struct {
		name string
		r    func(args ...string) launch
	}{
		{"pid1", func(args ...string) launch { return inRoot(t, args...) }},
		{"not-pid1", func(args ...string) launch {
			// The host's static busybox runs the command, as in the rootfs.
			if i := slices.Index(args, "--"); i >= 0 {
				args = slices.Insert(slices.Clone(args), i+1, testenv.Busybox(t))
			}
			return launch{args: args, env: []string{"PATH=/bin:/usr/bin", "HOME=/root"}}
		}},
	}
}

// TestRealtimeAndProfForwarded: SIGPROF, SIGRTMIN (34) and SIGRTMAX (64)
// reach the child, and signal 32, which a glibc program cannot catch, ends
// it with 160: none of them is ignored (as PID 1) or kills caw-init (not
// PID 1), which the Go runtime's default actions for 32, 34 and SIGPROF did.
func TestRealtimeAndProfForwarded(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			sigs := []struct {
				name string
				sig  syscall.Signal
			}{{"34", syscall.Signal(34)}, {"PROF", syscall.SIGPROF}, {"64", syscall.Signal(64)}}
			var names []string
			for _, s := range sigs {
				names = append(names, s.name)
			}
			p := start(t, m.r("-v", "--no-sync", "--", "sh", "-c", childScript(names, "")))
			p.expect("ready")
			for _, s := range sigs {
				p.signalUntil(s.sig, "got "+s.name)
			}
			p.signal(syscall.Signal(32))
			if code := p.wait(); code != 128+32 {
				t.Errorf("after signal 32: exit %d, want 160 (the child killed by it); stderr:\n%s", code, p.stderr)
			}
			if !strings.Contains(p.stderr.String(), "forwarded signal 32") {
				t.Errorf("stderr does not say signal 32 was forwarded:\n%s", p.stderr)
			}
		})
	}
}

// TestCallerSignalConfig: started the way nohup or a shell's background job
// starts a command (tini's sigconf test), caw-init passes the caller's
// ignored signals and blocked mask on to the command exactly: the command
// sees what it sees when the caller runs it directly. A signal the caller
// ignored does not end caw-init; caw-init forwards it (SIGTERM) unless it
// left it ignored itself (SIGHUP), and forwards a signal the caller blocked
// (SIGUSR2), both pending in the command, which blocks them too.
func TestCallerSignalConfig(t *testing.T) {
	ms := modes(t)
	const script = `grep -E '^Sig(Ign|Blk)' /proc/self/status; echo ready; read l; echo "read $l"; grep ShdPnd /proc/$$/status`
	sigconf := func(p *proc) map[string]uint64 {
		t.Helper()
		got := map[string]uint64{}
		for range 2 {
			l := p.next()
			k, v, _ := strings.Cut(l, ":")
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("bad status line %q", l)
			}
			got[k] = n
		}
		p.expect("ready")
		return got
	}
	// The caller running the command itself: the harness really sets the
	// configuration, and it is what the command must see under caw-init.
	bb := testenv.Busybox(t)
	direct := start(t, launch{sigconf: true, bin: bb, args: []string{"sh", "-c", script}, env: baseEnv})
	want := sigconf(direct)
	fmt.Fprintln(direct.stdinW, "x")
	direct.expect("read x")
	for _, tc := range []struct {
		field string
		sigs  []syscall.Signal
	}{{"SigIgn", callerIgnored}, {"SigBlk", callerBlocked}} {
		var mask uint64
		for _, s := range tc.sigs {
			mask |= 1 << (s - 1)
		}
		if want[tc.field] != mask {
			t.Fatalf("the harness gives a command it runs %s %#x, want %#x", tc.field, want[tc.field], mask)
		}
	}
	for _, m := range ms {
		t.Run(m.name, func(t *testing.T) {
			r := m.r("-v", "--no-sync", "--", "sh", "-c", script)
			r.sigconf = true
			p := start(t, r)
			got := sigconf(p)
			for _, f := range []string{"SigIgn", "SigBlk"} {
				if got[f] != want[f] {
					t.Errorf("the command's %s is %#x, want the caller's %#x: differs in %s", f, got[f], want[f], sigList(got[f]^want[f]))
				}
			}
			// Ignored by the caller: caw-init does not die of them (SIGHUP
			// it leaves ignored, SIGTERM it forwards), nor the command.
			p.signal(syscall.SIGHUP)
			p.signal(syscall.SIGTERM)
			p.signal(syscall.SIGUSR2)
			p.waitStderr("forwarded SIGTERM")
			p.waitStderr("forwarded SIGUSR2")
			fmt.Fprintln(p.stdinW, "on")
			p.expect("read on")
			pending := p.next()
			for _, s := range []syscall.Signal{syscall.SIGTERM, syscall.SIGUSR2} {
				n, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(pending, "ShdPnd:")), 16, 64)
				if err != nil || n&(1<<(s-1)) == 0 {
					t.Errorf("the command's %q lacks %v: not forwarded", pending, s)
				}
			}
			if strings.Contains(p.stderr.String(), "forwarded SIGHUP") {
				t.Errorf("SIGHUP, which caw-init leaves ignored, was forwarded; stderr:\n%s", p.stderr)
			}
			if code := p.wait(); code != 0 {
				t.Errorf("exit %d, want 0; stderr:\n%s", code, p.stderr)
			}
		})
	}
}

// TestEntryHook: caw-init as the tests build it (the flags of
// internal/initbuild, as the Makefile and the Dockerfile use them) has its
// entry hook. Built with a plain `go build`, it says the hook is missing,
// and runs as before the hook: the command keeps the ignored signals the
// Go runtime leaves alone (SIGHUP, SIGINT, SIGTTOU here), not the others,
// and the blocked ones it does not unblock.
func TestEntryHook(t *testing.T) {
	testenv.RequireRoot(t)
	out, err := exec.Command(testenv.Build(t, "github.com/caw-dev/caw/cmd/caw-init"), "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "entry hook: linked") {
		t.Errorf("caw-init --version: %v\n%s\nwant \"entry hook: linked\": the build lacks -ldflags=%s", err, out, initbuild.LDFlags)
	}

	plain := filepath.Join(t.TempDir(), "caw-init")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", plain, "github.com/caw-dev/caw/cmd/caw-init")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	out, err = exec.Command(plain, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "entry hook: missing") {
		t.Errorf("plain caw-init --version: %v\n%s\nwant \"entry hook: missing\"", err, out)
	}
	r := launch{sigconf: true, bin: plain, env: baseEnv, args: []string{"-v", "--no-sync", "--", testenv.Busybox(t), "sh", "-c",
		`grep -E '^Sig(Blk|Ign)' /proc/self/status; echo ready; read l; echo "read $l"`}}
	p := start(t, r)
	var blk, ign uint64
	for _, f := range []*uint64{&blk, &ign} {
		l := p.next()
		_, v, _ := strings.Cut(l, ":")
		n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			t.Fatalf("bad status line %q", l)
		}
		*f = n
	}
	p.expect("ready")
	if want := uint64(1<<(syscall.SIGHUP-1) | 1<<(syscall.SIGINT-1) | 1<<(syscall.SIGTTOU-1)); ign != want {
		t.Errorf("without the hook the command's SigIgn is %#x, want %#x (HUP INT TTOU)", ign, want)
	}
	// The caller's mask minus what the runtime unblocks (ILL, TERM, 34).
	if want := uint64(1<<(syscall.SIGUSR1-1) | 1<<(syscall.SIGUSR2-1) | 1<<(syscall.SIGTTIN-1) | 1<<(40-1)); blk != want {
		t.Errorf("without the hook the command's SigBlk is %#x, want %#x (USR1 USR2 TTIN 40)", blk, want)
	}
	p.signal(syscall.SIGHUP)
	fmt.Fprintln(p.stdinW, "on")
	p.expect("read on")
	if code := p.wait(); code != 0 {
		t.Errorf("exit %d, want 0; stderr:\n%s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "without the entry hook") {
		t.Errorf("-v does not say the entry hook is missing; stderr:\n%s", p.stderr)
	}
}

// TestEntryTrampolineFailures: with a caller configuration that takes the
// trampoline, a command the kernel refuses to exec still ends caw-init with
// 126 and the reason; and a caw-init the command's user cannot exec (no
// trampoline possible) says so and starts the command directly.
func TestEntryTrampolineFailures(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	noMagic := filepath.Join(dir, "nomagic")
	must(t, os.WriteFile(noMagic, []byte("echo hi\n"), 0o755)) // no #! line: ENOEXEC
	code, out, stderr := runInit(t, launch{sigconf: true, env: baseEnv, args: []string{"-vv", "--no-sync", "--", noMagic}})
	if code != 126 || !strings.Contains(stderr, "cannot execute (exec format error)") || out != "" {
		t.Errorf("exit %d, stdout %q: want 126 and \"cannot execute (exec format error)\"; stderr:\n%s", code, out, stderr)
	}

	private := filepath.Join(dir, "caw-init")
	copyFile(t, testenv.Build(t, "github.com/caw-dev/caw/cmd/caw-init"), private)
	must(t, os.Chmod(private, 0o700))
	code, out, stderr = runInit(t, launch{sigconf: true, bin: private, env: baseEnv,
		args: []string{"--no-sync", "--user", "65534:65534", "--", testenv.Busybox(t), "sh", "-c", "id -u"}})
	if code != 0 || out != "65534\n" || !strings.Contains(stderr, "cannot start the command through caw-init's entry hook") {
		t.Errorf("exit %d, stdout %q: want 0, 65534 and a line saying the trampoline could not start; stderr:\n%s", code, out, stderr)
	}
}

// sigList names the signals of a /proc/PID/status mask.
func sigList(mask uint64) string {
	var names []string
	for n := 1; n <= 64; n++ {
		if mask&(1<<(n-1)) != 0 {
			names = append(names, strconv.Itoa(n))
		}
	}
	return strings.Join(names, " ")
}

// TestLeavesWorkdir: once the command runs, caw-init's own working
// directory is / (it holds no directory busy), while the command keeps the
// one it was started in.
func TestLeavesWorkdir(t *testing.T) {
	// The child waits for caw-init's chdir, which follows the spawn.
	script := `i=0; while [ "$(readlink /proc/$PPID/cwd)" != / ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
echo "init=$(readlink /proc/$PPID/cwd) child=$(pwd)"`
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			r := m.r("-v", "--no-sync", "--", "sh", "-c", script)
			r.cwd = "/work"
			if r.root == "" {
				r.cwd = t.TempDir()
			}
			code, out, stderr := runInit(t, r)
			if want := "init=/ child=" + r.cwd; code != 0 || strings.TrimSpace(out) != want {
				t.Errorf("exit %d, stdout %q: want 0 and %q; stderr:\n%s", code, out, want, stderr)
			}
		})
	}
}

// TestCtrlZStopsJob: caw-init run by an interactive shell (so not PID 1, in
// the foreground of the terminal): Ctrl-Z stops the command, and caw-init
// with it, so the shell reports the job stopped and gives its prompt back;
// fg resumes the command in the foreground, where it reads the terminal.
func TestCtrlZStopsJob(t *testing.T) {
	tm, slave := testenv.OpenTerm(t)
	r := launch{root: rootfs(t), tty: slave}
	r.env = append([]string{"PS1=PROMPT> "}, baseEnv...)
	r.args = []string{"--no-sync", "--", "sh", "-i"}
	p := start(t, r)
	r.tty.Close()
	prompt := regexp.MustCompile(`PROMPT> `)
	_, at := tm.Match(prompt, 0, runTimeout)
	tm.Write(`/caw-init --no-sync -- sh -c 'echo child-"r"eady; read l; echo "child-read: $l"'` + "\n")
	_, at = tm.Match(regexp.MustCompile(`child-ready`), at, runTimeout)
	// busybox ash gives the terminal its cooked mode back only after the
	// job has started: before that, ^Z would be read as a character.
	tm.WaitCooked(runTimeout)
	tm.Write("\x1a")
	_, at = tm.Match(regexp.MustCompile(`Stopped`), at, runTimeout)
	_, at = tm.Match(prompt, at, runTimeout)
	tm.Write("fg\n")
	// fg echoes the job's command line: wait for it before typing.
	_, at = tm.Match(regexp.MustCompile(`caw-init`), at, runTimeout)
	tm.WaitCooked(runTimeout)
	tm.Write("hello\n")
	_, at = tm.Match(regexp.MustCompile(`child-read: hello`), at, runTimeout)
	_, at = tm.Match(prompt, at, runTimeout)
	tm.Write(`echo "rc=$?"` + "\n")
	_, at = tm.Match(regexp.MustCompile(`rc=0`), at, runTimeout)
	_, _ = tm.Match(prompt, at, runTimeout)
	tm.Write("exit 0\n")
	if code := p.wait(); code != 0 {
		t.Errorf("exit %d; terminal:\n%q", code, tm)
	}
}

// signalUntil sends sig until the child prints want, at most three times a
// second apart. busybox ash can miss a trap: a signal that arrives while it
// runs the previous signal's trap, just before it blocks in wait again,
// stays pending until the next one (about 7 runs in 10 here when the next
// signal followed the previous line at once; caw-init's log showed each
// forwarded). A signal caw-init never forwards still fails: no line comes.
func (p *proc) signalUntil(sig syscall.Signal, want string) {
	p.t.Helper()
	for try := 0; ; try++ {
		p.signal(sig)
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("stdout ended before %q; stderr:\n%s", want, p.stderr)
			}
			if l != want {
				p.t.Fatalf("after signal %d the child printed %q, want %q", sig, l, want)
			}
			return
		case <-time.After(time.Second):
			if try == 2 {
				p.t.Fatalf("no %q after signal %d sent 3 times; stderr:\n%s", want, sig, p.stderr)
			}
		}
	}
}

// waitStderr waits until caw-init's stderr holds want.
func (p *proc) waitStderr(want string) {
	p.t.Helper()
	for end := time.Now().Add(runTimeout); !strings.Contains(p.stderr.String(), want); {
		if time.Now().After(end) {
			p.t.Fatalf("no %q on stderr after %v; stderr:\n%s", want, runTimeout, p.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
