package harness

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/caw-dev/caw/internal/safefs"
)

// expiryBase is the expiresAt (epoch ms, an hour after this process
// started) of sequence number 0, so every credential the harness writes is
// valid and a larger sequence number is always the fresher token. It stays
// within a Claude token's real lifetime: the guard refuses to write a
// credential claiming more to the host.
var expiryBase = time.Now().Add(time.Hour).UnixMilli()

// Cred is a Claude Code credential whose freshness is seq: its access and
// refresh tokens name seq and its expiry grows with it.
func Cred(seq int64) []byte {
	return ClaudeJSON(fmt.Sprintf("sk-ant-oat01-caw-%012d", seq), fmt.Sprintf("sk-ant-ort01-caw-%012d", seq), expiryBase+seq)
}

// The credential files of caw's tests, each in the shape its agent writes
// (see agents.Classify), byte for byte reproducible so a test can compare
// what it reads with what it wrote.

// ClaudeJSON is ~/.claude/.credentials.json holding the given tokens,
// expiring at expiresAt (Unix ms).
func ClaudeJSON(access, refresh string, expiresAt int64) []byte {
	return fmt.Appendf(nil, `{"claudeAiOauth":{"accessToken":%q,"refreshToken":%q,"expiresAt":%d,"scopes":["user:inference","user:profile"],"subscriptionType":"max"}}`,
		access, refresh, expiresAt)
}

// ClaudeStub is the logged-out stub Claude Code leaves after a refused
// refresh.
const ClaudeStub = `{"claudeAiOauth":{"accessToken":"","refreshToken":"","expiresAt":0}}`

// CodexJSON is ~/.codex/auth.json holding the given tokens (the access
// token a JWT for its expiry to show), refreshed at lastRefresh (RFC 3339).
func CodexJSON(idToken, access, refresh, account, lastRefresh string) []byte {
	return fmt.Appendf(nil, `{"OPENAI_API_KEY":null,"tokens":{"id_token":%q,"access_token":%q,"refresh_token":%q,"account_id":%q},"last_refresh":%q}`,
		idToken, access, refresh, account, lastRefresh)
}

// GeminiJSON is ~/.gemini/oauth_creds.json holding the given tokens,
// expiring at expiry (Unix ms).
func GeminiJSON(access, refresh string, expiry int64) []byte {
	return fmt.Appendf(nil, `{"access_token":%q,"refresh_token":%q,"token_type":"Bearer","expiry_date":%d}`, access, refresh, expiry)
}

// Seq reads the sequence number of a credential Cred wrote. ok is false for
// anything else: empty, torn, another token, or a file the tokens disagree in.
func Seq(data []byte) (seq int64, ok bool) {
	var doc struct {
		O *struct {
			A string `json:"accessToken"`
			R string `json:"refreshToken"`
			E int64  `json:"expiresAt"`
		} `json:"claudeAiOauth"`
	}
	if json.Unmarshal(data, &doc) != nil || doc.O == nil {
		return 0, false
	}
	seq = doc.O.E - expiryBase
	// The guard may pad an in-place write with trailing whitespace (valid
	// JSON), so only the bytes before it must be exactly what was written.
	if doc.O.E < expiryBase || !bytes.Equal(bytes.TrimRight(data, " \t\r\n"), Cred(seq)) {
		return 0, false
	}
	return seq, true
}

// ReadSmall reads a file the way a careful reader of a hostile directory
// does: non-blocking (a FIFO cannot hang it), regular files only, at most
// 1 MiB (a planted huge file is refused, not read). A non-blocking open
// of a file under a write lease (caw-init's, while it writes a host file)
// fails with EAGAIN instead of waiting: it is retried.
func ReadSmall(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	for try := 0; errors.Is(err, syscall.EAGAIN) && try < 1000; try++ {
		time.Sleep(50 * time.Microsecond)
		f, err = os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > 1<<20 {
		return nil, fmt.Errorf("%s: not a regular file under 1 MiB", path)
	}
	return safefs.ReadFD(int(f.Fd()), fi.Size(), 1<<20)
}

// ReadSeq reads a file's sequence number; -1 when it holds none.
func ReadSeq(path string) int64 {
	data, err := ReadSmall(path)
	if err != nil {
		return -1
	}
	if s, ok := Seq(data); ok {
		return s
	}
	return -1
}

// WriteInPlace rewrites an existing file the way Codex and Gemini do:
// truncate, write, close. The inode, owner and mode stay.
func WriteInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteRename replaces a file the way Claude Code (2.1.118 and later) does:
// a temp file <name>.tmp.<hex> in the same directory, owned by uid:gid and
// mode 0600, renamed over the name.
func WriteRename(path string, data []byte, uid, gid int) error {
	var b [6]byte
	_, _ = rand.Read(b[:])
	tmp := path + ".tmp." + hex.EncodeToString(b[:])
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chown(uid, gid); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename into %s: %w", filepath.Base(path), err)
	}
	return nil
}
