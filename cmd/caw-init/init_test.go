package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/testenv"
	"github.com/caw-dev/caw/manifest"
)

// TestExitCodes: the child's status, 128+N for signal N, 127 and 126 with one
// line naming the command, 2 for caw-init's own usage errors.
func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string // a line on stderr must contain this ("" = stderr empty)
	}{
		{"zero", []string{"--", "sh", "-c", "exit 0"}, 0, ""},
		{"three", []string{"--", "sh", "-c", "exit 3"}, 3, ""},
		{"no-dashes", []string{"sh", "-c", "exit 4"}, 4, ""},
		{"sigusr1", []string{"--", "sh", "-c", "kill -USR1 $$"}, 128 + 10, ""},
		{"sigkill", []string{"--", "sh", "-c", "kill -KILL $$"}, 128 + 9, ""},
		{"sigterm", []string{"--", "sh", "-c", "kill -TERM $$"}, 128 + 15, ""},
		{"not-found-path", []string{"--", "nosuchcmd"}, 127, "nosuchcmd: command not found"},
		{"not-found-abs", []string{"--", "/bin/nosuchcmd"}, 127, "/bin/nosuchcmd: command not found"},
		{"not-executable", []string{"--", "/bin/notexec"}, 126, "/bin/notexec: cannot execute"},
		{"directory", []string{"--", "/tmp"}, 126, "/tmp: cannot execute"},
		{"no-command", []string{"-v"}, 2, "no COMMAND given"},
		{"bad-flag", []string{"--bogus", "--", "true"}, 2, "-bogus"},
		{"bad-grace", []string{"--grace", "soon", "--", "true"}, 2, "grace"},
		{"unknown-user", []string{"--user", "nosuchuser", "--", "true"}, 2, `user "nosuchuser": no such user`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runInit(t, inRoot(t, tc.args...))
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr)
			}
			if tc.stderr == "" {
				if stderr != "" {
					t.Errorf("stderr not quiet: %q", stderr)
				}
				return
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(lines) != 1 || !strings.Contains(lines[0], tc.stderr) || !strings.HasPrefix(lines[0], "caw-init: ") {
				t.Errorf("stderr %q: want one caw-init line containing %q", stderr, tc.stderr)
			}
		})
	}
}

// TestRunsAsPID1: in its own PID namespace caw-init is PID 1 and does not
// register as a subreaper.
func TestRunsAsPID1(t *testing.T) {
	code, out, stderr := runInit(t, inRoot(t, "-v", "--", "sh", "-c", "echo ppid=$PPID"))
	if code != 0 || strings.TrimSpace(out) != "ppid=1" {
		t.Errorf("exit %d stdout %q: want 0 and ppid=1; stderr:\n%s", code, out, stderr)
	}
	if strings.Contains(stderr, "subreaper") {
		t.Errorf("PID 1 mentions subreaper: %s", stderr)
	}
}

// childScript traps the given signals, says "ready", and idles in `wait` so
// each trapped signal prints "got NAME" at once. It never ends by itself.
func childScript(sigs []string, extra string) string {
	var b strings.Builder
	for _, s := range sigs {
		fmt.Fprintf(&b, "trap 'echo got %s' %s\n", s, s)
	}
	b.WriteString(extra)
	// With -g the idle sleep gets the signals too; start another if one dies.
	b.WriteString("sleep 1000 & pid=$!\necho ready\nwhile :; do wait $pid; kill -0 $pid 2>/dev/null || { sleep 1000 & pid=$!; }; done\n")
	return b.String()
}

