package agents

import (
	"io/fs"
	"path"
	"path/filepath"
	"sort"
	"time"
)

// Env is what discovery reads of the host: the home directory and the
// environment. Tests give a throwaway home and their own variables.
type Env struct {
	Home string
	// Getenv reads a variable; nil means none is set.
	Getenv func(string) string
}

func (e Env) get(k string) string {
	if e.Getenv == nil {
		return ""
	}
	return e.Getenv(k)
}

// dirFromEnv is $name when set and absolute, else the home-relative default.
func (e Env) dirFromEnv(name, def string) string {
	if v := e.get(name); v != "" && filepath.IsAbs(v) {
		return filepath.Clean(v)
	}
	return filepath.Join(e.Home, def)
}

// geminiDir is Gemini CLI's ~/.gemini, whose home GEMINI_CLI_HOME replaces.
func (e Env) geminiDir() string {
	if v := e.get("GEMINI_CLI_HOME"); v != "" && filepath.IsAbs(v) {
		return filepath.Join(v, ".gemini")
	}
	return filepath.Join(e.Home, ".gemini")
}

// CleanOptions parameterise config cleaning.
type CleanOptions struct {
	// ContainerHome is the home directory inside the container, for configs
	// that record per-directory state (Claude's "projects").
	ContainerHome string
}

// FileSpec is one file an agent keeps.
type FileSpec struct {
	// Locate gives the file's absolute path on the host.
	Locate func(Env) string
	// Target is the path relative to the container user's home.
	Target string
	// Src is the path relative to the staging dir for strategies bind and
	// copy. For bind-dir the credential lands at SrcDir/<base of the host
	// file>, so the directory mount target is SrcDir.
	Src    string
	SrcDir string
	// LockDir (credentials only) holds the credential's mount target in the
	// locked layout, caw setup's default: staging keeps it mode 0400, so a
	// container user cannot traverse it to the mounted host file even with
	// the host user's uid (the read-only staging mount stops it from
	// chmodding the directory back), while root's guard can.
	LockDir string
	// Mode is the mode the file gets in the container.
	Mode fs.FileMode
	// Clean turns a host config into the container's; nil copies it as is.
	// Configs only.
	Clean func(data []byte, opts CleanOptions) ([]byte, error)
}

// MountTarget is the staging-relative path Docker mounts a credential onto:
// Src for a file mount, SrcDir for a directory mount (dir), each moved into
// LockDir when locked.
func (f FileSpec) MountTarget(dir, locked bool) string {
	t := f.Src
	if dir {
		t = f.SrcDir
	}
	if locked {
		t = path.Join(f.LockDir, path.Base(t))
	}
	return t
}

// Agent is one supported coding agent.
type Agent struct {
	Name string
	// Strategy is the credential's default strategy (bind or bind-dir).
	Strategy string
	// Format is the credential format name for Classify.
	Format string
	// Lifetime is the longest an access token of this agent really lasts
	// from the moment it is issued: an expiry claimed beyond now plus this
	// (and claimMargin) is forged, or from a broken clock, and never makes a
	// credential fresher (see Inspect). Providers overrides it per provider
	// for a file holding one entry per provider (opencode).
	Lifetime  time.Duration
	Providers map[string]time.Duration
	// StubOnRefusal: the agent answers a refused refresh token
	// (invalid_grant) by writing a logged-out stub, and logs out by
	// deleting its file, so a stub is never a logout the person asked for.
	StubOnRefusal bool
	// Merge keeps what the replaced file holds that the winner's would
	// lose (see Merge); nil replaces the whole file.
	Merge      MergeFunc
	Credential FileSpec
	Configs    []FileSpec
}

