// Package torture is caw's torture suite: Go tests that drive the real
// caw-init binary, set up as in a container (internal/harness), through what
// breaks credential guards: torn writes, SIGKILL during refresh storms,
// refreshes racing on both sides, a hostile container user attacking the
// root guard, and a long soak. Each test prints its counts at the end (go
// test -v) and fails on any loss.
//
// The tests always run, in a bounded form sized for CI (a few minutes in
// all); CAW_TORTURE=full (testenv.Rounds, the one knob, which sizes the
// guard's storm tests in ./sync/guard too) runs the counts docs/FIGURES.md
// quotes:
//
//	go test -count=1 -v ./torture/                      # bounded (CI)
//	CAW_TORTURE=full go test -count=1 -v -timeout 60m ./torture/
//
// CAW_TORTURE_SEED=N replays the random choices of an earlier run.
package torture
