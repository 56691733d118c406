package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/caw-dev/caw/agents"
	"github.com/caw-dev/caw/host"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes, documented in --help.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

const exitCodesHelp = `
EXIT CODES:
   0  success
   1  error (nothing usable to set up, a missing host credential, status --check found a credential that is not valid, ...)
   2  usage (unknown command, flag, agent, strategy or format)`

func run(args []string, stdout, stderr io.Writer) int {
	app := newApp(stdout, stderr)
	err := app.Run(args)
	if err == nil {
		return exitOK
	}
	if ue, ok := asUsage(err); ok {
		fmt.Fprintf(stderr, "caw: %v\nRun 'caw --help' for usage.\n", ue)
		return exitUsage
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := err.Error(); msg != "" {
			fmt.Fprintf(stderr, "caw: %s\n", msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintf(stderr, "caw: error: %s\n", message(err))
	return exitError
}

func usageErr(c *cli.Context, err error, _ bool) error {
	return &usageError{msg: err.Error()}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	cmds := commands()
	return &cli.App{
		Name:                  "caw",
		Usage:                 "share coding-agent logins with Docker containers without copying secrets",
		Version:               version,
		HideVersion:           true,
		EnableBashCompletion:  true,
		Writer:                stdout,
		ErrWriter:             stderr,
		CustomAppHelpTemplate: cli.AppHelpTemplate + exitCodesHelp + "\n",
		ExitErrHandler:        func(*cli.Context, error) {},
		OnUsageError:          usageErr,
		Commands: append(cmds, &cli.Command{
			Name:        "auth",
			Usage:       "the same commands, for users of the original caw auth",
			Subcommands: commands(),
			Action:      noCommand,
		}),
		Action: noCommand,
	}
}

func noCommand(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("unknown command %q", c.Args().First())
	}
	if c.Command != nil && c.Command.Name == "auth" {
		_ = cli.ShowSubcommandHelp(c)
	} else {
		_ = cli.ShowAppHelp(c)
	}
	return usagef("no command given")
}

func authDirFlag() cli.Flag {
	return &cli.StringFlag{Name: "auth-dir", EnvVars: []string{"CAW_AUTH_DIR"}, Usage: "staging dir (default ~/.caw/auth)"}
}

func authDir(c *cli.Context) (string, error) {
	if d := c.String("auth-dir"); d != "" {
		return d, nil
	}
	home, _ := os.UserHomeDir()
	return host.DefaultAuthDir(nil, home)
}

func agentsFlag(usage string) cli.Flag {
	return &cli.StringSliceFlag{Name: "agents", Usage: usage + " (" + strings.Join(agents.Names(), ", ") + ", or all)"}
}

// noArgs makes stray positional arguments a usage error.
func noArgs(action cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.Args().Present() {
			return usagef("%s: unexpected argument %q", c.Command.Name, c.Args().First())
		}
		return action(c)
	}
}

func commands() []*cli.Command {
	withUsage := func(c *cli.Command) *cli.Command {
		c.OnUsageError = usageErr
		c.CustomHelpTemplate = cli.CommandHelpTemplate + exitCodesHelp + "\n"
		if c.Name != "docker-flags" { // its arguments are --init's entrypoint
			c.Action = noArgs(c.Action)
		}
		return c
	}
	return []*cli.Command{
		withUsage(&cli.Command{
			Name:  "setup",
			Usage: "stage configs and credential mount targets (no secrets) in the staging dir",
			Description: "Finds each agent's credential and configs under the source home and writes cleaned configs,\n" +
				"an empty mount target per credential and manifest.json into the staging dir. Every input is\n" +
				"checked before staging changes (a failed setup leaves the previous one intact); re-running it\n" +
				"keeps the mount targets running containers use. Host files are only read.\n\n" +
				"Each credential's mount target sits in a lock dir (mode 0400, e.g. codex/mnt/auth.json) that\n" +
				"only root can traverse: a container user, even one with your uid, cannot reach the mounted host\n" +
				"file past the guard, while caw-init (root) can. --unlocked-mounts is for docker run --user, where\n" +
				"caw-init is not root and cannot traverse the lock; it costs that protection: a container user\n" +
				"with your uid can then read and write the host credential directly (with bind-dir, the whole\n" +
				"host directory, e.g. ~/.claude and its settings.json hooks, which run on the host).",
			Flags: []cli.Flag{
				authDirFlag(),
				agentsFlag("agents to set up; default: every agent whose credential exists"),
				&cli.StringFlag{Name: "source-home", Usage: "host home to read the agents' files from (default $HOME)"},
				&cli.StringFlag{Name: "container-home", Value: host.DefaultContainerHome, Usage: "the container user's home"},
				&cli.StringFlag{Name: "user", Usage: "container user caw-init runs the command as (recorded in the manifest)"},
				&cli.StringSliceFlag{Name: "strategy", Usage: "AGENT=STRATEGY, credential strategy bind or bind-dir (repeatable)"},
				&cli.BoolFlag{Name: "unlocked-mounts", Usage: "no lock dir, for docker run --user (non-root caw-init); a container user with your uid can then write the host credentials directly"},
				&cli.BoolFlag{Name: "install-agent", Usage: "macOS: install and load a launchd LaunchAgent running caw bridge, which keeps Keychain-held logins and their mirrors in sync"},
			},
			Action: cmdSetup,
		}),
		withUsage(&cli.Command{
			Name:  "status",
			Usage: "show every managed file, its source of truth, age and token state",
			Flags: []cli.Flag{
				authDirFlag(),
				agentsFlag("agents to show; default: all staged"),
				&cli.BoolFlag{Name: "json", Usage: "print the documented JSON report (schema 1) instead of a table"},
				&cli.BoolFlag{Name: "check", Usage: "exit 1 unless every credential is valid"},
			},
			Action: cmdStatus,
		}),
		withUsage(&cli.Command{
			Name:      "docker-flags",
			Usage:     "print the docker run mounts: staging read-only, each credential read-write",
			ArgsUsage: "[--init [-- ENTRYPOINT [ARG...]]]",
			Description: "shell: for docker run $(caw docker-flags) IMAGE; refuses paths that word splitting or globbing\n" +
				"would break (use json then). json: an argv array. compose: a volumes: snippet.\n" +
				"devcontainer: a \"mounts\" array.\n\n" +
				"--init runs an image that knows nothing of caw under caw-init, without a rebuild, as docker run\n" +
				"--init does for Docker's init: caw-init is mounted read-only at " + host.InitPath + " and made the\n" +
				"entrypoint, the container starts as root (so the mounts stay locked) and caw-init runs the\n" +
				"command as --user (default: your uid:gid, so files written in a mounted project stay yours),\n" +
				"in the manifest's container home when the image has no home for that uid. Give the command\n" +
				"after the image (--entrypoint clears the image's CMD); name the image's own entrypoint after --.\n" +
				"caw-init comes from beside caw or PATH on a Linux host, else from the volume caw install-init fills.",
			Flags: []cli.Flag{
				authDirFlag(),
				&cli.StringFlag{Name: "format", Value: host.FormatShell, Usage: "one of " + strings.Join(host.Formats, ", ")},
				&cli.BoolFlag{Name: "init", Usage: "also mount caw-init and make it the entrypoint, for images built without it"},
				&cli.StringFlag{Name: "init-from", Usage: "with --init: a static caw-init on this host, or a volume name (default: caw-init beside caw or in PATH on Linux, else the volume " + host.DefaultInitVolume + ")"},
				&cli.StringFlag{Name: "user", Usage: "with --init: numeric UID:GID caw-init runs the command as (default: yours)"},
			},
			Action: cmdDockerFlags,
		}),
		withUsage(&cli.Command{
			Name:  "install-init",
			Usage: "fill a Docker volume with caw-init from the caw image, for docker-flags --init (any host, a Mac too)",
			Description: "Runs docker run --rm --pull never -v VOLUME:/dst --entrypoint /caw IMAGE install-init --into /dst,\n" +
				"which copies the image's static caw-init into the volume (the image is never pulled: build it\n" +
				"locally). Run it again after upgrading the caw image.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "volume", Value: host.DefaultInitVolume, Usage: "the volume to fill"},
				&cli.StringFlag{Name: "image", Value: "caw", Usage: "the caw image (docker build -t caw . in caw's source)"},
				&cli.StringFlag{Name: "into", Hidden: true, Usage: "inside the caw image: the directory to copy caw-init into"},
			},
			Action: cmdInstallInit,
		}),
		withUsage(&cli.Command{
			Name:  "teardown",
			Usage: "remove the staging dir (host credentials are never touched)",
			Description: "Removes the staging dir; host credentials are never touched. Stop containers started\n" +
				"with caw docker-flags first: they lose their credential mounts when it goes.",
			Flags: []cli.Flag{
				authDirFlag(),
				&cli.BoolFlag{Name: "dry-run", Usage: "say what would be removed, remove nothing"},
				&cli.BoolFlag{Name: "force", Usage: "remove even while a host credential is a symlink into the staging dir"},
			},
			Action: cmdTeardown,
		}),
		withUsage(bridgeCommand()),
		withUsage(&cli.Command{
			Name:  "completion",
			Usage: "print a bash completion script: source <(caw completion)",
			Action: func(c *cli.Context) error {
				_, err := io.WriteString(c.App.Writer, bashCompletion)
				return err
			},
		}),
		withUsage(&cli.Command{
			Name:  "version",
			Usage: "print caw's version",
			Action: func(c *cli.Context) error {
				fmt.Fprintf(c.App.Writer, "caw %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
				return nil
			},
		}),
	}
}

// setupOptions turns setup's flags into host.SetupOptions.
func setupOptions(c *cli.Context) (host.SetupOptions, error) {
	dir, err := authDir(c)
	if err != nil {
		return host.SetupOptions{}, err
	}
	names, err := parseAgents(c.StringSlice("agents"))
	if err != nil {
		return host.SetupOptions{}, err
	}
	strats, err := parseStrategies(c.StringSlice("strategy"))
	if err != nil {
		return host.SetupOptions{}, err
	}
	src := c.String("source-home")
	if src == "" {
		src, _ = os.UserHomeDir()
	}
	if src == "" {
		return host.SetupOptions{}, usagef("no source home: $HOME is not set (pass --source-home)")
	}
	opts := host.SetupOptions{
		AuthDir: dir, SourceHome: src, ContainerHome: c.String("container-home"), User: c.String("user"),
		Agents: names, Strategies: strats, Getenv: os.Getenv, UnlockedMounts: c.Bool("unlocked-mounts"),
	}
	if store := keychainStore(); store != nil {
		opts.Keychain, opts.KeychainUser = store, loginName()
	}
	return opts, nil
}

func cmdSetup(c *cli.Context) error {
	opts, err := setupOptions(c)
	if err != nil {
		return err
	}
	res, err := host.Setup(opts)
	if res != nil {
		for _, w := range res.Warnings {
			fmt.Fprintf(c.App.ErrWriter, "caw: warning: %s\n", w)
		}
	}
	if err != nil {
		return err
	}
	now := time.Now()
	w := c.App.Writer
	fmt.Fprintf(w, "Staged in %s (no secrets; credentials stay on the host):\n", res.AuthDir)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, a := range res.Agents {
		fmt.Fprintf(tw, "  %s\tcredential\t%s\t%s\t%s\n", a.Name, a.Strategy, a.Credential, a.Status.Describe(now))
		for _, cf := range a.Configs {
			fmt.Fprintf(tw, "  %s\tconfig\tcopy\t%s\tcleaned\n", a.Name, cf)
		}
	}
	tw.Flush()
	for _, a := range res.Agents {
		if a.Keychain != nil {
			fmt.Fprintf(w, "  %s: the login is in the Keychain (%s); %s mirrors it, outside staging\n", a.Name, a.Keychain, a.Credential)
		}
	}
	if res.BridgeConfig != "" && hasKeychain(res.Agents) {
		if c.Bool("install-agent") {
			if err := installAgent(c, res.BridgeConfig); err != nil {
				return err
			}
		} else {
			fmt.Fprintln(w, "Keep the Keychain and the mirrors in sync: caw bridge (foreground), or caw setup --install-agent (launchd)")
		}
	} else if c.Bool("install-agent") {
		fmt.Fprintln(w, "No login is in the Keychain: no bridge agent needed, none installed.")
	}
	if c.Bool("unlocked-mounts") {
		fmt.Fprintln(w, "Mounts unlocked (--unlocked-mounts): a container user with your uid can write the host credentials directly.")
	} else {
		fmt.Fprintln(w, "Mounts locked: only caw-init as root reaches the host credentials (docker run --user needs --unlocked-mounts).")
	}
	flagsCmd := "caw docker-flags"
	home, _ := os.UserHomeDir()
	if def, err := host.DefaultAuthDir(os.Getenv, home); err != nil || def != res.AuthDir {
		flagsCmd += " --auth-dir " + shellQuote(res.AuthDir)
	}
	if mounts, err := host.DockerFlags(res.AuthDir); err == nil {
		if _, err := host.Render(mounts, host.FormatShell); err != nil {
			fmt.Fprintf(w, "Paths here need quoting: build docker run's argv from %s --format json\n", flagsCmd)
			return nil
		}
	}
	fmt.Fprintf(w, "Run a container with: docker run $(%s) IMAGE\n", flagsCmd)
	return nil
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n'\"\\$`*?[]{}~#&;|<>()!") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func cmdStatus(c *cli.Context) error {
	dir, err := authDir(c)
	if err != nil {
		return err
	}
	names, err := parseAgents(c.StringSlice("agents"))
	if err != nil {
		return err
	}
	if contains(c.StringSlice("agents"), "all") {
		names = nil // every staged agent, not every known one
	}
	rep, err := host.Status(host.StatusOptions{AuthDir: dir, Agents: names})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		out, err := rep.JSON()
		if err != nil {
			return err
		}
		c.App.Writer.Write(out)
	} else if err := rep.WriteTable(c.App.Writer); err != nil {
		return err
	}
	if c.Bool("check") && !rep.OK {
		return cli.Exit("check failed: not every credential is valid", exitError)
	}
	return nil
}

