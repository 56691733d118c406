package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/caw-dev/caw/internal/safefs"
	"github.com/caw-dev/caw/manifest"
)

// readManifest opens the staging dir if it can be trusted (safefs.TrustDir:
// a read-only mount root reached without symlinks) and reads its manifest
// beneath it; the open dir is what the guard reads everything else through.
// A staging dir that is not trusted is a *safefs.UntrustedError: caw-init
// then runs as a plain init. A permission error becomes one line that names
// the fix.
func readManifest(dir string) (*manifest.Manifest, *os.File, error) {
	d, err := safefs.TrustDir(dir)
	if err != nil {
		return nil, nil, permission(err)
	}
	m, err := manifest.ReadIn(d)
	if err != nil {
		d.Close()
		return nil, nil, permission(err)
	}
	return m, d, nil
}

func permission(err error) error {
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) && errors.Is(err, fs.ErrPermission) {
		return permissionError(pe.Path, pe.Err)
	}
	return err
}

// untrustedLine is the one line caw-init prints when it ignores a staging
// dir it cannot trust (see readManifest).
func untrustedLine(err error) string {
	return fmt.Sprintf("%v, so anyone in the container could have written it: ignoring it, no credential sync (mount the staging dir read-only with $(caw docker-flags))", err)
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
