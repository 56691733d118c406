package main

// Regression tests for issue 10 (the trust boundary): each drives the real
// caw-init as PID 1 of its own namespaces, with the container user as the
// attacker.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
	"github.com/caw-dev/caw/manifest"
	"golang.org/x/sys/unix"
)

// stage writes a manifest with files at root's /tmp/caw_auth.
func stage(t *testing.T, root string, files map[string][]manifest.File) string {
	t.Helper()
	auth := filepath.Join(root, "tmp/caw_auth")
	must(t, os.MkdirAll(auth, 0o755))
	m := &manifest.Manifest{
		Version: manifest.Version, CreatedAt: "2026-01-01T00:00:00Z", HostHome: "/home/host",
		ContainerHome: "/home/playground", MountPoint: manifest.DefaultMountPoint, User: "playground",
		Agents: map[string]manifest.Agent{},
	}
	for a, fs := range files {
		m.Agents[a] = manifest.Agent{Files: fs}
	}
	data, err := m.Marshal()
	must(t, err)
	must(t, os.WriteFile(filepath.Join(auth, manifest.FileName), data, 0o644))
	return auth
}

func copyEntry(src, target string) manifest.File {
	return manifest.File{Src: src, ContainerTarget: target, HostOriginal: target,
		Type: manifest.TypeConfig, Strategy: manifest.StrategyCopy, Mode: "0644"}
}

func bindEntry(src string) manifest.File {
	return manifest.File{Src: src, ContainerTarget: ".claude/.credentials.json", HostOriginal: ".claude/.credentials.json",
		Type: manifest.TypeCredential, Strategy: manifest.StrategyBind, Mode: "0600"}
}

// claudeCred is a valid Claude Code credential, fresher for a larger n,
// padded with a field of pad bytes.
func claudeCred(n int, pad int) []byte {
	exp := time.Now().Add(time.Hour).UnixMilli() + int64(n)*1000
	b := harness.ClaudeJSON(fmt.Sprint("at-", n), fmt.Sprint("rt-", n), exp)
	return fmt.Appendf(b[:len(b)-1], `,"pad":%q}`+"\n", strings.Repeat("p", pad))
}

// TestPlantedStaging (issue 10, finding 1): a staging dir the container user
// planted in /tmp, with symlinks out to /root and /etc, gives root nothing:
// caw-init says in one line that it ignores it and runs the command as the
// user, reading and writing nothing. A staging dir mounted read-write, or
// a read-only one holding a symlink, is refused the same way.
func TestPlantedStaging(t *testing.T) {
	root := newRootfs(t, rootfsOpts{})
	secret := filepath.Join(root, "root/secret.json")
	must(t, os.WriteFile(secret, []byte(`{"secret":"root-only"}`), 0o600))
	hosts := filepath.Join(root, "etc/hosts")
	must(t, os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644))
	auth := stage(t, root, map[string][]manifest.File{
		"claude": {bindEntry("e/hosts")},
		"codex":  {copyEntry("r/secret.json", ".stolen/secret.json")},
	})
	must(t, os.Symlink("/root", filepath.Join(auth, "r")))
	must(t, os.Symlink("/etc", filepath.Join(auth, "e")))
	for _, p := range []string{auth, filepath.Join(auth, "r"), filepath.Join(auth, "e"), filepath.Join(auth, manifest.FileName)} {
		must(t, os.Lchown(p, 1000, 1000))
	}
	home := filepath.Join(root, "home/playground")
	check := func(t *testing.T, stderr string) {
		t.Helper()
		if _, err := os.Lstat(filepath.Join(home, ".stolen")); err == nil {
			t.Errorf("root copied through the planted staging dir into the home")
		}
		if data, _ := os.ReadFile(hosts); string(data) != "127.0.0.1 localhost\n" {
			t.Errorf("/etc/hosts was written: %q", data)
		}
	}
	for _, tc := range []struct {
		name, want string
		mounts     []string
	}{
		{"planted", "/tmp/caw_auth is not a mount", nil},
		{"read-write mount", "/tmp/caw_auth is mounted read-write", []string{"bind tmp/caw_auth tmp/caw_auth"}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			code, out, stderr := runInit(t, launch{root: root, mounts: tc.mounts,
				env:  append([]string{"CAW_USER=playground"}, baseEnv...),
				args: []string{"--", "sh", "-c", "id -u"}})
			if code != 0 || out != "1000\n" {
				t.Errorf("exit %d stdout %q, want 0 and the command as uid 1000; stderr:\n%s", code, out, stderr)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "$(caw docker-flags)") {
				t.Errorf("stderr %q: want one line with %q naming $(caw docker-flags)", stderr, tc.want)
			}
			check(t, stderr)
		})
	}
	// Mounted read-only (as a real staging dir is), the symlinks inside
	// still lead nowhere: neither the copy nor the bind goes through them.
	t.Run("symlinks_in_read-only_mount", func(t *testing.T) {
		code, out, stderr := runInit(t, launch{root: root, mounts: staged,
			args: []string{"--", "sh", "-c", "id -u"}})
		if code != 0 || out != "1000\n" {
			t.Errorf("exit %d stdout %q; stderr:\n%s", code, out, stderr)
		}
		if !strings.Contains(stderr, "symlink") || !strings.Contains(stderr, "not mounted from the host") {
			t.Errorf("stderr %q: want the copy refused as a symlink and the bind as not mounted", stderr)
		}
		check(t, stderr)
	})
}

