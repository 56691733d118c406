package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/caw-dev/caw/internal/initbuild"
)

// Users and groups of the test image. playground is in two supplementary
// groups so a test can see that the privilege drop sets them.
const (
	TestUser    = "playground"
	TestUID     = 1000
	TestGID     = 1000
	TestHome    = "/home/playground"
	TestGroups  = "agents(2001),tools(2002)"
	testPasswd  = "root:x:0:0:root:/root:/bin/sh\nplayground:x:1000:1000:playground:/home/playground:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
	testGroup   = "root:x:0:\nplayground:x:1000:\nagents:x:2001:playground\ntools:x:2002:other,playground\nnogroup:x:65534:\n"
	busyboxPath = "/bin/busybox"
)

// Binary builds the main package pkg (for example ./cmd/caw) of the module
// as a static binary, as the root Dockerfile does, and returns its path.
// Go's build cache makes a repeat cheap.
func (b *Builder) Binary(ctx context.Context, pkg string) (string, error) {
	sum := sha256.Sum256([]byte(b.Root))
	dir := filepath.Join(os.TempDir(), "caw-e2e-bin-"+hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create binary dir: %w", err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	tmp, err := os.CreateTemp(dir, filepath.Base(pkg)+".tmp.")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	ldflags := "-s -w"
	if pkg == "./cmd/caw-init" {
		ldflags = initbuild.LDFlags
	}
	if _, err := run(ctx, 5*time.Minute, nil, []string{"CGO_ENABLED=0"}, "go", "-C", b.Root, "build",
		"-trimpath", "-ldflags="+ldflags, "-o", tmp.Name(), pkg); err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", fmt.Errorf("install %s: %w", out, err)
	}
	return out, nil
}

// TestImage builds the FROM-scratch test image (caw-init, busybox with its
// applets, the playground user, the fake agent) and returns its
// content-keyed tag; it is also tagged caw-test:latest.
func (b *Builder) TestImage(ctx context.Context) (string, error) {
	initBin, err := b.Binary(ctx, "./cmd/caw-init")
	if err != nil {
		return "", err
	}
	agentBin, err := b.Binary(ctx, "./cmd/fake-agent")
	if err != nil {
		return "", err
	}
	files := []imgFile{
		{name: "bin/", mode: 0o755},
		{name: "etc/", mode: 0o755},
		{name: "home/", mode: 0o755},
		{name: "home/playground/", mode: 0o755, uid: TestUID, gid: TestGID},
		{name: "root/", mode: 0o700},
		{name: "tmp/", mode: 0o1777},
		{name: "usr/", mode: 0o755},
		{name: "usr/local/", mode: 0o755},
		{name: "usr/local/bin/", mode: 0o755},
		{name: "etc/passwd", mode: 0o644, data: []byte(testPasswd)},
		{name: "etc/group", mode: 0o644, data: []byte(testGroup)},
		{name: "bin/busybox", mode: 0o755, src: busyboxPath},
		{name: "usr/local/bin/caw-init", mode: 0o755, src: initBin},
		{name: "usr/local/bin/fake-agent", mode: 0o755, src: agentBin},
	}
	files, err = withApplets(ctx, files)
	if err != nil {
		return "", err
	}
	tag, err := b.importImage(ctx, Test, files,
		"ENV PATH=/usr/local/bin:/bin",
		`ENTRYPOINT ["/usr/local/bin/caw-init","--"]`,
		`CMD ["sh"]`)
	if err != nil {
		return "", err
	}
	if _, err := run(ctx, time.Minute, nil, nil, "docker", "tag", tag, Test+":latest"); err != nil {
		return "", err
	}
	return tag, nil
}

// BusyboxImage builds a FROM-scratch image of Debian's static busybox and
// its applets, and nothing else: no caw-init, no /etc, no user, no home
// (the stock image of docker-flags --init's tests). It returns its
// content-keyed tag.
func (b *Builder) BusyboxImage(ctx context.Context) (string, error) {
	files, err := withApplets(ctx, []imgFile{
		{name: "bin/", mode: 0o755},
		{name: "tmp/", mode: 0o1777},
		{name: "bin/busybox", mode: 0o755, src: busyboxPath},
	})
	if err != nil {
		return "", err
	}
	return b.importImage(ctx, Busybox, files, "ENV PATH=/usr/local/bin:/bin", `CMD ["sh"]`)
}

