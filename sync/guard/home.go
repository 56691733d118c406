package guard

// This file is the only code that touches the container user's home. The
// guard runs as root and the home belongs to an unprivileged user who can
// plant symlinks, hard links, FIFOs, devices, huge files, or swap a directory
// for a symlink at any instant, so every operation here follows three rules:
//
//  0. It runs with the user's filesystem identity (safefs.As: setfsuid,
//     setfsgid and the user's groups on a locked thread), so the kernel's
//     permission checks are the user's: root's privileges never touch a
//     path in the home, what it creates is the user's without a chown, and
//     a directory the user cannot write (a root-owned volume in the home)
//     the guard cannot write either.
//  1. A parent directory is resolved through one os.Root opened on the home,
//     which refuses any path (symlinks included) that leaves the home.
//  2. The final component is always handled with a *at syscall on that
//     parent's descriptor, with a single name that cannot traverse anything:
//     opened O_NOFOLLOW|O_NONBLOCK (a symlink fails, a FIFO cannot block),
//     checked with fstat on the open descriptor (regular, owned by the user,
//     one link, under the size cap) before a byte is read, and replaced only by
//     an exchange with a temp file this code created O_EXCL (as the user)
//     and chmodded through its own descriptor. These primitives are
//     internal/safefs's Dir, shared with the bind-dir host side.
//
// os.Root alone is not enough for rule 2: Root.OpenFile follows a symlink in
// the last component when it stays inside the root, even with O_NOFOLLOW.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/caw-dev/caw/internal/safefs"
	"github.com/caw-dev/caw/sync/policy"
	"golang.org/x/sys/unix"
)

// maxCredSize caps a synced credential, read or written. Real ones are under
// 8 KiB; a bigger file is hostile or not ours, and is reported, not synced.
const maxCredSize = 64 << 10

// maxCopySize caps a copied (copy strategy) file: configs can be larger
// than credentials, and are copied once.
const maxCopySize = 1 << 20

// The checked *at primitives live in internal/safefs (Dir); these names
// keep the guard's code short.
type (
	hostileError = safefs.HostileError
	preferFunc   = safefs.Prefer
)

// errChanged means the file changed between the guard's decision and its
// write, so the decision must be taken again on the new content.
var errChanged = safefs.ErrChanged

// readAt reads name in dirfd, a credential: see safefs.Dir.ReadAt.
func readAt(dirfd int, name, label string, owner int) ([]byte, error) {
	return safefs.Dir{FD: dirfd, Owner: owner, Limit: maxCredSize}.ReadAt(name, label)
}

// swapIn puts tmp in place of name unless another writer's file is there:
// see safefs.Dir.SwapIn.
func swapIn(dirfd int, tmp, name string, owner int, still func([]byte, error) bool, prefer preferFunc) (string, error) {
	return safefs.Dir{FD: dirfd, Owner: owner, Limit: maxCredSize}.SwapIn(tmp, name, still, prefer)
}

// recheckAt deletes kept, which held content hashing to was, putting it back
// first if a writer wrote into it since: see safefs.Dir.RecheckAt.
func recheckAt(dirfd int, kept, name string, owner int, was [32]byte, mine []byte, prefer preferFunc) bool {
	unchanged := func(b []byte, err error) bool { return err == nil && policy.Sum(b) == was }
	return safefs.Dir{FD: dirfd, Owner: owner, Limit: maxCredSize}.RecheckAt(kept, name, unchanged, mine, prefer)
}

var (
	createTemp  = safefs.CreateTemp
	removeTemps = safefs.RemoveTemps
)

// homeFS is the guard's view of the user's home: every method runs as the
// user (rule 0).
type homeFS struct {
	root *os.Root
	// top is the home directory itself (the root's), the base of openDir's
	// openat2.
	top      *os.File
	dir      string // absolute path, for messages and inotify
	uid, gid int
	user     safefs.User

	// spares holds, for each synced credential (a key, set by
	// keepSpares), the temp file its next write will fill (see spare).
	mu     sync.Mutex
	spares map[string]*spare
}

// as runs fn with the user's filesystem identity.
func (h *homeFS) as(fn func() error) error { return safefs.As(h.user, fn) }

// openHome opens (creating it when missing) the user's home.
func openHome(dir string, u safefs.User) (*homeFS, error) {
	uid, gid := u.UID, u.GID
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		// The home's parent (/home, /) belongs to root, not to the user, so
		// creating the path by name is safe; only the home itself is theirs.
		if err := os.MkdirAll(path.Dir(dir), 0o755); err != nil {
			return nil, fmt.Errorf("create home %s: %w", dir, err)
		}
		// Only a home created here is given to the user: one that appeared
		// meanwhile is left as it is.
		err := os.Mkdir(dir, 0o700)
		if err == nil {
			err = chownDirNoFollow(unix.AT_FDCWD, dir, uid, gid)
		}
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create home %s: %w", dir, err)
		}
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open home %s: %w", dir, err)
	}
	top, err := r.OpenFile(".", os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("open home %s: %w", dir, err)
	}
	return &homeFS{root: r, top: top, dir: dir, uid: uid, gid: gid, user: u, spares: map[string]*spare{}}, nil
}

