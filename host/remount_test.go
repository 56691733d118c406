package host

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/testenv"
)

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// Re-running setup keeps the staging dir's inode and every placeholder's:
// running containers hang their mounts on them.
func TestResetupKeepsInodes(t *testing.T) {
	home := fakeHome(t)
	_, dir := setup(t, home)
	paths := []string{"", "claude/mnt", "claude/mnt/config-dir", "codex/mnt", "codex/mnt/auth.json", "gemini/mnt/oauth_creds.json"}
	before := map[string]uint64{}
	for _, p := range paths {
		before[p] = inode(t, filepath.Join(dir, p))
	}
	cfg := inode(t, filepath.Join(dir, "codex/config.toml"))
	writeFile(t, filepath.Join(home, ".codex/config.toml"), "model = \"o3\"\n")
	if _, err := Setup(SetupOptions{AuthDir: dir, SourceHome: home, Agents: []string{"claude", "codex", "gemini"}, Now: clock}); err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if got := inode(t, filepath.Join(dir, p)); got != before[p] {
			t.Errorf("%q was replaced (inode %d -> %d)", p, before[p], got)
		}
	}
	data, _ := os.ReadFile(filepath.Join(dir, "codex/config.toml"))
	if inode(t, filepath.Join(dir, "codex/config.toml")) == cfg || !strings.Contains(string(data), "o3") {
		t.Errorf("config not replaced by rename: %s", data)
	}
	if _, err := os.Lstat(filepath.Join(dir, "opencode")); !os.IsNotExist(err) {
		t.Error("the dropped agent's staging survived")
	}
	assertNoTempDirs(t, filepath.Dir(dir))
}

// The kernel fact behind TestResetupKeepsInodes, with real mounts: a
// "container" (a private mount namespace) bind-mounts host credentials over
// the placeholders; setup re-runs on the host; the container still reaches
// the host files. Removing a placeholder instead (the control) detaches the
// container's mount, which is what a swap-and-delete setup would do.
func TestResetupKeepsRunningContainerMounts(t *testing.T) {
	testenv.RequireRoot(t)
	unshare := testenv.LookPath(t, "unshare", "util-linux")
	home := fakeHome(t)
	_, dir := setup(t, home)
	cred, ph := filepath.Join(home, ".codex/auth.json"), filepath.Join(dir, "codex/mnt/auth.json")
	cdir, phDir := filepath.Join(home, ".claude"), filepath.Join(dir, "claude/mnt/config-dir")
	gem, phGem := filepath.Join(home, ".gemini/oauth_creds.json"), filepath.Join(dir, "gemini/mnt/oauth_creds.json")

	cmd := exec.Command(unshare, "-m", "--propagation", "private", "sh", "-c", `
		mount --bind "$1" "$2" && mount --bind "$3" "$4" && mount --bind "$5" "$6" || exit 1
		echo ready; read x
		echo "codex=$(cat "$2")"; echo "claude=$(ls -A "$4" | tr '\n' ' ')"; echo "gemini=$(cat "$6")"`,
		"sh", cred, ph, cdir, phDir, gem, phGem)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 8)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			cmd.Wait() // stderr is complete (and no longer written) after Wait
			t.Fatalf("no answer from the mount namespace; stderr: %s", stderr.String())
		}
		return ""
	}
	if l := next(); l != "ready" {
		t.Fatalf("namespace: %q", l)
	}

	if _, err := Setup(SetupOptions{AuthDir: dir, SourceHome: home, Now: clock}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cred, `{"OPENAI_API_KEY":"sk-after-resetup"}`) // in place, as Codex writes
	os.Remove(phGem)                                            // the control: what deleting does

	io.WriteString(stdin, "go\n")
	got := []string{next(), next(), next()}
	if got[0] != `codex={"OPENAI_API_KEY":"sk-after-resetup"}` {
		t.Errorf("after re-setup the container's codex mount reads %q, want the host file", got[0])
	}
	if !strings.Contains(got[1], ".credentials.json") {
		t.Errorf("after re-setup the container's claude dir mount lists %q", got[1])
	}
	if got[2] != "gemini=" {
		t.Errorf("control: removing a placeholder on the host should detach the container's mount, but it reads %q", got[2])
	}
	cmd.Wait()
}
