//go:build !(linux && !cgo && (amd64 || arm64))

package pid1

import (
	"os"
	"os/signal"
	"syscall"
)

// Without the assembly handler of rawsig.go (other architectures, or a
// build with cgo, where the C library owns 32 and 34), signals 32, 34 and
// SIGPROF are not forwarded: 32 and 34 stay at their default action.

func catchRaw([]syscall.Signal) (int, error) { return -1, nil }

func readRaw(int, chan<- os.Signal) {}

// ignored knows only SIGHUP and SIGINT here: the runtime keeps an ignored
// action for them and reports it.
func ignored(sig syscall.Signal) bool { return signal.Ignored(sig) }
