package main

import (
	"errors"
	"strings"
	"testing"
)

func TestParseAgentsAndStrategies(t *testing.T) {
	for in, want := range map[string]string{
		"claude,codex": "claude,codex", "all": "claude,codex,gemini,opencode", "codex, CLAUDE": "claude,codex",
		"gemini,all": "claude,codex,gemini,opencode", "": "", ",": "",
	} {
		got, err := parseAgents([]string{in})
		if err != nil || strings.Join(got, ",") != want {
			t.Errorf("parseAgents(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	_, err := parseAgents([]string{"claude,cursor"})
	var ue *usageError
	if !errors.As(err, &ue) || err.Error() != `unknown agent "cursor" (available: claude, codex, gemini, opencode, or all)` {
		t.Errorf("unknown agent: %v", err)
	}
	bad := map[string]string{
		"claude":        `--strategy "claude": want AGENT=STRATEGY, for example claude=bind`,
		"=bind":         `--strategy "=bind": want AGENT=STRATEGY, for example claude=bind`,
		"cursor=bind":   `--strategy "cursor=bind": unknown agent "cursor" (available: claude, codex, gemini, opencode)`,
		"claude=copy":   `--strategy "claude=copy": copy is for configs only; a credential is bind or bind-dir (copy would put the secret into staging)`,
		"claude=mirror": `--strategy "claude=mirror": unknown strategy "mirror" (want bind or bind-dir)`,
	}
	for in, want := range bad {
		_, err := parseStrategies([]string{in})
		if !errors.As(err, &ue) || err.Error() != want {
			t.Errorf("parseStrategies(%q) = %v, want %s", in, err, want)
		}
	}
}
