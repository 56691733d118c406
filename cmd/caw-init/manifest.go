package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/caw-dev/caw/manifest"
)

// readManifest reads AUTH_DIR/manifest.json (manifest.Read refuses symlinks,
// FIFOs and oversized files) and turns a permission error into one line that
// names the fix.
func readManifest(dir string) (*manifest.Manifest, error) {
	m, err := manifest.Read(dir)
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) && errors.Is(err, fs.ErrPermission) {
		return nil, permissionError(pe.Path, pe.Err)
	}
	return m, err
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
