package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/caw-dev/caw/agents"
	"github.com/caw-dev/caw/manifest"
)

// TeardownOptions are caw teardown's inputs.
type TeardownOptions struct {
	AuthDir string
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
	// Force removes the staging dir even while host credentials are
	// symlinks into it (they will dangle: every such agent needs a new login).
	Force bool
	// Home and Getenv locate the agents' default credential paths, checked
	// besides the manifest's, for symlinks into staging.
	Home   string
	Getenv func(string) string
}

// TeardownResult says what teardown did (or, on a dry run, would do).
type TeardownResult struct {
	AuthDir string
	// Existed is false when there was no staging dir: nothing to do.
	Existed bool
	Removed bool
	// Symlinks are host credentials that are symlinks into the staging dir.
	Symlinks []string
}

// ErrSymlinkedCredential is wrapped by Teardown's error when a host
// credential is a symlink into the staging dir and Force is not set.
var ErrSymlinkedCredential = errors.New("a host credential is a symlink into the staging dir")

// Teardown removes the staging dir. It never touches a host credential, and
// refuses while one is a symlink into the staging dir (left by the original
// tool's older design) unless Force is set.
func Teardown(opts TeardownOptions) (*TeardownResult, error) {
	authDir, err := absClean(opts.AuthDir)
	if err != nil {
		return nil, err
	}
	res := &TeardownResult{AuthDir: authDir}
	if _, err := os.Lstat(filepath.Dir(authDir)); err == nil {
		unlock, err := lockStaging(authDir)
		if err != nil {
			return res, err
		}
		defer unlock()
	}
	exists, err := checkStagingDir(authDir)
	if err != nil {
		return res, err
	}
	if !exists {
		return res, nil
	}
	res.Existed = true
	res.Symlinks = symlinksInto(authDir, opts)
	if len(res.Symlinks) > 0 && !opts.Force {
		return res, withFix(fmt.Errorf("%w: %s (a leftover of caw's old symlink design); removing the staging dir would leave it dangling",
			ErrSymlinkedCredential, strings.Join(res.Symlinks, ", ")), "Force", "log the agent in again on the host to replace it, or pass %s and re-authenticate every such agent")
	}
	if opts.DryRun {
		return res, nil
	}
	if err := removeStaging(authDir); err != nil {
		return res, fmt.Errorf("remove %s: %w", authDir, err)
	}
	res.Removed = true
	return res, nil
}

// symlinksInto lists the host credentials (from the manifest, when it reads,
// and at every agent's default place) that are symlinks resolving into dir.
func symlinksInto(dir string, opts TeardownOptions) []string {
	cands := map[string]bool{}
	home := opts.Home
	if m, err := manifest.Read(dir); err == nil {
		for _, e := range m.Entries() {
			if e.Type == manifest.TypeCredential {
				if p := hostPath(m, e.File); p != "" {
					cands[p] = true
				}
			}
		}
		if m.HostHome != "" {
			home = m.HostHome
		}
	}
	for _, homeDir := range []string{home, opts.Home} {
		if homeDir == "" {
			continue
		}
		env := agents.Env{Home: homeDir, Getenv: opts.Getenv}
		for _, n := range agents.Names() {
			a, _ := agents.Lookup(n)
			cands[a.Credential.Locate(env)] = true
		}
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		realDir = dir
	}
	var out []string
	for p := range cands {
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		target, err := os.Readlink(p)
		if err != nil {
			continue
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		target = filepath.Clean(target)
		if within(dir, target) || within(realDir, target) {
			out = append(out, p)
		} else if r, err := filepath.EvalSymlinks(p); err == nil && (within(dir, r) || within(realDir, r)) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func within(dir, p string) bool {
	r, err := filepath.Rel(dir, p)
	return err == nil && r != ".." && !strings.HasPrefix(r, "../")
}
