// Package userspec resolves the user caw-init runs its command as, with the
// semantics of gosu and su-exec (and so of `docker run --user`), and turns the
// result into what the child needs: credentials for SysProcAttr and an
// environment with HOME, USER and LOGNAME for that user.
//
// It never changes the identity of the calling process: caw-init stays root
// for the credential guard, and only the child is started with the resolved
// credentials (Go's syscall.Setuid would apply to every thread of caw-init).
//
// Resolution is github.com/moby/sys/user reading the passwd and group files
// directly (no libc, no NSS), as runc and gosu do:
//
//	name                         passwd uid/gid; groups = gid + every group listing name
//	name:group, uid:gid, uid:grp exactly that uid and gid; groups = [gid]
//	uid (no passwd entry)        that uid, the caller's gid, HOME=/
//	unknown name or group        refused
//
// An image that knows nothing of the user (caw docker-flags --init runs any
// image as the host user's uid:gid) has no home for it: HomeFor picks the
// manifest's container home instead, and MakeHome creates it.
package userspec

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/caw-dev/caw/internal/safefs"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/moby/sys/user"
)

// Default files, as the container sees them.
const (
	PasswdPath = "/etc/passwd"
	GroupPath  = "/etc/group"
)

// Identity is a resolved user spec.
type Identity struct {
	UID, GID int
	Groups   []int  // supplementary groups the child gets (setgroups)
	Home     string // from passwd, or "/" when the uid has no entry
	// Name is the login name for USER and LOGNAME: the passwd name of UID,
	// or UID in decimal when passwd has no entry for it.
	Name string
	// Known: passwd has an entry for UID.
	Known bool
}

// Resolve resolves spec (USER[:GROUP]) against the given passwd and group
// files. curGID is the group a bare uid without a passwd entry keeps. A
// missing passwd or group file is treated as empty, so numeric specs work in
// an image with no /etc at all.
func Resolve(spec, passwdPath, groupPath string, curGID int) (*Identity, error) {
	usr, grp, hasGroup := strings.Cut(spec, ":")
	if usr == "" {
		return nil, fmt.Errorf("user %q: empty user name; give NAME, UID, NAME:GROUP or UID:GID", spec)
	}
	if hasGroup && grp == "" {
		return nil, fmt.Errorf("user %q: empty group after ':'; give NAME:GROUP or UID:GID, or drop the ':'", spec)
	}
	// Each file is read once: both the spec and the uid's name come from
	// the same contents.
	passwd, err := readUserFile(passwdPath)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", spec, err)
	}
	group, err := readUserFile(groupPath)
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", spec, err)
	}
	defaults := &user.ExecUser{Uid: -1, Gid: curGID, Home: "/"}
	eu, err := user.GetExecUser(spec, defaults, reader(passwd), reader(group))
	if err != nil {
		return nil, explain(spec, err, passwdPath, groupPath)
	}
	if eu.Uid < 0 {
		// Cannot happen with a non-empty user part; refuse rather than run
		// the child with an id we did not choose.
		return nil, fmt.Errorf("user %q: no uid resolved", spec)
	}
	id := &Identity{UID: eu.Uid, GID: eu.Gid, Home: eu.Home}
	if id.Home == "" {
		id.Home = "/"
	}
	name, found := lookupName(passwd, eu.Uid)
	if found && !hasGroup {
		// su-exec's getgrouplist: the primary gid plus every group that lists
		// the user. moby gives only the listed ones.
		id.Groups = append([]int{eu.Gid}, eu.Sgids...)
		slices.Sort(id.Groups)
		id.Groups = slices.Compact(id.Groups)
	} else {
		id.Groups = []int{eu.Gid}
	}
	if !found {
		name = strconv.Itoa(eu.Uid)
	}
	id.Name, id.Known = name, found
	return id, nil
}