// TestSignalsForwarded: each of HUP INT QUIT USR1 USR2 WINCH CONT TERM sent to
// caw-init reaches the child, in order; SIGURG never does (sent explicitly
// and by the Go runtime's own preemption).
func TestSignalsForwarded(t *testing.T) {
	sigs := []struct {
		name string
		sig  syscall.Signal
	}{
		{"HUP", syscall.SIGHUP}, {"INT", syscall.SIGINT}, {"QUIT", syscall.SIGQUIT},
		{"USR1", syscall.SIGUSR1}, {"USR2", syscall.SIGUSR2}, {"WINCH", syscall.SIGWINCH},
		{"CONT", syscall.SIGCONT}, {"ALRM", syscall.SIGALRM}, {"TERM", syscall.SIGTERM},
	}
	names := []string{"URG"}
	for _, s := range sigs {
		names = append(names, s.name)
	}
	script := childScript(names, "trap 'echo got TERM; kill $pid; exit 0' TERM\n")
	p := start(t, inRoot(t, "-v", "--", "sh", "-c", script))
	p.expect("ready")
	for _, s := range sigs {
		p.signal(syscall.SIGURG)
		p.signal(s.sig)
		if got := p.next(); got != "got "+s.name {
			t.Fatalf("after SIG%s the child printed %q, want %q (SIGURG must not be forwarded)", s.name, got, "got "+s.name)
		}
	}
	if code := p.wait(); code != 0 {
		t.Errorf("exit %d, want 0; stderr:\n%s", code, p.stderr)
	}
	if strings.Contains(p.stderr.String(), "SIGURG") {
		t.Errorf("caw-init handled SIGURG:\n%s", p.stderr)
	}
	if strings.Contains(p.out(), "got URG") {
		t.Errorf("SIGURG reached the child:\n%s", p.out())
	}
}

// TestProcessGroupForwarding: with -g a signal reaches the child's whole
// process group; without it only the child.
func TestProcessGroupForwarding(t *testing.T) {
	grandchild := `sh -c 'trap "echo grandchild got USR1; exit 0" USR1; sleep 1000 & p=$!; echo grandchild ready; wait $p' &
`
	script := childScript([]string{"USR1"}, grandchild)
	for _, tc := range []struct {
		name        string
		args        []string
		env         []string
		reachGroup  bool
		finalSignal syscall.Signal
	}{
		{"flag", []string{"-g"}, nil, true, syscall.SIGKILL},
		{"env", nil, append([]string{"CAW_PGROUP=1"}, baseEnv...), true, syscall.SIGKILL},
		{"child-only", nil, nil, false, syscall.SIGKILL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := inRoot(t, append(tc.args, "--", "sh", "-c", script)...)
			r.env = tc.env
			p := start(t, r)
			seen := map[string]bool{}
			for !seen["ready"] || !seen["grandchild ready"] {
				seen[p.next()] = true
			}
			p.signal(syscall.SIGUSR1)
			want := map[string]bool{"got USR1": true}
			if tc.reachGroup {
				want["grandchild got USR1"] = true
			}
			for len(want) > 0 {
				l := p.next()
				if !want[l] {
					t.Fatalf("unexpected line %q (reachGroup %v)", l, tc.reachGroup)
				}
				delete(want, l)
			}
			// End it with SIGTERM: the child dies of it, the grandchild is
			// a leftover that caw-init terminates.
			p.signal(syscall.SIGTERM)
			if code := p.wait(); code != 143 {
				t.Errorf("exit %d, want 143; stderr:\n%s", code, p.stderr)
			}
			if !tc.reachGroup && strings.Contains(p.out(), "grandchild got USR1") {
				t.Errorf("without -g the grandchild got the signal:\n%s", p.out())
			}
		})
	}
}

// openFIFOWriter opens a FIFO for writing, which blocks until caw-init
// opens it for reading; it fails the test after a timeout.
func openFIFOWriter(t *testing.T, path string) *os.File {
	t.Helper()
	type res struct {
		f   *os.File
		err error
	}
	ch := make(chan res, 1)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		ch <- res{f, err}
	}()
	select {
	case r := <-ch:
		must(t, r.err)
		return r.f
	case <-time.After(runTimeout):
		t.Fatalf("caw-init never opened %s", path)
	}
	return nil
}

// TestEarlySignal: a signal that arrives while caw-init is still starting
// (held here in the open of /etc/passwd and /etc/group, which are FIFOs) is
// delivered once the child exists; with no child to start, it ends caw-init
// with 128+N rather than 127 or Go's 2.
func TestEarlySignal(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sig     syscall.Signal
		command []string
		code    int
		stderr  string
	}{
		{"delivered", syscall.SIGUSR1, []string{"sh", "-c", "sleep 1000"}, 128 + 10, "forwarded SIGUSR1"},
		{"term-delivered", syscall.SIGTERM, []string{"sh", "-c", "sleep 1000"}, 128 + 15, "forwarded SIGTERM"},
		{"no-child", syscall.SIGTERM, []string{"/bin/nosuchcmd"}, 128 + 15, "received during start-up"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := newRootfs(t, rootfsOpts{fifoEtc: true})
			p := start(t, launch{root: root, args: append([]string{"-v", "--user", "1000:1000", "--"}, tc.command...)})
			// caw-init is inside open("/etc/passwd"): signals are captured.
			openFIFOWriter(t, filepath.Join(root, "etc/passwd")).Close()
			p.signal(tc.sig)
			// It now waits in open("/etc/group"); let it go on.
			openFIFOWriter(t, filepath.Join(root, "etc/group")).Close()
			if code := p.wait(); code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, p.stderr)
			}
			if !strings.Contains(p.stderr.String(), tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, p.stderr)
			}
		})
	}
}