// TestHomeSymlinkToRootDir (issue 10, finding 2): a directory in the home the
// user cannot write (root-owned 0755, as a named volume at ~/.cache is),
// reached by a symlink the user planted (.claude -> .cache), stays
// unwritten: the guard acts in the home with the user's identity.
func TestHomeSymlinkToRootDir(t *testing.T) {
	root := newRootfs(t, rootfsOpts{})
	auth := stage(t, root, map[string][]manifest.File{
		"claude": {copyEntry("claude/settings.json", ".claude/settings.json")},
	})
	must(t, os.MkdirAll(filepath.Join(auth, "claude"), 0o755))
	must(t, os.WriteFile(filepath.Join(auth, "claude/settings.json"), []byte(`{"theme":"dark"}`), 0o644))
	home := filepath.Join(root, "home/playground")
	cache := filepath.Join(home, ".cache")
	must(t, os.Mkdir(cache, 0o755)) // root's
	must(t, os.Symlink(".cache", filepath.Join(home, ".claude")))
	must(t, os.Lchown(filepath.Join(home, ".claude"), 1000, 1000))
	code, out, stderr := runInit(t, launch{root: root, mounts: staged, args: []string{"--", "id", "-u"}})
	if code != 0 || out != "1000\n" {
		t.Errorf("exit %d stdout %q; stderr:\n%s", code, out, stderr)
	}
	if _, err := os.Lstat(filepath.Join(cache, "settings.json")); err == nil {
		t.Errorf("root created settings.json in the root-owned %s", cache)
	}
	if !strings.Contains(stderr, "not copied") {
		t.Errorf("stderr %q: want the copy reported as not done", stderr)
	}
}

// syncRoot is a rootfs with a bind credential: the host file lives in
// hostDir (inside the rootfs, at /hostfs), mounted onto the staging
// placeholder; the staging dir is mounted read-only.
func syncRoot(t *testing.T, hostMounts ...string) (root string, mounts []string) {
	root = newRootfs(t, rootfsOpts{})
	auth := stage(t, root, map[string][]manifest.File{"claude": {bindEntry("claude/cred.json")}})
	must(t, os.MkdirAll(filepath.Join(auth, "claude"), 0o755))
	must(t, os.WriteFile(filepath.Join(auth, "claude/cred.json"), nil, 0o600))
	must(t, os.MkdirAll(filepath.Join(root, "hostfs"), 0o755))
	mounts = append(append([]string{"ro tmp/caw_auth"}, hostMounts...), "bind hostfs/cred.json tmp/caw_auth/claude/cred.json")
	return root, mounts
}

