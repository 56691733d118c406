package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/caw-dev/caw/host"
	"github.com/caw-dev/caw/host/bridge"
	"github.com/caw-dev/caw/host/keychain"
)

// keychainStore is the Keychain on macOS; elsewhere none, unless
// CAW_SECURITY names a security tool (tests run a fake one on Linux).
func keychainStore() keychain.Store {
	if p := os.Getenv("CAW_SECURITY"); p != "" {
		return keychain.Security{Path: p}
	}
	if runtime.GOOS == "darwin" {
		return keychain.Security{}
	}
	return nil
}

// loginName is Claude Code's Keychain account: $USER, else the login name.
func loginName() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

func mirrorDir() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("cannot find the Keychain mirror dir: %w", err)
	}
	return host.DefaultMirrorDir(home), nil
}

func bridgeCommand() *cli.Command {
	return &cli.Command{
		Name:  "bridge",
		Usage: "keep Keychain-held logins and their mirror files in sync (macOS; runs until stopped)",
		Description: "caw setup keeps a mirror file of each login it finds in the macOS Keychain (Claude Code's,\n" +
			"Codex's in keyring mode); docker-flags mounts the mirror. caw bridge keeps the Keychain item and the\n" +
			"mirror in sync both ways: a change of the mirror (a container's refresh) reaches the Keychain at\n" +
			"once, a change in the Keychain (a refresh on the Mac) reaches the mirror within --interval. It\n" +
			"logs on stderr like caw-init. caw setup --install-agent runs it in the background with launchd.\n\n" +
			"A locked keychain (an SSH session) is retried every interval; a denied access prompt makes it\n" +
			"leave that item alone until it is restarted.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "bridge config written by caw setup (default ~/.caw/keychain/" + bridge.ConfigName + ")"},
			&cli.DurationFlag{Name: "interval", Value: bridge.DefaultInterval, Usage: "how often to read the Keychain"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Count: new(int), Usage: "log what crosses (-v), and more (-vv)"},
		},
		Action: cmdBridge,
	}
}

func cmdBridge(c *cli.Context) error {
	store := keychainStore()
	if store == nil {
		return cli.Exit("bridge: the Keychain is macOS's; there is no security tool here (CAW_SECURITY names one)", exitError)
	}
	p := c.String("config")
	if p == "" {
		dir, err := mirrorDir()
		if err != nil {
			return err
		}
		p = filepath.Join(dir, bridge.ConfigName)
	}
	if c.Duration("interval") < time.Second {
		return usagef("--interval %s: want at least 1s", c.Duration("interval"))
	}
	cfg, err := bridge.LoadConfig(p)
	if err != nil {
		return err
	}
	if len(cfg.Pairs) == 0 {
		// Success, so launchd does not restart it: setup found no login
		// in the Keychain last time.
		fmt.Fprintf(c.App.ErrWriter, "caw bridge: nothing to bridge: %s names no Keychain item (caw setup writes one when a login is in the Keychain)\n", p)
		return nil
	}
	verbosity := c.Count("verbose")
	stderr := c.App.ErrWriter
	logf := func(level int, format string, args ...any) {
		if level > verbosity {
			return
		}
		// One write per line, as caw-init logs.
		fmt.Fprint(stderr, "caw bridge: "+fmt.Sprintf(format, args...)+"\n")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf(0, "started: %d Keychain item(s), config %s", len(cfg.Pairs), p)
	err = bridge.Run(ctx, bridge.Options{Pairs: cfg.Pairs, Store: store, Interval: c.Duration("interval"), Logf: logf, StateDir: filepath.Dir(p)})
	if err != nil {
		return err
	}
	logf(0, "stopped")
	return nil
}

// installAgent writes and loads the LaunchAgent running caw bridge.
func installAgent(c *cli.Context, config string) error {
	lc := os.Getenv("CAW_LAUNCHCTL")
	if runtime.GOOS != "darwin" && lc == "" {
		return cli.Exit("--install-agent: launchd is macOS's; run caw bridge in the foreground instead", exitError)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--install-agent: cannot find caw's own path: %w", err)
	}
	if r, err := filepath.EvalSymlinks(self); err == nil {
		self = r
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return err
	}
	o := bridge.AgentOptions{
		Home: home, UID: os.Getuid(), Launchctl: lc,
		Program: []string{self, "bridge", "--config", config},
	}
	if s := os.Getenv("CAW_SECURITY"); s != "" {
		o.Env = map[string]string{"CAW_SECURITY": s}
	}
	p, err := bridge.InstallAgent(o)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "Bridge agent %s loaded from %s; it logs to %s\n", bridge.AgentLabel, p, o.LogPath())
	return nil
}
