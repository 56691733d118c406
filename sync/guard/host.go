package guard

// The host side of a synced credential: the file Docker bind-mounts from the
// host (strategy bind), or the file inside the host directory Docker
// bind-mounts (strategy bind-dir). Writes here land on the user's real
// machine, so they keep the host file's owner and mode, are fsynced, and can
// never leave a half-written credential behind.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"time"

	"github.com/caw-dev/caw/internal/safefs"
	"golang.org/x/sys/unix"
)

var (
	// errDead: the bound host file was replaced by rename on the host; the
	// mount now holds an unlinked inode nobody will read again.
	errDead = errors.New("host file was replaced on the host")
	// errReadOnly: the host side cannot be written (a :ro mount, EACCES).
	errReadOnly = errors.New("host side is read-only")
)

// hostSide reads and writes one credential on the host.
type hostSide interface {
	// read returns the whole content; fs.ErrNotExist when missing.
	read() ([]byte, error)
	// write replaces the content with data if still(current content) holds,
	// else returns errChanged. Writers of the same host file (guards of
	// other containers) are serialised with flock. kept names a displaced
	// file left for recheck (see swapIn).
	write(data []byte, still func(cur []byte, err error) bool, prefer preferFunc) (kept string, err error)
	// recheck deletes a file write kept, after putting it back if a
	// writer wrote into it since (see recheckAt).
	recheck(kept string, was [32]byte, mine []byte, prefer preferFunc) bool
	// dead reports whether the mount was detached from the host's file.
	dead() bool
	// watch is what inotify watches, and the name to filter events on ("" for
	// a watch on the file itself).
	watch() (watchPath, name string)
	close()
}

// bindFile is a host file bind-mounted onto p. Rename onto a mount target is
// EBUSY, so it is written in place: one pwrite at offset 0 of the new
// document padded with spaces to at least the old length (JSON allows
// trailing whitespace, so the file is at every instant either the old or the
// new document), fsync, then ftruncate to the exact length. A SIGKILL at any
// point leaves a valid document. The inode, and so the host owner and mode,
// never change.
type bindFile struct {
	p     string // what inotify watches: /proc/self/fd/<pfd>, or label without /proc
	flags int    // O_NOFOLLOW on label (a /proc magic link must be followed)
	label string // the mount's path, for messages
	pfd   int    // the mount, O_PATH, held open
	// authfd and rel reach the mount from the staging dir (read-only, so
	// nobody in the container can change what they resolve to): one
	// openat2, about a third of the cost of reopening /proc/self/fd/<pfd>.
	// Every open through them must find the inode pfd holds (the same dev
	// and ino as pfd's fstat then: a FUSE file's, as virtiofs or bindfs
	// report it, follows the host's renames).
	authfd int
	rel    string
}

// newBindFile keeps its own descriptor of the mount m (checked by
// safefs.OpenMount, at rel in the staging dir authfd), and reaches the file
// only where that descriptor's inode is.
func newBindFile(m *os.File, authfd int, rel, label string) *bindFile {
	b := &bindFile{p: label, flags: unix.O_NOFOLLOW, label: label, pfd: -1, authfd: -1}
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return b
	}
	b.pfd = fd
	if p := fmt.Sprintf("/proc/self/fd/%d", fd); unix.Access(p, unix.F_OK) == nil {
		b.p, b.flags = p, 0
	}
	b.authfd, b.rel = authfd, rel
	return b
}

// open opens the host file with flags (O_CLOEXEC, O_NONBLOCK and O_NOCTTY
// added) and returns it with its fstat.
func (b *bindFile) open(flags int) (int, unix.Stat_t, error) {
	flags |= unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC
	var st unix.Stat_t
	fd, err := -1, safefs.ErrNoOpenat2
	if b.authfd >= 0 {
		fd, err = safefs.Beneath(b.authfd, b.rel, flags, false)
	}
	if errors.Is(err, safefs.ErrNoOpenat2) || errors.Is(err, unix.EACCES) {
		// Without root, the staging dir's locked directories may be shut
		// (caw setup --unlocked-mounts opens them); the descriptor is not.
		fd, err = unix.Open(b.p, b.flags|flags, 0)
	}
	if err != nil {
		return -1, st, err
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, st, fmt.Errorf("fstat %s: %w", b.label, err)
	}
	var pst unix.Stat_t
	if b.authfd >= 0 && (unix.Fstat(b.pfd, &pst) != nil || st.Dev != pst.Dev || st.Ino != pst.Ino) {
		unix.Close(fd)
		return -1, st, &hostileError{Path: b.label, Why: "is no longer the file mounted at start"}
	}
	return fd, st, nil
}

func (b *bindFile) watch() (string, string) { return b.p, "" }
func (b *bindFile) close() {
	if b.pfd >= 0 {
		unix.Close(b.pfd)
		b.pfd = -1
	}
}

