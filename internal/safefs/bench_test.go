//go:build linux

package safefs

import "testing"

// BenchmarkAs is the cost of taking the user's filesystem identity and
// giving it back (setgroups, setfsgid and setfsuid, each checked, and
// back): what every access to the home adds to a sync. 11.3 us here
// (14.0 us when each change was checked by repeating it, which costs the
// kernel a credentials copy; setfsuid(-1) only reads), against 5 us to
// parse a credential (docs/FIGURES.md).
//
//	go test -run '^$' -bench As ./internal/safefs/
func BenchmarkAs(b *testing.B) {
	needRoot(b)
	u := User{UID: 1000, GID: 1000, Groups: []int{1000}}
	for b.Loop() {
		if err := As(u, func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}
