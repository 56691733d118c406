package host

// docker-flags --init: what lets an image that knows nothing of caw run
// under caw-init, as docker run --init does for Docker's own init. caw-init
// is mounted read-only (the host's static caw-init on a Linux host, or a
// named volume filled once from the caw image by caw install-init), becomes
// the entrypoint, and runs the command as the host user's uid:gid. The
// container itself starts as root, so the guard keeps root and caw setup's
// locked mounts stay locked.

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/caw-dev/caw/internal/initbuild"
)

const (
	// InitDir is where caw-init is mounted in the container.
	InitDir = "/.caw"
	// InitPath is the entrypoint docker-flags --init sets.
	InitPath = InitDir + "/caw-init"
	// DefaultInitVolume is the named volume caw install-init fills.
	DefaultInitVolume = "caw-init"
)

// InitOptions are docker-flags --init's settings.
type InitOptions struct {
	// From is a host path of a static caw-init, or a volume name; "" finds
	// one (see FindInit).
	From string
	// User is UID:GID for CAW_USER; "" is the calling user's.
	User string
	// Entrypoint is the image's own entrypoint, run by caw-init with the
	// command as its arguments.
	Entrypoint []string
}

// Init is what --init adds to the mounts.
type Init struct {
	Mount      Mount  // caw-init, read-only
	Volume     bool   // Mount.Source is a volume name
	Env        []Env  // CAW_USER, and CAW_ENTRYPOINT when given
	Entrypoint string // InitPath
}

// Env is one environment variable of the container.
type Env struct{ Name, Value string }

// ResolveInit turns the options into the --init additions. exe is caw's own
// executable (caw-init is looked for beside it); lookPath is exec.LookPath.
func ResolveInit(o InitOptions, exe string, lookPath func(string) (string, error), uid, gid int) (*Init, error) {
	in := &Init{Entrypoint: InitPath}
	src := o.From
	if src == "" {
		src = FindInit(runtime.GOOS, exe, lookPath)
	}
	if strings.ContainsRune(src, '/') {
		abs, err := filepath.Abs(src)
		if err != nil {
			return nil, err
		}
		if err := checkStaticInit(abs); err != nil {
			return nil, err
		}
		in.Mount = Mount{Source: abs, Target: InitPath, ReadOnly: true}
	} else {
		if !validVolume(src) {
			return nil, inputErrorf("From", "%q: want an absolute path of a static caw-init or a volume name (letters, digits, _ . -)", src)
		}
		in.Mount, in.Volume = Mount{Source: src, Target: InitDir, ReadOnly: true}, true
	}
	if len(o.Entrypoint) > 0 && (o.Entrypoint[0] == "" || strings.HasPrefix(o.Entrypoint[0], "[")) {
		return nil, inputErrorf("Entrypoint", "%q: want the program's path first", o.Entrypoint[0])
	}
	user := o.User
	if user == "" {
		user = fmt.Sprintf("%d:%d", uid, gid)
	}
	if err := checkUIDGID(user); err != nil {
		return nil, err
	}
	in.Env = append(in.Env, Env{"CAW_USER", user})
	switch len(o.Entrypoint) {
	case 0:
	case 1:
		in.Env = append(in.Env, Env{"CAW_ENTRYPOINT", o.Entrypoint[0]})
	default:
		b, _ := json.Marshal(o.Entrypoint)
		in.Env = append(in.Env, Env{"CAW_ENTRYPOINT", string(b)})
	}
	return in, nil
}

// FindInit picks caw-init's source on goos: on Linux a caw-init beside the
// caw binary or in PATH (the engine runs on this kernel and can mount it);
// elsewhere, or when none is found, the volume caw install-init fills.
func FindInit(goos, exe string, lookPath func(string) (string, error)) string {
	if goos != "linux" {
		return DefaultInitVolume
	}
	if exe != "" {
		p := filepath.Join(filepath.Dir(exe), "caw-init")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	if p, err := lookPath("caw-init"); err == nil {
		return p
	}
	return DefaultInitVolume
}

// checkStaticInit refuses what cannot run in an arbitrary image: a missing
// file, or a dynamically linked one (it needs the host's loader).
func checkStaticInit(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return withFix(fmt.Errorf("caw-init %s: %w", p, err), "From", "install caw-init beside caw, or run caw install-init and use %s "+DefaultInitVolume)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return withFix(fmt.Errorf("caw-init %s is dynamically linked, so it cannot run in other images", p), "From", "build it with CGO_ENABLED=0 go build -ldflags='"+initbuild.LDFlags+"' ./cmd/caw-init (make does), or run caw install-init and use %s "+DefaultInitVolume)
		}
	}
	return nil
}

