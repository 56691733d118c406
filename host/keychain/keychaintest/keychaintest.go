// Package keychaintest gives tests a fake macOS security tool (see
// internal/fakesecurity) with its own keychain, so the keychain backend and
// the bridge are tested on Linux with the real tool's command line.
package keychaintest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caw-dev/caw/host/keychain"
	"github.com/caw-dev/caw/host/keychain/internal/fakedb"
	"github.com/caw-dev/caw/internal/testenv"
)

// Modes of the fake keychain.
const (
	Unlocked = fakedb.Unlocked
	Locked   = fakedb.Locked
	Deny     = fakedb.Deny
	Cancel   = fakedb.Cancel
)

// Fake is one fake keychain and the security tool that serves it.
type Fake struct {
	// Path is the tool to give keychain.Security: a wrapper that points
	// the shared binary at this fake's keychain.
	Path string
	db   string
	t    testing.TB
}

// New builds (once) the fake tool and gives it an empty keychain.
func New(t testing.TB) *Fake {
	t.Helper()
	bin := testenv.Build(t, "github.com/caw-dev/caw/host/keychain/internal/fakesecurity")
	dir := t.TempDir()
	f := &Fake{Path: filepath.Join(dir, "security"), db: filepath.Join(dir, "keychain.json"), t: t}
	script := fmt.Sprintf("#!/bin/sh\nFAKE_SECURITY_DB='%s' exec '%s' \"$@\"\n", f.db, bin)
	if err := os.WriteFile(f.Path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

// Store is the real backend pointed at the fake.
func (f *Fake) Store() keychain.Security { return keychain.Security{Path: f.Path} }

func (f *Fake) update(fn func(*fakedb.DB) error) {
	f.t.Helper()
	if err := fakedb.Update(f.db, fn); err != nil && !errors.Is(err, errReadOnly) {
		f.t.Fatal(err)
	}
}

var errReadOnly = errors.New("read only")

// Set stores data as its password, as an agent on the Mac would.
func (f *Fake) Set(it keychain.Item, data []byte) {
	f.update(func(d *fakedb.DB) error {
		if i := d.Find(it.Service, it.Account); i >= 0 {
			d.Items[i].Data = append([]byte{}, data...)
			return nil
		}
		d.Items = append(d.Items, fakedb.Item{Service: it.Service, Account: it.Account, Data: append([]byte{}, data...)})
		return nil
	})
}

// Get returns its password and whether it exists.
func (f *Fake) Get(it keychain.Item) ([]byte, bool) {
	var data []byte
	found := false
	f.update(func(d *fakedb.DB) error {
		if i := d.Find(it.Service, it.Account); i >= 0 && d.Items[i].Account == it.Account {
			data, found = d.Items[i].Data, true
		}
		return errReadOnly
	})
	return data, found
}

// SetMode puts the keychain in a mode: Unlocked, Locked, Deny, Cancel.
func (f *Fake) SetMode(mode string) {
	f.update(func(d *fakedb.DB) error { d.Mode = mode; return nil })
}

// Counts returns how many passwords the tool has read and written.
func (f *Fake) Counts() (reads, writes int) {
	f.update(func(d *fakedb.DB) error { reads, writes = d.Reads, d.Writes; return errReadOnly })
	return
}

// Argv returns every command line the tool was run with.
func (f *Fake) Argv() [][]string {
	f.t.Helper()
	fh, err := os.Open(f.db + ".argv")
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		f.t.Fatal(err)
	}
	defer fh.Close()
	var out [][]string
	sc := bufio.NewScanner(fh)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var argv []string
		if err := json.Unmarshal(sc.Bytes(), &argv); err != nil {
			out = append(out, []string{sc.Text()}) // a VIOLATION line
			continue
		}
		out = append(out, argv)
	}
	return out
}

// CheckArgv fails the test when the tool refused a command line, or when
// any command line holds one of secrets (as is, or in hex).
func (f *Fake) CheckArgv(secrets ...[]byte) {
	f.t.Helper()
	for _, argv := range f.Argv() {
		line := strings.Join(argv, " ")
		if strings.HasPrefix(line, "VIOLATION") {
			f.t.Errorf("fake security refused a command line: %s", line)
		}
		for _, s := range secrets {
			if len(s) > 0 && (strings.Contains(line, string(s)) || strings.Contains(line, fmt.Sprintf("%x", s))) {
				f.t.Errorf("a secret is on security's argv: %q", line)
			}
		}
	}
}
