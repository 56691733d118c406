//go:build linux

package safefs

import "testing"

// BenchmarkAs is the cost of taking the user's filesystem identity and
// giving it back (setfsgid and setfsuid, each checked, and back; setgroups
// only when the thread does not hold the user's groups yet): what every
// access to the home adds to a sync. On 2026-12-06 here: 17.9 us with
// setgroups each way, 14.1 us without (docs/FIGURES.md).
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
