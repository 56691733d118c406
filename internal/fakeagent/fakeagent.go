// Package fakeagent is a stand-in for a coding agent in caw's end-to-end
// tests and demo: it reads, refreshes and prints a credential the way Claude
// Code and Codex do on Linux, without any network. A refresh rewrites the
// whole file with a new token and a strictly later expiry, either in place
// (truncate and write, as Codex and Claude Code up to 2.1.117 do) or by a temp
// file in the same directory renamed over the credential (Claude Code from
// 2.1.118, with its in-place fallback when the rename fails).
//
// Tests on the host use the same functions to play the host's agent, so the
// two sides always agree on the format.
package fakeagent

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Agents the fake agent can play.
const (
	Claude = "claude"
	Codex  = "codex"
	// Gemini and Opencode are played by Run only (see Behaviours).
	Gemini   = "gemini"
	Opencode = "opencode"
)

// Write modes.
const (
	InPlace = "inplace"
	Rename  = "rename"
)

// Cred is what a credential file says, reduced to what tests compare.
type Cred struct {
	Agent   string
	Token   string    // the access token's name (for Codex, the JWT's subject)
	Expires time.Time // zero when the file carries none
}

func (c Cred) String() string {
	exp := "none"
	if !c.Expires.IsZero() {
		exp = c.Expires.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("%s token=%s expires=%s", c.Agent, c.Token, exp)
}

// DefaultPath is where the agent keeps its credential under home.
func DefaultPath(agent, home string) (string, error) {
	switch agent {
	case Claude:
		return filepath.Join(home, ".claude", ".credentials.json"), nil
	case Codex:
		return filepath.Join(home, ".codex", "auth.json"), nil
	}
	return "", fmt.Errorf("unknown agent %q (want %s or %s)", agent, Claude, Codex)
}

// NewToken is a fresh random token name.
func NewToken() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "tok-" + hex.EncodeToString(b[:])
}

// Read parses the agent's credential at path.
func Read(agent, path string) (Cred, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Cred{}, err
	}
	return Parse(agent, data)
}

// Parse reads a credential's content.
func Parse(agent string, data []byte) (Cred, error) {
	switch agent {
	case Claude:
		var doc struct {
			OAuth *struct {
				AccessToken string `json:"accessToken"`
				ExpiresAt   int64  `json:"expiresAt"`
			} `json:"claudeAiOauth"`
		}
		if err := json.Unmarshal(data, &doc); err != nil || doc.OAuth == nil {
			return Cred{}, fmt.Errorf("not a Claude credential (%d bytes): %q", len(data), clip(data))
		}
		c := Cred{Agent: agent, Token: doc.OAuth.AccessToken}
		if doc.OAuth.ExpiresAt > 0 {
			c.Expires = time.UnixMilli(doc.OAuth.ExpiresAt)
		}
		return c, nil
	case Codex:
		var doc struct {
			Tokens *struct {
				AccessToken string `json:"access_token"`
			} `json:"tokens"`
		}
		if err := json.Unmarshal(data, &doc); err != nil || doc.Tokens == nil {
			return Cred{}, fmt.Errorf("not a Codex credential (%d bytes): %q", len(data), clip(data))
		}
		sub, exp := jwtClaims(doc.Tokens.AccessToken)
		c := Cred{Agent: agent, Token: sub, Expires: exp}
		if sub == "" {
			c.Token = doc.Tokens.AccessToken
		}
		return c, nil
	}
	return Cred{}, fmt.Errorf("unknown agent %q (want %s or %s)", agent, Claude, Codex)
}

func clip(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

// jwt builds an unsigned-looking JWT; nothing verifies the signature.
func jwt(claims map[string]any) string {
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT"})
	p, _ := json.Marshal(claims)
	return enc.EncodeToString(h) + "." + enc.EncodeToString(p) + "." + enc.EncodeToString([]byte("fake-signature"))
}

func jwtClaims(tok string) (string, time.Time) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", time.Time{}
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", time.Time{}
	}
	var c struct {
		Sub string `json:"sub"`
		Exp int64  `json:"exp"`
	}
	if json.Unmarshal(raw, &c) != nil {
		return "", time.Time{}
	}
	var exp time.Time
	if c.Exp > 0 {
		exp = time.Unix(c.Exp, 0)
	}
	return c.Sub, exp
}

// Result says what a Refresh did.
type Result struct {
	Cred
	// Fallback is set when a rename was asked for but failed, and the file was
	// written in place instead (as Claude Code 2.1.119+ does).
	Fallback error
	// Unreadable is set when the existing file could not be parsed (a torn
	// or foreign file): the new expiry then does not build on the old one.
	Unreadable error
	// Written is when the new content was complete on disk (the rename or
	// the close), by the wall clock, which a container shares with its host.
	Written time.Time
}

// Refresh rewrites the credential at path with token (NewToken() when empty)
// and an expiry strictly later than the current one, by mode. A missing file
// is created with mode 0600.
func Refresh(agent, path, token, mode string) (Result, error) {
	if token == "" {
		token = NewToken()
	}
	exp := time.Now().Add(8 * time.Hour).Truncate(time.Second)
	var unreadable error
	if data, err := os.ReadFile(path); err == nil {
		old, err := Parse(agent, data)
		if err == nil && !old.Expires.Before(exp) {
			exp = old.Expires.Add(time.Minute).Truncate(time.Second)
		}
		unreadable = err
	}
	// The new file keeps the current one's other top-level keys (a Claude
	// file's mcpOAuth, ...), as a real refresh does.
	content, err := TokensContent(agent, token, "refresh-"+token, exp, path)
	if err != nil {
		return Result{}, err
	}
	res := Result{Cred: Cred{Agent: agent, Token: token, Expires: exp}, Unreadable: unreadable}
	switch mode {
	case InPlace:
		err = WriteInPlace(path, content)
	case Rename:
		err = WriteRename(path, content)
		var errno syscall.Errno
		if errors.As(err, &errno) && (errno == syscall.EXDEV || errno == syscall.EPERM || errno == syscall.EEXIST || errno == syscall.EBUSY) {
			res.Fallback = err
			err = WriteInPlace(path, content)
		}
	default:
		return Result{}, fmt.Errorf("unknown write mode %q (want %s or %s)", mode, InPlace, Rename)
	}
	res.Written = time.Now()
	return res, err
}

// WriteInPlace truncates and rewrites path, keeping its inode (mode 0600 on
// create, then chmod 0600 as Claude Code does).
func WriteInPlace(path string, content []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create credential dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("open credential %s: %w", path, err)
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return fmt.Errorf("write credential %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close credential %s: %w", path, err)
	}
	return nil
}

// WriteRename writes <path>.tmp.<hex> beside path and renames it over path,
// replacing the inode.
func WriteRename(path string, content []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create credential dir: %w", err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	tmp := path + ".tmp." + hex.EncodeToString(b[:])
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		return fmt.Errorf("write temp credential: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename over credential %s: %w", path, err)
	}
	return nil
}
