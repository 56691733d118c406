package host

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
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
// leaves the previous staging as it was. It resolves the options, plans each
// agent's files in memory (reading and checking every input), and only then
// writes the staging dir.
func Setup(opts SetupOptions) (*SetupResult, error) {
	s, err := resolveSetup(opts)
	if err != nil {
		return nil, err
	}
	for _, name := range s.names {
		if err := s.planAgent(name); err != nil {
			return s.res, err
		}
	}
	m := s.plan.manifest
	if len(m.Agents) == 0 {
		if s.explicit {
			return s.res, fmt.Errorf("no agent to set up: none of %s has a usable credential under %s", strings.Join(s.names, ", "), s.srcHome)
		}
		return s.res, withFix(fmt.Errorf("no agent to set up: found no credential of %s under %s", strings.Join(agents.Names(), ", "), s.srcHome),
			"SourceHome", "log in to an agent first, or pass %s")
	}
	if err := s.plan.write(s.authDir); err != nil {
		return s.res, err
	}
	s.res.Manifest = m
	if s.mir != nil {
		if s.res.BridgeConfig, err = s.mir.save(); err != nil {
			return s.res, err
		}
	}
	return s.res, nil
}

// setupRun is one Setup: its options resolved, and what it has planned.
type setupRun struct {
	opts     SetupOptions
	authDir  string // absolute
	srcHome  string // absolute, a directory
	ctrHome  string // clean, absolute
	now      func() time.Time
	names    []string // the agents to try, in table order
	explicit bool     // the caller named them (a missing credential warns)
	env      agents.Env
	mir      *mirrorer // nil: no Keychain
	// oldTargets are the previous staging's credential mount targets.
	oldTargets map[string]string
	plan       *stagingPlan
	res        *SetupResult
}

// resolveSetup checks opts and fills in their defaults; nothing is read
// from the agents' files yet.
func resolveSetup(opts SetupOptions) (*setupRun, error) {
	if opts.AuthDir == "" {
		return nil, errors.New("setup: no staging dir given")
	}
	authDir, err := absClean(opts.AuthDir)
	if err != nil {
		return nil, err
	}
	if opts.SourceHome == "" {
		return nil, inputErrorf("SourceHome", "is empty: want the host home the agents' files are under")
	}
	srcHome, err := absClean(opts.SourceHome)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(srcHome); err != nil || !fi.IsDir() {
		return nil, inputErrorf("SourceHome", "%s is not a directory", srcHome)
	}
	ctrHome := opts.ContainerHome
	if ctrHome == "" {
		ctrHome = DefaultContainerHome
	}
	if !path.IsAbs(ctrHome) || path.Clean(ctrHome) != ctrHome || strings.ContainsAny(ctrHome, "\x00\n") {
		return nil, inputErrorf("ContainerHome", "%q: want a clean absolute path such as %s", ctrHome, DefaultContainerHome)
	}
	s := &setupRun{
		opts: opts, authDir: authDir, srcHome: srcHome, ctrHome: ctrHome, now: time.Now,
		names: opts.Agents, explicit: len(opts.Agents) > 0,
		env: agents.Env{Home: srcHome, Getenv: opts.Getenv}, res: &SetupResult{AuthDir: authDir},
	}
	if opts.Now != nil {
		s.now = opts.Now
	}
	if !s.explicit {
		s.names = agents.Names()
	}
	for _, name := range s.names {
		if _, ok := agents.Lookup(name); !ok {
			return nil, inputErrorf("Agents", "%q: unknown agent (available: %s)", name, strings.Join(agents.Names(), ", "))
		}
	}
	for name, strat := range opts.Strategies {
		if _, ok := agents.Lookup(name); !ok {
			return nil, inputErrorf("Strategies", "%q: unknown agent (available: %s)", name+"="+strat, strings.Join(agents.Names(), ", "))
		}
		if strat != manifest.StrategyBind && strat != manifest.StrategyBindDir {
			return nil, inputErrorf("Strategies", "%q: want bind or bind-dir (copy would put the secret into staging)", name+"="+strat)
		}
	}
	if opts.Keychain != nil {
		if s.mir, err = s.newMirrorer(); err != nil {
			return nil, err
		}
	}
	s.plan = &stagingPlan{manifest: &manifest.Manifest{
		Version: manifest.Version, CreatedAt: s.now().UTC().Format(time.RFC3339),
		HostHome: srcHome, ContainerHome: ctrHome, MountPoint: manifest.DefaultMountPoint,
		User: opts.User, Agents: map[string]manifest.Agent{},
	}}
	s.oldTargets = map[string]string{}
	if old, err := manifest.Read(authDir); err == nil {
		for _, e := range old.Entries() {
			if e.Synced() {
				s.oldTargets[e.Agent] = e.MountSrc()
			}
		}
	}
	return s, nil
}

