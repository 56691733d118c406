package keychain_test

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/caw-dev/caw/host/keychain"
	"github.com/caw-dev/caw/host/keychain/keychaintest"
)

var claudeJSON = []byte(`{"claudeAiOauth":{"accessToken":"sk-ant-oat01-SECRETACCESS","refreshToken":"sk-ant-ort01-SECRETREFRESH","expiresAt":1900000000000},"mcpOAuth":{"srv":{"accessToken":"mcp-SECRET"}}}`)

func TestReadWriteRoundTrip(t *testing.T) {
	f := keychaintest.New(t)
	s := f.Store()
	ctx := context.Background()
	it := keychain.Item{Service: `Claude Code-credentials "quoted" \ back`, Account: "alice smith"}
	if _, err := s.Read(ctx, it); !errors.Is(err, keychain.ErrNotFound) {
		t.Fatalf("read of a missing item: %v, want ErrNotFound", err)
	}
	cases := map[string][]byte{
		"compact json":   claudeJSON,
		"pretty json":    []byte("{\n  \"tokens\": {\"access_token\": \"SECRET-a\"}\n}\n"),
		"non-ascii json": []byte(`{"name":"Zoë 東京","token":"SECRET-b"}`),
		"quotes":         []byte(`{"k":"a \"quoted\" \\ 'single' value SECRET-c"}`),
	}
	for name, v := range cases {
		t.Run(name, func(t *testing.T) {
			if err := s.Write(ctx, it, v); err != nil {
				t.Fatal(err)
			}
			if got, ok := f.Get(it); !ok || !bytes.Equal(got, v) {
				t.Fatalf("stored %q, want %q", got, v)
			}
			got, err := s.Read(ctx, it)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, v) {
				t.Fatalf("read back %q, want %q", got, v)
			}
		})
	}
	secrets := [][]byte{[]byte("SECRETACCESS"), []byte("SECRETREFRESH"), []byte("SECRET-a"), []byte("SECRET-b"), []byte("SECRET-c")}
	for _, v := range cases {
		secrets = append(secrets, v)
	}
	f.CheckArgv(secrets...)
}

// The fake refuses a secret on its argv: this is what makes CheckArgv (and
// every bridge test) a proof that caw never puts one there.
func TestFakeRefusesSecretOnArgv(t *testing.T) {
	f := keychaintest.New(t)
	it := keychain.Item{Service: "svc", Account: "acct"}
	f.Set(it, claudeJSON)
	argvStore := argvWriter{path: f.Path}
	if err := argvStore.Write(context.Background(), it, []byte(`{"x":"NEWSECRET-on-argv"}`)); err == nil {
		t.Fatal("the fake accepted add-generic-password on argv")
	}
	var violations int
	for _, a := range f.Argv() {
		if strings.HasPrefix(a[0], "VIOLATION") {
			violations++
		}
	}
	if violations == 0 {
		t.Fatal("no violation logged")
	}
	if got, _ := f.Get(it); !bytes.Equal(got, claudeJSON) {
		t.Fatalf("item changed to %q", got)
	}
}

func TestModes(t *testing.T) {
	f := keychaintest.New(t)
	s := f.Store()
	ctx := context.Background()
	it := keychain.Item{Service: "Codex Auth", Account: "cli|0123456789abcdef"}
	f.Set(it, claudeJSON)
	for mode, want := range map[string]error{
		keychaintest.Locked: keychain.ErrLocked,
		keychaintest.Deny:   keychain.ErrDenied,
		keychaintest.Cancel: keychain.ErrDenied,
	} {
		f.SetMode(mode)
		if _, err := s.Read(ctx, it); !errors.Is(err, want) {
			t.Errorf("%s: read: %v, want %v", mode, err, want)
		}
		if err := s.Write(ctx, it, []byte(`{"new":1}`)); !errors.Is(err, want) {
			t.Errorf("%s: write: %v, want %v", mode, err, want)
		}
		if got, _ := f.Get(it); !bytes.Equal(got, claudeJSON) {
			t.Errorf("%s: item changed to %q", mode, got)
		}
	}
	f.CheckArgv(claudeJSON)
}

// A secret whose command line does not fit security -i's 4095-byte line
// is refused, not cut (the tail would run as a command) and not put on argv.
func TestWriteTooLarge(t *testing.T) {
	f := keychaintest.New(t)
	s := f.Store()
	it := keychain.Item{Service: "svc", Account: "acct"}
	fits := []byte(`{"k":"` + strings.Repeat("a", (keychain.MaxLine-len(keychain.AddLine(it, nil)))/2-8) + `"}`)
	if err := s.Write(context.Background(), it, fits); err != nil {
		t.Fatalf("a secret that fits: %v", err)
	}
	big := []byte(`{"k":"` + strings.Repeat("b", 2100) + `"}`)
	err := s.Write(context.Background(), it, big)
	if !errors.Is(err, keychain.ErrTooLarge) {
		t.Fatalf("write of %d bytes: %v, want ErrTooLarge", len(big), err)
	}
	if got, _ := f.Get(it); !bytes.Equal(got, fits) {
		t.Fatal("the item changed")
	}
	f.CheckArgv(fits, big)
}

func TestItems(t *testing.T) {
	if got := keychain.ClaudeItem("alice", ""); got != (keychain.Item{Service: "Claude Code-credentials", Account: "alice"}) {
		t.Errorf("ClaudeItem: %+v", got)
	}
	// The hashes are from sha256sum, not from the code under test.
	if got := keychain.ClaudeItem("alice", "/Users/alice/.claude-work"); got.Service != "Claude Code-credentials-"+claudeWorkHash {
		t.Errorf("ClaudeItem with CLAUDE_CONFIG_DIR: %+v", got)
	}
	if got := keychain.CodexItem("/nonexistent/codex-home"); got != (keychain.Item{Service: "Codex Auth", Account: "cli|" + codexHomeHash}) {
		t.Errorf("CodexItem: %+v", got)
	}
}

const (
	claudeWorkHash = "be865d75"         // echo -n /Users/alice/.claude-work | sha256sum
	codexHomeHash  = "b5d85b424b15c4d9" // echo -n /nonexistent/codex-home | sha256sum
)

// argvWriter is what caw must never do: the secret on security's argv.
type argvWriter struct{ path string }

func (a argvWriter) Write(ctx context.Context, it keychain.Item, secret []byte) error {
	return exec.CommandContext(ctx, a.path, "add-generic-password", "-U", "-s", it.Service, "-a", it.Account, "-w", string(secret)).Run()
}
