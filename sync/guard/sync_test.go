package guard

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/testenv"
	"github.com/caw-dev/caw/sync/policy"
	"golang.org/x/sys/unix"
)

// sentinel is a second credential in the same guard. The guard reads
// events in order on one inotify descriptor and hands them to the
// credentials' workers, so once a refresh of the sentinel's home copy has
// reached its host file and every worker is idle, every event queued before
// it has been handled: that is how a test proves something did NOT
// propagate, without sleeping.
type sentinel struct {
	f              *fx
	home, hostFile string
	n              int
	gemini         bool
}

func (f *fx) sentinel() *sentinel {
	s := &sentinel{f: f, n: 1, home: f.homePath(".codex/auth.json")}
	s.hostFile = f.bind("codex", ".codex/auth.json", codexTok(1))
	return s
}

func (s *sentinel) barrier() {
	s.f.t.Helper()
	s.n++
	tok := codexTok(s.n)
	if s.gemini {
		tok = geminiTok(s.n)
	}
	renameOwned(s.f.t, s.home, tok, userUID, userGID)
	waitContent(s.f.t, s.hostFile, tok)
	s.f.waitIdle()
}

// waitIdle waits until the guard's workers have handled every event
// handed to them.
func (f *fx) waitIdle() {
	f.t.Helper()
	if f.g == nil {
		return // a guard in another process (attrib_test.go)
	}
	for deadline := time.Now().Add(10 * time.Second); !f.g.idle(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			f.t.Fatal("the guard's workers stayed busy for 10 s")
		}
	}
}

func TestCopyInCreatesHomeAndConfigs(t *testing.T) {
	f := newFx(t)
	os.RemoveAll(f.home) // a missing home is created for the user
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(5))
	mkdir(t, filepath.Join(f.auth, "claude"), 0, 0)
	os.WriteFile(filepath.Join(f.auth, "claude/config.json"), []byte(`{"hasCompletedOnboarding":true}`), 0o644)
	f.entry("claude", manifestFile("claude/config.json", ".config/claude/claude.json", "config", "copy", "0640"))
	f.start()

	assertOwner(t, f.home, userUID, userGID, 0o700)
	assertOwner(t, f.homePath(".claude"), userUID, userGID, 0o700)
	assertOwner(t, f.homePath(".claude/.credentials.json"), userUID, userGID, 0o600)
	assertContent(t, f.homePath(".claude/.credentials.json"), claudeTok(5))
	assertOwner(t, f.homePath(".config"), userUID, userGID, 0o700)
	assertOwner(t, f.homePath(".config/claude/claude.json"), userUID, userGID, 0o640)
	assertContent(t, f.homePath(".config/claude/claude.json"), []byte(`{"hasCompletedOnboarding":true}`))
	assertContent(t, hostFile, claudeTok(5))
	assertOwner(t, hostFile, hostUID, hostGID, 0o600)
}

// TestCopyInHostWins: at start-up the host is the source of truth. A home
// copy left from an earlier run of the container is replaced by the host's,
// even when it claims to be fresher, and never pushed to the host, not even
// by the final flush.
func TestCopyInHostWins(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(3))
	older := f.bindDir("codex", ".codex/auth.json", codexTok(9))
	mkdir(t, f.homePath(".claude"), userUID, userGID)
	mkdir(t, f.homePath(".codex"), userUID, userGID)
	writeOwned(t, f.homePath(".claude/.credentials.json"), claudeTok(7), userUID, userGID, 0o600)
	writeOwned(t, f.homePath(".codex/auth.json"), codexTok(2), userUID, userGID, 0o600)
	g := f.start()
	assertContent(t, f.homePath(".claude/.credentials.json"), claudeTok(3))
	assertContent(t, hostFile, claudeTok(3))
	assertOwner(t, hostFile, hostUID, hostGID, 0o600)
	assertContent(t, f.homePath(".codex/auth.json"), codexTok(9))
	assertContent(t, older, codexTok(9))
	// The container's agent, holding the old copy in memory, writes it
	// back: a regression of the home, never a push.
	renameOwned(t, f.homePath(".claude/.credentials.json"), claudeTok(7), userUID, userGID)
	waitContent(t, f.homePath(".claude/.credentials.json"), claudeTok(3))
	if err := g.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertContent(t, hostFile, claudeTok(3))
	// A refresh in the container afterwards is new: it goes to the host.
	renameOwned(t, f.homePath(".claude/.credentials.json"), claudeTok(8), userUID, userGID)
	waitContent(t, hostFile, claudeTok(8))
}

