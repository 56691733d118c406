package guard

import (
	"os"
	"path/filepath"
	"testing"
)

// TestHomeResolution: the home's parent directories are resolved by
// openat2(RESOLVE_BENEATH), or by os.Root on kernels without openat2; in
// both modes reads and writes work, and a directory swapped for a symlink
// leading out of the home (absolute or relative) is refused for reading
// and writing.
func TestHomeResolution(t *testing.T) {
	for _, noOpenat2 := range []bool{false, true} {
		for _, relative := range []bool{false, true} {
			f := newFx(t)
			h, err := openHome(f.home, userUID, userGID)
			if err != nil {
				t.Fatal(err)
			}
			defer h.close()
			h.noOpenat2.Store(noOpenat2)
			mkdir(t, f.homePath(".claude"), userUID, userGID)
			if err := h.replace(".claude/c.json", claudeTok(1), 0o600, nil); err != nil {
				t.Fatal(err)
			}
			if got, err := h.read(".claude/c.json"); err != nil || !same(got, claudeTok(1)) {
				t.Fatalf("noOpenat2=%v: read %q, %v", noOpenat2, got, err)
			}
			outside := filepath.Join(f.dir, "outside")
			mkdir(t, outside, userUID, userGID)
			bait := filepath.Join(outside, "c.json")
			writeOwned(t, bait, claudeTok(999), userUID, userGID, 0o600)
			if err := os.Rename(f.homePath(".claude"), f.homePath(".claude-old")); err != nil {
				t.Fatal(err)
			}
			target := outside
			if relative {
				target, _ = filepath.Rel(f.home, outside)
			}
			if err := os.Symlink(target, f.homePath(".claude")); err != nil {
				t.Fatal(err)
			}
			if got, err := h.read(".claude/c.json"); err == nil {
				t.Fatalf("noOpenat2=%v relative=%v: read through a symlink out of the home: %.40q", noOpenat2, relative, got)
			}
			if err := h.replace(".claude/c.json", claudeTok(2), 0o600, nil); err == nil {
				t.Fatalf("noOpenat2=%v relative=%v: wrote through a symlink out of the home", noOpenat2, relative)
			}
			assertContent(t, bait, claudeTok(999))
			if entries, _ := os.ReadDir(outside); len(entries) != 1 {
				t.Fatalf("noOpenat2=%v relative=%v: %d files outside the home", noOpenat2, relative, len(entries))
			}
		}
	}
}
