// Package mountns runs a package's tests in a private mount namespace, so
// that tests run as root can bind-mount freely without touching the
// machine's mounts. It is apart from testenv because packages testenv
// depends on (internal/safefs) use it too.
package mountns

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

const env = "CAW_TEST_MOUNT_NS"

// Main is a TestMain: as root, it re-executes the test binary in a new
// mount namespace (Go makes / private in the child) and exits with its
// status; otherwise, or in that child, it runs the tests.
func Main(m *testing.M) {
	if os.Geteuid() == 0 && !Inside() {
		cmd := exec.Command(os.Args[0], os.Args[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), env+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Run(); err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				os.Exit(ee.ExitCode())
			}
			fmt.Fprintln(os.Stderr, "re-exec in a private mount namespace:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Inside reports whether the tests run in the namespace Main made.
func Inside() bool { return os.Getenv(env) != "" }
