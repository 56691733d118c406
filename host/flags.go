package host

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/caw-dev/caw/manifest"
)

// Mount is one bind mount a container needs.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only"`
}

// Output formats of docker-flags.
const (
	FormatShell        = "shell"
	FormatJSON         = "json"
	FormatCompose      = "compose"
	FormatDevcontainer = "devcontainer"
)

// Formats lists the output formats Render knows.
var Formats = []string{FormatShell, FormatJSON, FormatCompose, FormatDevcontainer}

// DockerFlags gives the mounts for the staging dir authDir: the staging dir
// itself read-only at the manifest's mount point, then every credential
// read-write at its place under it (the file for bind, its directory for
// bind-dir). A host credential that no longer exists is an error: Docker
// would create a directory in its place.
func DockerFlags(authDir string) ([]Mount, error) {
	authDir, err := absClean(authDir)
	if err != nil {
		return nil, err
	}
	m, err := readManifest(authDir)
	if err != nil {
		return nil, err
	}
	mp := m.MountPoint
	if mp == "" {
		mp = manifest.DefaultMountPoint
	}
	out := []Mount{{Source: authDir, Target: mp, ReadOnly: true}}
	for _, e := range m.Entries() {
		if !e.Synced() {
			continue
		}
		if e.HostOriginal == "" {
			return nil, fmt.Errorf("%s: the manifest has no host_original (re-run caw setup)", e.Field("host_original"))
		}
		src := filepath.FromSlash(e.HostMountSource(m.HostHome))
		wantDir := e.Strategy == manifest.StrategyBindDir
		if err := checkMountSource(src, wantDir, e.Agent); err != nil {
			return nil, err
		}
		// The placeholder must exist: a read-only staging mount gives Docker
		// no way to create it.
		if err := checkMountTarget(authDir, e.Agent, e.MountSrc(), wantDir); err != nil {
			return nil, err
		}
		out = append(out, Mount{Source: src, Target: path.Join(mp, e.MountSrc())})
	}
	return out, nil
}

func checkMountSource(src string, wantDir bool, agent string) error {
	fi, err := os.Stat(src)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: the host credential %s no longer exists; Docker would create a directory in its place (log in to %s on the host, then re-run caw setup)", agent, src, agent)
	}
	if err != nil {
		return fmt.Errorf("%s: host credential: %w", agent, err)
	}
	switch {
	case wantDir && !fi.IsDir():
		return fmt.Errorf("%s: %s is not a directory, but strategy bind-dir mounts it as one (re-run caw setup)", agent, src)
	case !wantDir && !fi.Mode().IsRegular():
		return fmt.Errorf("%s: the host credential %s is %s, not a regular file (log in to %s again on the host)", agent, src, describeType(fi.Mode()), agent)
	}
	return nil
}

// shellUnsafe are the characters that do not survive the word splitting and
// globbing of an unquoted $(caw docker-flags).
const shellUnsafe = " \t\n\r*?[]'\"$\\`"

// Render prints mounts in one of Formats. Every format refuses paths that
// its syntax cannot carry (a ':' for Docker's -v, a ',' for a devcontainer
// mount string); shell also refuses anything word splitting or globbing
// would change, and names --format json instead.
func Render(mounts []Mount, format string) (string, error) {
	for _, mt := range mounts {
		for _, p := range []string{mt.Source, mt.Target} {
			if strings.ContainsRune(p, 0) {
				return "", fmt.Errorf("path %q contains a NUL byte", p)
			}
			if format != FormatCompose && strings.Contains(p, ":") {
				return "", withFix(fmt.Errorf("path %q contains ':', which a docker -v or mount spec cannot carry", p), "format", "use %s compose, or move the file")
			}
			if format == FormatDevcontainer && strings.Contains(p, ",") {
				return "", withFix(fmt.Errorf("path %q contains ',', which a devcontainer mount string cannot carry", p), "format", "use %s json or compose")
			}
			if format == FormatShell {
				if i := strings.IndexAny(p, shellUnsafe); i >= 0 {
					return "", withFix(fmt.Errorf("path %q contains %q, which an unquoted $(caw docker-flags) would split or glob", p, p[i:i+1]), "format", "use %s json, an argv array, instead")
				}
			}
		}
	}
	switch format {
	case FormatShell:
		var b strings.Builder
		for _, mt := range mounts {
			fmt.Fprintf(&b, "-v %s\n", volumeSpec(mt))
		}
		return b.String(), nil
	case FormatJSON:
		argv := []string{}
		for _, mt := range mounts {
			argv = append(argv, "-v", volumeSpec(mt))
		}
		return marshalIndent(argv)
	case FormatCompose:
		var b strings.Builder
		b.WriteString("volumes:\n")
		for _, mt := range mounts {
			fmt.Fprintf(&b, "  - type: bind\n    source: %s\n    target: %s\n    read_only: %t\n",
				yamlString(mt.Source), yamlString(mt.Target), mt.ReadOnly)
		}
		return b.String(), nil
	case FormatDevcontainer:
		list := []string{}
		for _, mt := range mounts {
			s := "source=" + mt.Source + ",target=" + mt.Target + ",type=bind"
			if mt.ReadOnly {
				s += ",readonly"
			}
			list = append(list, s)
		}
		return marshalIndent(map[string][]string{"mounts": list})
	}
	return "", inputErrorf("", "unknown format %q (want one of %s)", format, strings.Join(Formats, ", "))
}

func volumeSpec(mt Mount) string {
	mode := "rw"
	if mt.ReadOnly {
		mode = "ro"
	}
	return mt.Source + ":" + mt.Target + ":" + mode
}

// yamlString quotes s as a YAML double-quoted scalar; JSON's escapes are a
// subset of YAML's.
func yamlString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func marshalIndent(v any) (string, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return buf.String(), nil
}