func (h *homeFS) close() error {
	h.mu.Lock()
	spares := h.spares
	h.spares = nil
	h.mu.Unlock()
	h.as(func() error {
		for _, sp := range spares {
			sp.drop()
		}
		return nil
	})
	h.top.Close()
	return h.root.Close()
}

// chownDirNoFollow gives a directory the guard just created to the user.
func chownDirNoFollow(dirfd int, name string, uid, gid int) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return err
	}
	return unix.Fchmod(fd, 0o700)
}

// openDir opens the directory holding rel (resolved inside the home) and
// returns its descriptor with rel's base name. A path without symlinks,
// the usual one, takes one openat2 beneath the home; one through a
// symlink (ELOOP), or a kernel without openat2, is resolved by os.Root,
// which follows a symlink only while it stays inside the home. Either way
// the caller's identity (the user's) does the lookups.
func (h *homeFS) openDir(rel string) (int, string, error) {
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	fd, err := safefs.Beneath(int(h.top.Fd()), dir, unix.O_RDONLY|unix.O_DIRECTORY, false)
	if err == nil || !errors.Is(err, unix.ELOOP) && !errors.Is(err, safefs.ErrNoOpenat2) {
		return fd, base, err
	}
	d, err := h.root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", err
	}
	defer d.Close()
	fd, err = unix.FcntlInt(d.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	return fd, base, err
}

// mkdirParents creates rel's missing parent directories, mode 0700, as the
// user (so they are the user's, and only where the user may create them).
// Existing ones are left as they are.
func (h *homeFS) mkdirParents(rel string) error {
	dir := path.Dir(rel)
	if dir == "." {
		return nil
	}
	return h.as(func() error {
		parts := strings.Split(dir, "/")
		for i := range parts {
			p := path.Join(parts[:i+1]...)
			err := h.root.Mkdir(p, 0o700)
			if errors.Is(err, fs.ErrExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("create %s in home: %w", p, err)
			}
		}
		return nil
	})
}

// read returns rel's whole content. A missing file gives an error matching
// fs.ErrNotExist; anything hostile a *hostileError.
func (h *homeFS) read(rel string) (data []byte, err error) {
	if aerr := h.as(func() error {
		data, err = h.readAsUser(rel)
		return nil
	}); aerr != nil {
		return nil, fmt.Errorf("read %s in home: %w", rel, aerr)
	}
	return data, err
}

func (h *homeFS) readAsUser(rel string) ([]byte, error) {
	d, base, err := h.openDir(rel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, &hostileError{Path: rel, Why: "parent directory: " + err.Error()}
	}
	defer unix.Close(d)
	return readAt(d, base, rel, h.uid)
}

// replace atomically sets rel's content: a temp file created O_EXCL beside
// it, owned by the user with mode perm (set on the descriptor), swapped in
// for rel (see swapIn; still and prefer may be nil for an unconditional
// write, which deletes what it displaces at once). No fsync: the home copy
// is rebuilt from the host at every start. kept names the displaced file
// left for recheck.
func (h *homeFS) replace(rel string, data []byte, perm fs.FileMode, still func(cur []byte, err error) bool, prefer preferFunc) (kept string, err error) {
	if aerr := h.as(func() error {
		kept, err = h.replaceAsUser(rel, data, perm, still, prefer)
		return nil
	}); aerr != nil {
		return "", fmt.Errorf("write %s in home: %w", rel, aerr)
	}
	return kept, err
}

func (h *homeFS) replaceAsUser(rel string, data []byte, perm fs.FileMode, still func(cur []byte, err error) bool, prefer preferFunc) (kept string, err error) {
	dirfd, base, err := h.openDir(rel)
	if err != nil {
		return "", fmt.Errorf("write %s in home: %w", rel, err)
	}
	defer unix.Close(dirfd)
	tmp := h.takeSpare(rel, dirfd)
	if tmp == nil {
		if tmp, err = createTemp(dirfd, base); err != nil {
			return "", fmt.Errorf("write %s in home: %w", rel, err)
		}
	}
	// Created as the user: already the user's, no chown.
	if err := tmp.Fill(data, -1, -1, perm, false); err != nil {
		unix.Unlinkat(dirfd, tmp.Name, 0)
		return "", fmt.Errorf("write %s in home: %w", rel, err)
	}
	if still == nil {
		still = func([]byte, error) bool { return true }
	}
	kept, err = swapIn(dirfd, tmp.Name, base, h.uid, still, prefer)
	if err != nil && !errors.Is(err, errChanged) {
		err = fmt.Errorf("write %s in home: %w", rel, err)
	}
	h.prepareSpare(rel, dirfd, base)
	return kept, err
}