func cmdDockerFlags(c *cli.Context) error {
	dir, err := authDir(c)
	if err != nil {
		return err
	}
	format := c.String("format")
	if !contains(host.Formats, format) {
		return usagef("unknown --format %q (want one of %s)", format, strings.Join(host.Formats, ", "))
	}
	if !c.Bool("init") {
		for _, f := range []string{"init-from", "user"} {
			if c.IsSet(f) {
				return usagef("docker-flags: --%s goes with --init", f)
			}
		}
		if c.Args().Present() {
			return usagef("docker-flags: unexpected argument %q (an entrypoint after -- goes with --init)", c.Args().First())
		}
	}
	mounts, err := host.DockerFlags(dir)
	if err != nil {
		return err
	}
	var out string
	if c.Bool("init") {
		exe, _ := os.Executable()
		in, err := host.ResolveInit(host.InitOptions{From: c.String("init-from"), User: c.String("user"), Entrypoint: c.Args().Slice()},
			exe, exec.LookPath, os.Getuid(), os.Getgid())
		if err != nil {
			return err
		}
		if out, err = host.RenderInit(mounts, in, format); err != nil {
			return err
		}
	} else if out, err = host.Render(mounts, format); err != nil {
		return err
	}
	_, err = io.WriteString(c.App.Writer, out)
	return err
}