// orphanScript makes n orphans (their parent subshells exit at once) that
// all block on one pipe and die together when the main shell closes its
// write ends: an orphan storm. They are forked by groups of at most 100
// subshells, each with its own parent: one shell forking all of them
// scans a job list that grows with every fork (measured: 10,000 from one
// busybox shell took 50 s on a 2-core VM, by groups 18 s).
func orphanScript(n int, after string) string {
	const group = 100
	return fmt.Sprintf(`rm -f /tmp/storm; mkfifo /tmp/storm
exec 3<>/tmp/storm 4</tmp/storm
( left=%d
while [ $left -gt 0 ]; do
	k=$(( left < %d ? left : %d )); left=$((left-k))
	( i=0; while [ $i -lt $k ]; do ( exec 3>&-; read x <&4 ) & i=$((i+1)); done ) &
done
wait )
exec 4<&-
%s`, n, group, group, after)
}

// countProcs counts /proc entries (zombies included) with shell builtins
// only, so the count has no process of its own in it.
const countProcs = `count() { n=0; for d in /proc/[0-9]*; do n=$((n+1)); done; }
`

// TestOrphanStorm: 10,000 orphans that die at once are all reaped: the
// namespace goes back to caw-init plus the main shell, with no zombie left.
func TestOrphanStorm(t *testing.T) {
	const n = 10000
	after := countProcs + `count; echo before=$n
exec 3>&-
i=0
while [ $i -lt 300 ]; do
	count
	if [ "$n" -le 2 ]; then echo after=$n; exit 0; fi
	sleep 0.1; i=$((i+1))
done
z=0; for f in /proc/[0-9]*/stat; do read -r l < $f; case "$l" in *") Z "*) z=$((z+1));; esac; done
echo after=$n zombies=$z; exit 1
`
	run := inRoot(t, "--", "sh", "-c", orphanScript(n, after))
	// Forking 10,000 shells and letting them all exit at once takes
	// 20-30 s on a 2-core VM; what is tested is that none is left.
	run.timeout = 5 * time.Minute
	code, out, stderr := runInit(t, run)
	if code != 0 {
		t.Fatalf("exit %d: orphans not all reaped; stdout:\n%s\nstderr:\n%s", code, out, stderr)
	}
	var before int
	fmt.Sscanf(out, "before=%d", &before)
	if before < n+2 {
		t.Fatalf("only %d processes before the storm, want >= %d: the test made too few orphans\n%s", before, n+2, out)
	}
}

// TestMainStatusNotStolen: while orphans die around it, the main child's
// status always reaches caw-init's exit code (a reaper racing exec.Cmd.Wait
// loses it now and then).
func TestMainStatusNotStolen(t *testing.T) {
	root := rootfs(t)
	for i := range 25 {
		want := 40 + i%7
		script := orphanScript(200, fmt.Sprintf("exec 3>&-\nexit %d\n", want))
		code, _, stderr := runInit(t, launch{root: root, args: []string{"--", "sh", "-c", script}})
		if code != want {
			t.Fatalf("round %d: exit %d, want %d; stderr:\n%s", i, code, want, stderr)
		}
	}
}

