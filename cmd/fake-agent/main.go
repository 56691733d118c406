// Command fake-agent plays a coding agent in caw's end-to-end tests and demo:
// it shows, refreshes and waits on a Claude or Codex credential the way the
// real agents do (see internal/fakeagent). It is static so it runs in a
// FROM-scratch image.
//
//	fake-agent show    [--agent A] [--file P]
//	fake-agent refresh [--agent A] [--file P] [--mode inplace|rename] [--token T]
//	fake-agent await   [--agent A] [--file P] --token T [--timeout D]
//	fake-agent wait    [--agent A] [--file P] [--refresh-on-term] [--mode M] [--token T]
//	fake-agent run     [--agent A] [--file P] --socket S [--name N] [--duration D] [--margin D] [--report F]
//
// wait prints every signal it receives, and dies of SIGTERM or SIGINT as an
// agent without a handler would (optionally refreshing just before).
//
// run plays an agent in use against a fake token server (internal/tokenserver)
// for --duration, refreshing the way the real agent does (the table in
// internal/fakeagent), says "ready" first, and writes its counts as one JSON
// line to --report (default stdout).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/caw-dev/caw/internal/fakeagent"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fake-agent show|refresh|await|wait|run [--agent claude|codex] [--file PATH] ...")
		os.Exit(2)
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet("fake-agent "+cmd, flag.ExitOnError)
	agent := fs.String("agent", fakeagent.Claude, "agent whose credential to use: claude or codex")
	file := fs.String("file", "", "credential path (default: the agent's path under $HOME)")
	mode := fs.String("mode", fakeagent.Rename, "refresh write style: inplace or rename")
	token := fs.String("token", "", "token to write (refresh, wait) or wait for (await); default random")
	timeout := fs.Duration("timeout", 5*time.Second, "await: how long to wait")
	onTerm := fs.Bool("refresh-on-term", false, "wait: refresh the credential when SIGTERM arrives, then die of it")
	socket := fs.String("socket", "", "run: the token server's Unix socket")
	name := fs.String("name", "", "run: this agent's name in the server's counts")
	duration := fs.Duration("duration", 10*time.Second, "run: how long to play")
	margin := fs.Duration("margin", -1, "run: refresh this long before expiry (default: the agent's own)")
	reqMin := fs.Duration("request-min", 50*time.Millisecond, "run: shortest pause between requests")
	reqMax := fs.Duration("request-max", 150*time.Millisecond, "run: longest pause between requests")
	report := fs.String("report", "", "run: write the counts here (default stdout)")
	trace := fs.Bool("trace", false, "run: log every lock, refresh and reload on stderr")
	_ = fs.Parse(os.Args[2:])
	path := *file
	if path == "" {
		var err error
		if path, err = fakeagent.DefaultPath(*agent, os.Getenv("HOME")); err != nil {
			fail(err)
		}
	}
	switch cmd {
	case "show":
		c, err := fakeagent.Read(*agent, path)
		if err != nil {
			fail(err)
		}
		fmt.Println(c)
	case "refresh":
		refresh(*agent, path, *token, *mode)
	case "await":
		if *token == "" {
			fail(fmt.Errorf("await needs --token"))
		}
		start := time.Now()
		fmt.Printf("waiting for %s in %s\n", *token, path)
		for {
			c, err := fakeagent.Read(*agent, path)
			if err == nil && c.Token == *token {
				fmt.Printf("seen %s at=%d\n", c, time.Now().UnixNano())
				return
			}
			if time.Since(start) > *timeout {
				fail(fmt.Errorf("token %s not seen in %s within %s (last: %v %v)", *token, path, *timeout, c, err))
			}
			time.Sleep(5 * time.Millisecond)
		}
	case "wait":
		wait(*agent, path, *token, *mode, *onTerm)
	case "run":
		if *socket == "" {
			fail(fmt.Errorf("run needs --socket (the token server's Unix socket)"))
		}
		run(fakeagent.RunConfig{Agent: *agent, File: path, Socket: *socket, Name: *name, Duration: *duration,
			Margin: *margin, RequestMin: *reqMin, RequestMax: *reqMax, Trace: *trace}, *report)
	default:
		fail(fmt.Errorf("unknown command %q (want show, refresh, await, wait or run)", cmd))
	}
}

func run(cfg fakeagent.RunConfig, report string) {
	stop := make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sigs; close(stop) }()
	cfg.Stop = stop
	cfg.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, "fake-agent: "+format+"\n", args...) }
	fmt.Println("ready")
	rep, err := fakeagent.Run(cfg)
	if err != nil {
		fail(err)
	}
	line, _ := json.Marshal(rep)
	line = append(line, '\n')
	if report == "" {
		os.Stdout.Write(line)
		return
	}
	if err := os.WriteFile(report, line, 0o644); err != nil {
		fail(fmt.Errorf("write report: %w", err))
	}
}

func refresh(agent, path, token, mode string) {
	r, err := fakeagent.Refresh(agent, path, token, mode)
	if err != nil {
		fail(err)
	}
	if r.Unreadable != nil {
		fmt.Fprintf(os.Stderr, "fake-agent: the credential it replaced was unreadable: %v\n", r.Unreadable)
	}
	if r.Fallback != nil {
		fmt.Fprintf(os.Stderr, "fake-agent: rename failed (%v), wrote in place\n", r.Fallback)
	}
	fmt.Printf("refreshed %s (%s) at=%d\n", r.Cred, mode, r.Written.UnixNano())
}

func wait(agent, path, token, mode string, onTerm bool) {
	sigs := make(chan os.Signal, 16)
	// Every catchable signal a PID 1 should forward; SIGCHLD and SIGURG are
	// the runtime's and the kernel's own business.
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2,
		syscall.SIGTERM, syscall.SIGWINCH, syscall.SIGCONT, syscall.SIGALRM, syscall.SIGPIPE)
	fmt.Printf("fake-agent: ready pid=%d uid=%d gid=%d home=%s\n", os.Getpid(), os.Getuid(), os.Getgid(), os.Getenv("HOME"))
	for s := range sigs {
		sig := s.(syscall.Signal)
		fmt.Printf("fake-agent: got %s\n", signalName(sig))
		if sig != syscall.SIGTERM && sig != syscall.SIGINT {
			continue
		}
		if sig == syscall.SIGTERM && onTerm {
			refresh(agent, path, token, mode)
		}
		// Die of the signal itself so the exit status is 128+N.
		signal.Reset(sig)
		_ = syscall.Kill(os.Getpid(), sig)
		time.Sleep(time.Second)
		os.Exit(128 + int(sig))
	}
}

func signalName(s syscall.Signal) string {
	names := map[syscall.Signal]string{
		syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT",
		syscall.SIGUSR1: "SIGUSR1", syscall.SIGUSR2: "SIGUSR2", syscall.SIGTERM: "SIGTERM",
		syscall.SIGWINCH: "SIGWINCH", syscall.SIGCONT: "SIGCONT", syscall.SIGALRM: "SIGALRM",
		syscall.SIGPIPE: "SIGPIPE",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return fmt.Sprintf("signal %d", int(s))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "fake-agent:", err)
	os.Exit(1)
}
