// Package images makes every Docker image caw's end-to-end tests and demo
// use, on a machine with no registry: nothing is pulled, everything is built
// from this machine's own parts. It is the one place that knows how:
//
//   - debian:bookworm-slim: a debootstrap minbase root imported with
//     `docker import` (the root is cached as a tar under the cache dir);
//   - golang:1.26-bookworm: that Debian image plus this machine's Go toolchain
//     and CA bundle (the build stage of the root Dockerfile names it);
//   - caw:latest: the root Dockerfile (the image users COPY caw-init from);
//   - caw-example:KEY: Dockerfile.example exactly as a user would build it;
//   - caw-test:KEY: a FROM-scratch image of caw-init, Debian's static
//     busybox, a playground user and the fake agent, for the fast cases;
//   - caw-busybox:KEY: a FROM-scratch image of the static busybox alone (an
//     image that knows nothing of caw, for docker-flags --init).
//
// Each image is made only when missing or stale: images caw builds carry a
// label with a hash of their inputs, and a changed input rebuilds. Builds of
// several test processes are serialised by a lock file in the cache dir, and
// every external command runs under a timeout so a hang fails.
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Image names. The base names are the ones the Dockerfiles name, so they
// must not change without changing those files.
const (
	Debian  = "debian:bookworm-slim"
	Golang  = "golang:1.26-bookworm"
	Caw     = "caw:latest"
	Example = "caw-example"
	Test    = "caw-test"
	Busybox = "caw-busybox"
)

// keyLabel holds the hash of an image's inputs on images caw builds.
const keyLabel = "dev.caw.e2e.key"

// Builder makes images. The zero value is not usable: use New.
type Builder struct {
	// Root is the caw module root (the Docker build context).
	Root string
	// Cache holds the debootstrap root tar and built binaries.
	Cache string
	// Log receives one line per step (progress for a first, slow run).
	Log io.Writer
	// Mirror is the Debian mirror debootstrap uses.
	Mirror string
}

// New returns a Builder for the module at root, caching under
// $CAW_E2E_CACHE (default /var/cache/caw-e2e).
func New(root string, log io.Writer) *Builder {
	cache := os.Getenv("CAW_E2E_CACHE")
	if cache == "" {
		cache = "/var/cache/caw-e2e"
	}
	if log == nil {
		log = io.Discard
	}
	return &Builder{Root: root, Cache: cache, Log: log, Mirror: "http://deb.debian.org/debian"}
}

// ModuleRoot finds the caw module root from the working directory, for
// programs (the demo) that are not tests.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the caw module: run from the caw source tree")
	}
	return filepath.Dir(mod), nil
}

func (b *Builder) logf(format string, args ...any) {
	fmt.Fprintf(b.Log, "images: "+format+"\n", args...)
}

// lock serialises image work across processes (go test runs packages in
// parallel, and the demo may run beside the tests).
func (b *Builder) lock() (func(), error) {
	if err := os.MkdirAll(b.Cache, 0o755); err != nil {
		return nil, fmt.Errorf("create cache dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(b.Cache, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open cache lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock cache: %w", err)
	}
	return func() { f.Close() }, nil
}

// run runs a command under ctx with a timeout, feeding stdin, and returns its
// combined output; a failure's error carries the output's tail.
func run(ctx context.Context, timeout time.Duration, stdin io.Reader, env []string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = stdin
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return out.Bytes(), fmt.Errorf("%s %s: timed out after %s\n%s", name, strings.Join(args, " "), timeout, tail(out.Bytes()))
	}
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, tail(out.Bytes()))
	}
	return out.Bytes(), nil
}

func tail(b []byte) string {
	const n = 4000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// label returns an image's key label, whether the image exists at all.
func label(ctx context.Context, image string) (key string, exists bool) {
	out, err := run(ctx, time.Minute, nil, nil, "docker", "image", "inspect", "--format",
		`{{index .Config.Labels "`+keyLabel+`"}}`, image)
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(out)), true
}