// validVolume is Docker's rule for a volume name.
func validVolume(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || i > 0 && strings.ContainsRune("_.-", r)
		if !ok {
			return false
		}
	}
	return true
}

// checkUIDGID: --init's user is numeric, so it needs no entry in the
// image's passwd.
func checkUIDGID(s string) error {
	u, g, ok := strings.Cut(s, ":")
	if _, err := strconv.ParseUint(u, 10, 31); err != nil || !ok {
		return inputErrorf("User", "%q: want numeric UID:GID (the image need not know the user)", s)
	}
	if _, err := strconv.ParseUint(g, 10, 31); err != nil {
		return inputErrorf("User", "%q: want numeric UID:GID (the image need not know the user)", s)
	}
	return nil
}

// RenderInit prints mounts plus the --init additions in one of Formats.
func RenderInit(mounts []Mount, in *Init, format string) (string, error) {
	// Render checks every path for the format.
	base, err := Render(append(append([]Mount{}, mounts...), in.Mount), format)
	if err != nil {
		return "", err
	}
	for _, e := range in.Env {
		if format == FormatShell && strings.ContainsAny(e.Value, shellUnsafe) {
			return "", withFix(fmt.Errorf("%s=%q contains characters an unquoted $(caw docker-flags) would split or glob", e.Name, e.Value), "format", "use %s json")
		}
	}
	switch format {
	case FormatShell:
		var b strings.Builder
		for _, mt := range mounts {
			fmt.Fprintf(&b, "-v %s\n", volumeSpec(mt))
		}
		fmt.Fprintf(&b, "-v %s\n--entrypoint %s\n", volumeSpec(in.Mount), in.Entrypoint)
		for _, e := range in.Env {
			fmt.Fprintf(&b, "-e %s=%s\n", e.Name, e.Value)
		}
		return b.String(), nil
	case FormatJSON:
		argv := []string{}
		for _, mt := range append(append([]Mount{}, mounts...), in.Mount) {
			argv = append(argv, "-v", volumeSpec(mt))
		}
		argv = append(argv, "--entrypoint", in.Entrypoint)
		for _, e := range in.Env {
			argv = append(argv, "-e", e.Name+"="+e.Value)
		}
		return marshalIndent(argv)
	case FormatCompose:
		var b strings.Builder
		fmt.Fprintf(&b, "entrypoint: [%s]\nenvironment:\n", yamlString(in.Entrypoint))
		for _, e := range in.Env {
			fmt.Fprintf(&b, "  %s: %s\n", e.Name, yamlString(e.Value))
		}
		vols, _ := Render(mounts, format)
		b.WriteString(vols)
		typ := "bind"
		if in.Volume {
			typ = "volume"
		}
		fmt.Fprintf(&b, "  - type: %s\n    source: %s\n    target: %s\n    read_only: true\n", typ, yamlString(in.Mount.Source), yamlString(in.Mount.Target))
		if in.Volume {
			fmt.Fprintf(&b, "# and at the top level of the file:\n# volumes:\n#   %s:\n#     external: true\n", in.Mount.Source)
		}
		return b.String(), nil
	case FormatDevcontainer:
		// A dev container keeps an entrypoint only from Docker Compose (for
		// an image, the devcontainer CLI sets its own /bin/sh): these are
		// the devcontainer.json keys, overrideCommand false so the CLI
		// execs the service's entrypoint (see README).
		var dc struct {
			Mounts []string `json:"mounts"`
		}
		if err := json.Unmarshal([]byte(base), &dc); err != nil {
			return "", err
		}
		if in.Volume {
			last := len(dc.Mounts) - 1
			dc.Mounts[last] = strings.Replace(dc.Mounts[last], ",type=bind", ",type=volume", 1)
		}
		env := map[string]string{}
		for _, e := range in.Env {
			env[e.Name] = e.Value
		}
		return marshalIndent(struct {
			OverrideCommand bool              `json:"overrideCommand"`
			Mounts          []string          `json:"mounts"`
			ContainerEnv    map[string]string `json:"containerEnv"`
		}{false, dc.Mounts, env})
	}
	return "", inputErrorf("", "unknown format %q (want one of %s)", format, strings.Join(Formats, ", "))
}

// InstallInit copies the caw-init beside exe into dir (a volume mounted in
// the caw image), replacing any older one atomically. caw install-init runs
// it inside the caw image.
func InstallInit(exe, dir string) error {
	src := filepath.Join(filepath.Dir(exe), "caw-init")
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install caw-init: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".caw-init.tmp.")
	if err != nil {
		return fmt.Errorf("install caw-init: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("install caw-init: %w", err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return fmt.Errorf("install caw-init: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("install caw-init: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("install caw-init: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, "caw-init")); err != nil {
		return fmt.Errorf("install caw-init: %w", err)
	}
	return nil
}