func TestBindBothWays(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	assertContent(t, homeFile, claudeTok(1))

	// Home, in place (Claude Code <= 2.1.117, Codex, Gemini).
	writeOwned(t, homeFile, claudeTok(2), userUID, userGID, 0o600)
	waitContent(t, hostFile, claudeTok(2))
	// Home, temp + rename (Claude Code >= 2.1.118).
	renameOwned(t, homeFile, claudeTok(3), userUID, userGID)
	waitContent(t, hostFile, claudeTok(3))
	// Host, in place (the only way through a file bind mount).
	writeOwned(t, hostFile, claudeTok(4), hostUID, hostGID, 0o600)
	waitContent(t, homeFile, claudeTok(4))
	// A shorter document: the padded in-place write is truncated to size.
	short := []byte(`{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":` + itoa(tokenBase+99000) + `},"mcpOAuth":{}}`)
	renameOwned(t, homeFile, short, userUID, userGID)
	waitContent(t, hostFile, short)
	testenv.WaitFor(t, "the host file truncated to size", func() bool { return len(readFile(hostFile)) == len(short) }, filepath.Dir(hostFile))
	assertOwner(t, hostFile, hostUID, hostGID, 0o600)
	assertOwner(t, homeFile, userUID, userGID, 0o600)
}

func TestBindDirBothWays(t *testing.T) {
	f := newFx(t)
	hostFile := f.bindDir("claude", ".claude/.credentials.json", claudeTok(1))
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	assertContent(t, homeFile, claudeTok(1))

	// Host replaces its file by rename (today's Claude Code): seen, synced.
	renameOwned(t, hostFile, claudeTok(2), hostUID, hostGID)
	waitContent(t, homeFile, claudeTok(2))
	writeOwned(t, hostFile, claudeTok(3), hostUID, hostGID, 0o640)
	waitContent(t, homeFile, claudeTok(3))
	// Home to host: a new file with the original's owner and mode.
	os.Chmod(hostFile, 0o640)
	renameOwned(t, homeFile, claudeTok(4), userUID, userGID)
	waitContent(t, hostFile, claudeTok(4))
	assertOwner(t, hostFile, hostUID, hostGID, 0o640)
	writeOwned(t, homeFile, claudeTok(5), userUID, userGID, 0o600)
	waitContent(t, hostFile, claudeTok(5))
	assertOwner(t, hostFile, hostUID, hostGID, 0o640)
	// No temp file left behind on the host. The file displaced by the swap
	// is removed just after it, so that may take a moment.
	testenv.WaitFor(t, "the host dir to hold only the credential", func() bool {
		names, _ := os.ReadDir(filepath.Dir(hostFile))
		return len(names) == 1
	}, filepath.Dir(hostFile))
}

// TestUnusableNeverWins: a logged-out stub, invalid JSON, an empty file and
// an older token, on either side, never overwrite the fresher credential.
func TestUnusableNeverWins(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(10))
	s := f.sentinel()
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	for _, bad := range [][]byte{claudeStub, []byte(`{"claudeAiOauth":{"accessTo`), nil, []byte("  \n"), []byte(`{"other":1}`)} {
		writeOwned(t, homeFile, bad, userUID, userGID, 0o600)
		s.barrier()
		assertContent(t, hostFile, claudeTok(10))
		renameOwned(t, homeFile, bad, userUID, userGID)
		s.barrier()
		assertContent(t, hostFile, claudeTok(10))
	}
	// Host side: the home keeps its (restored) token.
	renameOwned(t, homeFile, claudeTok(11), userUID, userGID)
	waitContent(t, hostFile, claudeTok(11))
	for _, bad := range [][]byte{claudeStub, []byte(`{"claudeAiOauth":`), nil, claudeTok(4)} {
		writeOwned(t, hostFile, bad, hostUID, hostGID, 0o600)
		s.barrier()
		if got := readFile(homeFile); !same(got, claudeTok(11)) {
			t.Fatalf("host wrote %.40q: home now holds %.80q", bad, got)
		}
	}
	if r := f.report("claude"); r.HomeWrites+r.HostWrites == 0 {
		t.Log(f.log)
	}
}

