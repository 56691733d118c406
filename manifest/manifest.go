// Package manifest owns manifest.json, the contract between the host CLI
// (which writes it into the staging dir) and caw-init (which reads it inside
// the container as root).
//
// The schema is the original caw tool's version 1, read unchanged; caw adds
// optional fields (the target "user", and per file the credential "format")
// that older readers ignore, and the "bind-dir" strategy. Everything caw-init
// does as root starts from this file, so Parse validates every field before
// anything else looks at it and refuses what it does not understand.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"

	"github.com/caw-dev/caw/internal/safefs"
)

// Version is the only manifest schema version this package reads and writes.
const Version = 1

// FileName is the manifest's name inside the staging dir.
const FileName = "manifest.json"

// DefaultMountPoint is where the staging dir is mounted in the container.
const DefaultMountPoint = "/tmp/caw_auth"

// Limits that keep a hostile or corrupt manifest from costing caw-init more
// than a bounded amount of memory and work.
const (
	MaxSize  = 1 << 20 // bytes of manifest.json
	MaxFiles = 256     // file entries over all agents
)

// File types.
const (
	TypeCredential = "credential"
	TypeConfig     = "config"
)

// Strategies: how a file reaches the container.
const (
	// StrategyBind mounts the host file itself; caw-init syncs it both ways.
	StrategyBind = "bind"
	// StrategyBindDir mounts the host file's directory, which survives a host
	// that replaces the file by rename; caw-init syncs it both ways.
	StrategyBindDir = "bind-dir"
	// StrategyCopy ships a cleaned copy in the staging dir, copied once.
	StrategyCopy = "copy"
)

// Manifest is manifest.json.
type Manifest struct {
	Version       int    `json:"version"`
	CreatedAt     string `json:"created_at"`
	HostHome      string `json:"host_home"`
	ContainerHome string `json:"container_home"`
	MountPoint    string `json:"mount_point"`
	// User is the container user caw-init runs the command as when neither
	// --user nor CAW_USER is given. Optional (caw addition).
	User   string           `json:"user,omitempty"`
	Agents map[string]Agent `json:"agents"`
}

// Agent is one agent's managed files.
type Agent struct {
	Files []File `json:"files"`
}

// File is one managed file.
type File struct {
	// Src is relative to the staging dir (and so to MountPoint in the
	// container). For bind it is the file's mount target; for bind-dir its
	// parent directory is the mount target and its base name is the
	// credential's name inside that directory.
	Src string `json:"src"`
	// ContainerTarget is relative to the container user's home.
	ContainerTarget string `json:"container_target"`
	// HostOriginal is relative to the host home, or absolute when the agent
	// keeps its files outside the home (CLAUDE_CONFIG_DIR, CODEX_HOME, ...).
	HostOriginal string `json:"host_original"`
	Type         string `json:"type"`
	Strategy     string `json:"strategy"`
	Mode         string `json:"mode"`
	// Format names the credential format the agents package classifies it
	// with; empty means the agent's own name. Optional (caw addition).
	Format string `json:"format,omitempty"`
}

// Entry is a file together with where it sits in the manifest, for error
// messages and stable iteration.
type Entry struct {
	Agent string
	Index int
	File
}

// Field names the entry's field the way validation errors do, for example
// agents.claude.files[0].src.
func (e Entry) Field(name string) string {
	return fmt.Sprintf("agents.%s.files[%d].%s", e.Agent, e.Index, name)
}

// CredentialFormat is the format to classify the file with.
func (e Entry) CredentialFormat() string {
	if e.Format != "" {
		return e.Format
	}
	return e.Agent
}

// Perm is the file's mode as parsed from Mode. It is only meaningful on a
// validated manifest.
func (f File) Perm() fs.FileMode {
	m, _ := parseMode(f.Mode)
	return m
}

// Synced reports whether caw-init keeps the file in sync with the host (bind
// or bind-dir) rather than copying it once.
func (f File) Synced() bool {
	return f.Strategy == StrategyBind || f.Strategy == StrategyBindDir
}

// MountSrc is the staging-relative path that Docker mounts over: the file
// itself for bind, its directory for bind-dir, "" for copy.
func (f File) MountSrc() string {
	switch f.Strategy {
	case StrategyBind:
		return f.Src
	case StrategyBindDir:
		return path.Dir(f.Src)
	}
	return ""
}

// HostMountSource is the host path Docker mounts from, given the host home:
// the credential itself for bind, its directory for bind-dir, "" for copy.
func (f File) HostMountSource(hostHome string) string {
	p := f.HostOriginal
	if !path.IsAbs(p) {
		p = path.Join(hostHome, p)
	}
	switch f.Strategy {
	case StrategyBind:
		return p
	case StrategyBindDir:
		return path.Dir(p)
	}
	return ""
}