// TestSubreaper: not PID 1, caw-init becomes a child subreaper (said at -v):
// an orphaned grandchild is re-parented to it, and it is terminated when the
// main child exits.
func TestSubreaper(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.Busybox(t)
	// $(...) returns once the subshell has exited: sleep is an orphan then.
	script := `o=$(sleep 1000 >/dev/null 2>&1 & echo $!); echo orphan=$o
read x
exit 7
`
	p := start(t, launch{args: []string{"-v", "--", "/bin/busybox", "sh", "-c", script}, env: []string{"PATH=/bin:/usr/bin"}})
	var orphan int
	fmt.Sscanf(p.next(), "orphan=%d", &orphan)
	if orphan <= 0 {
		t.Fatal("no orphan pid")
	}
	if ppid := ppidOf(t, orphan); ppid != p.cmd.Process.Pid {
		t.Errorf("orphan %d has parent %d, want caw-init %d", orphan, ppid, p.cmd.Process.Pid)
	}
	closeStdin(t, p) // the main child reads EOF and exits 7
	if code := p.wait(); code != 7 {
		t.Errorf("exit %d, want 7; stderr:\n%s", code, p.stderr)
	}
	if !strings.Contains(p.stderr.String(), "registered as child subreaper") {
		t.Errorf("-v did not say subreaper:\n%s", p.stderr)
	}
	if err := syscall.Kill(orphan, 0); err == nil {
		t.Errorf("leftover %d still alive after caw-init exited", orphan)
	}
}

func ppidOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	must(t, err)
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ppid, err := strconv.Atoi(f[1])
	must(t, err)
	return ppid
}

// probe runs /probe as the child and returns its key=value lines.
func probe(t *testing.T, r launch) (map[string]string, string) {
	t.Helper()
	code, out, stderr := runInit(t, r)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	kv := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			kv[k] = v
		}
	}
	return kv, stderr
}

// TestUserSpecTable: the gosu/su-exec table, as the child sees itself.
func TestUserSpecTable(t *testing.T) {
	for _, tc := range []struct {
		spec   string
		env    string // CAW_USER instead of --user
		uid    string
		gid    string
		groups string
	}{
		{spec: "playground", uid: "1000", gid: "1000", groups: "[1000 2000 2001]"},
		{spec: "alice", uid: "1001", gid: "1001", groups: "[1001 2000]"},
		{spec: "1000", uid: "1000", gid: "1000", groups: "[1000 2000 2001]"},
		{spec: "playground:staff", uid: "1000", gid: "50", groups: "[50]"},
		{spec: "1000:2000", uid: "1000", gid: "2000", groups: "[2000]"},
		{spec: "1000:dev", uid: "1000", gid: "2000", groups: "[2000]"},
		{spec: "4242", uid: "4242", gid: "0", groups: "[0]"},
		{spec: "4242:4243", uid: "4242", gid: "4243", groups: "[4243]"},
		{env: "playground", uid: "1000", gid: "1000", groups: "[1000 2000 2001]"},
	} {
		name := tc.spec + tc.env
		t.Run(strings.ReplaceAll(name, ":", "_"), func(t *testing.T) {
			r := inRoot(t, "--", "/probe")
			if tc.spec != "" {
				r = inRoot(t, "--user", tc.spec, "--", "/probe")
			} else {
				r.env = append([]string{"CAW_USER=" + tc.env}, baseEnv...)
			}
			kv, _ := probe(t, r)
			if kv["uid"] != tc.uid || kv["euid"] != tc.uid || kv["gid"] != tc.gid || kv["egid"] != tc.gid || kv["groups"] != tc.groups {
				t.Errorf("got uid %s euid %s gid %s egid %s groups %s; want %s %s %s", kv["uid"], kv["euid"], kv["gid"], kv["egid"], kv["groups"], tc.uid, tc.gid, tc.groups)
			}
		})
	}
	for _, spec := range []string{"nosuchuser", "0day", "0:bogus", "playground:bogus"} {
		t.Run("refused_"+strings.ReplaceAll(spec, ":", "_"), func(t *testing.T) {
			code, out, stderr := runInit(t, inRoot(t, "--user", spec, "--", "/probe"))
			if code != 2 || out != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, strconv.Quote(spec)) {
				t.Errorf("exit %d stdout %q stderr %q: want 2, no child, one line naming %q", code, out, stderr, spec)
			}
		})
	}
}

