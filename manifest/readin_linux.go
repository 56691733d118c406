package manifest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"syscall"

	"github.com/caw-dev/caw/internal/safefs"
)

// ReadIn reads and validates manifest.json in dir, an open staging dir
// (caw-init, as root): opened beneath it without a symlink or a mount
// crossing (safefs.Beneath), with Read's other checks.
func ReadIn(dir *os.File) (*Manifest, error) {
	p := path.Join(dir.Name(), FileName)
	fd, err := safefs.Beneath(int(dir.Fd()), FileName, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, true)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ELOOP):
			return nil, fmt.Errorf("%s is a symlink: refusing to follow it; caw setup writes a regular file (run it again)", p)
		case errors.Is(err, syscall.EXDEV):
			return nil, fmt.Errorf("%s is another mount: refusing it; caw setup writes a regular file (run it again)", p)
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	return readOpen(f, p)
}
