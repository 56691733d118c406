//go:build !(linux && !cgo && (amd64 || arm64))

package pid1

// No entry hook here (other architectures, or a build with cgo, where the C
// library's start-up runs first): the caller's signal configuration is
// known only as the Go runtime leaves it (see entry.go).
var (
	entryRan                   uint32
	entryIgnored, entryBlocked uint64
)

const entryLinkable = false
