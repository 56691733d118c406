//go:build linux

package safefs

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrNoOpenat2 is a kernel without openat2 (before 5.6): caw-init then
// refuses the staging dir rather than walk it with weaker checks.
var ErrNoOpenat2 = errors.New("the kernel has no openat2 (Linux 5.6 or later is needed)")

// Beneath opens rel inside the directory dirfd: never following a symlink
// (ELOOP), never leaving dirfd (EXDEV on "..", an absolute path), and, with
// sameMount, never crossing into another mount (EXDEV). flags are open(2)
// flags; O_CLOEXEC is always added.
func Beneath(dirfd int, rel string, flags int, sameMount bool) (int, error) {
	resolve := uint64(unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS)
	if sameMount {
		resolve |= unix.RESOLVE_NO_XDEV
	}
	for {
		fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolve})
		switch {
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
			continue
		case errors.Is(err, unix.ENOSYS):
			return -1, ErrNoOpenat2
		}
		return fd, err
	}
}

// OpenMount opens rel inside dirfd, which must be a mount root there: its
// parent directories are resolved within dirfd's own mount (no symlink, no
// other mount), and the last component, a single name without symlinks, is
// a mount root (a bind-mount target). That is exactly one place: a mount the
// user made elsewhere and reached through a symlink or another mount cannot
// stand in for it. flags are for the last component.
func OpenMount(dirfd int, rel string, flags int) (int, error) {
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if base == "" || base == "." || base == ".." {
		return -1, fmt.Errorf("%s: not a file name", rel)
	}
	pfd, err := Beneath(dirfd, dir, unix.O_PATH|unix.O_DIRECTORY, true)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	fd, err := Beneath(pfd, base, flags, false)
	if err != nil {
		return -1, err
	}
	ok, err := mountRoot(fd, pfd, "")
	if err == nil && !ok {
		err = errNotMountRoot
	}
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

var errNotMountRoot = errors.New("not a mount root")

// IsNotMountRoot reports an OpenMount of something that is not mounted.
func IsNotMountRoot(err error) bool { return errors.Is(err, errNotMountRoot) }

// IsMountRoot reports whether the open directory fd is the root of a mount.
func IsMountRoot(fd int) (bool, error) { return mountRoot(fd, fd, "..") }

// mountRoot reports whether fd is the root of a mount; parent (with the
// path rel from it) is its parent directory, for kernels before 5.8, which
// do not report STATX_ATTR_MOUNT_ROOT: a mount root sits on another mount
// than its parent.
func mountRoot(fd, parent int, rel string) (bool, error) {
	var stx unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_NO_AUTOMOUNT, unix.STATX_TYPE|unix.STATX_MNT_ID, &stx)
	if err != nil {
		return false, err
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
	}
	var p unix.Statx_t
	flags := unix.AT_NO_AUTOMOUNT
	if rel == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	if err := unix.Statx(parent, rel, flags, unix.STATX_MNT_ID, &p); err != nil {
		return false, err
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 || p.Mask&unix.STATX_MNT_ID == 0 {
		return stx.Dev_major != p.Dev_major || stx.Dev_minor != p.Dev_minor, nil
	}
	return stx.Mnt_id != p.Mnt_id, nil
}

// UntrustedError says why a staging dir is not trusted.
type UntrustedError struct {
	Dir, Why string
}

func (e *UntrustedError) Error() string { return e.Dir + " " + e.Why }

// TrustDir opens dir, the staging dir, if caw-init may trust it: reached
// without a symlink, the root of a mount, and that mount read-only, so no
// process in the container, root included without CAP_SYS_ADMIN, can have
// written what it holds (caw docker-flags mounts it so). Anything else is a
// *UntrustedError: a directory the container user may have planted (the
// default /tmp/caw_auth sits in world-writable /tmp). A missing dir is an
// error matching fs.ErrNotExist. The returned directory is what every later
// access goes through, so the path is never resolved again.
func TrustDir(dir string) (*os.File, error) {
	var fd int
	var err error
	if path.IsAbs(dir) {
		// RESOLVE_BENEATH refuses an absolute path: resolve it from /.
		fd, err = openFromRoot(dir)
	} else {
		fd, err = Beneath(unix.AT_FDCWD, dir, unix.O_PATH|unix.O_DIRECTORY, false)
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, &os.PathError{Op: "open", Path: dir, Err: os.ErrNotExist}
	case errors.Is(err, unix.ELOOP):
		return nil, &UntrustedError{dir, "is reached through a symlink"}
	case errors.Is(err, unix.ENOTDIR):
		return nil, &UntrustedError{dir, "is not a directory"}
	case err != nil:
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	if ok, err := IsMountRoot(fd); err != nil || !ok {
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("statx %s: %w", dir, err)
		}
		return nil, &UntrustedError{dir, "is not a mount"}
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("statfs %s: %w", dir, err)
	}
	if sfs.Flags&unix.ST_RDONLY == 0 {
		unix.Close(fd)
		return nil, &UntrustedError{dir, "is mounted read-write"}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

func openFromRoot(dir string) (int, error) {
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	defer unix.Close(root)
	rel := strings.TrimLeft(path.Clean(dir), "/")
	if rel == "" {
		rel = "."
	}
	return Beneath(root, rel, unix.O_PATH|unix.O_DIRECTORY, false)
}