// TestPrivilegeDrop: after the drop the child has no capability and cannot
// get root back; without --user it keeps root (so the probe can tell).
func TestPrivilegeDrop(t *testing.T) {
	kv, _ := probe(t, inRoot(t, "--user", "playground", "--", "/probe"))
	for _, k := range []string{"CapEff", "CapPrm", "CapAmb"} {
		if kv[k] != "0000000000000000" {
			t.Errorf("%s = %s after the drop, want 0", k, kv[k])
		}
	}
	for _, k := range []string{"setuid0", "setgid0", "setegid0", "setgroups0"} {
		if kv[k] != "operation not permitted" {
			t.Errorf("%s = %q after the drop, want EPERM", k, kv[k])
		}
	}
	kv, _ = probe(t, inRoot(t, "--", "/probe"))
	if kv["uid"] != "0" || kv["CapEff"] == "0000000000000000" || kv["setuid0"] != "<nil>" {
		t.Errorf("without --user the child should keep root: %v", kv)
	}
}

// TestChildEnvironment: the working directory and the environment are kept,
// with HOME, USER and LOGNAME set for the target user.
func TestChildEnvironment(t *testing.T) {
	r := inRoot(t, "--user", "playground", "--", "sh", "-c", `echo "$(pwd)|$HOME|$USER|$LOGNAME|$FOO|$PATH"`)
	r.cwd = "/work"
	r.env = append([]string{"FOO=bar baz"}, baseEnv...)
	code, out, stderr := runInit(t, r)
	if want := "/work|/home/playground|playground|playground|bar baz|/bin\n"; code != 0 || out != want {
		t.Errorf("exit %d stdout %q, want 0 and %q; stderr:\n%s", code, out, want, stderr)
	}
	// A uid with no passwd entry: HOME=/ as gosu does.
	code, out, _ = runInit(t, inRoot(t, "--user", "4242", "--", "sh", "-c", `echo "$HOME|$USER"`))
	if code != 0 || out != "/|4242\n" {
		t.Errorf("uid without passwd entry: exit %d stdout %q, want /|4242", code, out)
	}
}

// TestNoFDLeak: with a manifest read and the guard started, the child holds
// fds 0-2 only, also when started through the entry hook's trampoline (a
// caller's signal configuration, sigconf); caw-init's argv and environment
// hold nothing but what it was given.
func TestNoFDLeak(t *testing.T) {
	root := newRootfs(t, rootfsOpts{})
	writeManifest(t, root)
	// caw-init itself inherits a descriptor without close-on-exec, as
	// from a careless parent: it must not reach the child either.
	inherited, err := os.Open(filepath.Join(root, "etc/passwd"))
	must(t, err)
	defer inherited.Close()
	for _, sigconf := range []bool{false, true} {
		code, out, stderr := runInit(t, launch{root: root, extra: []*os.File{inherited}, mounts: staged, sigconf: sigconf,
			args: []string{"-vv", "--", "sh", "-c", "ls /proc/$$/fd; id -u; true"}})
		if code != 0 {
			t.Fatalf("sigconf %v: exit %d; stderr:\n%s", sigconf, code, stderr)
		}
		if out != "0\n1\n2\n1000\n" {
			t.Errorf("sigconf %v: child fds and uid:\n%s\nwant 0 1 2 and uid 1000 (manifest user); stderr:\n%s", sigconf, out, stderr)
		}
		if strings.Contains(stderr, "no manifest.json") {
			t.Errorf("the manifest was not read:\n%s", stderr)
		}
		if through := strings.Contains(stderr, "started through the entry hook"); through != sigconf {
			t.Errorf("sigconf %v: started through the entry hook: %v; stderr:\n%s", sigconf, through, stderr)
		}
	}
	// The descriptor was there to leak: caw-init (PID 1) holds it as fd 3.
	code, out, _ := runInit(t, launch{root: root, extra: []*os.File{inherited},
		args: []string{"--no-sync", "--", "sh", "-c", "readlink /proc/1/fd/3"}})
	if code != 0 || !strings.HasSuffix(out, "/etc/passwd\n") {
		t.Errorf("caw-init's fd 3: exit %d %q, want /etc/passwd", code, out)
	}
}