// A spare is an empty temp file, created (O_EXCL, as the user) beside a
// synced credential after each write, for the next write to fill. Creating
// a file is the one slow step of a home write (an inode allocation: 0.2 to
// 1 ms on ext4 under load, where the in-place write it replaces costs
// tens of microseconds), and this takes it off the path from a host refresh
// to the home copy. The user can do to a spare what they can do to a fresh
// temp file, which is also theirs: takeSpare uses it only if the name still
// holds the inode created, empty, with one link, in the directory the
// credential is in now; anything else is dropped and a new temp created.
type spare struct {
	tmp      *safefs.TempFile
	dirfd    int // a descriptor of the directory it was created in
	dir, ino unix.Stat_t
}

// keepSpares makes rel's writes leave a spare behind.
func (h *homeFS) keepSpares(rel string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.spares != nil {
		if _, ok := h.spares[rel]; !ok {
			h.spares[rel] = nil
		}
	}
}

// takeSpare returns rel's spare if it is still fit to be filled in dirfd,
// and drops it otherwise. It runs as the user.
func (h *homeFS) takeSpare(rel string, dirfd int) *safefs.TempFile {
	h.mu.Lock()
	sp := h.spares[rel]
	if sp != nil {
		h.spares[rel] = nil
	}
	h.mu.Unlock()
	if sp == nil {
		return nil
	}
	var dir, st, at unix.Stat_t
	if unix.Fstat(dirfd, &dir) == nil && dir.Dev == sp.dir.Dev && dir.Ino == sp.dir.Ino &&
		unix.Fstat(sp.tmp.FD(), &st) == nil && st.Size == 0 && st.Nlink == 1 &&
		unix.Fstatat(dirfd, sp.tmp.Name, &at, unix.AT_SYMLINK_NOFOLLOW) == nil && at.Dev == st.Dev && at.Ino == st.Ino {
		unix.Close(sp.dirfd)
		return sp.tmp
	}
	sp.drop()
	return nil
}

// prepareSpare creates rel's next spare in dirfd (base is rel's name), when
// rel keeps spares and has none. It runs as the user; a failure only means
// the next write creates its own temp file.
func (h *homeFS) prepareSpare(rel string, dirfd int, base string) {
	h.mu.Lock()
	sp, want := h.spares[rel]
	h.mu.Unlock()
	if !want || sp != nil {
		return
	}
	tmp, err := createTemp(dirfd, base)
	if err != nil {
		return
	}
	sp = &spare{tmp: tmp}
	sp.dirfd, err = unix.FcntlInt(uintptr(dirfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil || unix.Fstat(dirfd, &sp.dir) != nil || unix.Fstat(tmp.FD(), &sp.ino) != nil {
		unix.Unlinkat(dirfd, tmp.Name, 0)
		if err == nil {
			unix.Close(sp.dirfd)
		}
		tmp.Close()
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if cur, ok := h.spares[rel]; ok && cur == nil {
		h.spares[rel] = sp
		return
	}
	sp.drop() // closed meanwhile
}

// drop deletes the spare's name if it still holds the spare, and closes its
// descriptors. It runs as the user.
func (sp *spare) drop() {
	if sp == nil {
		return
	}
	var at unix.Stat_t
	if unix.Fstatat(sp.dirfd, sp.tmp.Name, &at, unix.AT_SYMLINK_NOFOLLOW) == nil && at.Dev == sp.ino.Dev && at.Ino == sp.ino.Ino {
		unix.Unlinkat(sp.dirfd, sp.tmp.Name, 0)
	}
	unix.Close(sp.dirfd)
	sp.tmp.Close()
}

// recheck deals with a file swapIn displaced and kept (see there) beside
// rel: see recheckAt.
func (h *homeFS) recheck(rel, kept string, was [32]byte, mine []byte, prefer preferFunc) (changed bool) {
	h.as(func() error {
		d, base, err := h.openDir(rel)
		if err != nil {
			return nil
		}
		defer unix.Close(d)
		changed = recheckAt(d, kept, base, h.uid, was, mine, prefer)
		return nil
	})
	return changed
}

// removeStaleTemps deletes temp files a killed guard left beside rel.
func (h *homeFS) removeStaleTemps(rel string) {
	h.as(func() error {
		fd, base, err := h.openDir(rel)
		if err != nil {
			return nil
		}
		d := os.NewFile(uintptr(fd), rel)
		defer d.Close()
		removeTemps(d, base, 0)
		return nil
	})
}

// watchDir is a path inotify can watch that names exactly the directory dir
// inside the home (through /proc/self/fd, so no symlink the user planted can
// redirect the watch), with the descriptor to close once the watch is added.
func (h *homeFS) watchDir(dir string) (string, io.Closer, error) {
	if dir == "" {
		dir = "."
	}
	var d *os.File
	err := h.as(func() (err error) {
		d, err = h.root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
		return err
	})
	if err != nil {
		return "", nil, err
	}
	p := fmt.Sprintf("/proc/self/fd/%d", d.Fd())
	if _, err := os.Stat(p); err != nil {
		// No /proc: fall back to the name, which only ever costs a useless
		// watch (every read still goes through the checks above).
		d.Close()
		return path.Join(h.dir, dir), io.NopCloser(nil), nil
	}
	return p, d, nil
}
