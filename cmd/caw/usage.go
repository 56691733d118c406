package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/caw-dev/caw/agents"
	"github.com/caw-dev/caw/host"
	"github.com/caw-dev/caw/manifest"
)

// usageError is bad command-line input (an unknown command, flag, agent,
// strategy or format): run prints it and exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// flagFor names, for each host option an InputError can blame, the flag
// that sets it.
var flagFor = map[string]string{
	"AuthDir":       "--auth-dir",
	"SourceHome":    "--source-home",
	"ContainerHome": "--container-home",
	"Agents":        "--agents",
	"From":          "--init-from",
	"User":          "--user",
	"Entrypoint":    "entrypoint",
	"Force":         "--force",
	"format":        "--format",
}

func flagName(option string) string {
	if name, ok := flagFor[option]; ok {
		return name
	}
	return option
}

// message is err's text with every fix host words with a Go option
// (a host.FixError) worded with the flag instead.
func message(err error) string {
	msg := err.Error()
	var fe *host.FixError
	if errors.As(err, &fe) {
		msg = strings.Replace(msg, fe.Error(), fe.FixWith(flagName(fe.Option)), 1)
	}
	return msg
}

// asUsage turns err into a usage error when it is one: the CLI's own, or
// bad input host reports (an InputError), worded with the flag that set it.
func asUsage(err error) (*usageError, bool) {
	var ue *usageError
	if errors.As(err, &ue) {
		return ue, true
	}
	var ie *host.InputError
	if !errors.As(err, &ie) {
		return nil, false
	}
	if ie.Option == "" {
		return &usageError{msg: ie.Msg}, true
	}
	return &usageError{msg: flagName(ie.Option) + " " + ie.Msg}, true
}

// parseAgents turns --agents values ("claude,codex", "all", repeated flags)
// into agent names in table order. Empty input gives nil: every agent whose
// credential exists.
func parseAgents(values []string) ([]string, error) {
	want := map[string]bool{}
	for _, v := range values {
		for _, n := range strings.Split(v, ",") {
			n = strings.TrimSpace(strings.ToLower(n))
			switch {
			case n == "":
			case n == "all":
				for _, a := range agents.Names() {
					want[a] = true
				}
			default:
				if _, ok := agents.Lookup(n); !ok {
					return nil, usagef("unknown agent %q (available: %s, or all)", n, strings.Join(agents.Names(), ", "))
				}
				want[n] = true
			}
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	var out []string
	for _, n := range agents.Names() {
		if want[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

// parseStrategies turns repeated --strategy AGENT=STRATEGY values into a map.
// Only bind and bind-dir are accepted: copy would put a secret into staging.
func parseStrategies(values []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range values {
		name, strat, ok := strings.Cut(v, "=")
		name = strings.TrimSpace(strings.ToLower(name))
		strat = strings.TrimSpace(strat)
		if !ok || name == "" || strat == "" {
			return nil, usagef("--strategy %q: want AGENT=STRATEGY, for example claude=bind", v)
		}
		if _, known := agents.Lookup(name); !known {
			return nil, usagef("--strategy %q: unknown agent %q (available: %s)", v, name, strings.Join(agents.Names(), ", "))
		}
		switch strat {
		case manifest.StrategyBind, manifest.StrategyBindDir:
		case manifest.StrategyCopy:
			return nil, usagef("--strategy %q: copy is for configs only; a credential is bind or bind-dir (copy would put the secret into staging)", v)
		default:
			return nil, usagef("--strategy %q: unknown strategy %q (want bind or bind-dir)", v, strat)
		}
		out[name] = strat
	}
	return out, nil
}
