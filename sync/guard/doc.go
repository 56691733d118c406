// Package guard is the credential guard that runs inside caw-init as root.
//
// PLACEHOLDER API (issue 4 replaces the bodies): the signatures below are the
// contract cmd/caw-init is written against.
package guard

import (
	"context"

	"github.com/caw-dev/caw/manifest"
)

// Logf prints one line on caw-init's stderr when level <= the verbosity:
// level 0 is always shown (problems the user must act on), 1 is -v, 2 is -vv.
type Logf func(level int, format string, args ...any)

// Config is what caw-init hands the guard.
type Config struct {
	AuthDir  string             // where the staging dir is mounted (/tmp/caw_auth)
	Manifest *manifest.Manifest // validated
	Home     string             // the target user's home in the container
	UID, GID int                // the target user's ids (owner of what the guard writes in Home)
	Logf     Logf
}

// Guard keeps home copies and host credentials in sync.
type Guard struct{}

// Start copies every manifest entry into the home (before the child starts)
// and starts watching; it returns once the copy-in is done.
func Start(ctx context.Context, cfg Config) (*Guard, error) { return &Guard{}, nil }

// Flush syncs whatever the home copies hold to the host side and returns only
// when the host side is written. caw-init calls it after the child exits.
func (g *Guard) Flush(ctx context.Context) error { return nil }

// Close stops the watchers.
func (g *Guard) Close() error { return nil }
