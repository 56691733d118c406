// Package initbuild says how caw-init is linked: with init/pid1's entry
// hook as its ELF entry point, so that it sees the signal configuration its
// caller set (ignored signals, blocked mask) before the Go runtime changes
// it, and passes it on to the command. A caw-init linked without it runs,
// and its --version says the hook is missing.
//
// Every build of caw-init uses LDFlags: the Go callers (the test builds,
// the bench, the end-to-end images) this constant, the Makefile, the
// Dockerfile and the README the same text, which a test checks.
package initbuild

// EntrySymbol is the linker's name of the entry hook (init/pid1's rt0).
const EntrySymbol = "github.com/caw-dev/caw/init/pid1.rt0"

// LDFlags are the -ldflags of a release build of caw-init: stripped, and
// entered through the hook. The hook exists for linux/amd64 and
// linux/arm64 with CGO_ENABLED=0; elsewhere the link fails with "missing
// entry symbol".
const LDFlags = "-s -w -E=" + EntrySymbol
