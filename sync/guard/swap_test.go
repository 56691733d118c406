package guard

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSwapInNeverOverwritesARacingWrite: a writer that renames its file in
// after the guard's last check, an instant before the guard's rename, keeps
// its file: the guard's exchange finds foreign content displaced, puts it
// back, and reports errChanged so the guard decides again.
func TestSwapInNeverOverwritesARacingWrite(t *testing.T) {
	dir := t.TempDir()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dirfd := int(d.Fd())
	name := filepath.Join(dir, "cred.json")
	decided := []byte("A")
	for _, race := range []bool{false, true} {
		if err := os.WriteFile(name, decided, 0o600); err != nil {
			t.Fatal(err)
		}
		tmp, err := createTemp(dirfd, "cred.json")
		if err != nil {
			t.Fatal(err)
		}
		if err := tmp.fill([]byte("GUARD"), -1, -1, 0o600, false); err != nil {
			t.Fatal(err)
		}
		calls := 0
		still := func(cur []byte, err error) bool {
			calls++
			if calls == 1 && race {
				// The check passes; the agent's rename lands right after.
				os.WriteFile(name+".agent", []byte("AGENT"), 0o600)
				os.Rename(name+".agent", name)
			}
			return err == nil && bytes.Equal(cur, decided)
		}
		err = swapIn(dirfd, tmp.name, "cred.json", -1, still)
		got, _ := os.ReadFile(name)
		switch {
		case !race && (err != nil || string(got) != "GUARD"):
			t.Fatalf("no race: err %v, file %q", err, got)
		case race && (!errors.Is(err, errChanged) || string(got) != "AGENT"):
			t.Fatalf("race: err %v, file %q; want errChanged and the agent's file", err, got)
		}
		var st unix.Stat_t
		names, _ := d.Readdirnames(-1)
		d.Seek(0, 0)
		if len(names) != 1 || unix.Lstat(name, &st) != nil {
			t.Fatalf("left behind: %v", names)
		}
	}
}

// TestSwapInKeepsASecondRacingWrite: writers come in bursts. One lands
// between the guard's check and its exchange, and a second one (by rename,
// or in place into the file the exchange just put at the name) lands
// before the guard swaps the first back. The second write is the newest:
// it must end at the name, not be dropped with the guard's temp.
func TestSwapInKeepsASecondRacingWrite(t *testing.T) {
	for _, inPlace := range []bool{false, true} {
		dir := t.TempDir()
		d, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		dirfd := int(d.Fd())
		name := filepath.Join(dir, "cred.json")
		decided := []byte("A")
		if err := os.WriteFile(name, decided, 0o600); err != nil {
			t.Fatal(err)
		}
		tmp, err := createTemp(dirfd, "cred.json")
		if err != nil {
			t.Fatal(err)
		}
		if err := tmp.fill([]byte("GUARD"), -1, -1, 0o600, false); err != nil {
			t.Fatal(err)
		}
		calls := 0
		still := func(cur []byte, err error) bool {
			calls++
			switch calls {
			case 1: // the check passes; the first write lands right after
				os.WriteFile(name+".agent", []byte("FIRST"), 0o600)
				os.Rename(name+".agent", name)
			case 2: // the exchange displaced FIRST; the second write lands now
				if inPlace {
					os.WriteFile(name, []byte("SECOND"), 0o600)
				} else {
					os.WriteFile(name+".agent", []byte("SECOND"), 0o600)
					os.Rename(name+".agent", name)
				}
			}
			return err == nil && bytes.Equal(cur, decided)
		}
		err = swapIn(dirfd, tmp.name, "cred.json", -1, still)
		got, _ := os.ReadFile(name)
		if !errors.Is(err, errChanged) || string(got) != "SECOND" {
			t.Fatalf("in place %v: err %v, file %q; want errChanged and the second write", inPlace, err, got)
		}
		names, _ := d.Readdirnames(-1)
		d.Close()
		if len(names) != 1 {
			t.Fatalf("in place %v: left behind: %v", inPlace, names)
		}
	}
}
