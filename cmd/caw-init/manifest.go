package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/caw-dev/caw/manifest"
	"golang.org/x/sys/unix"
)

// readManifest reads AUTH_DIR/manifest.json as root from a directory the host
// user (and possibly the container user) can write: no symlink is followed,
// a FIFO or device cannot block caw-init, and the size is bounded before
// reading. A missing file gives an error satisfying errors.Is(fs.ErrNotExist).
func readManifest(dir string) (*manifest.Manifest, error) {
	p := filepath.Join(dir, manifest.FileName)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s is a symlink: refusing to follow it as root; caw setup writes a regular file", p)
		}
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			return nil, permissionError(p, err)
		}
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%v): rerun caw setup", p, st.Mode().Type())
	}
	if st.Size() > manifest.MaxSize {
		return nil, fmt.Errorf("%s: %w", p, manifest.ErrTooLarge)
	}
	data, err := io.ReadAll(io.LimitReader(f, manifest.MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	m, err := manifest.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return m, nil
}

// permissionError is a manifest caw-init may not read: typically the
// container runs as a uid (docker run --user) that is neither root nor the
// host user who ran caw setup, and the staging dir is that user's alone.
func permissionError(p string, err error) error {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Errorf("cannot read %s as uid %d (%v): run caw setup as the user the container runs as, or start the container as root (or pass --no-sync to run without credential sync)", p, uid, err)
	}
	return fmt.Errorf("cannot read %s as root (%v): the filesystem refuses root (root-squashed or foreign user namespace); make the staging dir readable to root, or pass --no-sync to run without credential sync", p, err)
}
