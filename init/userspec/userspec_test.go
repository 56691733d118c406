package userspec

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

const testPasswd = `root:x:0:0:root:/root:/bin/sh
playground:x:1000:1000:Playground:/home/playground:/bin/sh
alice:x:1001:1001::/home/alice:/bin/sh
nohome:x:1002:1002:::/bin/sh
`

const testGroup = `root:x:0:
playground:x:1000:
alice:x:1001:
dev:x:2000:playground,alice
docker:x:2001:playground
staff:x:50:
`

func writeEtc(t *testing.T) (passwd, group string) {
	t.Helper()
	dir := t.TempDir()
	passwd, group = filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	if err := os.WriteFile(passwd, []byte(testPasswd), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(group, []byte(testGroup), 0o644); err != nil {
		t.Fatal(err)
	}
	return passwd, group
}

// TestResolveTable is the gosu/su-exec user-spec table of init-anchors.md.
func TestResolveTable(t *testing.T) {
	passwd, group := writeEtc(t)
	const curGID = 7
	for _, tc := range []struct {
		spec     string
		uid, gid int
		groups   []int
		home     string
		name     string
	}{
		{"playground", 1000, 1000, []int{1000, 2000, 2001}, "/home/playground", "playground"},
		{"alice", 1001, 1001, []int{1001, 2000}, "/home/alice", "alice"},
		{"1000", 1000, 1000, []int{1000, 2000, 2001}, "/home/playground", "playground"},
		{"playground:staff", 1000, 50, []int{50}, "/home/playground", "playground"},
		{"playground:2001", 1000, 2001, []int{2001}, "/home/playground", "playground"},
		{"1000:2000", 1000, 2000, []int{2000}, "/home/playground", "playground"},
		{"1000:dev", 1000, 2000, []int{2000}, "/home/playground", "playground"},
		{"4242", 4242, curGID, []int{curGID}, "/", "4242"},
		{"4242:4243", 4242, 4243, []int{4243}, "/", "4242"},
		{"4242:dev", 4242, 2000, []int{2000}, "/", "4242"},
		{"nohome", 1002, 1002, []int{1002}, "/", "nohome"},
		{"0", 0, 0, []int{0}, "/root", "root"},
	} {
		id, err := Resolve(tc.spec, passwd, group, curGID)
		if err != nil {
			t.Errorf("Resolve(%q): %v", tc.spec, err)
			continue
		}
		if id.UID != tc.uid || id.GID != tc.gid || !slices.Equal(id.Groups, tc.groups) || id.Home != tc.home || id.Name != tc.name {
			t.Errorf("Resolve(%q) = %+v, want uid %d gid %d groups %v home %s name %s",
				tc.spec, *id, tc.uid, tc.gid, tc.groups, tc.home, tc.name)
		}
	}
}

func TestResolveRefused(t *testing.T) {
	passwd, group := writeEtc(t)
	for _, spec := range []string{"nosuchuser", "0day", "0:bogus", "playground:bogus", ":1000", "1000:", "-1", "99999999999", ""} {
		id, err := Resolve(spec, passwd, group, 0)
		if err == nil {
			t.Errorf("Resolve(%q) = %+v, want an error", spec, *id)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "user") {
			t.Errorf("Resolve(%q) error %q: want one line naming the user spec", spec, msg)
		}
	}
}

// TestResolveNoEtc: FROM scratch images have no /etc; numeric specs still work
// and names are refused.
func TestResolveNoEtc(t *testing.T) {
	dir := t.TempDir()
	passwd, group := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	id, err := Resolve("1000:1000", passwd, group, 0)
	if err != nil {
		t.Fatal(err)
	}
	if id.UID != 1000 || id.GID != 1000 || !slices.Equal(id.Groups, []int{1000}) || id.Home != "/" || id.Name != "1000" {
		t.Errorf("got %+v", *id)
	}
	if _, err := Resolve("playground", passwd, group, 0); err == nil {
		t.Error("a name resolved without a passwd file")
	}
}

func TestCredential(t *testing.T) {
	id := &Identity{UID: 1000, GID: 1000, Groups: []int{1000, 2000}}
	c := id.Credential()
	if c.Uid != 1000 || c.Gid != 1000 || !slices.Equal(c.Groups, []uint32{1000, 2000}) || c.NoSetGroups {
		t.Errorf("got %+v", *c)
	}
}

func TestEnv(t *testing.T) {
	id := &Identity{Home: "/home/playground", Name: "playground"}
	got := id.Env([]string{"PATH=/bin", "HOME=/root", "TERM=xterm", "USER=root", "HOME=/stale", "EMPTY="})
	want := []string{"PATH=/bin", "HOME=/home/playground", "TERM=xterm", "USER=playground", "EMPTY=", "LOGNAME=playground"}
	if !slices.Equal(got, want) {
		t.Errorf("Env = %q, want %q", got, want)
	}
}

func TestHomeFor(t *testing.T) {
	dirs := map[string]bool{"/home/playground": true, "/home/agent": true, "/": true}
	isDir := func(p string) bool { return dirs[p] }
	for _, tc := range []struct {
		name     string
		id       Identity
		fallback string
		home     string
		create   bool
	}{
		{"passwd user with a home", Identity{UID: 1000, Home: "/home/playground", Known: true}, "/home/agent", "/home/playground", false},
		{"uid not in passwd", Identity{UID: 4242, Home: "/"}, "/home/playground", "/home/playground", false},
		{"uid not in passwd, home missing", Identity{UID: 4242, Home: "/"}, "/home/new", "/home/new", true},
		{"passwd home missing: the guard creates it", Identity{UID: 65534, Home: "/nonexistent", Known: true}, "/home/new", "/nonexistent", false},
		{"passwd home is /", Identity{UID: 1002, Home: "/", Known: true}, "/home/agent", "/home/agent", false},
		{"no fallback", Identity{UID: 4242, Home: "/"}, "", "/", false},
		{"fallback /", Identity{UID: 4242, Home: "/"}, "/", "/", false},
	} {
		home, create := HomeFor(&tc.id, tc.fallback, isDir)
		if home != tc.home || create != tc.create {
			t.Errorf("%s: HomeFor = %q, %v; want %q, %v", tc.name, home, create, tc.home, tc.create)
		}
	}
}

func TestMakeHome(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	home := filepath.Join(t.TempDir(), "home", "agent")
	if err := MakeHome(home, 4242, 4243); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(home)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || fi.Mode().Perm() != 0o700 || st.Uid != 4242 || st.Gid != 4243 {
		t.Fatalf("home is %v %d:%d, want a 0700 directory owned by 4242:4243", fi.Mode(), st.Uid, st.Gid)
	}
	if err := MakeHome(home, 1, 1); err != nil {
		t.Fatalf("existing home: %v", err)
	}
	if st := mustStat(t, home); st.Uid != 4242 {
		t.Fatalf("an existing home was chowned to %d", st.Uid)
	}
}

func mustStat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t)
}
