//go:build linux

package safefs

import (
	"errors"
	"runtime"
	"slices"
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
// Back to root, the thread keeps u's supplementary groups, and the next As
// for u on it skips setgroups (of the system calls here, the dearest: a
// new group list and a credentials copy each way). Root's own access does
// not depend on its supplementary groups: its capabilities override every
// permission check that could consult them, and new files take the fsgid.
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
	runtime.LockOSThread()
	if err := enter(u); err != nil {
		if leave() {
			runtime.UnlockOSThread()
		}
		return err
	}
	err := fn()
	if leave() {
		runtime.UnlockOSThread()
	}
	return err
}

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
	if !threadHas(groups) {
		if err := setgroupsThread(groups); err != nil {
			return err
		}
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

// leave restores root's filesystem ids and reports whether it did.
func leave() bool {
	egid := self().egid
	unix.SetfsuidRetUid(0)
	unix.SetfsgidRetGid(egid)
	return fsuid() == 0 && fsgid() == egid
}

// threadHas reports whether the calling thread's supplementary groups are
// exactly groups (getgroups(2) reads the thread's own credentials).
func threadHas(groups []int) bool {
	var buf [64]uint32
	n, _, e := unix.RawSyscall(unix.SYS_GETGROUPS, uintptr(len(buf)), uintptr(unsafe.Pointer(&buf[0])), 0)
	if e != 0 || int(n) != len(groups) {
		return false
	}
	have := buf[:n]
	for _, g := range groups {
		if !slices.Contains(have, uint32(g)) {
			return false
		}
	}
	return true
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
