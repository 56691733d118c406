//go:build linux

package safefs

import (
	"errors"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// User is a filesystem identity: the uid, gid and supplementary groups the
// kernel checks permissions against.
type User struct {
	UID, GID int
	Groups   []int
}

// As runs fn with u's filesystem identity on the calling goroutine's thread:
// setfsuid, setfsgid and the thread's own supplementary groups (the raw
// setgroups system call changes only the calling thread; syscall.Setgroups
// would change all of them). A root caw-init then has no capability over
// files (the kernel drops CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER and the
// rest from the effective set when the fsuid leaves 0), so every permission
// check, every owner of a new file, is the user's.
//
// The goroutine stays locked to its thread until root's identity is back;
// if it cannot be restored the thread is never unlocked, so it exits with
// the goroutine instead of serving another one. Threads the runtime starts
// while the goroutine is locked come from its clean template thread, not
// from this one. When caw-init is not root, or already is u, fn runs as is.
func As(u User, fn func() error) error {
	if self().euid != 0 || u.UID == 0 {
		return fn()
	}
	saved, err := rootGroups()
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	if err := enter(u); err != nil {
		if leave(saved) {
			runtime.UnlockOSThread()
		}
		return err
	}
	err = fn()
	if leave(saved) {
		runtime.UnlockOSThread()
	}
	return err
}

// rootGroups are caw-init's own supplementary groups, read once: nothing
// changes them for the process (only As, per thread, and back).
var rootGroups = sync.OnceValues(unix.Getgroups)

// self is caw-init's own effective ids, read once for the same reason (it
// never changes its own ids: the command gets the user's in its child).
var self = sync.OnceValue(func() struct{ euid, egid int } {
	return struct{ euid, egid int }{unix.Geteuid(), unix.Getegid()}
})

var errIdentity = errors.New("cannot take the user's filesystem identity")

func enter(u User) error {
	groups := u.Groups
	if len(groups) == 0 {
		groups = []int{u.GID}
	}
	if err := setgroupsThread(groups); err != nil {
		return err
	}
	unix.SetfsgidRetGid(u.GID)
	if fsgid() != u.GID {
		return errIdentity
	}
	unix.SetfsuidRetUid(u.UID)
	if fsuid() != u.UID {
		return errIdentity
	}
	return nil
}

// fsuid and fsgid read the thread's filesystem ids: setfsuid returns the
// previous value and changes nothing for an invalid id (-1), without the
// credentials copy a real change (or a repeated one) costs the kernel.
func fsuid() int { id, _ := unix.SetfsuidRetUid(-1); return id }
func fsgid() int { id, _ := unix.SetfsgidRetGid(-1); return id }

// leave restores root's filesystem identity and reports whether it did.
func leave(saved []int) bool {
	egid := self().egid
	unix.SetfsuidRetUid(0)
	unix.SetfsgidRetGid(egid)
	return fsuid() == 0 && fsgid() == egid && setgroupsThread(saved) == nil
}

func setgroupsThread(groups []int) error {
	gs := make([]uint32, len(groups))
	for i, g := range groups {
		gs[i] = uint32(g)
	}
	var p unsafe.Pointer
	if len(gs) > 0 {
		p = unsafe.Pointer(&gs[0])
	}
	_, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gs)), uintptr(p), 0)
	if e != 0 {
		return e
	}
	return nil
}
