// Package keychain reads and writes the macOS login Keychain's generic
// passwords through /usr/bin/security, without cgo, so `caw` can find an
// agent's login where macOS agents keep it and keep a file mirror of it.
//
// A secret never appears in any process's argv (other local users can read
// argv with ps): reads print it on security's stdout, and writes feed
// `security -i` one command line on stdin carrying it as -X <hex>.
//
// Store is the interface the rest of caw uses; Security is the real
// backend. Tests run it against a fake security (keychaintest) that has the
// real tool's command line, output rules and exit codes, and that refuses
// a secret on its argv.
package keychain

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"path/filepath"
)

// Item names one generic password.
type Item struct {
	Service string `json:"service"`
	Account string `json:"account"`
}

func (i Item) String() string { return "service " + quote(i.Service) + ", account " + quote(i.Account) }

func quote(s string) string { return `"` + s + `"` }

// Store reads and writes generic passwords.
type Store interface {
	// Read returns the item's password; ErrNotFound when there is none.
	Read(ctx context.Context, it Item) ([]byte, error)
	// Write creates the item or replaces its password.
	Write(ctx context.Context, it Item, secret []byte) error
}

// Errors a Store returns, by what the user must do about them. security's
// exit status is the low byte of the Security framework's OSStatus.
var (
	// ErrNotFound: no such item (errSecItemNotFound, -25300, exit 44).
	ErrNotFound = errors.New("no such Keychain item")
	// ErrLocked: the keychain is locked and no one can be asked to unlock
	// it, as in an SSH session (errSecInteractionNotAllowed, -25308, exit 36).
	ErrLocked = errors.New("the keychain is locked and cannot ask for its password here (unlock it: security unlock-keychain, or log in at the Mac)")
	// ErrDenied: the user denied or cancelled the access prompt
	// (errSecAuthFailed -25293, exit 51; errSecUserCanceled -128, exit 128).
	ErrDenied = errors.New("Keychain access was denied at the prompt")
)

// Exit statuses of security (OSStatus & 0xff).
const (
	exitNotFound     = 44  // errSecItemNotFound
	exitNotAllowed   = 36  // errSecInteractionNotAllowed
	exitAuthFailed   = 51  // errSecAuthFailed (Deny)
	exitUserCanceled = 128 // errSecUserCanceled
)

// ClaudeService is Claude Code's Keychain service name.
const ClaudeService = "Claude Code-credentials"

// ClaudeItem is where Claude Code on macOS keeps its login: service
// "Claude Code-credentials", account the user's login name; with
// CLAUDE_CONFIG_DIR set (configDir non-empty, as given, not resolved), the
// service gets "-" and the first 8 hex digits of the SHA-256 of that
// directory. (From public reports of Claude Code, which is closed source.)
func ClaudeItem(user, configDir string) Item {
	svc := ClaudeService
	if configDir != "" {
		svc += "-" + sha256Hex(configDir)[:8]
	}
	return Item{Service: svc, Account: user}
}

// CodexService is Codex's keyring service name.
const CodexService = "Codex Auth"

// CodexItem is where Codex in keyring mode (cli_auth_credentials_store =
// "keyring") keeps auth.json's content: service "Codex Auth", account
// "cli|" and the first 16 hex digits of the SHA-256 of the canonical
// CODEX_HOME (symlinks resolved, as Rust's canonicalize does; the path as
// given when it cannot be resolved).
func CodexItem(codexHome string) Item {
	if p, err := filepath.EvalSymlinks(codexHome); err == nil {
		codexHome = p
	}
	if p, err := filepath.Abs(codexHome); err == nil {
		codexHome = p
	}
	return Item{Service: CodexService, Account: "cli|" + sha256Hex(codexHome)[:16]}
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}
