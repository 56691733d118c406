package guard

// Test environment: every test in this package runs in a private mount
// namespace (TestMain: mountns.Main), so tests bind-mount real host files
// onto real staging placeholders exactly as Docker does, and watch them with
// real inotify.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
	"github.com/caw-dev/caw/internal/testenv"
	"github.com/caw-dev/caw/internal/testenv/mountns"
	"github.com/caw-dev/caw/manifest"
	"github.com/caw-dev/caw/sync/policy"
	"golang.org/x/sys/unix"
)

const (
	helperEnv = "CAW_GUARD_TEST_HELPER"
	// The container user, and the host user owning the host files.
	userUID, userGID = 1000, 1000
	hostUID, hostGID = 3000, 3000
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(guardHelper())
	}
	mountns.Main(m)
}

// tokenBase is an expiry an hour ahead: token n expires n seconds later, so
// a larger n is a fresher login.
var tokenBase = time.Now().Add(time.Hour).UnixMilli()

func claudeTok(n int) []byte {
	return append(harness.ClaudeJSON(fmt.Sprint("at-", n), fmt.Sprint("rt-", n), tokenBase+int64(n)*1000), '\n')
}

func codexTok(n int) []byte {
	// last_refresh is in the past, as a real one always is.
	last := time.UnixMilli(tokenBase).Add(-2*time.Hour + time.Duration(n)*time.Second).UTC().Format(time.RFC3339Nano)
	return append(harness.CodexJSON(fmt.Sprint("id-", n), fmt.Sprint("ac-", n), fmt.Sprint("rf-", n), "acct", last), '\n')
}

var claudeStub = []byte(harness.ClaudeStub + "\n")

// logBuf collects the guard's log lines.
type logBuf struct {
	mu    sync.Mutex
	lines []string
	times []time.Time
}

func (l *logBuf) logf(level int, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf("%d ", level)+fmt.Sprintf(format, args...))
	l.times = append(l.times, time.Now())
}

// count counts lines at level (or any level when level < 0) containing s.
func (l *logBuf) count(level int, s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if (level < 0 || strings.HasPrefix(line, fmt.Sprintf("%d ", level))) && strings.Contains(line, s) {
			n++
		}
	}
	return n
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b strings.Builder
	for i, line := range l.lines {
		fmt.Fprintf(&b, "%s %s\n", l.times[i].Format("15:04:05.000000"), line)
	}
	return b.String()
}

// fx is one container: a staging dir with host files mounted into it, a
// home, a manifest.
type fx struct {
	t                     testing.TB
	dir, auth, host, home string
	m                     *manifest.Manifest
	log                   *logBuf
	// limited: the guard runs with the default rate limit on host writes
	// (every: its interval, when set); else without one.
	limited bool
	every   time.Duration
	g       *Guard // the last guard start started
}

func newFx(t testing.TB) *fx {
	t.Helper()
	testenv.RequireRoot(t)
	if !mountns.Inside() {
		t.Fatal("not in a private mount namespace (TestMain re-executes the tests as root)")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	f := &fx{t: t, dir: dir, auth: filepath.Join(dir, "auth"), host: filepath.Join(dir, "hosthome"),
		home: filepath.Join(dir, "home", "user"), log: &logBuf{},
		m: &manifest.Manifest{Version: 1, ContainerHome: "/home/user", MountPoint: "/tmp/caw_auth", Agents: map[string]manifest.Agent{}}}
	for _, d := range []string{f.auth, f.host, f.home} {
		mkdir(t, d, 0, 0)
	}
	os.Chown(f.home, userUID, userGID)
	os.Chmod(f.home, 0o700)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("guard log:\n%s", f.log)
		}
	})
	return f
}

func mkdir(t testing.TB, d string, uid, gid int) {
	t.Helper()
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if uid != 0 {
		os.Chown(d, uid, gid)
	}
}

func (f *fx) entry(agent string, file manifest.File) {
	a := f.m.Agents[agent]
	a.Files = append(a.Files, file)
	f.m.Agents[agent] = a
}

// bind adds a credential with strategy bind: the host file (owned by the
// host user) is bind-mounted onto its staging placeholder. It returns the
// host file's path.
func (f *fx) bind(agent, target string, content []byte) string {
	f.t.Helper()
	src := agent + "/cred.json"
	hostFile := filepath.Join(f.host, agent, "cred.json")
	mkdir(f.t, filepath.Dir(hostFile), 0, 0)
	writeOwned(f.t, hostFile, content, hostUID, hostGID, 0o600)
	f.placeholder(src)
	mount(f.t, hostFile, filepath.Join(f.auth, src))
	f.entry(agent, manifest.File{Src: src, ContainerTarget: target, HostOriginal: "." + agent + "/cred.json",
		Type: "credential", Strategy: "bind", Mode: "0600"})
	return hostFile
}

