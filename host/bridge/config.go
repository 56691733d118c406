package bridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/caw-dev/caw/host/keychain"
)

// ConfigName is the bridge's config file in the mirror dir.
const ConfigName = "bridge.json"

// ConfigVersion is the config's schema version.
const ConfigVersion = 1

// Pair is one Keychain item and the file that mirrors it. No secret.
type Pair struct {
	Agent  string        `json:"agent"`
	Format string        `json:"format"` // agents.Classify format
	Item   keychain.Item `json:"item"`
	Mirror string        `json:"mirror"` // absolute path
}

// Config is what `caw setup` leaves for `caw bridge`.
type Config struct {
	Version int    `json:"version"`
	Pairs   []Pair `json:"pairs"`
}

// LoadConfig reads the config at p, with errors that say what to do.
func LoadConfig(p string) (*Config, error) {
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no bridge config at %s: run caw setup first (it writes one when a login is in the Keychain)", p)
	}
	if err != nil {
		return nil, err
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("bridge config %s: %v (re-run caw setup)", p, err)
	}
	if c.Version != ConfigVersion {
		return nil, fmt.Errorf("bridge config %s: version %d, this caw reads %d (re-run caw setup)", p, c.Version, ConfigVersion)
	}
	for _, pr := range c.Pairs {
		if !filepath.IsAbs(pr.Mirror) || pr.Item.Service == "" {
			return nil, fmt.Errorf("bridge config %s: pair %q has no absolute mirror path or no service (re-run caw setup)", p, pr.Agent)
		}
	}
	return &c, nil
}

// SaveConfig writes c at p (mode 0600) by temp file and rename.
func SaveConfig(p string, c *Config) error {
	c.Version = ConfigVersion
	if c.Pairs == nil {
		c.Pairs = []Pair{}
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(p, append(data, '\n'), 0o600)
}

// writeFile replaces p with data, mode perm, by a temp file beside it and a
// rename: a reader sees the old file or the new one.
func writeFile(p string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), p)
}
