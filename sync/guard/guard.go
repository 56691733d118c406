// Package guard is the credential guard that runs inside caw-init as root.
//
// For every manifest entry it copies the file into the container user's home
// before the child starts; for synced credentials (bind, bind-dir) it then
// keeps the home copy and the host's file in sync in both directions,
// reacting to inotify events within milliseconds, until the final Flush.
//
// Every decision is taken by agents.Classify and agents.Compare, the same
// functions `caw status` uses: only usable (valid or expired) content ever
// crosses, the fresher credential wins, a side that goes back to an older
// token gets the fresher one written back. The guard compares content, never
// timestamps, so it never reacts to its own writes.
//
// Files: home.go is the only code touching the user's home, and holds the
// descriptor-checked *at primitives (read it to trust the guard against a
// hostile user; a bind-dir host directory, which the user may be able to
// write too, uses the same ones); host.go writes the host side crash-safe;
// inotify.go is the event source; cred.go the sync rules; lockmirror.go
// mirrors Claude Code's refresh lock directory between home and host.
package guard

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"sync"

	"github.com/caw-dev/caw/manifest"
	"golang.org/x/sys/unix"
)

// Logf prints one line on caw-init's stderr when level <= the verbosity:
// level 0 is always shown (problems the user must act on), 1 is -v, 2 is -vv.
type Logf func(level int, format string, args ...any)

// Config is what caw-init hands the guard.
type Config struct {
	AuthDir  string             // where the staging dir is mounted (/tmp/caw_auth)
	Manifest *manifest.Manifest // validated
	Home     string             // the target user's home in the container
	UID, GID int                // the target user's ids (owner of what the guard writes in Home)
	Logf     Logf
}

// Guard keeps home copies and host credentials in sync.
type Guard struct {
	cfg   Config
	home  *homeFS
	creds []*cred
	in    *inotify
	done  chan struct{}
	locks []*lockMirror // Claude Code's refresh locks, mirrored (lockmirror.go)

	stopOnce  sync.Once
	closeOnce sync.Once
}

func (g *Guard) logf(level int, format string, args ...any) {
	if g.cfg.Logf != nil {
		g.cfg.Logf(level, format, args...)
	}
}

// Start copies every manifest entry into the home (before the child starts)
// and starts watching; it returns once the copy-in is done. Problems with one
// credential are logged and skip that credential; an error means the guard
// could not run at all.
func Start(ctx context.Context, cfg Config) (*Guard, error) {
	g := &Guard{cfg: cfg}
	if cfg.Manifest == nil || len(cfg.Manifest.Entries()) == 0 {
		return g, nil
	}
	if cfg.Home == "" || cfg.Home == "/" {
		g.logf(0, "the user (uid %d) has no home directory: agent credentials are not copied or synced (give the user a home)", cfg.UID)
		return g, nil
	}
	h, err := openHome(cfg.Home, cfg.UID, cfg.GID)
	if err != nil {
		g.logf(0, "%v: agent credentials are not copied or synced", err)
		return g, nil
	}
	g.home = h
	in, err := newInotify()
	if err != nil {
		h.close()
		return nil, err
	}
	g.in = in
	for _, e := range cfg.Manifest.Entries() {
		if err := ctx.Err(); err != nil {
			g.Close()
			return nil, err
		}
		if e.Synced() {
			if c := g.setup(e); c != nil {
				g.creds = append(g.creds, c)
			}
		} else {
			g.copyFile(e)
		}
	}
	g.done = make(chan struct{})
	go func() {
		defer close(g.done)
		in.run(g.handle, g.overflow)
	}()
	return g, nil
}

// copyFile copies a copy-strategy file from the staging dir into the home,
// with its manifest mode, owned by the user.
func (g *Guard) copyFile(e manifest.Entry) {
	src := path.Join(g.cfg.AuthDir, e.Src)
	d, err := os.OpenFile(path.Dir(src), os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		g.logf(0, "%s %s: not copied: %v", e.Agent, e.ContainerTarget, err)
		return
	}
	data, err := readAt(int(d.Fd()), path.Base(src), src, -1)
	d.Close()
	if err != nil {
		g.logf(0, "%s %s: not copied: cannot read %s: %v (run caw setup again)", e.Agent, e.ContainerTarget, src, err)
		return
	}
	if err := g.home.mkdirParents(e.ContainerTarget); err != nil {
		g.logf(0, "%s %s: not copied: %v", e.Agent, e.ContainerTarget, err)
		return
	}
	g.home.removeStaleTemps(e.ContainerTarget)
	if _, err := g.home.replace(e.ContainerTarget, data, e.Perm(), nil, nil); err != nil {
		g.logf(0, "%s %s: not copied: %v", e.Agent, e.ContainerTarget, err)
		return
	}
	g.logf(1, "copied %s", e.ContainerTarget)
}

