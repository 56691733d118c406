package host

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestTeardown(t *testing.T) {
	home := fakeHome(t)
	_, dir := setup(t, home)
	hostBefore := snapshot(t, home)

	res, err := Teardown(TeardownOptions{AuthDir: dir, DryRun: true, Home: home})
	if err != nil || !res.Existed || res.Removed {
		t.Fatalf("dry run: %+v %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err != nil {
		t.Fatal("dry run removed the staging dir")
	}
	res, err = Teardown(TeardownOptions{AuthDir: dir, Home: home})
	if err != nil || !res.Removed {
		t.Fatalf("teardown: %+v %v", res, err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Error("staging dir still there")
	}
	if !reflect.DeepEqual(hostBefore, snapshot(t, home)) {
		t.Error("teardown changed the host home")
	}
	res, err = Teardown(TeardownOptions{AuthDir: dir, Home: home})
	if err != nil || res.Existed {
		t.Errorf("second teardown: %+v %v", res, err)
	}
}

// A host credential that is a symlink into staging (the original's older
// design) blocks teardown unless forced.
func TestTeardownSymlinkedCredential(t *testing.T) {
	home := fakeHome(t)
	_, dir := setup(t, home)
	cred := filepath.Join(home, ".codex/auth.json")
	writeFile(t, filepath.Join(dir, "codex/legacy-auth.json"), codexCred(now))
	os.Remove(cred)
	if err := os.Symlink(filepath.Join(dir, "codex/legacy-auth.json"), cred); err != nil {
		t.Fatal(err)
	}
	// Also a relative link at a default place the manifest does not list.
	oc := filepath.Join(home, ".local/share/opencode/auth.json")
	os.Remove(oc)
	rel, _ := filepath.Rel(filepath.Dir(oc), filepath.Join(dir, "opencode/mnt/auth.json"))
	os.Symlink(rel, oc)

	for _, dry := range []bool{true, false} {
		res, err := Teardown(TeardownOptions{AuthDir: dir, DryRun: dry, Home: home})
		if !errors.Is(err, ErrSymlinkedCredential) || !strings.Contains(err.Error(), cred) || !strings.Contains(err.Error(), "pass Force") {
			t.Fatalf("dry=%v: %v", dry, err)
		}
		if !reflect.DeepEqual(res.Symlinks, []string{cred, oc}) {
			t.Errorf("symlinks %q", res.Symlinks)
		}
		if _, err := os.Stat(filepath.Join(dir, "manifest.json")); err != nil {
			t.Fatal("refused teardown removed staging")
		}
	}
	res, err := Teardown(TeardownOptions{AuthDir: dir, Force: true, Home: home})
	if err != nil || !res.Removed || len(res.Symlinks) != 2 {
		t.Fatalf("force: %+v %v", res, err)
	}
	// The symlinks themselves are host files: left alone, now dangling.
	if fi, err := os.Lstat(cred); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("teardown touched the host credential: %v", err)
	}
}

func TestTeardownRefuses(t *testing.T) {
	real := t.TempDir()
	writeFile(t, filepath.Join(real, "manifest.json"), "{}")
	link := filepath.Join(t.TempDir(), "auth")
	os.Symlink(real, link)
	if _, err := Teardown(TeardownOptions{AuthDir: link, Force: true}); err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Errorf("symlink: %v", err)
	}
	if _, err := os.Stat(filepath.Join(real, "manifest.json")); err != nil {
		t.Error("removed through a symlink")
	}
	foreign := t.TempDir()
	writeFile(t, filepath.Join(foreign, "notes.txt"), "keep")
	if _, err := Teardown(TeardownOptions{AuthDir: foreign, Force: true}); err == nil || !strings.Contains(err.Error(), "is not a caw staging dir") {
		t.Errorf("foreign dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(foreign, "notes.txt")); err != nil {
		t.Error("removed a foreign dir")
	}
	// A staging dir whose manifest is corrupt can still be torn down.
	broken := filepath.Join(t.TempDir(), "auth")
	writeFile(t, filepath.Join(broken, "manifest.json"), "{not json")
	if res, err := Teardown(TeardownOptions{AuthDir: broken}); err != nil || !res.Removed {
		t.Errorf("broken manifest: %+v %v", res, err)
	}
}