func (b *bindFile) read() ([]byte, error) {
	var fd int
	var st unix.Stat_t
	var err error
	// EAGAIN: another guard holds its write lease (see leaseFD) for the
	// length of its write; O_NONBLOCK makes the open fail instead
	// of waiting.
	for wait := 50 * time.Microsecond; ; wait *= 2 {
		fd, st, err = b.open(unix.O_RDONLY)
		if !errors.Is(err, unix.EAGAIN) || wait > 100*time.Millisecond {
			break
		}
		time.Sleep(wait)
	}
	var hostile *hostileError
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, fs.ErrNotExist
	case errors.As(err, &hostile):
		return nil, err
	case err != nil:
		return nil, &hostileError{Path: b.label, Why: err.Error()}
	}
	defer unix.Close(fd)
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, &hostileError{Path: b.label, Why: "is not a regular file (does the host file exist?)"}
	}
	data, err := safefs.ReadFD(fd, st.Size, maxCredSize)
	if errors.Is(err, safefs.ErrTooLarge) {
		return nil, &hostileError{Path: b.label, Why: fmt.Sprintf("is larger than %d bytes", maxCredSize)}
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", b.label, err)
	}
	return data, nil
}

func (b *bindFile) dead() bool {
	var st unix.Stat_t
	if b.pfd >= 0 {
		return unix.Fstat(b.pfd, &st) == nil && st.Nlink == 0
	}
	return unix.Stat(b.p, &st) == nil && st.Nlink == 0
}

func (b *bindFile) recheck(string, [32]byte, []byte, preferFunc) bool { return false }

func (b *bindFile) write(data []byte, still func([]byte, error) bool, _ preferFunc) (string, error) {
	return "", b.writeInPlace(data, still)
}

func (b *bindFile) writeInPlace(data []byte, still func([]byte, error) bool) error {
	if len(data) > maxCredSize {
		return &hostileError{Path: b.label, Why: fmt.Sprintf("would be larger than %d bytes", maxCredSize)}
	}
	fd, st, err := b.open(unix.O_RDWR)
	var hostile *hostileError
	switch {
	case errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w: %w", errReadOnly, err)
	case errors.As(err, &hostile):
		return err
	case err != nil:
		return fmt.Errorf("open %s: %w", b.label, err)
	}
	defer unix.Close(fd)
	if st.Nlink == 0 {
		return errDead
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return &hostileError{Path: b.label, Why: "is not a regular file"}
	}
	unlock, err := safefs.Flock(fd)
	if err != nil {
		return fmt.Errorf("lock %s: %w", b.label, err)
	}
	defer unlock()
	// A host agent does not take the flock: it opens with O_TRUNC and
	// writes. Its whole write could land between the check below and the
	// pwrite, and be overwritten. A write lease closes that window: it is
	// granted only while nobody else has the file open, and any open during
	// it waits (before truncating) until it is released, after the write.
	release := leaseFD(fd, int(st.Uid))
	cur, err := safefs.ReadFD(fd, st.Size, maxCredSize)
	if !still(cur, err) {
		if release != nil {
			release()
		}
		return errChanged
	}
	if release == nil {
		// No lease (the file stays busy, or the filesystem has none): the
		// whole write at once, as short as it can be.
		return b.writeErr(safefs.WriteInPlace(fd, cur, data))
	}
	w, err := safefs.BeginInPlace(fd, cur, data)
	release()
	if err != nil {
		return b.writeErr(err)
	}
	// The whole new document is in the file: readers may open it now. The
	// fdatasync (hundreds of microseconds on a busy disk) runs without
	// holding them off; an error there or the padding's cut takes the lease
	// again and acts only if the file still holds this write.
	err = w.Sync()
	if err == nil && !w.Padded() {
		return nil
	}
	if release = leaseFD(fd, int(st.Uid)); release == nil {
		return b.writeErr(err) // the padded document stays: valid JSON
	}
	defer release()
	if !w.Ours() {
		return b.writeErr(err)
	}
	if err != nil {
		w.Undo()
		return b.writeErr(err)
	}
	return b.writeErr(w.Trim())
}

func (b *bindFile) writeErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%w: %w", errReadOnly, err)
	}
	return fmt.Errorf("write %s: %w", b.label, err)
}

// leaseFD takes a write lease on fd (see fcntl(2)), retrying for up to a
// few milliseconds while another process has the file open (a writer at
// work, or a reader). It returns the release, or nil when no lease could
// be had: the file stays busy, or the filesystem has no leases. Without
// CAP_LEASE (Docker does not grant it) a lease needs the filesystem uid of
// the file's owner, taken for the call on this thread only.
//
// A lease break signals the holder, SIGIO by default, which caw-init
// would forward to the agent, and SIGIO kills by default. So the signal is
// set to SIGURG (the Go runtime's own preemption signal, never forwarded,
// harmless when unexpected) before the lease exists, and the owner cleared
// right after.
func leaseFD(fd, owner int) func() {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETSIG, int(unix.SIGURG)); err != nil {
		return nil
	}
	wait := 50 * time.Microsecond
	for try := 0; ; try++ {
		err := setLease(fd, owner)
		if err == nil {
			unix.FcntlInt(uintptr(fd), unix.F_SETOWN, 0)
			return func() { unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_UNLCK) }
		}
		if !errors.Is(err, unix.EAGAIN) || try == 8 {
			return nil
		}
		time.Sleep(wait)
		wait = min(wait*2, time.Millisecond)
	}
}