// Entries lists every file, agents in name order, files in manifest order.
func (m *Manifest) Entries() []Entry {
	names := make([]string, 0, len(m.Agents))
	for n := range m.Agents {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []Entry
	for _, n := range names {
		for i, f := range m.Agents[n].Files {
			out = append(out, Entry{Agent: n, Index: i, File: f})
		}
	}
	return out
}

// ValidationError is a manifest that parsed but breaks a rule. Its message
// names the field and the offending value.
type ValidationError struct {
	Field  string
	Value  string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Value == "" && e.Field == "" {
		return FileName + ": " + e.Reason
	}
	return fmt.Sprintf("%s: %s: %s %s", FileName, e.Field, strconv.Quote(e.Value), e.Reason)
}

// ErrTooLarge is returned for a manifest over MaxSize bytes.
var ErrTooLarge = fmt.Errorf("%s: larger than %d bytes", FileName, MaxSize)

// Parse decodes and validates a manifest. Unknown fields are ignored, as the
// original's readers did, so newer writers stay readable.
func Parse(data []byte) (*Manifest, error) {
	if len(data) > MaxSize {
		return nil, ErrTooLarge
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: not valid JSON: %w", FileName, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: not valid JSON: trailing data after the object", FileName)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Read reads and validates dir/manifest.json (the host side: caw status
// and teardown). No symlink is followed, a FIFO or device cannot block the
// reader, and the size is bounded before reading. A missing file gives an
// error that satisfies errors.Is(err, fs.ErrNotExist), an unreadable one
// errors.Is(err, fs.ErrPermission).
func Read(dir string) (*Manifest, error) {
	p := path.Join(dir, FileName)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symlink: refusing to follow it; caw setup writes a regular file (run it again)", p)
		}
		return nil, err
	}
	defer f.Close()
	return readOpen(f, p)
}

func readOpen(f *os.File, p string) (*Manifest, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s): run caw setup again", p, fi.Mode().Type())
	}
	data, err := safefs.ReadFD(int(f.Fd()), fi.Size(), MaxSize)
	if errors.Is(err, safefs.ErrTooLarge) {
		return nil, fmt.Errorf("%s: %w", p, ErrTooLarge)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return Parse(data)
}

// Marshal validates m and encodes it as the indented JSON caw writes.
func (m *Manifest) Marshal() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", FileName, err)
	}
	return append(data, '\n'), nil
}

// Validate checks every rule; the first broken one is returned.
func (m *Manifest) Validate() error {
	if m.Version != Version {
		return &ValidationError{Field: "version", Value: strconv.Itoa(m.Version),
			Reason: fmt.Sprintf("is not supported (this caw reads version %d; use a matching caw)", Version)}
	}
	if err := checkAbs("container_home", m.ContainerHome, true); err != nil {
		return err
	}
	if err := checkAbs("mount_point", m.MountPoint, false); err != nil {
		return err
	}
	if err := checkAbs("host_home", m.HostHome, false); err != nil {
		return err
	}
	if strings.IndexFunc(m.User, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
		return &ValidationError{Field: "user", Value: m.User, Reason: "contains a control character"}
	}
	if !utf8.ValidString(m.User) {
		return &ValidationError{Field: "user", Value: m.User, Reason: "is not valid UTF-8"}
	}
	n := 0
	for name, a := range m.Agents {
		if !validName(name) {
			return &ValidationError{Field: "agents", Value: name, Reason: "is not a valid agent name (lower-case letters, digits, '-' and '_')"}
		}
		n += len(a.Files)
		if n > MaxFiles {
			return &ValidationError{Reason: fmt.Sprintf("more than %d files", MaxFiles)}
		}
	}
	targets := map[string]string{}
	srcs := map[string]string{}
	entries := m.Entries()
	for _, e := range entries {
		if err := e.validate(); err != nil {
			return err
		}
		if prev, dup := targets[e.ContainerTarget]; dup {
			return &ValidationError{Field: e.Field("container_target"), Value: e.ContainerTarget,
				Reason: "is also the target of " + prev}
		}
		targets[e.ContainerTarget] = e.Field("container_target")
		if prev, dup := srcs[e.Src]; dup {
			return &ValidationError{Field: e.Field("src"), Value: e.Src, Reason: "is also the src of " + prev}
		}
		srcs[e.Src] = e.Field("src")
	}
	// Every src is a file in the staging dir (or, for bind-dir, a file in a
	// mounted directory): none may sit inside another's file, and nothing
	// else may sit inside a bind-dir mount, which would hide it.
	for _, e := range entries {
		for d := path.Dir(e.Src); d != "."; d = path.Dir(d) {
			if other, ok := srcs[d]; ok {
				return &ValidationError{Field: e.Field("src"), Value: e.Src, Reason: "is inside " + other + ", which is a file"}
			}
		}
		if e.Strategy != StrategyBindDir {
			continue
		}
		dir := e.MountSrc()
		for _, o := range entries {
			if o.Agent == e.Agent && o.Index == e.Index {
				continue
			}
			if o.Src == dir || strings.HasPrefix(o.Src, dir+"/") {
				return &ValidationError{Field: o.Field("src"), Value: o.Src,
					Reason: "is inside the bind-dir mount " + strconv.Quote(dir) + " of " + e.Field("src") + ", which would hide it"}
			}
		}
	}
	return nil
}

