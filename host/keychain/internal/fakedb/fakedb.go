// Package fakedb is the state of the fake security tool the keychain tests
// run: a JSON file of items and a mode, changed under an flock so the fake
// and a test can both touch it.
package fakedb

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// Modes the fake keychain can be in.
const (
	Unlocked = ""
	Locked   = "locked" // no UI to unlock it: exit 36
	Deny     = "deny"   // the user clicks Deny: exit 51
	Cancel   = "cancel" // the user cancels the prompt: exit 128
)

// Item is one generic password.
type Item struct {
	Service string `json:"service"`
	Account string `json:"account"`
	Data    []byte `json:"data"`
}

// DB is the fake keychain.
type DB struct {
	Mode   string `json:"mode"`
	Items  []Item `json:"items"`
	Reads  int    `json:"reads"`
	Writes int    `json:"writes"`
}

// Find returns the index of the item, or -1.
func (d *DB) Find(service, account string) int {
	for i, it := range d.Items {
		if it.Service == service && (account == "" || it.Account == account) {
			return i
		}
	}
	return -1
}

// Update runs f on the DB at path under an exclusive lock and saves it
// when f returns nil.
func Update(path string, f func(*DB) error) error {
	lk, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer lk.Close()
	if err := syscall.Flock(int(lk.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	var d DB
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if len(data) > 0 {
		if err := json.Unmarshal(data, &d); err != nil {
			return err
		}
	}
	if err := f(&d); err != nil {
		return err
	}
	out, err := json.Marshal(&d)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