// TestRegressionWriteBack: an agent rewriting the older token it holds in
// memory gets the fresher one back; one that keeps doing it is reported once
// and left alone. An older token never seen before (a refresh racing one on
// the other side) is written over without counting as a regression.
func TestRegressionWriteBack(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(15))
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	// A race: a fresh but older token lands in the home after the host's.
	writeOwned(t, hostFile, claudeTok(20), hostUID, hostGID, 0o600)
	waitContent(t, homeFile, claudeTok(20))
	renameOwned(t, homeFile, claudeTok(18), userUID, userGID)
	waitContent(t, homeFile, claudeTok(20))
	// The agent keeps writing back token 15, which the home held before.
	// The raced write-back above counts against the same budget.
	for i := 0; i < policy.MaxWriteBacks-1; i++ {
		renameOwned(t, homeFile, claudeTok(15), userUID, userGID)
		waitContent(t, homeFile, claudeTok(20))
	}
	assertContent(t, hostFile, claudeTok(20))
	// The raced write-back and the regressions fill the budget.
	if n := f.report("claude").HomeWriteBacks; n != policy.MaxWriteBacks {
		t.Fatalf("%d write-backs to the home, want %d:\n%s", n, policy.MaxWriteBacks, f.log)
	}
	renameOwned(t, homeFile, claudeTok(15), userUID, userGID)
	testenv.WaitFor(t, "the home left alone", func() bool { return f.report("claude").HomeLeftAlone }, f.homePath(".claude"))
	assertContent(t, homeFile, claudeTok(15))
	assertContent(t, hostFile, claudeTok(20))
	// A genuinely fresher token from the container still goes through.
	renameOwned(t, homeFile, claudeTok(21), userUID, userGID)
	waitContent(t, hostFile, claudeTok(21))
	// The log line is the product here: once, naming the fix.
	if n := f.log.count(0, "restart the agent holding the old token"); n != 1 {
		t.Fatalf("regression reported %d times, want once", n)
	}
}

