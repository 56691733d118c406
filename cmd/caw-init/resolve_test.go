package main

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/caw-dev/caw/internal/testenv"
)

// A numeric uid:gid this machine's /etc/passwd does not list (docker-flags
// --init's CAW_USER on an image that knows nothing of the user) gets the
// manifest's home, created 0700 for it, as HOME.
func TestResolveUnknownUIDGetsManifestHome(t *testing.T) {
	testenv.RequireRoot(t)
	const spec = "4242:4243"
	home := filepath.Join(t.TempDir(), "home", "playground")
	nolog := func(int, string, ...any) {}
	tg, err := resolveTarget(spec, home, nolog)
	if err != nil {
		t.Fatal(err)
	}
	if tg.uid != 4242 || tg.gid != 4243 || tg.home != home || !slices.Contains(tg.env, "HOME="+home) {
		t.Fatalf("target %d:%d home %q env HOME? %v", tg.uid, tg.gid, tg.home, slices.Contains(tg.env, "HOME="+home))
	}
	fi, err := os.Lstat(home)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 || st.Uid != 4242 || st.Gid != 4243 {
		t.Fatalf("home %v %d:%d, want a 0700 directory of 4242:4243", fi.Mode(), st.Uid, st.Gid)
	}
	// Without a manifest (no fallback) the uid keeps HOME=/, as before.
	if tg, err = resolveTarget(spec, "", nolog); err != nil || tg.home != "/" {
		t.Fatalf("no fallback: home %q, %v", tg.home, err)
	}
	// A passwd user keeps its passwd home.
	if tg, err = resolveTarget("root", home, nolog); err != nil || tg.home != "/root" {
		t.Fatalf("root: home %q, %v", tg.home, err)
	}
}
