//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
//go:debug decoratemappings=0

// Command caw-init is the container's PID 1: it runs COMMAND as the target
// user, reaps orphans, forwards signals, ends leftovers at exit, and keeps
// the agents' credentials in sync with the host (the guard) as root while
// the command runs unprivileged.
//
// The order matters for start-up cost: nothing that can wait runs before the
// child is spawned, and capturing signals runs before anything else.
//
// The go:debug lines below keep the runtime from reading cgroup files at
// start-up and re-checking them periodically (caw-init needs no CPU quota
// tuning, and an idle PID 1 should not wake up), and from naming its
// mappings with one failing prctl each.
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/caw-dev/caw/init/pid1"
	"github.com/caw-dev/caw/init/userspec"
	"github.com/caw-dev/caw/internal/safefs"
	"github.com/caw-dev/caw/manifest"
	"github.com/caw-dev/caw/sync/guard"
)

// flushTimeout bounds the final credential sync, so docker stop stays well
// inside Docker's 10 s even if the host side is slow.
const flushTimeout = 5 * time.Second

func main() {
	os.Exit(run())
}

func run() int {
	sigs := pid1.Capture()
	isPID1, subErr := pid1.SetSubreaper()

	o, code := parseOptions(os.Args[1:], os.Getenv)
	if code >= 0 {
		return code
	}
	logf := newLogger(o.verbosity)
	fail := func(code int, format string, args ...any) int {
		// A terminating signal that came while starting ends caw-init as
		// it would have ended the child.
		if sig, ok := sigs.PendingTermination(); ok {
			logf(1, "exiting with %d: signal %d received during start-up", 128+int(sig), int(sig))
			return 128 + int(sig)
		}
		logf(0, format, args...)
		return code
	}
	if !isPID1 {
		if subErr != nil {
			logf(0, "not PID 1 and cannot become a child subreaper (%v): orphans of COMMAND will not be reaped", subErr)
		} else {
			logf(1, "not PID 1: registered as child subreaper")
		}
	}

	var m *manifest.Manifest
	var auth *os.File
	if !o.noSync {
		var err error
		m, auth, err = readManifest(o.authDir)
		var untrusted *safefs.UntrustedError
		switch {
		case errors.Is(err, fs.ErrNotExist):
			logf(1, "no %s in %s: plain init, no credential sync", manifest.FileName, o.authDir)
		case errors.As(err, &untrusted):
			logf(0, "%s", untrustedLine(err))
		case errors.Is(err, safefs.ErrNoOpenat2):
			logf(0, "%v: cannot check the staging dir, so no credential sync", err)
		case err != nil:
			return fail(2, "%v", err)
		}
	}

	spec := o.user
	if spec == "" && m != nil {
		spec = m.User
	}
	fallbackHome := ""
	if m != nil {
		fallbackHome = m.ContainerHome
	}
	t, err := resolveTarget(spec, fallbackHome, logf)
	if err != nil {
		return fail(2, "%v", err)
	}

	var g *guard.Guard
	if m != nil {
		g, err = guard.Start(context.Background(), guard.Config{
			AuthDir: o.authDir, Auth: auth, Manifest: m, Home: t.home, UID: t.uid, GID: t.gid, Groups: t.groups, Logf: logf, Poll: o.poll,
			WriteEvery: o.writeEvery,
		})
		switch {
		case err != nil:
			// The guard could not run at all (for instance the inotify
			// instance limit, shared by every container's root, is used
			// up). The command still runs: a container that refuses to
			// start over its credential sync helps nobody.
			logf(0, "credential guard: %v: running without credential sync (raise fs.inotify.max_user_instances if it is the limit)", err)
			g = nil
		default:
			defer g.Close()
		}
	}

	sup, err := pid1.Start(pid1.Config{
		Argv: o.argv, Env: t.env, Credential: t.cred,
		PGroup: o.pgroup, Grace: o.grace, PID1: isPID1, Logf: logf,
	}, sigs)
	if err != nil {
		code := 2
		var se *pid1.StartError
		if errors.As(err, &se) {
			code = se.Code
		}
		return fail(code, "%v", err)
	}
	ws := sup.Wait()
	sup.Shutdown()
	if g != nil {
		ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
		err := g.Flush(ctx)
		cancel()
		if err != nil {
			logf(0, "final credential sync: %v", err)
		}
	}
	return pid1.ExitCode(ws)
}

// target is who the child runs as and who owns what the guard writes.
type target struct {
	uid, gid int
	groups   []int // supplementary groups (the guard acts in the home with them)
	home     string
	env      []string
	cred     *syscall.Credential // nil: the child keeps caw-init's identity
}

// resolveTarget resolves the user spec; only root can switch users, so
// without root the child runs as caw-init does and that is said once. A
// uid the image does not know (no passwd entry, or home "/") gets
// fallbackHome (the manifest's container home), created if need be.
func resolveTarget(spec, fallbackHome string, logf func(int, string, ...any)) (*target, error) {
	euid, egid := os.Geteuid(), os.Getegid()
	t := &target{uid: euid, gid: egid, home: os.Getenv("HOME"), env: os.Environ()}
	if t.home == "" {
		t.home = "/"
	}
	if spec == "" {
		return t, nil
	}
	id, err := userspec.Resolve(spec, userspec.PasswdPath, userspec.GroupPath, egid)
	if err != nil {
		return nil, err
	}
	if euid != 0 {
		if id.UID != euid || id.GID != egid {
			logf(0, "running as uid %d, not root: cannot switch to user %q (uid %d gid %d); running the command as uid %d gid %d",
				euid, spec, id.UID, id.GID, euid, egid)
			return t, nil
		}
		t.home, t.env = id.Home, id.Env(t.env)
		return t, nil
	}
	if home, create := userspec.HomeFor(id, fallbackHome, isDir); home != id.Home {
		if create {
			if err := userspec.MakeHome(home, id.UID, id.GID); err != nil {
				return nil, fmt.Errorf("user %q has no home in the image: %w", spec, err)
			}
			logf(1, "user %q has no home in the image: created %s", spec, home)
		}
		id.Home = home
	}
	logf(1, "user %q: uid %d gid %d groups %v home %s", spec, id.UID, id.GID, id.Groups, id.Home)
	t.uid, t.gid, t.home, t.groups = id.UID, id.GID, id.Home, id.Groups
	t.env, t.cred = id.Env(t.env), id.Credential()
	return t, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// newLogger prints "caw-init: ..." lines on stderr up to the verbosity.
func newLogger(verbosity int) func(int, string, ...any) {
	return func(level int, format string, args ...any) {
		if level > verbosity {
			return
		}
		// One write per line, so lines from the guard's goroutines and
		// from the child do not interleave inside a line.
		os.Stderr.WriteString("caw-init: " + fmt.Sprintf(format, args...) + "\n")
	}
}