func (e Entry) validate() error {
	if err := checkRel(e.Field("src"), e.Src, "the staging dir"); err != nil {
		return err
	}
	if err := checkRel(e.Field("container_target"), e.ContainerTarget, "the home directory"); err != nil {
		return err
	}
	if e.HostOriginal != "" && !path.IsAbs(e.HostOriginal) {
		if err := checkRel(e.Field("host_original"), e.HostOriginal, "the host home"); err != nil {
			return err
		}
	} else if err := checkAbs(e.Field("host_original"), e.HostOriginal, false); err != nil {
		return err
	}
	switch e.Type {
	case TypeCredential, TypeConfig:
	default:
		return &ValidationError{Field: e.Field("type"), Value: e.Type, Reason: "is not one of credential, config"}
	}
	switch e.Strategy {
	case StrategyBind, StrategyCopy:
	case StrategyBindDir:
		if path.Dir(e.Src) == "." {
			return &ValidationError{Field: e.Field("src"), Value: e.Src,
				Reason: "must have a parent directory under the staging dir for strategy bind-dir"}
		}
		if e.HostOriginal != "" && path.Base(e.HostOriginal) != path.Base(e.Src) {
			return &ValidationError{Field: e.Field("src"), Value: e.Src,
				Reason: "must have the same base name as host_original for strategy bind-dir"}
		}
	default:
		return &ValidationError{Field: e.Field("strategy"), Value: e.Strategy, Reason: "is not one of bind, bind-dir, copy"}
	}
	if e.Type == TypeConfig && e.Strategy != StrategyCopy {
		return &ValidationError{Field: e.Field("strategy"), Value: e.Strategy, Reason: "is not allowed for a config file (use copy)"}
	}
	if _, err := parseMode(e.Mode); err != nil {
		return &ValidationError{Field: e.Field("mode"), Value: e.Mode, Reason: err.Error()}
	}
	if e.Format != "" && !validName(e.Format) {
		return &ValidationError{Field: e.Field("format"), Value: e.Format, Reason: "is not a valid format name"}
	}
	return nil
}

func parseMode(s string) (fs.FileMode, error) {
	if s == "" {
		return 0, errors.New("is empty (want an octal mode such as \"0600\")")
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil {
		return 0, errors.New("is not an octal mode such as \"0600\"")
	}
	if v&^0o777 != 0 {
		return 0, errors.New("has setuid, setgid, sticky or unknown bits (allowed: 0000-0777)")
	}
	return fs.FileMode(v), nil
}

// checkRel enforces a relative, clean path that stays below its base.
func checkRel(field, p, base string) error {
	bad := func(reason string) error { return &ValidationError{Field: field, Value: p, Reason: reason} }
	switch {
	case p == "":
		return bad("is empty")
	case strings.ContainsRune(p, 0):
		return bad("contains a NUL byte")
	case !utf8.ValidString(p):
		return bad("is not valid UTF-8")
	case path.IsAbs(p):
		return bad("is absolute (it must be relative to " + base + ")")
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return bad("escapes " + base)
		}
	}
	if path.Clean(p) != p || p == "." {
		return bad("is not a clean path (no '.', '//' or trailing '/')")
	}
	return nil
}

func checkAbs(field, p string, required bool) error {
	if p == "" {
		if required {
			return &ValidationError{Field: field, Value: p, Reason: "is empty (want an absolute path)"}
		}
		return nil
	}
	switch {
	case strings.ContainsRune(p, 0):
		return &ValidationError{Field: field, Value: p, Reason: "contains a NUL byte"}
	case !utf8.ValidString(p):
		return &ValidationError{Field: field, Value: p, Reason: "is not valid UTF-8"}
	case !path.IsAbs(p):
		return &ValidationError{Field: field, Value: p, Reason: "is not an absolute path"}
	case path.Clean(p) != p:
		return &ValidationError{Field: field, Value: p, Reason: "is not a clean path"}
	}
	return nil
}

func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
