package agents

import (
	"path"
	"strings"
	"testing"
)

// The locked layout only protects when every mount target sits inside its
// agent's lock dir and nothing else does (a config there could not be copied
// by a guard, and a second credential there would share the lock).
func TestMountTargets(t *testing.T) {
	if got := mustLookup(t, "claude").Credential.MountTarget(true, true); got != "claude/mnt/config-dir" {
		t.Errorf("claude locked bind-dir target %q, want claude/mnt/config-dir", got)
	}
	if got := mustLookup(t, "codex").Credential.MountTarget(false, true); got != "codex/mnt/auth.json" {
		t.Errorf("codex locked bind target %q, want codex/mnt/auth.json", got)
	}
	if got := mustLookup(t, "codex").Credential.MountTarget(false, false); got != "codex/auth.json" {
		t.Errorf("codex unlocked bind target %q, want codex/auth.json", got)
	}
	if got := mustLookup(t, "claude").Credential.MountTarget(true, false); got != "claude/config-dir" {
		t.Errorf("claude unlocked bind-dir target %q, want claude/config-dir", got)
	}
	locks := map[string]string{}
	for _, n := range Names() {
		a := mustLookup(t, n)
		c := a.Credential
		if c.LockDir == "" || path.Dir(c.LockDir) != n || path.Clean(c.LockDir) != c.LockDir {
			t.Errorf("%s: LockDir %q, want a clean directory directly under %s/", n, c.LockDir, n)
		}
		if o, dup := locks[c.LockDir]; dup {
			t.Errorf("%s and %s share the lock dir %s", n, o, c.LockDir)
		}
		locks[c.LockDir] = n
		for _, dir := range []bool{false, true} {
			for _, locked := range []bool{false, true} {
				mt := c.MountTarget(dir, locked)
				if in := strings.HasPrefix(mt, c.LockDir+"/"); in != locked {
					t.Errorf("%s: MountTarget(%t, %t) = %q, inside %s: %t", n, dir, locked, mt, c.LockDir, in)
				}
			}
		}
	}
	for _, n := range Names() {
		for _, cf := range mustLookup(t, n).Configs {
			for l, owner := range locks {
				if cf.Src == l || strings.HasPrefix(cf.Src, l+"/") {
					t.Errorf("%s config %s lies in %s's lock dir %s", n, cf.Src, owner, l)
				}
			}
		}
	}
}

func mustLookup(t *testing.T, n string) Agent {
	t.Helper()
	a, ok := Lookup(n)
	if !ok {
		t.Fatalf("no agent %s", n)
	}
	return a
}