func cmdInstallInit(c *cli.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if into := c.String("into"); into != "" {
		return host.InstallInit(exe, into)
	}
	volume, image := c.String("volume"), c.String("image")
	// --pull never: the caw image is built locally; a registry image that
	// happens to be called caw must never become every container's PID 1.
	cmd := exec.Command("docker", "run", "--rm", "--pull", "never", "-v", volume+":/dst", "--entrypoint", "/caw", image, "install-init", "--into", "/dst")
	cmd.Stdout, cmd.Stderr = c.App.Writer, c.App.ErrWriter
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("docker run %s install-init: %w (build the caw image first: docker build -t caw . in caw's source)", image, err)
	}
	fmt.Fprintf(c.App.Writer, "caw-init installed in the volume %s: docker run $(caw docker-flags --init --init-from %s) IMAGE COMMAND\n", volume, volume)
	return nil
}

func cmdTeardown(c *cli.Context) error {
	dir, err := authDir(c)
	if err != nil {
		return err
	}
	home, _ := os.UserHomeDir()
	res, err := host.Teardown(host.TeardownOptions{
		AuthDir: dir, DryRun: c.Bool("dry-run"), Force: c.Bool("force"), Home: home, Getenv: os.Getenv,
	})
	w := c.App.Writer
	if res != nil && len(res.Symlinks) > 0 && err == nil {
		fmt.Fprintf(c.App.ErrWriter, "caw: warning: --force: %s will dangle; log those agents in again\n", strings.Join(res.Symlinks, ", "))
	}
	if err != nil {
		return err
	}
	switch {
	case !res.Existed:
		fmt.Fprintf(w, "Nothing to remove: %s does not exist\n", res.AuthDir)
	case c.Bool("dry-run"):
		fmt.Fprintf(w, "Would remove %s (dry run; nothing removed)\n", res.AuthDir)
	default:
		fmt.Fprintf(w, "Removed %s (host credentials untouched)\n", res.AuthDir)
	}
	return nil
}

func hasKeychain(list []host.StagedAgent) bool {
	for _, a := range list {
		if a.Keychain != nil {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// bashCompletion asks caw itself for candidates (urfave/cli's
// --generate-bash-completion) for every word being completed.
const bashCompletion = `_caw_complete() {
    local cur="${COMP_WORDS[COMP_CWORD]}" words
    if [[ "$cur" == -* ]]; then
        words=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
    else
        words=$("${COMP_WORDS[@]:0:$COMP_CWORD}" --generate-bash-completion 2>/dev/null)
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o bashdefault -o default -F _caw_complete caw
`
