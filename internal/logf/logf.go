// Package logf holds the one logging hook caw's long-running parts take
// (the PID 1 supervisor, the credential guard, the Keychain bridge), so a
// main wires one function into all of them and none imports another's.
package logf

// Func prints one line when level <= the verbosity: 0 always (problems the
// user must act on), 1 with -v, 2 with -vv. It may be called from several
// goroutines at once, so it must write each line in one write.
type Func func(level int, format string, args ...any)