// withApplets adds a bin/NAME link to busybox for each of its applets.
func withApplets(ctx context.Context, files []imgFile) ([]imgFile, error) {
	applets, err := run(ctx, time.Minute, nil, nil, busyboxPath, "--list")
	if err != nil {
		return nil, fmt.Errorf("list busybox applets (apt-get install busybox-static): %w", err)
	}
	names := strings.Fields(string(applets))
	sort.Strings(names)
	for _, a := range names {
		if a != "busybox" && !strings.Contains(a, "/") {
			files = append(files, imgFile{name: "bin/" + a, link: "busybox"})
		}
	}
	return files, nil
}

// importImage makes a FROM-scratch image of files with the given Dockerfile
// changes, tagged repo:<hash of files and changes>, unless that tag exists,
// and prunes the repo's older tags. It returns the tag.
func (b *Builder) importImage(ctx context.Context, repo string, files []imgFile, changes ...string) (string, error) {
	h := sha256.New()
	for i := range files {
		f := &files[i]
		if f.src != "" {
			var err error
			if f.data, err = os.ReadFile(f.src); err != nil {
				return "", fmt.Errorf("read %s image file: %w", repo, err)
			}
		}
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00%d\x00%s\x00%d\x00", f.name, f.mode, f.uid, f.gid, f.link, len(f.data))
		h.Write(f.data)
	}
	for _, c := range changes {
		fmt.Fprintf(h, "%s\x00", c)
	}
	tag := repo + ":" + hex.EncodeToString(h.Sum(nil))[:16]

	unlock, err := b.lock()
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, ok := label(ctx, tag); ok {
		return tag, nil
	}
	b.logf("docker import %s", tag)
	var buf bytes.Buffer
	if err := writeRootfs(&buf, files); err != nil {
		return "", err
	}
	args := []string{"import"}
	for _, c := range append(changes, "LABEL "+keyLabel+"="+strings.TrimPrefix(tag, repo+":")) {
		args = append(args, "--change", c)
	}
	if _, err := run(ctx, 3*time.Minute, &buf, nil, "docker", append(args, "-", tag)...); err != nil {
		return "", err
	}
	pruneTags(ctx, repo, tag)
	return tag, nil
}

// pruneTags removes the other content-keyed tags of repo that a changed
// source tree left behind more than a day ago (a younger one may be in use
// by a test run of another tree); one still used by a container stays.
func pruneTags(ctx context.Context, repo, keep string) {
	out, err := run(ctx, time.Minute, nil, nil, "docker", "images", repo, "--format", "{{.Repository}}:{{.Tag}}\t{{.CreatedAt}}")
	if err != nil {
		return
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		tag, created, ok := strings.Cut(line, "\t")
		if !ok || tag == keep || tag == repo+":latest" || strings.HasSuffix(tag, ":<none>") {
			continue
		}
		at, err := time.Parse("2006-01-02 15:04:05 -0700 MST", created)
		if err != nil || time.Since(at) < 24*time.Hour {
			continue
		}
		_, _ = run(ctx, time.Minute, nil, nil, "docker", "rmi", tag)
	}
}

type imgFile struct {
	name     string
	mode     int64
	uid, gid int
	data     []byte
	src      string
	link     string
}

func writeRootfs(w io.Writer, files []imgFile) error {
	tw := tar.NewWriter(w)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.gid, ModTime: time.Unix(0, 0)}
		switch {
		case f.link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.link, 0o777
		case strings.HasSuffix(f.name, "/"):
			hdr.Typeflag = tar.TypeDir
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write test image tar: %w", err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.data); err != nil {
				return fmt.Errorf("write test image tar: %w", err)
			}
		}
	}
	return tw.Close()
}
