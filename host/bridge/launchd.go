package bridge

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// AgentLabel is the launchd label of the bridge's LaunchAgent.
const AgentLabel = "dev.caw.bridge"

// DefaultLaunchctl is macOS's launchctl.
const DefaultLaunchctl = "/bin/launchctl"

// AgentOptions describe the LaunchAgent that runs `caw bridge`.
type AgentOptions struct {
	Home      string            // the user's home: ~/Library/LaunchAgents, ~/Library/Logs
	Program   []string          // argv: the absolute caw path, "bridge", flags
	Env       map[string]string // EnvironmentVariables, if any
	UID       int               // for the gui/<uid> domain
	Launchctl string            // "" means DefaultLaunchctl
}

// PlistPath is where the LaunchAgent's plist goes.
func (o AgentOptions) PlistPath() string {
	return filepath.Join(o.Home, "Library", "LaunchAgents", AgentLabel+".plist")
}

// LogPath is where launchd sends the bridge's output.
func (o AgentOptions) LogPath() string {
	return filepath.Join(o.Home, "Library", "Logs", "caw-bridge.log")
}

// Plist is the LaunchAgent: started at login (RunAtLoad), restarted when
// it exits with an error (KeepAlive SuccessfulExit false) no more than once
// a minute (ThrottleInterval), its output appended to LogPath.
func Plist(o AgentOptions) []byte {
	var b bytes.Buffer
	esc := func(s string) string {
		var e bytes.Buffer
		xml.EscapeText(&e, []byte(s))
		return e.String()
	}
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>Label</key>
	<string>` + AgentLabel + `</string>
	<key>ProgramArguments</key>
	<array>
`)
	for _, a := range o.Program {
		b.WriteString("\t\t<string>" + esc(a) + "</string>\n")
	}
	b.WriteString("\t</array>\n")
	if len(o.Env) > 0 {
		b.WriteString("\t<key>EnvironmentVariables</key>\n\t<dict>\n")
		keys := make([]string, 0, len(o.Env))
		for k := range o.Env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b.WriteString("\t\t<key>" + esc(k) + "</key>\n\t\t<string>" + esc(o.Env[k]) + "</string>\n")
		}
		b.WriteString("\t</dict>\n")
	}
	b.WriteString(`	<key>RunAtLoad</key>
	<true/>
	<key>KeepAlive</key>
	<dict>
		<key>SuccessfulExit</key>
		<false/>
	</dict>
	<key>ThrottleInterval</key>
	<integer>60</integer>
	<key>ProcessType</key>
	<string>Background</string>
	<key>StandardOutPath</key>
	<string>` + esc(o.LogPath()) + `</string>
	<key>StandardErrorPath</key>
	<string>` + esc(o.LogPath()) + `</string>
</dict>
</plist>
`)
	return b.Bytes()
}

// InstallAgent writes the LaunchAgent's plist and (re)loads it: launchctl
// bootout of a running copy (its absence is no error), then bootstrap into
// the user's gui domain. It returns the plist's path.
func InstallAgent(o AgentOptions) (string, error) {
	if len(o.Program) == 0 || !filepath.IsAbs(o.Program[0]) {
		return "", errors.New("install the bridge agent: the caw program path must be absolute")
	}
	lc := o.Launchctl
	if lc == "" {
		lc = DefaultLaunchctl
	}
	p := o.PlistPath()
	for _, d := range []string{filepath.Dir(p), filepath.Dir(o.LogPath())} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", fmt.Errorf("install the bridge agent: %w", err)
		}
	}
	if err := writeFile(p, Plist(o), 0o644); err != nil {
		return "", fmt.Errorf("install the bridge agent: %w", err)
	}
	domain := "gui/" + strconv.Itoa(o.UID)
	exec.Command(lc, "bootout", domain+"/"+AgentLabel).Run()
	// bootstrap right after a bootout can fail while the old job winds
	// down (exit 5, "Input/output error"): retry a few times.
	var out []byte
	var err error
	for try := 0; try < 5; try++ {
		if out, err = exec.Command(lc, "bootstrap", domain, p).CombinedOutput(); err == nil {
			return p, nil
		}
		time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
	}
	return p, fmt.Errorf("launchctl bootstrap %s %s: %v: %s (the plist is written; load it with that command)", domain, p, err, strings.TrimSpace(string(out)))
}