// TestFullHostDisk (issue 10, finding 3): with the host filesystem full, an
// in-place write of a larger credential leaves the host file the old valid
// document at every instant, never a torn one.
func TestFullHostDisk(t *testing.T) {
	root, mounts := syncRoot(t)
	old := claudeCred(1, 0)
	must(t, os.WriteFile(filepath.Join(root, "work/host.json"), old, 0o644))
	big := claudeCred(2, 40<<10) // fresher, 40 KiB: under the 64 KiB cap
	must(t, os.WriteFile(filepath.Join(root, "work/big.json"), big, 0o644))
	mounts = append([]string{mounts[0], "tmpfs hostfs 65536", "copy work/host.json hostfs/cred.json", "fill hostfs/filler"}, mounts[1:]...)
	p := start(t, launch{root: root, mounts: mounts, args: []string{"-v", "--", "sh", "-c",
		"cat /work/big.json > $HOME/.claude/.credentials.json && echo wrote && exec sleep 60"}})
	p.expect("wrote")
	hostFile := fmt.Sprintf("/proc/%d/root/hostfs/cred.json", p.cmd.Process.Pid)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(hostFile)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(data) {
			t.Fatalf("the host file is not a valid document (%d bytes); stderr:\n%s", len(data), p.stderr)
		}
		if strings.Contains(p.stderr.String(), "no space") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(p.stderr.String(), "no space") {
		t.Errorf("the guard did not report the full disk; stderr:\n%s", p.stderr)
	}
	if data, _ := os.ReadFile(hostFile); string(data) != string(old) {
		t.Errorf("host file %q, want the old document", data)
	}
}

