package guard

import (
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/safefs"
	"golang.org/x/sys/unix"
)

// TestLeaseHoldsOpenersWithoutSIGIO: while the guard holds its write lease
// on a bind-mounted host file, an agent's open(O_TRUNC) waits, before
// truncating, until the lease is released; and the lease break raises no
// SIGIO (caw-init would forward it to the agent, whom it kills by default).
func TestLeaseHoldsOpenersWithoutSIGIO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cred.json")
	if err := os.WriteFile(p, []byte("OLD"), 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sigio := make(chan os.Signal, 1)
	signal.Notify(sigio, unix.SIGIO)
	defer signal.Stop(sigio)

	release := leaseFD(fd, os.Geteuid())
	if release == nil {
		t.Fatal("no write lease on a file nobody else has open")
	}
	opened := make(chan error, 1)
	go func() {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
		if err == nil {
			f.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("open went through the lease (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	// Read through the lease holder's own descriptor: another open would
	// wait for the lease too.
	if got, err := safefs.ReadFD(fd, 3, maxCredSize); err != nil || string(got) != "OLD" {
		t.Fatalf("truncated under the lease: %q (%v)", got, err)
	}
	if _, err := unix.Pwrite(fd, []byte("NEW"), 0); err != nil {
		t.Fatal(err)
	}
	release()
	select {
	case err := <-opened:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("open still waiting after the release")
	}
	select {
	case <-sigio:
		t.Fatal("the lease break raised SIGIO")
	case <-time.After(20 * time.Millisecond):
	}
	// The agent's truncate came after the guard's write, as its write would.
	if got, _ := os.ReadFile(p); len(got) != 0 {
		t.Fatalf("file %q after the agent's O_TRUNC open; want it empty", got)
	}
}

// TestLeaseRefusedWhileOpen: a file another process (here, another
// descriptor) holds open gets no lease, after a bounded wait.
func TestLeaseRefusedWhileOpen(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cred.json")
	if err := os.WriteFile(p, []byte("X"), 0o600); err != nil {
		t.Fatal(err)
	}
	other, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	start := time.Now()
	if release := leaseFD(fd, os.Geteuid()); release != nil {
		release()
		t.Fatal("got a write lease on a file open elsewhere")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("gave up after %v", d)
	}
}

// TestLeaseWithoutCapLease: Docker does not grant CAP_LEASE, so caw-init
// takes the lease with the file owner's filesystem uid, on its own thread
// only, and is root again after.
func TestLeaseWithoutCapLease(t *testing.T) {
	p := filepath.Join(t.TempDir(), "cred.json")
	if err := os.WriteFile(p, []byte("X"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// Drop CAP_LEASE from this thread's effective set, as in a container.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps, saved [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		t.Fatal(err)
	}
	saved = caps
	caps[unix.CAP_LEASE/32].Effective &^= 1 << (unix.CAP_LEASE % 32)
	if err := unix.Capset(&hdr, &caps[0]); err != nil {
		t.Fatal(err)
	}
	defer unix.Capset(&hdr, &saved[0])
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_WRLCK); !errors.Is(err, unix.EACCES) {
		t.Fatalf("lease as plain root without CAP_LEASE: %v, want EACCES (the test setup is wrong)", err)
	}
	release := leaseFD(fd, 4242)
	if release == nil {
		t.Fatal("no lease with the owner's fsuid")
	}
	release()
	if prev, _ := unix.SetfsuidRetUid(0); prev != 0 {
		t.Fatalf("fsuid left at %d", prev)
	}
}
