package pid1

import (
	"math"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// closeInheritedFDs marks every descriptor above stderr close-on-exec, so
// the child gets 0-2 and nothing else: not caw-init's own files (Go opens
// them close-on-exec already) and not descriptors caw-init inherited from
// whoever started it without close-on-exec, which would otherwise pass
// through to the command unseen.
func closeInheritedFDs() error {
	err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// Kernels before 5.11: walk the table.
	d, oerr := os.Open("/proc/self/fd")
	if oerr != nil {
		return err
	}
	names, rerr := d.Readdirnames(-1)
	self := int(d.Fd())
	if rerr != nil {
		d.Close()
		return rerr
	}
	for _, n := range names {
		fd, perr := strconv.Atoi(n)
		if perr != nil || fd <= 2 || fd == self {
			continue
		}
		if _, ferr := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); ferr != nil && ferr != unix.EBADF {
			d.Close()
			return ferr
		}
	}
	return d.Close()
}
