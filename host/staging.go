package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"syscall"

	"github.com/caw-dev/caw/manifest"
)

// stagingPlan is a staging dir planned in memory: every input is read and
// checked into it before anything is written.
type stagingPlan struct {
	manifest *manifest.Manifest
	files    []plannedFile
	locks    []string // lock dirs, locked once filled (relative paths)
}

// plannedFile is one file or placeholder of a stagingPlan.
type plannedFile struct {
	src  string // path in the staging dir
	data []byte // nil: empty placeholder file
	dir  bool   // placeholder directory
}

// write puts the plan in place at authDir, replacing what is there (see
// replaceDir).
func (p *stagingPlan) write(authDir string) error {
	mdata, err := p.manifest.Marshal()
	if err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	return replaceDir(authDir, p.locks, func(root *os.Root) error {
		for _, f := range p.files {
			if err := root.MkdirAll(path.Dir(f.src), 0o700); err != nil {
				return err
			}
			if f.dir {
				if err := root.Mkdir(f.src, 0o700); err != nil {
					return err
				}
				continue
			}
			if err := writeNew(root, f.src, f.data); err != nil {
				return err
			}
		}
		return writeNew(root, manifest.FileName, mdata)
	})
}

func writeNew(root *os.Root, name string, data []byte) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// replaceDir builds a new staging beside dir with fill and puts it in place.
// A new dir is renamed into place, its lock dirs (locks) locked first. An
// existing one is updated in place rather than swapped: a running
// container's mounts hang on the staging dir's inode and on each
// placeholder's, and unlinking or replacing a placeholder on the host
// detaches the credential mount inside every container using it (the kernel
// lazily unmounts mounts on a removed dentry). So placeholders already in
// place are kept, content files are renamed over their old versions,
// manifest.json last (the commit point), and only then is what the new
// staging no longer has removed. Every input is read and checked before
// fill runs, so a bad input leaves the previous staging untouched; an I/O
// error mid-way leaves the previous manifest in force with all its files
// present.
func replaceDir(dir string, locks []string, fill func(*os.Root) error) error {
	parent, base := filepath.Split(dir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", parent, err)
	}
	unlock, err := lockStaging(dir)
	if err != nil {
		return err
	}
	defer unlock()
	exists, err := checkStagingDir(dir)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+base+".new-")
	if err != nil {
		return fmt.Errorf("create staging beside %s: %w", dir, err)
	}
	defer removeTmp(tmp)
	if err := os.Chmod(tmp, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	root, err := os.OpenRoot(tmp)
	if err != nil {
		return fmt.Errorf("open %s: %w", tmp, err)
	}
	err = fill(root)
	if err == nil && !exists {
		for _, l := range locks {
			if err = root.Chmod(l, lockedPerm); err != nil {
				break
			}
		}
	}
	root.Close()
	if err != nil {
		return fmt.Errorf("write staging %s: %w", tmp, err)
	}
	if !exists {
		if err := os.Rename(tmp, dir); err != nil {
			return fmt.Errorf("put staging in place: %w", err)
		}
		return nil
	}
	if err := mergeInto(tmp, dir, locks); err != nil {
		return fmt.Errorf("update staging %s: %w", dir, err)
	}
	return nil
}

// mergeInto makes dir hold exactly what tmp holds, keeping the inode of
// every directory and empty placeholder that is already in place. A lock
// dir (locks) is never opened in dir: one that lists the same placeholders
// is kept as it is; any other is retired and tmp's put in its place, locked.
func mergeInto(tmp, dir string, locks []string) error {
	src, err := os.OpenRoot(tmp)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer dst.Close()
	m := &merge{tmp: tmp, dir: dir, src: src, dst: dst, isLock: map[string]bool{}, keep: map[string]bool{}}
	for _, l := range locks {
		m.isLock[l] = true
	}
	files, err := m.dirs()
	if err != nil {
		return err
	}
	// Parents are real directories now (checked through dst, which
	// refuses symlinks out of it), so plain renames stay inside dir.
	if err := m.files(files); err != nil {
		return err
	}
	for _, l := range locks {
		if err := placeLock(tmp, dir, src, dst, l); err != nil {
			return fmt.Errorf("lock dir %s: %w", l, err)
		}
	}
	if err := m.put(manifest.FileName); err != nil {
		return err
	}
	if err := m.removeStale(); err != nil {
		return err
	}
	return dst.Chmod(".", 0o700)
}

// merge is one mergeInto: the new staging (src, at tmp) going into the
// existing one (dst, at dir).
type merge struct {
	tmp, dir string
	src, dst *os.Root
	isLock   map[string]bool // the lock dirs, never opened in dst
	keep     map[string]bool // every path the new staging has
}