// TestManifestErrors: a malformed manifest exits 2 with the validator's
// message; a symlinked or FIFO manifest is refused without blocking.
func TestManifestErrors(t *testing.T) {
	root := newRootfs(t, rootfsOpts{})
	auth := filepath.Join(root, "tmp/caw_auth")
	must(t, os.MkdirAll(auth, 0o755))
	mf := filepath.Join(auth, manifest.FileName)
	for _, tc := range []struct {
		name   string
		make   func()
		stderr string
	}{
		{"bad-version", func() { must(t, os.WriteFile(mf, []byte(`{"version": 9, "agents": {}}`), 0o644)) }, "manifest.json"},
		{"not-json", func() { must(t, os.WriteFile(mf, []byte(`{`), 0o644)) }, "not valid JSON"},
		{"symlink", func() { must(t, os.Symlink("/etc/passwd", mf)) }, "symlink"},
		{"fifo", func() { must(t, syscall.Mkfifo(mf, 0o644)) }, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(mf)
			tc.make()
			code, out, stderr := runInit(t, launch{root: root, mounts: staged, args: []string{"--", "sh", "-c", "echo ran"}})
			if code != 2 || out != "" || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d stdout %q stderr %q: want 2, no child, one line with %q", code, out, stderr, tc.stderr)
			}
			// --no-sync ignores it.
			code, out, _ = runInit(t, launch{root: root, args: []string{"--no-sync", "--", "sh", "-c", "echo ran"}})
			if code != 0 || out != "ran\n" {
				t.Errorf("--no-sync: exit %d stdout %q", code, out)
			}
		})
	}
}

// TestNotRoot: started without root (docker run --user 1000), caw-init runs
// the child as it is and says once why it cannot switch.
func TestNotRoot(t *testing.T) {
	r := inRoot(t, "--user", "alice", "--", "/probe")
	r.as = "1000:1000"
	kv, stderr := probe(t, r)
	if kv["uid"] != "1000" || kv["gid"] != "1000" {
		t.Errorf("child ran as uid %s gid %s, want 1000 1000", kv["uid"], kv["gid"])
	}
	if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "not root") {
		t.Errorf("stderr %q: want one line saying it is not root", stderr)
	}
	// Asking for the user it already is: nothing to say.
	r = inRoot(t, "--user", "playground", "--", "sh", "-c", "id -u")
	r.as = "1000:1000"
	code, out, stderr := runInit(t, r)
	if code != 0 || out != "1000\n" || stderr != "" {
		t.Errorf("exit %d stdout %q stderr %q: want 0, 1000, quiet", code, out, stderr)
	}
}

// TestManifestUnreadable: started without root (docker run --user 1000) on a
// staging dir only root can read, caw-init exits 2 with one line naming the
// file, the uid and the fix, and starts no child; --no-sync still runs.
func TestManifestUnreadable(t *testing.T) {
	root := newRootfs(t, rootfsOpts{})
	mf := writeManifest(t, root)
	auth := filepath.Dir(mf)
	for _, tc := range []struct {
		name           string
		dirMode, fMode os.FileMode
	}{
		{"dir-root-only", 0o700, 0o644},
		{"file-root-only", 0o755, 0o600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			must(t, os.Chmod(auth, tc.dirMode))
			must(t, os.Chmod(mf, tc.fMode))
			r := launch{root: root, as: "1000:1000", mounts: staged, args: []string{"--", "sh", "-c", "echo ran"}}
			code, out, stderr := runInit(t, r)
			want := "caw-init: cannot read /tmp/caw_auth/manifest.json as uid 1000 (permission denied): run caw setup as the user the container runs as, or start the container as root"
			if code != 2 || out != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, want) {
				t.Errorf("exit %d stdout %q stderr %q: want 2, no child, one line starting %q", code, out, stderr, want)
			}
			r.args = []string{"--no-sync", "--", "sh", "-c", "echo ran"}
			if code, out, stderr := runInit(t, r); code != 0 || out != "ran\n" {
				t.Errorf("--no-sync: exit %d stdout %q stderr %q", code, out, stderr)
			}
		})
	}
	// Root reads it whatever the modes (the manifest's user is then used).
	code, out, stderr := runInit(t, launch{root: root, mounts: staged, args: []string{"--", "id", "-u"}})
	if code != 0 || out != "1000\n" {
		t.Errorf("as root: exit %d stdout %q stderr %q, want 0 and the manifest's user 1000", code, out, stderr)
	}
}

