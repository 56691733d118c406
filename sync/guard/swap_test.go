package guard

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// byRank is the prefer of these tests: later writes rank higher, the
// guard's file lowest, and an empty file (a writer that has truncated it
// and not yet written) highest.
func byRank(disp []byte, _ error, at []byte, _ error) bool {
	rank := map[string]int{"GUARD": 0, "A": 1, "AGENT": 2, "FIRST": 2, "SECOND": 3, "THIRD": 4, "": 99}
	return rank[string(disp)] > rank[string(at)]
}

// swapFx is a directory holding cred.json with "A", and the guard's
// finished temp file holding "GUARD".
func swapFx(t *testing.T) (d *os.File, name, tmp string) {
	t.Helper()
	dir := t.TempDir()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	name = filepath.Join(dir, "cred.json")
	if err := os.WriteFile(name, []byte("A"), 0o600); err != nil {
		t.Fatal(err)
	}
	tf, err := createTemp(int(d.Fd()), "cred.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := tf.Fill([]byte("GUARD"), -1, -1, 0o600, false); err != nil {
		t.Fatal(err)
	}
	return d, name, tf.Name
}

func renameIn(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(name+".agent", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(name+".agent", name); err != nil {
		t.Fatal(err)
	}
}

func stillA(cur []byte, err error) bool { return err == nil && string(cur) == "A" }

// onlyName fails the test unless err is wantErr and the directory holds
// just cred.json with want.
func onlyName(t *testing.T, d *os.File, name string, err, wantErr error, want string) {
	t.Helper()
	got, _ := os.ReadFile(name)
	if !errors.Is(err, wantErr) || string(got) != want {
		t.Fatalf("err %v, file %q; want %v and %q", err, got, wantErr, want)
	}
	d.Seek(0, 0)
	if names, _ := d.Readdirnames(-1); len(names) != 1 {
		t.Fatalf("left behind: %v", names)
	}
}

// TestSwapInKeepsAThirdRacingWrite: every exchange that puts a racing
// write back can itself displace a newer one that landed an instant
// before it. The newest write, by rename or in place, ends at the name;
// a swap that compared inodes instead of content lost it (seen in the
// concurrent-refresh torture: the last token of a burst vanished from both
// sides).
func TestSwapInKeepsAThirdRacingWrite(t *testing.T) {
	for _, inPlace := range []bool{false, true} {
		d, name, tmp := swapFx(t)
		calls := 0
		still := func(cur []byte, err error) bool {
			calls++
			if calls == 1 {
				renameIn(t, name, []byte("FIRST"))
			}
			return stillA(cur, err)
		}
		prefers := 0
		prefer := func(disp []byte, derr error, at []byte, aerr error) bool {
			prefers++
			switch prefers {
			case 1: // FIRST is going back; SECOND lands before it does
				renameIn(t, name, []byte("SECOND"))
			case 2: // SECOND is going back; THIRD lands before it does
				if inPlace {
					os.WriteFile(name, []byte("THIRD"), 0o600)
				} else {
					renameIn(t, name, []byte("THIRD"))
				}
			}
			return byRank(disp, derr, at, aerr)
		}
		_, err := swapIn(int(d.Fd()), tmp, "cred.json", -1, still, prefer)
		onlyName(t, d, name, err, errChanged, "THIRD")
	}
}

// TestSwapInKeepsATornFile: an agent writing in place opened (and
// truncated) the file just before the exchange moved it away, and writes
// after: the file goes back to the name, so the write lands there.
func TestSwapInKeepsATornFile(t *testing.T) {
	d, name, tmp := swapFx(t)
	var f *os.File
	calls := 0
	still := func(cur []byte, err error) bool {
		calls++
		if calls == 1 {
			var oerr error
			if f, oerr = os.OpenFile(name, os.O_WRONLY|os.O_TRUNC, 0); oerr != nil {
				t.Fatal(oerr)
			}
		}
		return stillA(cur, err)
	}
	_, err := swapIn(int(d.Fd()), tmp, "cred.json", -1, still, byRank)
	if _, werr := f.Write([]byte("AGENT")); werr != nil {
		t.Fatal(werr)
	}
	f.Close()
	onlyName(t, d, name, err, errChanged, "AGENT")
}

// TestSwapInNeverOverwritesARacingWrite: a writer that renames its file in
// after the guard's last check, an instant before the guard's rename, keeps
// its file: the guard's exchange finds foreign content displaced, puts it
// back, and reports errChanged so the guard decides again.
func TestSwapInNeverOverwritesARacingWrite(t *testing.T) {
	for _, race := range []bool{false, true} {
		d, name, tmp := swapFx(t)
		calls := 0
		still := func(cur []byte, err error) bool {
			calls++
			if calls == 1 && race {
				// The check passes; the agent's rename lands right after.
				renameIn(t, name, []byte("AGENT"))
			}
			return stillA(cur, err)
		}
		dirfd := int(d.Fd())
		kept, err := swapIn(dirfd, tmp, "cred.json", -1, still, byRank)
		if kept != "" {
			recheckAt(dirfd, kept, "cred.json", -1, sha256.Sum256([]byte("A")), []byte("GUARD"), byRank)
		}
		if race {
			onlyName(t, d, name, err, errChanged, "AGENT")
		} else {
			onlyName(t, d, name, err, nil, "GUARD")
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
		d, name, tmp := swapFx(t)
		calls := 0
		still := func(cur []byte, err error) bool {
			calls++
			switch calls {
			case 1: // the check passes; the first write lands right after
				renameIn(t, name, []byte("FIRST"))
			case 2: // the exchange displaced FIRST; the second write lands now
				if inPlace {
					os.WriteFile(name, []byte("SECOND"), 0o600)
				} else {
					renameIn(t, name, []byte("SECOND"))
				}
			}
			return stillA(cur, err)
		}
		_, err := swapIn(int(d.Fd()), tmp, "cred.json", -1, still, byRank)
		onlyName(t, d, name, err, errChanged, "SECOND")
	}
}

// TestRecheckKeepsALateInPlaceWrite: an agent writing in place opened the
// file by name just before the exchange moved it away, and writes only
// after the swap found it unchanged. The swap keeps the displaced file
// instead of deleting it; the recheck finds the write and puts it back.
// Without a write, the recheck just deletes it.
func TestRecheckKeepsALateInPlaceWrite(t *testing.T) {
	for _, late := range []bool{false, true} {
		d, name, tmp := swapFx(t)
		var f *os.File
		still := func(cur []byte, err error) bool {
			if f == nil {
				var oerr error
				if f, oerr = os.OpenFile(name, os.O_WRONLY, 0); oerr != nil {
					t.Fatal(oerr)
				}
			}
			return stillA(cur, err)
		}
		dirfd := int(d.Fd())
		kept, err := swapIn(dirfd, tmp, "cred.json", -1, still, byRank)
		if err != nil || kept == "" {
			t.Fatalf("swap: kept %q, err %v; want the displaced file kept", kept, err)
		}
		if late {
			if err := f.Truncate(0); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte("AGENT"), 0); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		if wrote := recheckAt(dirfd, kept, "cred.json", -1, sha256.Sum256([]byte("A")), []byte("GUARD"), byRank); wrote != late {
			t.Fatalf("late write %v: recheck saw a write: %v", late, wrote)
		}
		onlyName(t, d, name, nil, nil, map[bool]string{false: "GUARD", true: "AGENT"}[late])
	}
}