// setup checks a synced credential's mount, watches both sides, and does
// the start-up copy. nil means skipped (already reported).
func (g *Guard) setup(e manifest.Entry) *cred {
	mount := path.Join(g.cfg.AuthDir, e.MountSrc())
	ok, err := isMountRoot(mount)
	if errors.Is(err, unix.EACCES) {
		// Only root gets through caw setup's locked mounts (<agent>/mnt,
		// mode 0400): this caw-init was started without root.
		g.logf(0, "%s credential %s: not synced: caw-init runs as uid %d, which cannot reach %s through caw's locked mounts: for docker run --user, run caw setup --unlocked-mounts on the host (or start the container as root)",
			e.Agent, e.ContainerTarget, os.Geteuid(), mount)
		return nil
	}
	if err != nil || !ok {
		g.logf(0, "%s credential %s: %s is not mounted from the host, so it is not synced: run docker with $(caw docker-flags)",
			e.Agent, e.ContainerTarget, mount)
		return nil
	}
	c := &cred{g: g, e: e, format: e.CredentialFormat(), said: map[string]bool{}}
	if e.Strategy == manifest.StrategyBindDir {
		b, err := openBindDir(mount, path.Base(e.Src))
		if err != nil {
			g.logf(0, "%s credential %s: not synced: %v", e.Agent, e.ContainerTarget, err)
			return nil
		}
		c.host = b
	} else {
		if fi, err := os.Lstat(mount); err == nil && !fi.Mode().IsRegular() {
			// Docker mounts a directory it created itself when the host
			// file did not exist at `docker run`.
			g.logf(0, "%s credential %s: the host file was missing when the container started (Docker mounted a directory instead), so it is not synced: log in on the host, run caw setup, restart the container",
				e.Agent, e.ContainerTarget)
			return nil
		}
		c.host = &bindFile{p: mount}
	}
	if err := g.home.mkdirParents(e.ContainerTarget); err != nil {
		g.logf(0, "%s: not synced: %v", c.name(), err)
		c.host.close()
		return nil
	}
	g.home.removeStaleTemps(e.ContainerTarget)
	// Watch before the first read, so no change between the two is missed.
	hp, name := c.host.watch()
	mask := uint32(fileMask)
	if name != "" {
		mask = dirMask
	}
	if _, err := g.in.add(hp, mask, target{c, host, name}); err != nil {
		if errors.Is(err, unix.EACCES) {
			// inotify needs read permission, as a guard started without
			// root (docker run --user) may lack on the host's file.
			g.logf(0, "%s: not synced: the guard runs as uid %d, which cannot read %s (make the host file readable by uid %d, e.g. chown it on the host, then restart the container)",
				c.name(), os.Geteuid(), hp, os.Geteuid())
		} else {
			g.logf(0, "%s: not synced: %v", c.name(), err)
		}
		c.host.close()
		return nil
	}
	if err := g.watchHome(c); err != nil {
		g.logf(0, "%s: home changes are not synced: %v", c.name(), err)
	}
	c.mu.Lock()
	c.copyIn()
	c.checkDead()
	c.mu.Unlock()
	if m := g.startLockMirror(c); m != nil {
		g.locks = append(g.locks, m)
	}
	return c
}

// watchHome watches the directory holding the home copy: agents replace the
// file by rename, which a watch on the file itself would miss.
func (g *Guard) watchHome(c *cred) error {
	p, closer, err := g.home.watchPath(c.e.ContainerTarget)
	if err != nil {
		return err
	}
	defer closer.Close()
	wd, err := g.in.add(p, dirMask, target{c, home, path.Base(c.e.ContainerTarget)})
	if err != nil {
		return err
	}
	c.homeWd = wd
	return nil
}

// rewatchHome follows a home directory that was removed or renamed away:
// it is recreated if missing and watched again.
func (g *Guard) rewatchHome(c *cred) {
	g.in.remove(c.homeWd, target{c, home, path.Base(c.e.ContainerTarget)})
	c.homeWd = -1
	if err := g.home.mkdirParents(c.e.ContainerTarget); err != nil {
		c.once("rewatch", 1, "%s: home changes are no longer synced: %v", c.name(), err)
		return
	}
	if err := g.watchHome(c); err != nil {
		c.once("rewatch", 1, "%s: home changes are no longer synced: %v", c.name(), err)
	}
}

func (g *Guard) handle(batch []dirty) {
	for _, d := range batch {
		c := d.t.c
		c.mu.Lock()
		if d.t.side == host && d.mask&unix.IN_ATTRIB != 0 {
			c.checkDead()
		}
		if d.t.side == home && d.mask&(unix.IN_DELETE_SELF|unix.IN_MOVE_SELF|unix.IN_IGNORED) != 0 {
			g.rewatchHome(c)
		}
		if d.mask&^uint32(unix.IN_ATTRIB|unix.IN_ISDIR) != 0 {
			c.sync(d.t.side, onEvent)
		} else {
			// ATTRIB alone (chmod, chown, link count) changes no content,
			// but may end a failure to read or write the side.
			c.attrChanged(d.t.side)
		}
		c.mu.Unlock()
	}
}

// overflow: events were lost, so every credential is re-read.
func (g *Guard) overflow() {
	g.logf(1, "inotify queue overflow: re-reading every credential")
	for _, c := range g.creds {
		c.mu.Lock()
		c.sync(anySide, onEvent)
		c.mu.Unlock()
	}
}

// Flush syncs whatever the home copies hold to the host side and returns only
// when the host side is written. caw-init calls it after the child exits. It
// reads both sides itself, so a write no event has reported yet is flushed.
func (g *Guard) Flush(ctx context.Context) error {
	var errs []error
	for _, c := range g.creds {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("flush credentials: %w", err)
		}
		c.mu.Lock()
		err := c.flush()
		c.mu.Unlock()
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stopWatching stops the event loop and waits for it.
func (g *Guard) stopWatching() {
	g.stopOnce.Do(func() {
		if g.in == nil {
			return
		}
		g.in.close()
		if g.done != nil {
			<-g.done
		} else {
			g.in.release()
		}
	})
}

// Close stops the watchers and releases the guard's descriptors.
func (g *Guard) Close() error {
	g.stopWatching()
	g.closeOnce.Do(func() {
		for _, m := range g.locks {
			m.close()
		}
		for _, c := range g.creds {
			c.mu.Lock()
			c.stop()
			c.host.close()
			c.mu.Unlock()
		}
		if g.home != nil {
			g.home.close()
		}
	})
	return nil
}