// TestLeftovers: when the main child exits, leftovers get SIGTERM; one that
// ignores it gets SIGKILL after --grace; caw-init then exits with the main
// child's code. With nothing that ignores SIGTERM, no grace is waited.
func TestLeftovers(t *testing.T) {
	// Each leftover forks its sleep before setting its trap: a child forked
	// after the trap runs ash's handler until it execs, so a SIGTERM landing
	// in that window would be swallowed and the sleep outlive the grace.
	// The trap runs at once in the wait builtin (not after a foreground
	// sleep), so "got TERM" is printed well inside the grace.
	stubborn := `sh -c 'sleep 1000 & p=$!; trap "echo stubborn got TERM" TERM; echo stubborn ready; while :; do wait $p; kill -0 $p 2>/dev/null || { sleep 1000 & p=$!; }; done' &
`
	polite := `sh -c 'sleep 1000 & p=$!; trap "echo polite got TERM; exit 0" TERM; echo polite ready; wait $p' &
`
	t.Run("grace-then-kill", func(t *testing.T) {
		p := start(t, inRoot(t, "-v", "--grace", "700ms", "--", "sh", "-c", stubborn+polite+"read x; exit 5"))
		seen := map[string]bool{}
		for !seen["stubborn ready"] || !seen["polite ready"] {
			seen[p.next()] = true
		}
		began := time.Now()
		closeStdin(t, p)
		code := p.wait()
		took := time.Since(began)
		if code != 5 {
			t.Errorf("exit %d, want 5; stderr:\n%s", code, p.stderr)
		}
		out := p.out()
		if !strings.Contains(out, "stubborn got TERM") || !strings.Contains(out, "polite got TERM") {
			t.Errorf("leftovers did not get SIGTERM:\n%s", out)
		}
		if took < 700*time.Millisecond || took > 10*time.Second {
			t.Errorf("took %v, want about the 700ms grace", took)
		}
		if !strings.Contains(p.stderr.String(), "sent SIGKILL") {
			t.Errorf("no SIGKILL said at -v:\n%s", p.stderr)
		}
	})
	t.Run("no-wait-when-polite", func(t *testing.T) {
		p := start(t, inRoot(t, "--grace", "20s", "--", "sh", "-c", polite+"read x; exit 6"))
		p.expect("polite ready")
		began := time.Now()
		closeStdin(t, p)
		if code := p.wait(); code != 6 {
			t.Errorf("exit %d, want 6", code)
		}
		if took := time.Since(began); took > 5*time.Second {
			t.Errorf("took %v although the leftover exits on SIGTERM", took)
		}
		if !strings.Contains(p.out(), "polite got TERM") {
			t.Errorf("leftover did not get SIGTERM:\n%s", p.out())
		}
	})
}

// TestDockerStop: SIGTERM to caw-init (what docker stop sends) ends an agent
// that dies on SIGTERM with 143 at once, its own children included.
func TestDockerStop(t *testing.T) {
	p := start(t, inRoot(t, "--", "sh", "-c", "sleep 1000 & echo ready; wait"))
	p.expect("ready")
	began := time.Now()
	p.signal(syscall.SIGTERM)
	if code := p.wait(); code != 143 {
		t.Errorf("exit %d, want 143; stderr:\n%s", code, p.stderr)
	}
	// Docker kills after 10 s; well inside that, with room for a loaded CI.
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("docker stop took %v", took)
	}
}

// TestStdinPassThrough: echo 'exit 3' | caw-init -- sh exits 3.
func TestStdinPassThrough(t *testing.T) {
	r := inRoot(t, "--", "sh")
	r.stdin = strings.NewReader("exit 3\n")
	if code, _, stderr := runInit(t, r); code != 3 {
		t.Errorf("exit %d, want 3; stderr:\n%s", code, stderr)
	}
}

// closeStdin ends the main shell's `read x`: its stdin is a pipe we hold.
func closeStdin(t *testing.T, p *proc) {
	t.Helper()
	if p.stdinW == nil {
		t.Fatal("no stdin pipe")
	}
	p.stdinW.Close()
}

// staged mounts root's /tmp/caw_auth read-only, as $(caw docker-flags) does.
var staged = []string{"ro tmp/caw_auth"}

// writeManifest stages a valid manifest with no agents and user playground at
// root's /tmp/caw_auth, and returns its path.
func writeManifest(t *testing.T, root string) string {
	t.Helper()
	return filepath.Join(stage(t, root, nil), manifest.FileName)
}
