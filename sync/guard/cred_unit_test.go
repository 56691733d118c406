package guard

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/caw-dev/caw/manifest"
	"github.com/caw-dev/caw/sync/policy"
)

// Unit tests of cred's host write path with a fake host side: no root, no
// files.

// fakeHost is a host side in memory; err, when set, is what write returns
// after its re-check passed.
type fakeHost struct {
	data   []byte
	err    error
	writes int
}

func (f *fakeHost) read() ([]byte, error) { return f.data, nil }
func (f *fakeHost) write(data []byte, still func([]byte, error) bool, _ preferFunc) (string, error) {
	if !still(f.data, nil) {
		return "", errChanged
	}
	if f.err != nil {
		return "", f.err
	}
	f.data = append([]byte(nil), data...)
	f.writes++
	return "", nil
}
func (f *fakeHost) recheck(string, [32]byte, []byte, preferFunc) bool { return false }
func (f *fakeHost) dead() bool                                        { return false }
func (f *fakeHost) watch() (string, string)                           { return "/fake", "" }
func (f *fakeHost) close()                                            {}

type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) logf(level int, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, fmt.Sprintf("%d ", level)+fmt.Sprintf(format, args...))
}

func (l *lines) count(s string) int {
	n := 0
	for _, x := range l.l {
		if strings.Contains(x, s) {
			n++
		}
	}
	return n
}

func newFakeCred(h *fakeHost, log *lines) *cred {
	g := &Guard{cfg: Config{Logf: log.logf, WriteBurst: -1}}
	return &cred{g: g, e: manifest.Entry{Agent: "claude", File: manifest.File{ContainerTarget: ".claude/.credentials.json"}},
		mem: policy.Memory{Format: "claude", RepairStubs: true, Limits: g.limits()}, host: h, said: map[string]bool{}}
}

func viewOf(data []byte) view {
	return view{Content: policy.Content{Data: data, Sum: policy.Sum(data)}}
}

func TestHostWritePaths(t *testing.T) {
	old, fresh := claudeTok(1), claudeTok(2)
	t.Run("written", func(t *testing.T) {
		h, log := &fakeHost{data: old}, &lines{}
		c := newFakeCred(h, log)
		if err := c.write(host, viewOf(fresh), viewOf(old), policy.OnEvent); err != nil || h.writes != 1 || c.mem.Side[host].Seen != viewOf(fresh).Sum || !c.mem.Side[host].Mine {
			t.Fatalf("err %v, %d writes, seen updated %v", err, h.writes, c.mem.Side[host].Seen == viewOf(fresh).Sum)
		}
		if c.mem.HostWrittenAt.IsZero() {
			t.Fatal("the host write time was not recorded (rule 2's race window)")
		}
	})
	t.Run("changed under the write", func(t *testing.T) {
		h, log := &fakeHost{data: claudeTok(3)}, &lines{}
		c := newFakeCred(h, log)
		if err := c.write(host, viewOf(fresh), viewOf(old), policy.OnEvent); err != errChanged || h.writes != 0 {
			t.Fatalf("err %v, %d writes: the re-check must refuse a host that changed since it was read", err, h.writes)
		}
	})
	t.Run("dead inode", func(t *testing.T) {
		h, log := &fakeHost{data: old, err: errDead}, &lines{}
		c := newFakeCred(h, log)
		c.write(host, viewOf(fresh), viewOf(old), policy.OnEvent)
		if !c.hostAt.dead || log.count("replaced its file by rename") != 1 {
			t.Fatalf("dead %v, log %q", c.hostAt.dead, log.l)
		}
		h.err = nil
		if err := c.write(host, viewOf(fresh), viewOf(old), policy.OnEvent); err != nil || h.writes != 0 {
			t.Fatalf("a dead host was written: %v, %d writes", err, h.writes)
		}
	})
	t.Run("read-only", func(t *testing.T) {
		h, log := &fakeHost{data: old, err: fmt.Errorf("open: %w", errReadOnly)}, &lines{}
		c := newFakeCred(h, log)
		c.write(host, viewOf(fresh), viewOf(old), policy.OnEvent)
		if !c.hostAt.readOnly || !c.hostAt.owedRO || log.count("not writable by the guard") != 1 {
			t.Fatalf("ro %v owed %v, log %q", c.hostAt.readOnly, c.hostAt.owedRO, log.l)
		}
	})
}

// TestBeats: the ranking the swap's put-back uses (see swapIn): the guard's
// own file lowest, then a logged-out stub, then usable credentials by
// freshness, and above all a torn or unreadable file, whose writer is
// still at work in it.
func TestBeats(t *testing.T) {
	c := newFakeCred(&fakeHost{}, &lines{})
	mine := policy.Sum(claudeTok(5))
	torn := []byte(`{"claudeAiOauth":{"acc`)
	unreadable := fmt.Errorf("a FIFO")
	for _, tc := range []struct {
		name string
		a    []byte
		aerr error
		b    []byte
		want bool
	}{
		{"a torn file beats a fresher token", torn, nil, claudeTok(9), true},
		{"an empty file beats a token", nil, nil, claudeTok(9), true},
		{"an unreadable file beats a token", nil, unreadable, claudeTok(9), true},
		{"a token does not beat a torn file", claudeTok(9), nil, torn, false},
		{"a fresher token beats an older one", claudeTok(9), nil, claudeTok(3), true},
		{"an older token does not beat a fresher one", claudeTok(3), nil, claudeTok(9), false},
		{"a token beats a stub", claudeTok(1), nil, claudeStub, true},
		{"a stub does not beat a token", claudeStub, nil, claudeTok(1), false},
		{"a stub beats the guard's own file", claudeStub, nil, claudeTok(5), true},
		{"the guard's own file beats nothing", claudeTok(5), nil, claudeStub, false},
	} {
		if got := c.beats(tc.a, tc.aerr, tc.b, nil, mine); got != tc.want {
			t.Errorf("%s: beats = %v", tc.name, got)
		}
	}
}