// table is every supported agent. Keep entries in the order users know them.
var table = []Agent{
	{
		Name: "claude", Strategy: "bind-dir", Format: "claude",
		// Claude Code's access tokens last about 8 h (claude-code 88947).
		Lifetime: 8 * time.Hour,
		// Its logout deletes the credential; a stub is its invalid_grant.
		StubOnRefusal: true,
		// The file also holds MCP servers' logins and other keys.
		Merge: mergeClaude,
		Credential: FileSpec{
			Locate: func(e Env) string {
				return filepath.Join(e.dirFromEnv("CLAUDE_CONFIG_DIR", ".claude"), ".credentials.json")
			},
			Target: ".claude/.credentials.json", Src: "claude/credentials.json", SrcDir: "claude/config-dir", LockDir: "claude/mnt", Mode: 0o600,
		},
		Configs: []FileSpec{{
			Locate: func(e Env) string {
				if d := e.get("CLAUDE_CONFIG_DIR"); d != "" && filepath.IsAbs(d) {
					return filepath.Join(d, ".claude.json")
				}
				return filepath.Join(e.Home, ".claude.json")
			},
			Target: ".claude.json", Src: "claude/config.json", Mode: 0o644, Clean: CleanClaudeJSON,
		}},
	},
	{
		Name: "codex", Strategy: "bind", Format: "codex",
		// The access token is a JWT from auth.openai.com; Codex refreshes it
		// after 8 days at the latest (last_refresh), and its exp is at most
		// 10 days after issue.
		Lifetime: 10 * 24 * time.Hour,
		Credential: FileSpec{
			Locate: func(e Env) string { return filepath.Join(e.dirFromEnv("CODEX_HOME", ".codex"), "auth.json") },
			Target: ".codex/auth.json", Src: "codex/auth.json", SrcDir: "codex/home", LockDir: "codex/mnt", Mode: 0o600,
		},
		Configs: []FileSpec{{
			Locate: func(e Env) string { return filepath.Join(e.dirFromEnv("CODEX_HOME", ".codex"), "config.toml") },
			Target: ".codex/config.toml", Src: "codex/config.toml", Mode: 0o644, Clean: CleanCodexTOML,
		}},
	},
	{
		Name: "gemini", Strategy: "bind", Format: "gemini",
		// Google OAuth access tokens last one hour.
		Lifetime: time.Hour,
		Merge:    mergeGemini,
		Credential: FileSpec{
			Locate: func(e Env) string { return filepath.Join(e.geminiDir(), "oauth_creds.json") },
			Target: ".gemini/oauth_creds.json", Src: "gemini/oauth_creds.json", SrcDir: "gemini/dir", LockDir: "gemini/mnt", Mode: 0o600,
		},
		Configs: []FileSpec{
			{
				Locate: func(e Env) string { return filepath.Join(e.geminiDir(), "google_accounts.json") },
				Target: ".gemini/google_accounts.json", Src: "gemini/google_accounts.json", Mode: 0o644,
			},
			{
				Locate: func(e Env) string { return filepath.Join(e.geminiDir(), "settings.json") },
				Target: ".gemini/settings.json", Src: "gemini/settings.json", Mode: 0o644,
			},
		},
	},
	{
		Name: "opencode", Strategy: "bind", Format: "opencode",
		// Per provider: opencode's Anthropic login is Claude's OAuth, its
		// OpenAI login Codex's, GitHub Copilot's tokens last 30 min; any
		// other provider gets a day.
		Lifetime:  24 * time.Hour,
		Providers: map[string]time.Duration{"anthropic": 8 * time.Hour, "openai": 10 * 24 * time.Hour, "github-copilot": time.Hour},
		// One entry per provider: each side's logins survive.
		Merge: mergeOpencode,
		Credential: FileSpec{
			Locate: func(e Env) string {
				return filepath.Join(e.dirFromEnv("XDG_DATA_HOME", ".local/share"), "opencode", "auth.json")
			},
			Target: ".local/share/opencode/auth.json", Src: "opencode/auth.json", SrcDir: "opencode/dir", LockDir: "opencode/mnt", Mode: 0o600,
		},
	},
}

// Lookup finds an agent by name.
func Lookup(name string) (Agent, bool) {
	for _, a := range table {
		if a.Name == name {
			return a, true
		}
	}
	return Agent{}, false
}

// Names lists the supported agents, sorted.
func Names() []string {
	out := make([]string, len(table))
	for i, a := range table {
		out[i] = a.Name
	}
	sort.Strings(out)
	return out
}