// hashFiles hashes the named files' paths (relative to base) and contents.
func hashFiles(base string, files []string) (string, error) {
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(base, f))
		if err != nil {
			return "", fmt.Errorf("hash input: %w", err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// DebianImage makes debian:bookworm-slim from a debootstrap minbase root
// unless an image of that name exists (ours or a real one).
func (b *Builder) DebianImage(ctx context.Context) (string, error) {
	unlock, err := b.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	return b.debian(ctx)
}

func (b *Builder) debian(ctx context.Context) (string, error) {
	if _, ok := label(ctx, Debian); ok {
		return Debian, nil
	}
	rootTar := filepath.Join(b.Cache, "bookworm-minbase.tar")
	if _, err := os.Stat(rootTar); err != nil {
		if err := b.debootstrap(ctx, rootTar); err != nil {
			return "", err
		}
	}
	b.logf("docker import %s as %s", rootTar, Debian)
	f, err := os.Open(rootTar)
	if err != nil {
		return "", fmt.Errorf("open debootstrap root: %w", err)
	}
	defer f.Close()
	if _, err := run(ctx, 3*time.Minute, f, nil, "docker", "import",
		"--change", `CMD ["bash"]`, "--change", "LABEL "+keyLabel+"=debootstrap-minbase-bookworm",
		"-", Debian); err != nil {
		return "", err
	}
	return Debian, nil
}

// debootstrap builds a minbase bookworm root and stores it as a tar.
func (b *Builder) debootstrap(ctx context.Context, rootTar string) error {
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return errors.New("debootstrap not found: apt-get install debootstrap")
	}
	dir, err := os.MkdirTemp(b.Cache, "bookworm-root-")
	if err != nil {
		return fmt.Errorf("create debootstrap dir: %w", err)
	}
	defer os.RemoveAll(dir)
	b.logf("debootstrap --variant=minbase bookworm (first run only, about a minute)")
	start := time.Now()
	if _, err := run(ctx, 10*time.Minute, nil, nil, "debootstrap", "--variant=minbase", "bookworm", dir, b.Mirror); err != nil {
		return err
	}
	// What debian:*-slim drops: downloaded packages and apt lists.
	for _, g := range []string{"var/cache/apt/archives/*.deb", "var/lib/apt/lists/*"} {
		m, _ := filepath.Glob(filepath.Join(dir, g))
		for _, p := range m {
			os.RemoveAll(p)
		}
	}
	tmp := rootTar + ".tmp"
	if _, err := run(ctx, 5*time.Minute, nil, nil, "tar", "--numeric-owner", "-C", dir, "-cf", tmp, "."); err != nil {
		return err
	}
	if err := os.Rename(tmp, rootTar); err != nil {
		return fmt.Errorf("store debootstrap root: %w", err)
	}
	b.logf("debootstrap done in %s", time.Since(start).Round(time.Second))
	return nil
}

// GolangImage makes golang:1.26-bookworm: Debian plus this machine's Go
// toolchain (GOROOT) and CA bundle, so that builds reach the module proxy.
func (b *Builder) GolangImage(ctx context.Context) (string, error) {
	unlock, err := b.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	return b.golang(ctx)
}

func (b *Builder) golang(ctx context.Context) (string, error) {
	goroot := runtime.GOROOT()
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		goroot = strings.TrimSpace(string(out))
	}
	ver, err := os.ReadFile(filepath.Join(goroot, "VERSION"))
	if err != nil {
		return "", fmt.Errorf("read Go toolchain version: %w", err)
	}
	key := "go-" + strings.TrimSpace(strings.SplitN(string(ver), "\n", 2)[0])
	if got, ok := label(ctx, Golang); ok && (got == key || got == "") {
		return Golang, nil
	}
	if _, err := b.debian(ctx); err != nil {
		return "", err
	}
	b.logf("docker build %s from %s and %s", Golang, Debian, goroot)
	dockerfile := `FROM ` + Debian + `
COPY go /usr/local/go
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV GOPATH=/go GOTOOLCHAIN=local PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL ` + keyLabel + `=` + key + `
WORKDIR /go
`
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		return "", fmt.Errorf("read the CA bundle (apt-get install ca-certificates): %w", err)
	}
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeContext(pw, dockerfile, ca, goroot))
	}()
	_, err = run(ctx, 10*time.Minute, pr, []string{"DOCKER_BUILDKIT=0"}, "docker", "build", "-q", "-t", Golang, "-")
	pr.Close()
	if err != nil {
		return "", err
	}
	return Golang, nil
}

