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
			return nil, fmt.Errorf("%s is a symlink: refusing to follow it as root; caw auth setup writes a regular file", p)
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
		return nil, fmt.Errorf("%s is not a regular file (%v): rerun caw auth setup", p, st.Mode().Type())
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
