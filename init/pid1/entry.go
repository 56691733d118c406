//go:build linux && !cgo && (amd64 || arm64)

package pid1

// Before main runs, the Go runtime replaces almost every signal's action
// with its own handler, even an ignored one (it leaves SIGHUP and SIGINT
// ignored, and the job-control signals alone), and unblocks on its threads
// the signals it needs. A child it forks starts with those handlers reset
// to the default and with the unblocked mask. So what the caller set (nohup,
// a shell's background job) is lost for the command, unless it is read
// before the runtime starts: rt0 (entry_linux_*.s), caw-init's ELF entry
// point when linked with -ldflags=-E=github.com/caw-dev/caw/init/pid1.rt0
// (internal/initbuild), records the ignored set and the mask, then jumps
// to the runtime's own entry point.
//
// The child cannot be given ignored actions the runtime resets in it
// (SIGSEGV, SIGPROF, 33, and the others os/signal cannot ignore), nor a
// mask that differs from the forking thread's. So when the caller's
// configuration is not what the child would inherit, caw-init execs
// itself first as a trampoline: rt0, seeing argv[0] == trampolineName,
// sets the ignored actions and the mask and execs the command (see
// spawnThroughEntry).

// Written by rt0 before the runtime starts; all zero when caw-init was
// linked without it.
var (
	entryRan     uint32
	entryIgnored uint64 // bit n-1 set: signal n was SIG_IGN
	entryBlocked uint64 // the initial thread's blocked mask
	// entryScratch is rt0's memory: a struct sigaction, a sigset, an
	// errno, and the registers it puts back for the runtime.
	entryScratch [18]uint64
)

// trampolineName is what rt0 compares argv[0] with. A string variable
// with a constant value is laid out by the linker, so it is there before
// the runtime runs.
var trampolineName = trampolineArg0

// rt0 is the entry point; never called from Go.
func rt0()

// entryLinkable reports whether this build has rt0.
const entryLinkable = true