// explain turns moby's error into one line naming the spec and the fix.
func explain(spec string, err error, passwdPath, groupPath string) error {
	switch {
	case errors.Is(err, user.ErrNoPasswdEntries):
		return fmt.Errorf("user %q: no such user in %s; add it to the image or give a numeric UID[:GID]", spec, passwdPath)
	case errors.Is(err, user.ErrNoGroupEntries):
		return fmt.Errorf("user %q: no such group in %s; add it to the image or give a numeric GID", spec, groupPath)
	}
	return fmt.Errorf("user %q: %w", spec, err)
}

// lookupName is the first passwd name with this uid.
func lookupName(passwd []byte, uid int) (string, bool) {
	if passwd == nil {
		return "", false
	}
	users, err := user.ParsePasswdFilter(bytes.NewReader(passwd), func(u user.User) bool { return u.Uid == uid })
	if err != nil || len(users) == 0 {
		return "", false
	}
	return users[0].Name, true
}

// maxUserFile bounds what is read of passwd or group (moby's own limit).
const maxUserFile = 10 << 20

// readUserFile reads passwd or group as moby's GetExecUserPath does: a file
// that cannot be opened or is not a regular file counts as absent (nil).
func readUserFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, nil
	}
	data, err := safefs.ReadFD(int(f.Fd()), st.Size(), maxUserFile)
	if errors.Is(err, safefs.ErrTooLarge) {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, maxUserFile)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	if data == nil {
		data = []byte{}
	}
	return data, nil
}

// reader is nil (absent) for nil data, as GetExecUser expects.
func reader(data []byte) io.Reader {
	if data == nil {
		return nil
	}
	return bytes.NewReader(data)
}

// Credential is the child's SysProcAttr.Credential: Go applies setgroups,
// setgid, setuid in the child, in that order, before exec.
func (id *Identity) Credential() *syscall.Credential {
	groups := make([]uint32, len(id.Groups))
	for i, g := range id.Groups {
		groups[i] = uint32(g)
	}
	return &syscall.Credential{Uid: uint32(id.UID), Gid: uint32(id.GID), Groups: groups}
}

// Env returns environ with HOME, USER and LOGNAME set for id, keeping every
// other variable and the order of those already present.
func (id *Identity) Env(environ []string) []string {
	set := map[string]string{"HOME": id.Home, "USER": id.Name, "LOGNAME": id.Name}
	done := make(map[string]bool, len(set))
	out := make([]string, 0, len(environ)+len(set))
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if v, ok := set[k]; ok {
			// A duplicate would let getenv pick the stale value.
			if !done[k] {
				out = append(out, k+"="+v)
				done[k] = true
			}
			continue
		}
		out = append(out, kv)
	}
	for _, k := range []string{"HOME", "USER", "LOGNAME"} {
		if !done[k] {
			out = append(out, k+"="+set[k])
		}
	}
	return out
}

// HomeFor decides the child's home: the passwd home when the uid has one
// (other than "/"), else fallback (the manifest's container home), which
// the caller creates for the user when it does not exist (create). With no
// fallback the passwd home, or "/", stays.
func HomeFor(id *Identity, fallback string, isDir func(string) bool) (home string, create bool) {
	if id.Known && id.Home != "/" {
		return id.Home, false
	}
	if fallback == "" || fallback == "/" {
		return id.Home, false
	}
	if isDir(fallback) {
		return fallback, false
	}
	return fallback, true
}

// MakeHome creates the directory home, mode 0700, owned by uid:gid, with
// any missing parents owned by root, mode 0755 (as useradd -m does). It
// runs before the command starts, so nothing in the container races it;
// a home that appeared meanwhile is left as it is.
func MakeHome(home string, uid, gid int) error {
	if err := os.MkdirAll(filepath.Dir(home), 0o755); err != nil {
		return fmt.Errorf("create home %s: %w", home, err)
	}
	if err := os.Mkdir(home, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil
		}
		return fmt.Errorf("create home %s: %w", home, err)
	}
	if err := os.Lchown(home, uid, gid); err != nil {
		os.Remove(home)
		return fmt.Errorf("create home %s: %w", home, err)
	}
	return nil
}