// dirs makes every directory of the new staging exist in dst (keeping the
// ones in place), records every path in m.keep, and returns the files to
// move, manifest.json aside. Lock dirs are skipped: placeLock puts them.
func (m *merge) dirs() (files []string, err error) {
	err = fs.WalkDir(m.src.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		m.keep[p] = true
		if !d.IsDir() {
			if p != manifest.FileName {
				files = append(files, p)
			}
			return nil
		}
		if m.isLock[p] {
			return fs.SkipDir // placed below, after its parents
		}
		return m.dir1(p)
	})
	return files, err
}

// dir1 makes p a searchable directory in dst, keeping one in place.
func (m *merge) dir1(p string) error {
	fi, err := m.dst.Lstat(p)
	if err == nil && fi.IsDir() {
		if fi.Mode().Perm()&0o100 == 0 {
			// A lock dir of an older layout at a path that is now a
			// plain directory: never open it in place.
			if err := retire(m.dir, m.dst, p); err != nil {
				return err
			}
			return m.dst.Mkdir(p, 0o700)
		}
		return m.dst.Chmod(p, 0o700)
	}
	if err == nil {
		if err := m.dst.RemoveAll(p); err != nil {
			return err
		}
	}
	return m.dst.Mkdir(p, 0o700)
}

// files moves the new staging's files into dst, but keeps an empty
// placeholder already in place (a running container's mount hangs on its
// inode).
func (m *merge) files(files []string) error {
	for _, p := range files {
		nfi, err := m.src.Lstat(p)
		if err != nil {
			return err
		}
		if ofi, err := m.dst.Lstat(p); err == nil && ofi.Mode().IsRegular() && ofi.Size() == 0 && nfi.Size() == 0 {
			if err := m.dst.Chmod(p, 0o600); err != nil {
				return err
			}
			continue // an empty placeholder already in place: keep its inode
		}
		if err := m.put(p); err != nil {
			return err
		}
	}
	return nil
}

// put renames tmp's p over dst's, removing a directory in its way.
func (m *merge) put(p string) error {
	if fi, err := m.dst.Lstat(p); err == nil && fi.IsDir() {
		if err := removeEntry(m.dir, m.dst, p, fi); err != nil {
			return err
		}
	}
	return os.Rename(filepath.Join(m.tmp, p), filepath.Join(m.dir, p))
}

// removeStale removes what the new staging does not have, deepest first.
func (m *merge) removeStale() error {
	var stale []string
	fs.WalkDir(m.dst.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if !m.keep[p] {
			stale = append(stale, p)
			if d.IsDir() {
				return fs.SkipDir
			}
		} else if m.isLock[p] {
			return fs.SkipDir // kept whole, never opened
		}
		return nil
	})
	for _, p := range stale {
		fi, err := m.dst.Lstat(p)
		if err != nil {
			continue
		}
		if err := removeEntry(m.dir, m.dst, p, fi); err != nil {
			return fmt.Errorf("remove %s: %w", p, err)
		}
	}
	return nil
}

// lockStaging serialises setups and teardowns of one staging dir (two
// merges into the same dir would mix their files) with an flock on a lock
// file beside it.
func lockStaging(dir string) (unlock func(), err error) {
	parent, base := filepath.Split(dir)
	p := filepath.Join(parent, "."+base+".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return func() { f.Close() }, nil
}

// checkStagingDir refuses a staging path that is a symlink, not a directory,
// or a directory caw did not make (so a mistyped --auth-dir cannot make caw
// replace or delete an unrelated directory). It reports whether it exists.
func checkStagingDir(dir string) (bool, error) {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("staging dir %s: %w", dir, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return true, withFix(fmt.Errorf("staging dir %s is a symlink; caw refuses to write or delete through it", dir), "AuthDir", "remove the link, or pass %s a real directory")
	}
	if !fi.IsDir() {
		return true, withFix(fmt.Errorf("staging dir %s is %s, not a directory", dir, describeType(fi.Mode())), "AuthDir", "remove it, or pass another %s")
	}
	if _, err := os.Lstat(filepath.Join(dir, manifest.FileName)); err == nil {
		return true, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return true, fmt.Errorf("staging dir %s: %w", dir, err)
	}
	if len(ents) > 0 {
		return true, withFix(fmt.Errorf("%s is not a caw staging dir (it has files but no %s); caw will not replace or delete it", dir, manifest.FileName), "AuthDir", "pass another %s")
	}
	return true, nil
}
