package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/caw-dev/caw/agents"
	"github.com/caw-dev/caw/host/keychain"
	"github.com/caw-dev/caw/manifest"
)

// SetupOptions are caw setup's inputs.
type SetupOptions struct {
	// AuthDir is the staging dir to (re)create.
	AuthDir string
	// SourceHome is the host home the agents' files are found under.
	SourceHome string
	// ContainerHome is the container user's home (default /home/playground).
	ContainerHome string
	// User is the container user recorded in the manifest (optional).
	User string
	// Agents to set up; nil means every agent whose credential exists.
	Agents []string
	// Strategies overrides an agent's credential strategy (bind, bind-dir).
	Strategies map[string]string
	// Getenv reads CLAUDE_CONFIG_DIR, CODEX_HOME, XDG_DATA_HOME; nil: none set.
	Getenv func(string) string
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// UnlockedMounts puts the credential mount targets directly in the
	// agent's staging dir (mode 0700) instead of a lock dir (mode 0400).
	// Only for containers whose caw-init is not root (docker run --user):
	// it cannot traverse a lock dir. The cost: a container user with the
	// host user's uid can then reach the mounted host files directly,
	// bypassing the guard (with bind-dir, the whole host directory).
	UnlockedMounts bool
	// Keychain, when set (on macOS), is searched for each agent's login
	// (Claude Code's, Codex's in keyring mode). One found there is kept in
	// a mirror file under MirrorDir, which stands for the credential from
	// then on (mounted, classified), and which caw bridge keeps in sync
	// with the Keychain.
	Keychain keychain.Store
	// KeychainUser is the account of Claude Code's item ($USER).
	KeychainUser string
	// MirrorDir holds the mirrors and the bridge's config (default
	// ~/.caw/keychain under SourceHome); never inside AuthDir.
	MirrorDir string
}

// StagedAgent is one agent setup staged.
type StagedAgent struct {
	Name       string
	Strategy   string
	Credential string        // host path
	Status     agents.Status // of the host credential at setup time
	Configs    []string      // host paths of the configs staged
	// Keychain is the item the credential mirrors, nil for a plain file.
	Keychain *keychain.Item
}

// SetupResult says what setup did.
type SetupResult struct {
	AuthDir  string
	Manifest *manifest.Manifest
	Agents   []StagedAgent
	// Warnings are problems that did not stop setup: skipped agents and
	// files, credentials that are not valid.
	Warnings []string
	// BridgeConfig is the bridge config setup wrote ("" when no
	// credential is in the Keychain).
	BridgeConfig string
}

