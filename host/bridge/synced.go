package bridge

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A pair's synced file records the content (its policy.Sum) the Keychain
// and the mirror last held in common. It lives beside the bridge config,
// in a directory no container sees (the mirrors are one level down, in a
// directory per agent), so a container cannot forge it.
//
// It tells the bridge, when it starts, what happened while it was not
// running. The Keychain is the source of truth at start-up, as the home
// copy's host is for the guard: a mirror that differs is replaced. But a
// mirror that changed while the Keychain did not (it still holds the
// synced content) holds a container's refresh that no bridge carried: that
// refresh is the only live token, the Keychain's was spent by it, so it is
// taken as a change of the mirror (every rule of a running bridge applies:
// plausible expiry, same account, rate limit) instead of being lost.

func syncedPath(dir, agent string) string { return filepath.Join(dir, agent+".synced") }

// LoadSynced reads the Sum the pair of agent last held in common, recorded
// in dir; ok is false when there is none (or it is unreadable).
func LoadSynced(dir, agent string) (sum [32]byte, ok bool) {
	if dir == "" {
		return sum, false
	}
	data, err := os.ReadFile(syncedPath(dir, agent))
	if err != nil {
		return sum, false
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(b) != len(sum) {
		return sum, false
	}
	copy(sum[:], b)
	return sum, true
}

// SaveSynced records sum as what the pair of agent holds in common, in dir
// (temp file and rename, mode 0600).
func SaveSynced(dir, agent string, sum [32]byte) error {
	if err := writeFile(syncedPath(dir, agent), []byte(hex.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		return fmt.Errorf("record the synced state: %w", err)
	}
	return nil
}