func TestTornWriteNeverPropagates(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	s := f.sentinel()
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	for _, side := range []struct {
		name     string
		writeTo  string
		readFrom string
		uid, gid int
	}{{"home", homeFile, hostFile, userUID, userGID}, {"host", hostFile, homeFile, hostUID, hostGID}} {
		before := readFile(side.readFrom)
		next := claudeTok(2)
		if side.name == "host" {
			next = claudeTok(3)
		}
		fh, err := os.OpenFile(side.writeTo, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		// The writer pauses mid-file: the guard sees a truncate and a
		// partial document, and must copy neither.
		fh.Write(next[:len(next)/2])
		s.barrier()
		assertContent(t, side.readFrom, before)
		fh.Write(next[len(next)/2:])
		fh.Close()
		waitContent(t, side.readFrom, next)
	}
}

func TestFlushWithoutEvents(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	dirFile := f.bindDir("codex", ".codex/auth.json", codexTok(1))
	g := f.start()
	// No inotify from here on: Flush alone must carry the last refresh.
	g.stopWatching()
	renameOwned(t, f.homePath(".claude/.credentials.json"), claudeTok(2), userUID, userGID)
	writeOwned(t, f.homePath(".codex/auth.json"), codexTok(2), userUID, userGID, 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	assertContent(t, hostFile, claudeTok(2))
	assertContent(t, dirFile, codexTok(2))
}

func TestFlushRightAfterWrite(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	g := f.start()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := 2; i < 50; i++ {
		renameOwned(t, f.homePath(".claude/.credentials.json"), claudeTok(i), userUID, userGID)
		if err := g.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		assertContent(t, hostFile, claudeTok(i))
	}
}

func TestMissingMount(t *testing.T) {
	f := newFx(t)
	// claude: the placeholder caw setup leaves, never mounted; gemini: a
	// bind-dir whose directory is not mounted.
	f.placeholder("claude/cred.json")
	f.entry("claude", manifestFile("claude/cred.json", ".claude/.credentials.json", "credential", "bind", "0600"))
	mkdir(t, filepath.Join(f.auth, "gemini/dir"), 0, 0)
	f.entry("gemini", manifestFile("gemini/dir/oauth_creds.json", ".gemini/oauth_creds.json", "credential", "bind-dir", "0600"))
	s := f.sentinel()
	f.start()
	for _, agent := range []string{"claude", "gemini"} {
		if r := f.report(agent); r.NotSynced != NotSyncedNotMounted {
			t.Fatalf("%s: not synced for %q, want %q", agent, r.NotSynced, NotSyncedNotMounted)
		}
		// The log line is the product here: one line naming the fix.
		if n := f.log.count(0, agent+" credential"); n != 1 || f.log.count(0, "$(caw docker-flags)") != 2 {
			t.Fatalf("want one line per missing mount naming the fix, got:\n%s", f.log)
		}
	}
	if _, err := os.Lstat(f.homePath(".claude/.credentials.json")); err == nil {
		t.Fatal("a placeholder was copied into the home")
	}
	// Writing where the placeholder is synced to nothing, and the others
	// still work.
	mkdir(t, f.homePath(".claude"), userUID, userGID)
	writeOwned(t, f.homePath(".claude/.credentials.json"), claudeTok(3), userUID, userGID, 0o600)
	s.barrier()
	if b := readFile(filepath.Join(f.auth, "claude/cred.json")); len(b) != 0 {
		t.Fatalf("the guard wrote into the placeholder: %q", b)
	}
}

// TestDeadInode: the host replaces a file-bind-mounted credential by
// rename. The mount keeps the old inode (link count 0): reported once with
// the fix, and nothing is written into it any more.
func TestDeadInode(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	s := f.sentinel()
	f.start()
	renameOwned(t, hostFile, claudeTok(2), hostUID, hostGID)
	testenv.WaitFor(t, "the host to be reported dead", func() bool { return f.report("claude").DeadHost }, f.homePath(".claude"))
	renameOwned(t, f.homePath(".claude/.credentials.json"), claudeTok(5), userUID, userGID)
	s.barrier()
	assertContent(t, hostFile, claudeTok(2))
	if got := readFile(filepath.Join(f.auth, "claude/cred.json")); !same(got, claudeTok(1)) {
		t.Fatalf("the dead inode was written: %.80q", got)
	}
	// The log line is the product here: once, naming the fix.
	if n := f.log.count(0, "caw setup --strategy claude=bind-dir"); n != 1 {
		t.Fatalf("detach reported %d times, want once:\n%s", n, f.log)
	}
}

func TestReadOnlyHost(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	mnt := filepath.Join(f.auth, "claude/cred.json")
	if err := unix.Mount("", mnt, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	renameOwned(t, homeFile, claudeTok(2), userUID, userGID)
	testenv.WaitFor(t, "the host to be reported read-only", func() bool { return f.report("claude").ReadOnlyHost }, f.homePath(".claude"))
	// The other direction keeps working.
	writeOwned(t, hostFile, claudeTok(3), hostUID, hostGID, 0o600)
	waitContent(t, homeFile, claudeTok(3))
	renameOwned(t, homeFile, claudeTok(4), userUID, userGID)
	writeOwned(t, hostFile, claudeTok(5), hostUID, hostGID, 0o600)
	waitContent(t, homeFile, claudeTok(5))
	if r := f.report("claude"); r.HostWrites != 0 || r.HomeWrites < 2 {
		t.Fatalf("a read-only host was written, or the home not: %+v", r)
	}
	// The log line is the product here: once, naming the fix (mount :rw).
	if n := f.log.count(0, "mount it :rw"); n != 1 {
		t.Fatalf("read-only reported %d times, want once", n)
	}
}

// TestEightGuards: eight containers share one host file; a refresh in any
// of them reaches the host and every other one.
func TestEightGuards(t *testing.T) {
	testenv.RequireRoot(t)
	hostDir := t.TempDir()
	hostFile := filepath.Join(hostDir, "cred.json")
	writeOwned(t, hostFile, claudeTok(1), hostUID, hostGID, 0o600)
	var fxs []*fx
	for i := 0; i < 8; i++ {
		f := newFx(t)
		src := "claude/cred.json"
		f.placeholder(src)
		mount(t, hostFile, filepath.Join(f.auth, src))
		f.entry("claude", manifestFile(src, ".claude/.credentials.json", "credential", "bind", "0600"))
		f.start()
		fxs = append(fxs, f)
	}
	n := 1
	for round := 0; round < 3; round++ {
		for i, f := range fxs {
			n++
			if i%2 == 0 {
				renameOwned(t, f.homePath(".claude/.credentials.json"), claudeTok(n), userUID, userGID)
			} else {
				writeOwned(t, f.homePath(".claude/.credentials.json"), claudeTok(n), userUID, userGID, 0o600)
			}
			waitContent(t, hostFile, claudeTok(n))
			for _, o := range fxs {
				waitContent(t, o.homePath(".claude/.credentials.json"), claudeTok(n))
			}
		}
	}
	// A host refresh reaches all eight.
	n++
	writeOwned(t, hostFile, claudeTok(n), hostUID, hostGID, 0o600)
	for _, o := range fxs {
		waitContent(t, o.homePath(".claude/.credentials.json"), claudeTok(n))
	}
}

// TestHostInPlaceSeries: back-to-back in-place host refreshes (truncate,
// write), each waited for in the home. The guard's own echo events arrive
// while the host is mid-write: they must not make it write the older home
// token into the host file under the writer.
func TestHostInPlaceSeries(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	for i := 2; i < 300; i++ {
		writeOwned(t, hostFile, claudeTok(i), hostUID, hostGID, 0o600)
		waitContent(t, homeFile, claudeTok(i))
	}
	assertContent(t, hostFile, claudeTok(299))
}

// TestTornHostSettles: a host writer dies mid-file; once the file has been
// quiet for the settle delay, the container's fresher token is written over
// the torn file, so the host is not left broken.
func TestTornHostSettles(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	writeOwned(t, hostFile, claudeTok(2)[:20], hostUID, hostGID, 0o600)
	renameOwned(t, homeFile, claudeTok(3), userUID, userGID)
	waitContent(t, hostFile, claudeTok(3))
}

// TestHomeDirRemoved: the user deletes the agent's directory; the guard
// recreates and watches it again, and the next host refresh lands in it.
func TestHomeDirRemoved(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	s := f.sentinel()
	f.start()
	if err := os.RemoveAll(f.homePath(".claude")); err != nil {
		t.Fatal(err)
	}
	s.barrier()
	// Deleting the copy is the user's own change: nothing is restored yet.
	if _, err := os.Lstat(f.homePath(".claude/.credentials.json")); err == nil {
		t.Fatal("the deleted home copy was restored without a host change")
	}
	assertOwner(t, f.homePath(".claude"), userUID, userGID, 0o700)
	writeOwned(t, hostFile, claudeTok(2), hostUID, hostGID, 0o600)
	waitContent(t, f.homePath(".claude/.credentials.json"), claudeTok(2))
	renameOwned(t, f.homePath(".claude/.credentials.json"), claudeTok(3), userUID, userGID)
	waitContent(t, hostFile, claudeTok(3))
}

// TestDockerMadeADirectory: the host file was missing at docker run, so
// Docker mounted a directory in its place: reported in one line, skipped.
func TestDockerMadeADirectory(t *testing.T) {
	f := newFx(t)
	hostDir := filepath.Join(f.host, "made-by-docker")
	mkdir(t, hostDir, 0, 0)
	mkdir(t, filepath.Join(f.auth, "claude/cred.json"), 0, 0)
	mount(t, hostDir, filepath.Join(f.auth, "claude/cred.json"))
	f.entry("claude", manifestFile("claude/cred.json", ".claude/.credentials.json", "credential", "bind", "0600"))
	s := f.sentinel()
	f.start()
	if r := f.report("claude"); r.NotSynced != NotSyncedHostMissing {
		t.Fatalf("not synced for %q, want %q", r.NotSynced, NotSyncedHostMissing)
	}
	// The log line is the product here: one line naming the fix.
	if f.log.count(0, "Docker mounted a directory") != 1 {
		t.Fatalf("want one report, got:\n%s", f.log)
	}
	s.barrier()
}

// TestIdleTouchesNothing: with no events the guard opens no file (no
// polling, no timers): an inotify watch for opens and reads on both sides
// stays silent for a while after the last sync.
func TestIdleTouchesNothing(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	dirFile := f.bindDir("codex", ".codex/auth.json", codexTok(1))
	f.start()
	renameOwned(t, f.homePath(".claude/.credentials.json"), claudeTok(2), userUID, userGID)
	waitContent(t, hostFile, claudeTok(2))
	writeOwned(t, dirFile, codexTok(2), hostUID, hostGID, 0o640)
	waitContent(t, f.homePath(".codex/auth.json"), codexTok(2))
	// Let the echo events of those writes be handled, then listen.
	s := &sentinel{f: f, home: f.homePath(".codex/auth.json"), hostFile: dirFile, n: 2}
	s.barrier()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, p := range []string{hostFile, filepath.Dir(dirFile), f.homePath(".claude"), f.homePath(".codex")} {
		if _, err := unix.InotifyAddWatch(fd, p, unix.IN_OPEN|unix.IN_ACCESS|unix.IN_MODIFY); err != nil {
			t.Fatal(err)
		}
	}
	// The guard still reads the echoes of its last writes, and rechecks
	// the files they displaced recheckDelay later: wait for the first
	// silence longer than that (a guard polling faster never gets there),
	// then demand 500 ms more.
	buf := make([]byte, 4096)
	deadline := time.Now().Add(5 * time.Second)
	quiet := int((recheckDelay + 150*time.Millisecond).Milliseconds())
	for {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, quiet)
		if err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		unix.Read(fd, buf)
		if time.Now().After(deadline) {
			t.Fatal("the guard never goes idle")
		}
	}
	if n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 500); n != 0 {
		t.Fatal("an idle guard opened or read a credential")
	}
}

// TestLogoutsAreRespected: a logout on the host (stub) is neither copied
// into the container nor undone by the container's old token, not even by
// the final flush; a new login in the container does reach the host.
func TestLogoutsAreRespected(t *testing.T) {
	f := newFx(t)
	hostFile := f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	s := f.sentinel()
	g := f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	writeOwned(t, hostFile, claudeStub, hostUID, hostGID, 0o600)
	s.barrier()
	assertContent(t, homeFile, claudeTok(1))
	assertContent(t, hostFile, claudeStub)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	assertContent(t, hostFile, claudeStub)
	renameOwned(t, homeFile, claudeTok(2), userUID, userGID)
	waitContent(t, hostFile, claudeTok(2))
	// A stale usable host copy is brought up to date by the flush.
	g.stopWatching()
	writeOwned(t, hostFile, claudeTok(1), hostUID, hostGID, 0o600)
	if err := g.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	assertContent(t, hostFile, claudeTok(2))
}

// TestNoHome: a user without a home (HOME=/) gets one line and no sync;
// nothing is written into /.
func TestNoHome(t *testing.T) {
	f := newFx(t)
	f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	cfg := f.cfg()
	cfg.Home = "/"
	g, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if f.log.count(0, "no home directory") != 1 {
		t.Fatalf("want one line, got:\n%s", f.log)
	}
	if _, err := os.Lstat("/.claude/.credentials.json"); err == nil {
		t.Fatal("the guard wrote into /")
	}
	if err := g.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
}
