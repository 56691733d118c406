package agents

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2"
)

// claudeKeys are the top-level keys of ~/.claude.json a container needs:
// the account, onboarding state and a few caches. Everything else (history,
// per-project state, MCP servers of host paths) stays on the host.
var claudeKeys = []string{
	"oauthAccount", "userID", "hasCompletedOnboarding", "lastOnboardingVersion",
	"numStartups", "installMethod", "firstStartTime", "autoUpdates",
	"hasSeenTasksHint", "subscriptionNoticeCount", "hasAvailableSubscription",
	"cachedStatsigGates", "cachedDynamicConfigs", "cachedGrowthBookFeatures",
	"fallbackAvailableWarningThreshold", "bypassPermissionsModeAccepted",
	"hasAcknowledgedCostThreshold", "isQualifiedForDataSharing",
}

// CleanClaudeJSON strips Claude Code's ~/.claude.json to the keys in
// claudeKeys and replaces "projects" with one trusted entry for the
// container home, so the agent starts without onboarding or a trust prompt.
func CleanClaudeJSON(data []byte, opts CleanOptions) ([]byte, error) {
	var in map[string]json.RawMessage
	if err := json.Unmarshal(data, &in); err != nil || in == nil {
		if err == nil {
			err = fmt.Errorf("not a JSON object")
		}
		return nil, fmt.Errorf("parse .claude.json: %w", err)
	}
	if !utf8.ValidString(opts.ContainerHome) {
		return nil, fmt.Errorf("container home %q is not valid UTF-8", opts.ContainerHome)
	}
	out := make(map[string]any, len(claudeKeys)+1)
	for _, k := range claudeKeys {
		if v, ok := in[k]; ok {
			out[k] = v
		}
	}
	if opts.ContainerHome != "" {
		out["projects"] = map[string]any{opts.ContainerHome: map[string]any{
			"allowedTools":                  []string{},
			"hasTrustDialogAccepted":        true,
			"hasCompletedProjectOnboarding": true,
		}}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return nil, fmt.Errorf("encode .claude.json: %w", err)
	}
	return buf.Bytes(), nil
}

// CleanCodexTOML removes the host's per-project trust entries
// ([projects."/abs/path"] tables) from Codex's config.toml; they name host
// paths that mean nothing in a container. It parses the file with a real TOML
// parser, so a malformed file is an error rather than a silently wrong copy.
func CleanCodexTOML(data []byte, _ CleanOptions) ([]byte, error) {
	var doc map[string]any
	if err := toml.Unmarshal(data, &doc); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("parse config.toml: line %d, column %d: %w", row, col, err)
		}
		return nil, fmt.Errorf("parse config.toml: %w", err)
	}
	delete(doc, "projects")
	out, err := toml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode config.toml: %w", err)
	}
	return out, nil
}
