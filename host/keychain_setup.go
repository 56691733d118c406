package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/caw-dev/caw/agents"
	"github.com/caw-dev/caw/host/bridge"
	"github.com/caw-dev/caw/host/keychain"
	"github.com/caw-dev/caw/sync/policy"
)

// keychainReadTimeout bounds setup's Keychain reads; long enough for a
// person to answer an access prompt.
const keychainReadTimeout = 2 * time.Minute

// DefaultMirrorDir is where setup keeps the mirrors of Keychain-held
// credentials (and the bridge's config): ~/.caw/keychain, beside the
// default staging dir and never inside it.
func DefaultMirrorDir(home string) string { return filepath.Join(home, ".caw", "keychain") }

// keychainItem is where agent a keeps its login in the Keychain, if it can.
func keychainItem(a agents.Agent, env agents.Env, user string) (keychain.Item, bool) {
	get := func(k string) string {
		if env.Getenv == nil {
			return ""
		}
		return env.Getenv(k)
	}
	switch a.Name {
	case "claude":
		// Newer Claude Code builds name the item after
		// CLAUDE_SECURESTORAGE_CONFIG_DIR when it is set (public reports;
		// which of the two wins when both are set is a guess).
		dir := get("CLAUDE_SECURESTORAGE_CONFIG_DIR")
		if dir == "" {
			dir = get("CLAUDE_CONFIG_DIR")
		}
		return keychain.ClaudeItem(user, dir), true
	case "codex":
		home := get("CODEX_HOME")
		if home == "" || !filepath.IsAbs(home) {
			home = filepath.Join(env.Home, ".codex")
		}
		return keychain.CodexItem(home), true
	}
	return keychain.Item{}, false
}

// mirrorer finds Keychain-held logins for Setup and keeps their mirrors.
type mirrorer struct {
	store keychain.Store
	user  string
	dir   string
	now   time.Time
	warn  func(format string, args ...any)
	pairs []bridge.Pair
}

// checkMirrorDir refuses a mirror dir inside the staging dir (or holding
// it): staging is mounted into containers and holds no secret.
func checkMirrorDir(mirrorDir, authDir string) error {
	if within(mirrorDir, authDir) || within(authDir, mirrorDir) {
		return inputErrorf("AuthDir", "%s and the Keychain mirror dir %s must not contain one another: staging holds no secret", authDir, mirrorDir)
	}
	return nil
}

// locate returns the mirror that stands for agent a's credential when its
// login is in the Keychain and not fresher in the file at credPath; ok is
// false to use credPath as before.
func (m *mirrorer) locate(a agents.Agent, env agents.Env, credPath string) (mirror string, item keychain.Item, ok bool) {
	item, can := keychainItem(a, env, m.user)
	if !can {
		return "", item, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), keychainReadTimeout)
	data, err := m.store.Read(ctx, item)
	cancel()
	switch {
	case errors.Is(err, keychain.ErrNotFound):
		return "", item, false
	case err != nil:
		m.warn("%s: cannot read its Keychain item (%v); using %s if it exists", a.Name, trimPathErr(err), credPath)
		return "", item, false
	}
	st := agents.Classify(a.Format, data, m.now)
	fdata, _, ferr := readRegular(credPath, maxCredentialSize, true)
	if ferr == nil {
		fst := agents.Classify(a.Format, fdata, m.now)
		if agents.Compare(fst, st) > 0 {
			m.warn("%s: a login is both in the Keychain (%s) and in %s; the file's is fresher, so it is used", a.Name, st.Describe(m.now), credPath)
			return "", item, false
		}
		m.warn("%s: a login is both in the Keychain and in %s; the Keychain's is used (the agent on macOS reads it)", a.Name, credPath)
	} else if !st.State.Usable() && st.State != agents.LoggedOut {
		m.warn("%s: its Keychain item (%s) is %s, skipped", a.Name, item, st.State)
		return "", item, false
	}
	dir := filepath.Join(m.dir, a.Name)
	for _, d := range []string{m.dir, dir} {
		if err := mkdirPrivate(d); err != nil {
			m.warn("%s: cannot make the Keychain mirror dir: %v", a.Name, err)
			return "", item, false
		}
	}
	mirror = filepath.Join(dir, filepath.Base(credPath))
	// The Keychain is the source of truth here, as it is when caw bridge
	// starts (sync/policy: no push at start-up): a mirror claiming a
	// fresher login may hold a token a container made up; it is replaced.
	// Unless the Keychain still holds what both held when last in sync
	// (bridge.LoadSynced): then the mirror's change is a container's
	// refresh no bridge carried yet, kept for caw bridge to take to the
	// Keychain under its rules.
	old, oerr := bridge.ReadMirror(mirror)
	synced, known := bridge.LoadSynced(m.dir, a.Name)
	switch {
	case oerr != nil:
	case known && synced == policy.Sum(data) && synced != policy.Sum(old) && agents.Classify(a.Format, old, m.now).State.Usable():
		m.warn("%s: the mirror %s holds a container's refresh that no bridge carried to the Keychain yet; kept (caw bridge carries it)", a.Name, mirror)
		m.pairs = append(m.pairs, bridge.Pair{Agent: a.Name, Format: a.Format, Item: item, Mirror: mirror})
		return mirror, item, true
	case agents.Compare(agents.Classify(a.Format, old, m.now), st) > 0:
		m.warn("%s: the mirror %s claims a fresher login than the Keychain; replaced by the Keychain's, the source of truth (a refresh made in a container while no bridge ran, and before the bridge first synced, is lost: log in again if the Keychain's login stops refreshing)", a.Name, mirror)
	}
	if err := bridge.WriteMirror(mirror, data, nil); err != nil {
		m.warn("%s: cannot write the Keychain mirror: %v", a.Name, err)
		return "", item, false
	}
	if err := bridge.SaveSynced(m.dir, a.Name, policy.Sum(data)); err != nil {
		m.warn("%s: %v", a.Name, err)
	}
	m.pairs = append(m.pairs, bridge.Pair{Agent: a.Name, Format: a.Format, Item: item, Mirror: mirror})
	return mirror, item, true
}

// mkdirPrivate makes dir (mode 0700) unless it exists as a real directory,
// whose mode is the user's choice (the mirrors in it are 0600); a symlink
// there is refused.
func mkdirPrivate(dir string) error {
	fi, err := os.Lstat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory (remove it)", dir)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// save writes the bridge's config: every pair this setup mirrors.
func (m *mirrorer) save() (string, error) {
	p := filepath.Join(m.dir, bridge.ConfigName)
	if len(m.pairs) == 0 {
		if _, err := os.Lstat(p); err != nil {
			return "", nil // none before, none now
		}
	}
	if err := mkdirPrivate(m.dir); err != nil {
		return "", err
	}
	if err := bridge.SaveConfig(p, &bridge.Config{Pairs: m.pairs}); err != nil {
		return "", fmt.Errorf("write the bridge config %s: %w", p, err)
	}
	return p, nil
}