// bindDir adds a credential with strategy bind-dir: the host directory is
// bind-mounted onto the staging directory. It returns the host file's path.
func (f *fx) bindDir(agent, target string, content []byte) string {
	f.t.Helper()
	src := agent + "/dir/cred.json"
	hostDir := filepath.Join(f.host, agent+"-dir")
	mkdir(f.t, hostDir, hostUID, hostGID)
	hostFile := filepath.Join(hostDir, "cred.json")
	if content != nil {
		writeOwned(f.t, hostFile, content, hostUID, hostGID, 0o640)
	}
	mkdir(f.t, filepath.Join(f.auth, agent, "dir"), 0, 0)
	mount(f.t, hostDir, filepath.Join(f.auth, agent, "dir"))
	f.entry(agent, manifest.File{Src: src, ContainerTarget: target, HostOriginal: "." + agent + "/cred.json",
		Type: "credential", Strategy: "bind-dir", Mode: "0600"})
	return hostFile
}

// placeholder is what caw setup leaves as a mount target.
func (f *fx) placeholder(src string) {
	p := filepath.Join(f.auth, src)
	mkdir(f.t, filepath.Dir(p), 0, 0)
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		f.t.Fatal(err)
	}
}

func mount(t testing.TB, src, dst string) {
	t.Helper()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount %s on %s: %v", src, dst, err)
	}
	t.Cleanup(func() { unix.Unmount(dst, unix.MNT_DETACH) })
}

func (f *fx) cfg() Config {
	if err := f.m.Validate(); err != nil {
		f.t.Fatal(err)
	}
	burst := -1 // most tests write the host faster than the rate limit lets through
	if f.limited {
		burst = 0
	}
	return Config{AuthDir: f.auth, Manifest: f.m, Home: f.home, UID: userUID, GID: userGID, Logf: f.log.logf,
		WriteBurst: burst, WriteEvery: f.every}
}

func (f *fx) start() *Guard {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := Start(ctx, f.cfg())
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { g.Close() })
	f.g = g
	return g
}

// report is what the last guard started reports on agent's credential.
func (f *fx) report(agent string) CredReport {
	f.t.Helper()
	for _, r := range f.g.Report() {
		if r.Agent == agent {
			return r
		}
	}
	f.t.Fatalf("the guard reports nothing on %s", agent)
	return CredReport{}
}

func (f *fx) homePath(rel string) string { return filepath.Join(f.home, rel) }

// writeOwned writes p in place (keeping its inode when it exists).
func writeOwned(t testing.TB, p string, data []byte, uid, gid int, perm os.FileMode) {
	t.Helper()
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write(data); err != nil {
		t.Fatal(err)
	}
	fh.Chown(uid, gid)
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
}

// renameOwned replaces p by temp + rename, as Claude Code does.
func renameOwned(t testing.TB, p string, data []byte, uid, gid int) {
	t.Helper()
	tmp := fmt.Sprintf("%s.tmp.%d", p, time.Now().UnixNano())
	writeOwned(t, tmp, data, uid, gid, 0o600)
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// readFile reads p without blocking on a FIFO an attack test planted.
func readFile(p string) []byte {
	b, _ := harness.ReadSmall(p)
	return b
}

func same(a, b []byte) bool { return policy.Sum(a) == policy.Sum(b) }

// trimJSON drops the trailing whitespace a crash-safe in-place write may
// leave.
func trimJSON(b []byte) []byte { return bytes.TrimRight(b, " \t\r\n") }

// waitContent waits until p holds want (trailing whitespace ignored).
func waitContent(t testing.TB, p string, want []byte) {
	t.Helper()
	testenv.WaitFor(t, fmt.Sprintf("%s to hold %.60s", p, want), func() bool { return same(readFile(p), want) }, filepath.Dir(p))
}

func assertContent(t testing.TB, p string, want []byte) {
	t.Helper()
	if got := readFile(p); !same(got, want) {
		t.Fatalf("%s holds %.80q, want %.80q", p, got, want)
	}
}

func assertOwner(t testing.TB, p string, uid, gid int, perm os.FileMode) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	if int(st.Uid) != uid || int(st.Gid) != gid || os.FileMode(st.Mode&0o777) != perm {
		t.Fatalf("%s: owner %d:%d mode %o, want %d:%d %o", p, st.Uid, st.Gid, st.Mode&0o777, uid, gid, perm)
	}
}

func manifestFile(src, target, typ, strategy, mode string) manifest.File {
	return manifest.File{Src: src, ContainerTarget: target, HostOriginal: target, Type: typ, Strategy: strategy, Mode: mode}
}

func itoa(n int64) string { return fmt.Sprint(n) }