// Setup stages the agents' configs and credential mount targets in
// opts.AuthDir, replacing any previous staging atomically: a failed Setup
// leaves the previous staging as it was.
func Setup(opts SetupOptions) (*SetupResult, error) {
	if opts.AuthDir == "" {
		return nil, errors.New("setup: no staging dir given")
	}
	authDir, err := absClean(opts.AuthDir)
	if err != nil {
		return nil, err
	}
	if opts.SourceHome == "" {
		return nil, usagef("no source home: $HOME is not set (pass --source-home)")
	}
	srcHome, err := absClean(opts.SourceHome)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(srcHome); err != nil || !fi.IsDir() {
		return nil, usagef("--source-home %s is not a directory", srcHome)
	}
	ctrHome := opts.ContainerHome
	if ctrHome == "" {
		ctrHome = DefaultContainerHome
	}
	if !path.IsAbs(ctrHome) || path.Clean(ctrHome) != ctrHome || strings.ContainsAny(ctrHome, "\x00\n") {
		return nil, usagef("--container-home %q: want a clean absolute path such as %s", ctrHome, DefaultContainerHome)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	res := &SetupResult{AuthDir: authDir}
	warn := func(format string, args ...any) { res.Warnings = append(res.Warnings, fmt.Sprintf(format, args...)) }

	names, explicit := opts.Agents, len(opts.Agents) > 0
	if !explicit {
		names = agents.Names()
	}
	env := agents.Env{Home: srcHome, Getenv: opts.Getenv}
	var mir *mirrorer
	if opts.Keychain != nil {
		dir := opts.MirrorDir
		if dir == "" {
			dir = DefaultMirrorDir(srcHome)
		}
		if dir, err = absClean(dir); err != nil {
			return nil, err
		}
		if err := checkMirrorDir(dir, authDir); err != nil {
			return nil, err
		}
		mir = &mirrorer{store: opts.Keychain, user: opts.KeychainUser, dir: dir, now: now(), warn: warn}
	}
	m := &manifest.Manifest{
		Version: manifest.Version, CreatedAt: now().UTC().Format(time.RFC3339),
		HostHome: srcHome, ContainerHome: ctrHome, MountPoint: manifest.DefaultMountPoint,
		User: opts.User, Agents: map[string]manifest.Agent{},
	}
	type staged struct {
		src  string
		data []byte // nil: empty placeholder file
		dir  bool   // placeholder directory
	}
	var files []staged
	var locks []string
	oldTargets := map[string]string{}
	if old, err := manifest.Read(authDir); err == nil {
		for _, e := range old.Entries() {
			if e.Synced() {
				oldTargets[e.Agent] = e.MountSrc()
			}
		}
	}
	for _, name := range names {
		a, ok := agents.Lookup(name)
		if !ok {
			return nil, usagef("unknown agent %q (available: %s, or all)", name, strings.Join(agents.Names(), ", "))
		}
		strat := a.Strategy
		if s, ok := opts.Strategies[name]; ok {
			strat = s
		}
		credPath := a.Credential.Locate(env)
		var kcItem *keychain.Item
		if mir != nil {
			if p, it, ok := mir.locate(a, env, credPath); ok {
				credPath, kcItem = p, &it
			}
		}
		data, _, err := readRegular(credPath, maxCredentialSize, true)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				if explicit {
					warn("%s: no credential at %s, skipped (log in to %s on this host first)", name, credPath, name)
				}
			} else {
				warn("%s: cannot use the credential %s, skipped: %v", name, credPath, trimPathErr(err))
			}
			continue
		}
		st := agents.Classify(a.Format, data, now())
		if !st.State.Usable() {
			warn("%s: the credential %s is %s; staged anyway, but the container will need a fresh login (log in again on the host)",
				name, credPath, st.Describe(now()))
		}
		cred := manifest.File{
			ContainerTarget: a.Credential.Target, HostOriginal: relToHome(srcHome, credPath),
			Type: manifest.TypeCredential, Strategy: strat, Mode: fmt.Sprintf("%04o", a.Credential.Mode), Format: a.Format,
		}
		mt := a.Credential.MountTarget(strat == manifest.StrategyBindDir, !opts.UnlockedMounts)
		if strat == manifest.StrategyBindDir {
			cred.Src = path.Join(mt, filepath.Base(credPath))
			files = append(files, staged{src: mt, dir: true})
		} else {
			cred.Src = mt
			files = append(files, staged{src: mt})
		}
		if !opts.UnlockedMounts {
			locks = append(locks, a.Credential.LockDir)
		}
		if old := oldTargets[name]; old != "" && old != mt {
			warn("%s: the credential's mount target moved from %s to %s in staging; containers started before this setup have lost their %s credential mount: restart them",
				name, old, mt, name)
		}
		ag := manifest.Agent{Files: []manifest.File{cred}}
		sa := StagedAgent{Name: name, Strategy: strat, Credential: credPath, Status: st, Keychain: kcItem}
		for _, c := range a.Configs {
			p := c.Locate(env)
			raw, _, err := readRegular(p, maxConfigSize, false)
			if errors.Is(err, fs.ErrNotExist) {
				warn("%s: no config at %s, skipped", name, p)
				continue
			}
			if err != nil {
				return res, fmt.Errorf("%s: config %s: %v (fix or remove it, or leave %s out with --agents)", name, p, trimPathErr(err), name)
			}
			out := raw
			if c.Clean != nil {
				out, err = c.Clean(raw, agents.CleanOptions{ContainerHome: ctrHome})
				if err != nil {
					return res, fmt.Errorf("%s: config %s: %v (fix the file, or leave %s out with --agents)", name, p, err, name)
				}
			}
			ag.Files = append(ag.Files, manifest.File{
				Src: c.Src, ContainerTarget: c.Target, HostOriginal: relToHome(srcHome, p),
				Type: manifest.TypeConfig, Strategy: manifest.StrategyCopy, Mode: fmt.Sprintf("%04o", c.Mode),
			})
			files = append(files, staged{src: c.Src, data: out})
			sa.Configs = append(sa.Configs, p)
		}
		m.Agents[name] = ag
		res.Agents = append(res.Agents, sa)
	}
	if len(m.Agents) == 0 {
		if explicit {
			return res, fmt.Errorf("no agent to set up: none of %s has a usable credential under %s", strings.Join(names, ", "), srcHome)
		}
		return res, fmt.Errorf("no agent to set up: found no credential of %s under %s (log in to an agent first, or pass --source-home)",
			strings.Join(agents.Names(), ", "), srcHome)
	}
	mdata, err := m.Marshal()
	if err != nil {
		return res, fmt.Errorf("setup: %w", err)
	}
	err = replaceDir(authDir, locks, func(root *os.Root) error {
		for _, f := range files {
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
	if err != nil {
		return res, err
	}
	res.Manifest = m
	if mir != nil {
		if res.BridgeConfig, err = mir.save(); err != nil {
			return res, err
		}
	}
	return res, nil
}

func trimPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// relToHome is p relative to home when it lies below it, else p (absolute),
// in the manifest's slash form.
func relToHome(home, p string) string {
	r, err := filepath.Rel(home, p)
	if err != nil || r == "." || r == ".." || strings.HasPrefix(r, "../") {
		return filepath.ToSlash(p)
	}
	return filepath.ToSlash(r)
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

	isLock := map[string]bool{}
	for _, l := range locks {
		isLock[l] = true
	}
	keep := map[string]bool{}
	var files []string
	err = fs.WalkDir(src.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		keep[p] = true
		if !d.IsDir() {
			if p != manifest.FileName {
				files = append(files, p)
			}
			return nil
		}
		if isLock[p] {
			return fs.SkipDir // placed below, after its parents
		}
		fi, err := dst.Lstat(p)
		if err == nil && fi.IsDir() {
			if fi.Mode().Perm()&0o100 == 0 {
				// A lock dir of an older layout at a path that is now a
				// plain directory: never open it in place.
				if err := retire(dir, dst, p); err != nil {
					return err
				}
				return dst.Mkdir(p, 0o700)
			}
			return dst.Chmod(p, 0o700)
		}
		if err == nil {
			if err := dst.RemoveAll(p); err != nil {
				return err
			}
		}
		return dst.Mkdir(p, 0o700)
	})
	if err != nil {
		return err
	}
	// Parents are real directories now (checked through dst, which
	// refuses symlinks out of it), so plain renames stay inside dir.
	put := func(p string) error {
		if fi, err := dst.Lstat(p); err == nil && fi.IsDir() {
			if err := removeEntry(dir, dst, p, fi); err != nil {
				return err
			}
		}
		return os.Rename(filepath.Join(tmp, p), filepath.Join(dir, p))
	}
	for _, p := range files {
		nfi, err := src.Lstat(p)
		if err != nil {
			return err
		}
		if ofi, err := dst.Lstat(p); err == nil && ofi.Mode().IsRegular() && ofi.Size() == 0 && nfi.Size() == 0 {
			if err := dst.Chmod(p, 0o600); err != nil {
				return err
			}
			continue // an empty placeholder already in place: keep its inode
		}
		if err := put(p); err != nil {
			return err
		}
	}
	for _, l := range locks {
		if err := placeLock(tmp, dir, src, dst, l); err != nil {
			return fmt.Errorf("lock dir %s: %w", l, err)
		}
	}
	if err := put(manifest.FileName); err != nil {
		return err
	}
	// What the new staging does not have goes, deepest first.
	var stale []string
	fs.WalkDir(dst.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if !keep[p] {
			stale = append(stale, p)
			if d.IsDir() {
				return fs.SkipDir
			}
		} else if isLock[p] {
			return fs.SkipDir // kept whole, never opened
		}
		return nil
	})
	for _, p := range stale {
		fi, err := dst.Lstat(p)
		if err != nil {
			continue
		}
		if err := removeEntry(dir, dst, p, fi); err != nil {
			return fmt.Errorf("remove %s: %w", p, err)
		}
	}
	return dst.Chmod(".", 0o700)
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
