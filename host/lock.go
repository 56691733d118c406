package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/caw-dev/caw/agents"
)

// lockedPerm is a lock dir's mode. Without search permission nobody but
// root (CAP_DAC_OVERRIDE, which caw-init has and the container user has
// not) can reach the mount targets inside, not even a process with the host
// user's uid: inside a container it cannot chmod the directory back,
// because the staging dir is mounted read-only. Read permission lets the
// host user list the placeholders' names and types without ever opening the
// lock: opening it, even for an instant, would let a process in a running
// container that loops on open() keep a descriptor on a host credential.
const lockedPerm fs.FileMode = 0o400

// placeLock puts the lock dir l of the new staging (src, at tmp) in place
// in dst (at dir). A lock dir already there that is locked and lists the
// same placeholders is kept as it is, so running containers keep their
// mounts; anything else is retired and replaced by tmp's, locked.
func placeLock(tmp, dir string, src, dst *os.Root, l string) error {
	want, err := listTypes(src, l)
	if err != nil {
		return err
	}
	fi, err := dst.Lstat(l)
	if err == nil {
		if fi.IsDir() && fi.Mode().Perm() == lockedPerm {
			if have, err := listTypes(dst, l); err == nil && sameTypes(have, want) {
				return nil
			}
		}
		if err := retire(dir, dst, l); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	// Moved in write-only (moving a directory to another parent needs
	// write permission on it, and search would let a container in), then
	// locked.
	if err := src.Chmod(l, 0o200); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(tmp, l), filepath.Join(dir, l)); err != nil {
		return err
	}
	return dst.Chmod(l, lockedPerm)
}

// listTypes maps each entry of directory p (in root) to its type, read from
// the directory listing alone: p needs read permission, not search.
func listTypes(root *os.Root, p string) (map[string]fs.FileMode, error) {
	// Opened by hand from its parent: an *os.File that os.Root opens stats
	// its directory to read it, which needs search permission.
	parent, err := root.Open(path.Dir(p))
	if err != nil {
		return nil, err
	}
	defer parent.Close()
	// x/sys/unix rather than syscall: it has openat on darwin too.
	fd, err := unix.Openat(int(parent.Fd()), path.Base(p), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	out := map[string]fs.FileMode{}
	for _, e := range ents {
		out[e.Name()] = e.Type()
	}
	return out, nil
}

func sameTypes(a, b map[string]fs.FileMode) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// removeEntry removes p from dst (at dir); lock dirs in it (directories
// without search permission) are retired rather than opened in place.
func removeEntry(dir string, dst *os.Root, p string, fi fs.FileInfo) error {
	if fi.IsDir() {
		if err := retireLocks(dir, dst, p); err != nil {
			return err
		}
	}
	return dst.RemoveAll(p)
}

// retireLocks retires every lock dir at or under p.
func retireLocks(dir string, dst *os.Root, p string) error {
	var locked []string
	fs.WalkDir(dst.FS(), p, func(q string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || q == "." {
			return nil
		}
		if fi, err := dst.Lstat(q); err == nil && fi.Mode().Perm()&0o100 == 0 {
			locked = append(locked, q)
			return fs.SkipDir
		}
		return nil
	})
	for _, q := range locked {
		if err := retire(dir, dst, q); err != nil {
			return err
		}
	}
	return nil
}

// retire removes the lock dir p of the staging dir dir (opened as dst)
// without ever making it searchable where a container can see it: it gets
// write permission only (still no search), is moved out of the staging dir
// into a fresh directory beside it, which no container mounts, and only
// there opened and removed. Removing the placeholders detaches whatever
// containers still had mounted on them.
func retire(dir string, dst *os.Root, p string) error {
	parent, base := filepath.Split(dir)
	trash, err := os.MkdirTemp(parent, "."+base+".old-")
	if err != nil {
		return fmt.Errorf("retire %s: %w", p, err)
	}
	defer os.RemoveAll(trash)
	if err := dst.Chmod(p, 0o200); err != nil {
		return fmt.Errorf("retire %s: %w", p, err)
	}
	moved := filepath.Join(trash, "lock")
	if err := os.Rename(filepath.Join(dir, filepath.FromSlash(p)), moved); err != nil {
		return fmt.Errorf("retire %s: %w", p, err)
	}
	if err := os.Chmod(moved, 0o700); err != nil {
		return fmt.Errorf("retire %s: %w", p, err)
	}
	return os.RemoveAll(trash)
}

// removeStaging removes the staging dir, retiring its lock dirs first.
func removeStaging(dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	err = retireLocks(dir, root, ".")
	root.Close()
	if err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// checkMountTarget checks, without opening any lock, that the placeholder
// at the staging-relative mount target mt exists with the right type, and,
// when it lies in agent's lock dir, that the lock dir is still locked.
func checkMountTarget(authDir, agent, mt string, wantDir bool) error {
	root, err := os.OpenRoot(authDir)
	if err != nil {
		return err
	}
	defer root.Close()
	parent := path.Dir(mt)
	missing := fmt.Errorf("%s: the mount target %s is missing or of the wrong type in staging (re-run caw setup)",
		agent, filepath.Join(authDir, filepath.FromSlash(mt)))
	if a, ok := agents.Lookup(agent); ok && parent == a.Credential.LockDir {
		fi, err := root.Lstat(parent)
		if err != nil || !fi.IsDir() {
			return missing
		}
		if fi.Mode().Perm() != lockedPerm {
			return fmt.Errorf("%s: the lock dir %s is mode %04o, not %04o, so a container user with your uid could reach the host credential through it (re-run caw setup)",
				agent, filepath.Join(authDir, filepath.FromSlash(parent)), fi.Mode().Perm(), lockedPerm)
		}
	}
	types, err := listTypes(root, parent)
	if err != nil {
		return missing
	}
	typ, ok := types[path.Base(mt)]
	if !ok || (wantDir && typ != fs.ModeDir) || (!wantDir && typ != 0) {
		return missing
	}
	return nil
}

// removeTmp removes a staging being built, whose lock dirs (locked, or
// write-only on their way in) are left behind when setup fails. No
// container sees it, so its lock dirs can be opened first.
func removeTmp(tmp string) {
	if root, err := os.OpenRoot(tmp); err == nil {
		var dirs []string
		fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
			if d != nil && d.IsDir() {
				if fi, err := root.Lstat(p); err == nil && fi.Mode().Perm()&0o700 != 0o700 {
					dirs = append(dirs, p)
				}
			}
			return nil
		})
		for _, p := range dirs {
			root.Chmod(p, 0o700)
		}
		root.Close()
	}
	os.RemoveAll(tmp)
}