// writeContext streams a build context: Dockerfile, the CA bundle and GOROOT
// as go/.
func writeContext(w io.Writer, dockerfile string, ca []byte, goroot string) error {
	tw := tar.NewWriter(w)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("Dockerfile", []byte(dockerfile)); err != nil {
		return err
	}
	if err := add("ca-certificates.crt", ca); err != nil {
		return err
	}
	err := filepath.WalkDir(goroot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(goroot, p)
		if d.IsDir() && (rel == "test" || rel == "api") {
			return filepath.SkipDir // the toolchain's own tests: not needed to build
		}
		name := filepath.ToSlash(filepath.Join("go", rel))
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name = name
		if d.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("stream GOROOT: %w", err)
	}
	return tw.Close()
}

// cawInputs lists the files the root Dockerfile's build reads: its own
// files and the Go and assembly sources of every package of this module
// that caw or caw-init links.
func (b *Builder) cawInputs(ctx context.Context) ([]string, error) {
	out, err := run(ctx, 2*time.Minute, nil, nil, "go", "-C", b.Root, "list", "-deps",
		"-f", `{{if not .Standard}}{{.Dir}}{{range .GoFiles}} {{.}}{{end}}{{range .SFiles}} {{.}}{{end}}{{range .EmbedFiles}} {{.}}{{end}}{{end}}`,
		"./cmd/caw", "./cmd/caw-init")
	if err != nil {
		return nil, err
	}
	files := []string{"Dockerfile", ".dockerignore", "go.mod", "go.sum"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		rel, err := filepath.Rel(b.Root, f[0])
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a dependency outside the module: pinned by go.sum
		}
		for _, g := range f[1:] {
			files = append(files, filepath.Join(rel, g))
		}
	}
	return files, nil
}

// CawImage builds caw:latest from the root Dockerfile (after the base
// images) when its inputs changed.
func (b *Builder) CawImage(ctx context.Context) (string, error) {
	unlock, err := b.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	return b.caw(ctx)
}

func (b *Builder) caw(ctx context.Context) (string, error) {
	files, err := b.cawInputs(ctx)
	if err != nil {
		return "", err
	}
	key, err := hashFiles(b.Root, files)
	if err != nil {
		return "", err
	}
	if got, _ := label(ctx, Caw); got == key {
		return Caw, nil
	}
	if _, err := b.golang(ctx); err != nil {
		return "", err
	}
	b.logf("docker build -t %s %s (inputs %s)", Caw, b.Root, key)
	start := time.Now()
	if _, err := run(ctx, 10*time.Minute, nil, []string{"DOCKER_BUILDKIT=0"}, "docker", "build", "-q",
		"--label", keyLabel+"="+key, "-t", Caw, b.Root); err != nil {
		return "", err
	}
	b.logf("built %s in %s", Caw, time.Since(start).Round(time.Second))
	return Caw, nil
}

// ExampleImage builds Dockerfile.example as written (after caw:latest) and
// returns its content-keyed tag.
func (b *Builder) ExampleImage(ctx context.Context) (string, error) {
	unlock, err := b.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := b.caw(ctx); err != nil {
		return "", err
	}
	if _, err := b.debian(ctx); err != nil {
		return "", err
	}
	cawID, err := run(ctx, time.Minute, nil, nil, "docker", "image", "inspect", "--format", "{{.Id}}", Caw)
	if err != nil {
		return "", err
	}
	df, err := os.ReadFile(filepath.Join(b.Root, "Dockerfile.example"))
	if err != nil {
		return "", fmt.Errorf("read Dockerfile.example: %w", err)
	}
	sum := sha256.Sum256(append(append(df, 0), bytes.TrimSpace(cawID)...))
	tag := Example + ":" + hex.EncodeToString(sum[:])[:16]
	if _, ok := label(ctx, tag); ok {
		return tag, nil
	}
	b.logf("docker build -f Dockerfile.example -t %s", tag)
	// An empty context: the example must need nothing from caw's tree.
	ctxDir, err := os.MkdirTemp("", "caw-example-ctx-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(ctxDir)
	if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile"), df, 0o644); err != nil {
		return "", err
	}
	if _, err := run(ctx, 10*time.Minute, nil, []string{"DOCKER_BUILDKIT=0"}, "docker", "build", "-q", "-t", tag, ctxDir); err != nil {
		return "", err
	}
	pruneTags(ctx, Example, tag)
	return tag, nil
}