// newMirrorer resolves the Keychain mirror dir, away from staging.
func (s *setupRun) newMirrorer() (*mirrorer, error) {
	dir := s.opts.MirrorDir
	if dir == "" {
		dir = DefaultMirrorDir(s.srcHome)
	}
	dir, err := absClean(dir)
	if err != nil {
		return nil, err
	}
	if err := checkMirrorDir(dir, s.authDir); err != nil {
		return nil, err
	}
	return &mirrorer{store: s.opts.Keychain, user: s.opts.KeychainUser, dir: dir, now: s.now(), warn: s.warn}, nil
}

func (s *setupRun) warn(format string, args ...any) {
	s.res.Warnings = append(s.res.Warnings, fmt.Sprintf(format, args...))
}

// planAgent adds agent name's credential mount target and cleaned configs
// to the plan. An agent without a usable credential file is skipped with a
// warning; a config that cannot be read or cleaned is an error.
func (s *setupRun) planAgent(name string) error {
	a, _ := agents.Lookup(name) // known: resolveSetup checked
	strat := a.Strategy
	if st, ok := s.opts.Strategies[name]; ok {
		strat = st
	}
	credPath := a.Credential.Locate(s.env)
	var kcItem *keychain.Item
	if s.mir != nil {
		if p, it, ok := s.mir.locate(a, s.env, credPath); ok {
			credPath, kcItem = p, &it
		}
	}
	data, _, err := readRegular(credPath, maxCredentialSize, true)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			s.warn("%s: cannot use the credential %s, skipped: %v", name, credPath, trimPathErr(err))
		} else if s.explicit {
			s.warn("%s: no credential at %s, skipped (log in to %s on this host first)", name, credPath, name)
		}
		return nil
	}
	st := agents.Classify(a.Format, data, s.now())
	if !st.State.Usable() {
		s.warn("%s: the credential %s is %s; staged anyway, but the container will need a fresh login (log in again on the host)",
			name, credPath, st.Describe(s.now()))
	}
	ag := manifest.Agent{Files: []manifest.File{s.planCredential(a, strat, credPath)}}
	sa := StagedAgent{Name: name, Strategy: strat, Credential: credPath, Status: st, Keychain: kcItem}
	for _, c := range a.Configs {
		f, p, err := s.planConfig(name, c)
		if err != nil {
			return err
		}
		if f != nil {
			ag.Files = append(ag.Files, *f)
			sa.Configs = append(sa.Configs, p)
		}
	}
	s.plan.manifest.Agents[name] = ag
	s.res.Agents = append(s.res.Agents, sa)
	return nil
}

// planCredential plans the credential's empty mount target (and its lock
// dir) and returns its manifest entry.
func (s *setupRun) planCredential(a agents.Agent, strat, credPath string) manifest.File {
	cred := manifest.File{
		ContainerTarget: a.Credential.Target, HostOriginal: relToHome(s.srcHome, credPath),
		Type: manifest.TypeCredential, Strategy: strat, Mode: fmt.Sprintf("%04o", a.Credential.Mode), Format: a.Format,
	}
	mt := a.Credential.MountTarget(strat == manifest.StrategyBindDir, !s.opts.UnlockedMounts)
	if strat == manifest.StrategyBindDir {
		cred.Src = path.Join(mt, filepath.Base(credPath))
		s.plan.files = append(s.plan.files, plannedFile{src: mt, dir: true})
	} else {
		cred.Src = mt
		s.plan.files = append(s.plan.files, plannedFile{src: mt})
	}
	if !s.opts.UnlockedMounts {
		s.plan.locks = append(s.plan.locks, a.Credential.LockDir)
	}
	if old := s.oldTargets[a.Name]; old != "" && old != mt {
		s.warn("%s: the credential's mount target moved from %s to %s in staging; containers started before this setup have lost their %s credential mount: restart them",
			a.Name, old, mt, a.Name)
	}
	return cred
}

// planConfig reads and cleans one config and plans its copy; it returns
// nil (and a warning) for a config that does not exist, and the host path
// it read.
func (s *setupRun) planConfig(name string, c agents.FileSpec) (*manifest.File, string, error) {
	p := c.Locate(s.env)
	raw, _, err := readRegular(p, maxConfigSize, false)
	if errors.Is(err, fs.ErrNotExist) {
		s.warn("%s: no config at %s, skipped", name, p)
		return nil, p, nil
	}
	if err != nil {
		return nil, p, withFix(fmt.Errorf("%s: config %s: %v", name, p, trimPathErr(err)), "Agents", "fix or remove it, or leave "+name+" out with %s")
	}
	out := raw
	if c.Clean != nil {
		out, err = c.Clean(raw, agents.CleanOptions{ContainerHome: s.ctrHome})
		if err != nil {
			return nil, p, withFix(fmt.Errorf("%s: config %s: %v", name, p, err), "Agents", "fix the file, or leave "+name+" out with %s")
		}
	}
	s.plan.files = append(s.plan.files, plannedFile{src: c.Src, data: out})
	return &manifest.File{
		Src: c.Src, ContainerTarget: c.Target, HostOriginal: relToHome(s.srcHome, p),
		Type: manifest.TypeConfig, Strategy: manifest.StrategyCopy, Mode: fmt.Sprintf("%04o", c.Mode),
	}, p, nil
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