func setLease(fd, owner int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_WRLCK)
	if !errors.Is(err, unix.EACCES) || owner == os.Geteuid() {
		return err
	}
	// setfsuid changes only the calling thread, so the goroutine keeps
	// this thread until it is root again.
	runtime.LockOSThread()
	prev, serr := unix.SetfsuidRetUid(owner)
	if serr != nil {
		runtime.UnlockOSThread()
		return err
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETLEASE, unix.F_WRLCK)
	unix.SetfsuidRetUid(prev)
	// setfsuid always returns the previous value: a second call with the
	// same uid returns it if the first took.
	if now, _ := unix.SetfsuidRetUid(prev); now != prev {
		// Not restored: leave the thread locked, so it dies with the
		// goroutine instead of serving another with the wrong uid.
		return errors.New("setfsuid not restored")
	}
	runtime.UnlockOSThread()
	return err
}

// bindDir is a credential inside a bind-mounted host directory, which the
// container user may be able to write too: reads are checked like the
// home's, writes are temp + fsync + rename with the original's owner and
// mode, never a root-owned file on the host.
type bindDir struct {
	dir   string // the mount's path, for messages
	name  string
	d     *os.File // the mounted directory, held open
	wpath string   // what inotify watches: d through /proc, or dir
}

// openBindDir opens the mounted directory m (checked by safefs.OpenMount)
// for reading and holds it; dir is its path for messages.
func openBindDir(m *os.File, dir, name string) (*bindDir, error) {
	fd, err := safefs.Beneath(int(m.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY, true)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	d := os.NewFile(uintptr(fd), dir)
	w := fmt.Sprintf("/proc/self/fd/%d", fd)
	if unix.Access(w, unix.F_OK) != nil {
		w = dir
	}
	// A guard killed between its temp write and rename leaves the temp
	// behind. Guards write only under the directory's flock, so when it is
	// free no temp is in use.
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
		removeTemps(d, name, 0)
		unix.Flock(int(d.Fd()), unix.LOCK_UN)
	}
	return &bindDir{dir: dir, name: name, d: d, wpath: w}, nil
}

func (b *bindDir) watch() (string, string) { return b.wpath, b.name }
func (b *bindDir) close()                  { b.d.Close() }
func (b *bindDir) dead() bool              { return false }
func (b *bindDir) label() string           { return path.Join(b.dir, b.name) }

func (b *bindDir) read() ([]byte, error) {
	return readAt(int(b.d.Fd()), b.name, b.label(), -1)
}

func (b *bindDir) recheck(kept string, was [32]byte, mine []byte, prefer preferFunc) bool {
	dirfd := int(b.d.Fd())
	unlock, err := safefs.Flock(dirfd)
	if err != nil {
		return false
	}
	defer unlock()
	return recheckAt(dirfd, kept, b.name, -1, was, mine, prefer)
}

func (b *bindDir) write(data []byte, still func([]byte, error) bool, prefer preferFunc) (string, error) {
	dirfd := int(b.d.Fd())
	unlock, err := safefs.Flock(dirfd)
	if err != nil {
		return "", fmt.Errorf("lock %s: %w", b.dir, err)
	}
	defer unlock()
	// Owner and mode of the file being replaced; for a new file, the
	// directory's owner and 0600.
	var st unix.Stat_t
	uid, gid, perm := -1, -1, fs.FileMode(0o600)
	if err := unix.Fstatat(dirfd, b.name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		uid, gid, perm = int(st.Uid), int(st.Gid), fs.FileMode(st.Mode&0o777)
	} else if err := unix.Fstat(dirfd, &st); err == nil {
		uid, gid = int(st.Uid), int(st.Gid)
	}
	tmp, err := createTemp(dirfd, b.name)
	if err != nil {
		if errors.Is(err, unix.EROFS) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return "", fmt.Errorf("%w: %w", errReadOnly, err)
		}
		return "", fmt.Errorf("write %s: %w", b.label(), err)
	}
	if err := tmp.Fill(data, uid, gid, perm, true); err != nil {
		unix.Unlinkat(dirfd, tmp.Name, 0)
		if errors.Is(err, unix.EPERM) {
			// A guard without root cannot give the file the host
			// owner's uid; never a file of another owner on the host.
			return "", fmt.Errorf("%w: %w", errReadOnly, err)
		}
		return "", fmt.Errorf("write %s: %w", b.label(), err)
	}
	// The host agent may have replaced the file while the temp was being
	// written and synced: swapIn never overwrites that.
	kept, err := swapIn(dirfd, tmp.Name, b.name, -1, still, prefer)
	if err != nil && !errors.Is(err, errChanged) {
		err = fmt.Errorf("write %s: %w", b.label(), err)
	}
	return kept, err
}
