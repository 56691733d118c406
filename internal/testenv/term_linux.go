package testenv

import (
	"time"

	"golang.org/x/sys/unix"
)

// WaitCooked waits until the terminal has its line discipline's signals,
// echo and line editing on (TCGETS on the master reads the terminal's
// modes): a shell that just started a job may keep it raw for a moment, and
// a Ctrl-Z typed then would be read as a character.
func (tm *Term) WaitCooked(timeout time.Duration) {
	tm.t.Helper()
	want := uint32(unix.ISIG | unix.ECHO | unix.ICANON)
	deadline := time.Now().Add(timeout)
	for {
		tio, err := unix.IoctlGetTermios(int(tm.master.Fd()), unix.TCGETS)
		if err != nil {
			tm.t.Fatalf("read the terminal's modes: %v", err)
		}
		if tio.Lflag&want == want {
			return
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("terminal still in raw mode after %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