// TestHomeDirReplaced (issue 10, finding 4): after the user moves the
// credential's directory away and makes a new one, a refresh written there
// still reaches the host.
func TestHomeDirReplaced(t *testing.T) {
	root, mounts := syncRoot(t)
	hostFile := filepath.Join(root, "hostfs/cred.json")
	must(t, os.WriteFile(hostFile, claudeCred(1, 0), 0o600))
	fresh := claudeCred(5, 0)
	must(t, os.WriteFile(filepath.Join(root, "work/fresh.json"), fresh, 0o644))
	p := start(t, launch{root: root, mounts: mounts, args: []string{"-v", "--", "sh", "-c",
		`cd $HOME && mv .claude .claude.moved && mkdir -p .claude && sleep 0.2 &&
		cat /work/fresh.json > .claude/.new && mv .claude/.new .claude/.credentials.json && echo wrote && exec sleep 60`}})
	p.expect("wrote")
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(hostFile)
		if string(data) == string(fresh) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the refresh in the new ~/.claude did not reach the host: host holds %q; stderr:\n%s", data, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCredentialSizeCap (issue 10, finding 3): a home credential over 64 KiB
// is reported once (-v) and not synced; the host keeps its document.
func TestCredentialSizeCap(t *testing.T) {
	root, mounts := syncRoot(t)
	hostFile := filepath.Join(root, "hostfs/cred.json")
	old := claudeCred(1, 0)
	must(t, os.WriteFile(hostFile, old, 0o600))
	must(t, os.WriteFile(filepath.Join(root, "work/huge.json"), claudeCred(9, 100<<10), 0o644))
	fresh := claudeCred(5, 0)
	must(t, os.WriteFile(filepath.Join(root, "work/fresh.json"), fresh, 0o644))
	p := start(t, launch{root: root, mounts: mounts, args: []string{"-v", "--", "sh", "-c",
		`cd $HOME/.claude && for i in 1 2 3; do cat /work/huge.json > .new && mv .new .credentials.json; sleep 0.1; done;
		cat /work/fresh.json > .new && mv .new .credentials.json && echo wrote && exec sleep 60`}})
	p.expect("wrote")
	// The fresh one after it still syncs: the guard is not stuck.
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(hostFile)
		if string(data) == string(fresh) {
			break
		}
		if strings.Contains(string(data), "at-9") || time.Now().After(deadline) {
			t.Fatalf("host holds %.80q; stderr:\n%s", data, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := strings.Count(p.stderr.String(), "larger than 65536 bytes"); n != 1 {
		t.Errorf("the oversized credential was reported %d times, want once; stderr:\n%s", n, p.stderr)
	}
}

// TestMkdirExchangeRace (issue 10, finding 2): the user exchanging
// (RENAME_EXCHANGE) a directory the guard just created in the home with a
// root-owned one never gets root to chown the root-owned one: the guard
// creates directories as the user, so there is no chown to redirect.
func TestMkdirExchangeRace(t *testing.T) {
	root := newRootfs(t, rootfsOpts{})
	auth := stage(t, root, map[string][]manifest.File{
		"claude": {copyEntry("claude/settings.json", ".a/b/settings.json")},
	})
	must(t, os.MkdirAll(filepath.Join(auth, "claude"), 0o755))
	must(t, os.WriteFile(filepath.Join(auth, "claude/settings.json"), []byte(`{}`), 0o644))
	home := filepath.Join(root, "home/playground")
	victim := filepath.Join(home, "victim")
	must(t, os.Mkdir(victim, 0o755))
	var vst unix.Stat_t
	must(t, unix.Stat(victim, &vst))
	for i := 0; i < 100; i++ {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			a := filepath.Join(home, ".a")
			for {
				select {
				case <-stop:
					return
				default:
				}
				unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, victim, unix.RENAME_EXCHANGE)
			}
		}()
		code, _, stderr := runInit(t, launch{root: root, mounts: staged, args: []string{"--", "true"}})
		close(stop)
		<-done
		if code != 0 {
			t.Fatalf("try %d: exit %d; stderr:\n%s", i, code, stderr)
		}
		// Find the root-owned directory by its inode, under either name.
		for _, n := range []string{"victim", ".a"} {
			var st unix.Stat_t
			if unix.Lstat(filepath.Join(home, n), &st) == nil && st.Ino == vst.Ino && st.Uid != 0 {
				t.Fatalf("try %d: root chowned the root-owned directory (now %s) to uid %d", i, n, st.Uid)
			}
		}
		// Back to the start: only the root-owned victim.
		os.RemoveAll(filepath.Join(home, ".a"))
		os.RemoveAll(victim)
		must(t, os.Mkdir(victim, 0o755))
		must(t, unix.Stat(victim, &vst))
	}
}

// TestSpareTampered: the empty temp file the guard keeps beside a synced
// home credential for its next write (a spare) is the user's, so the user
// may replace it with a symlink, hard-link it elsewhere or write into it.
// None of that reaches the next write: the host's refresh lands in the home
// copy as a regular file holding exactly the new document, the symlink's
// target and the hard link's name are left as they were, and no spare is
// left behind when caw-init exits.
func TestSpareTampered(t *testing.T) {
	for _, tc := range []struct{ name, tamper string }{
		{"symlink", `rm -f "$s" && ln -s /work/victim "$s"`},
		{"hardlink", `ln "$s" stolen`},
		{"written", `printf junk-in-the-spare >> "$s"`},
		{"swapped", `rm -f "$s" && printf '{"planted":1}' > "$s"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, mounts := syncRoot(t)
			hostFile := filepath.Join(root, "hostfs/cred.json")
			must(t, os.WriteFile(hostFile, claudeCred(1, 0), 0o600))
			victim := filepath.Join(root, "work/victim")
			must(t, os.WriteFile(victim, []byte("victim"), 0o666))
			p := start(t, launch{root: root, mounts: mounts, args: []string{"--", "sh", "-c",
				`cd $HOME/.claude && i=0; while [ -z "$(ls -a | grep caw-tmp)" ] && [ $i -lt 200 ]; do sleep 0.02; i=$((i+1)); done
				s=$(ls -a | grep caw-tmp); [ -n "$s" ] || { echo no spare; exit 3; }
				` + tc.tamper + ` && echo tampered && read l && ls -a`}})
			p.expect("tampered")
			fresh := claudeCred(5, 0)
			must(t, os.WriteFile(hostFile, fresh, 0o600))
			homeFile := filepath.Join(root, "home/playground/.claude/.credentials.json")
			deadline := time.Now().Add(5 * time.Second)
			for {
				var st unix.Stat_t
				data, _ := os.ReadFile(homeFile)
				if unix.Lstat(homeFile, &st) == nil && string(data) == string(fresh) {
					if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
						t.Fatalf("home copy: mode %o, %d links; want a regular file with one link", st.Mode, st.Nlink)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the host refresh did not reach the home copy: it holds %.80q; stderr:\n%s", data, p.stderr)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if data, _ := os.ReadFile(victim); string(data) != "victim" {
				t.Errorf("the symlink's target now holds %.80q", data)
			}
			if data, err := os.ReadFile(filepath.Join(root, "home/playground/.claude/stolen")); err == nil && len(data) != 0 {
				t.Errorf("the hard link to the spare holds %.80q, want it empty", data)
			}
			fmt.Fprintln(p.stdinW, "go")
			if code := p.wait(); code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", code, p.stderr)
			}
			names, _ := os.ReadDir(filepath.Join(root, "home/playground/.claude"))
			for _, n := range names {
				if strings.Contains(n.Name(), "caw-tmp") {
					if fi, err := n.Info(); err == nil && fi.Mode().IsRegular() && tc.name != "swapped" {
						t.Errorf("left behind after exit: %s", n.Name())
					}
				}
			}
		})
	}
}
