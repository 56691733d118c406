// Package host is caw's host side: the Go API that the `caw` command is a thin
// layer over. It owns the staging dir (default ~/.caw/auth, $CAW_AUTH_DIR):
//
//   - Setup finds each agent's files under a source home (via the agents
//     table), writes cleaned configs, an empty placeholder at every
//     credential's mount target and manifest.json into a fresh sibling
//     directory, then puts it in place: renamed, for a first setup; merged
//     into the existing staging otherwise, keeping the placeholders running
//     containers have mounts on, with manifest.json renamed last. Every
//     input is checked first, so a failed setup leaves the previous staging
//     as it was. No secret ever lands in staging. In steps: resolveSetup
//     checks the options, planAgent reads and cleans each agent's files
//     into a stagingPlan (setup.go), and stagingPlan.write puts it in place
//     (staging.go, lock.go).
//   - Status reports every managed file, reading credentials from the host
//     (their source of truth), never from staging.
//   - DockerFlags gives the mounts a container needs: the staging dir
//     read-only at /tmp/caw_auth and each credential read-write at its place
//     under it; Render prints them as shell words, a JSON argv array, a
//     compose volumes: snippet or a devcontainer "mounts" array.
//   - On macOS (SetupOptions.Keychain), Setup also finds logins held in
//     the Keychain (packages keychain and bridge): each gets a mirror file
//     outside the staging dir (~/.caw/keychain/<agent>/, mode 0600) that
//     stands for the credential from then on, and a bridge config for
//     `caw bridge`, which keeps Keychain and mirror in sync.
//   - ResolveInit and RenderInit (init.go) add docker-flags --init: caw-init
//     mounted read-only and made the entrypoint, the command run as a
//     numeric uid:gid, so an image built without caw-init runs under it;
//     InstallInit fills the volume caw install-init makes.
//   - Teardown removes the staging dir and never touches host credentials.
//     Containers still running from it lose their credential mounts (the
//     kernel detaches a mount whose mount point is removed), so stop them
//     first.
//
// Bad input (an unknown agent, a container home that is not absolute) is an
// *InputError naming the option's field; the package knows no flags, and
// cmd/caw words such an error with its own flag and exits 2.
//
// # Staging layout
//
//	$CAW_AUTH_DIR/                 0700
//	  manifest.json                0600
//	  claude/config.json           0600 cleaned ~/.claude.json (copy)
//	  claude/mnt/                  0400 lock dir
//	  claude/mnt/config-dir/       0700 empty: mount target of ~/.claude (bind-dir)
//	  codex/mnt/                   0400 lock dir
//	  codex/mnt/auth.json          0600 empty: mount target of ~/.codex/auth.json (bind)
//	  codex/config.toml            0600 cleaned config (copy)
//
// A lock dir (agents.FileSpec.LockDir) can be listed but not searched: a
// container user cannot reach the host file mounted inside even with the
// host user's uid (the read-only staging mount stops a chmod), while root's
// caw-init can. The host side never makes one searchable where a container
// sees it: it checks placeholders by listing, and a lock dir that must
// change is made write-only, moved out of staging, and removed there
// (lock.go). SetupOptions.UnlockedMounts (caw setup --unlocked-mounts, for
// docker run --user) puts the targets directly in the agent's directory
// (claude/config-dir, codex/auth.json), without that protection.
//
// # status --json schema (version 1)
//
// StatusReport is encoded as one JSON object. Fields are never removed or
// renamed within a schema version; new fields may be added.
//
//	{
//	  "schema": 1,
//	  "auth_dir": "/home/alice/.caw/auth",      // staging dir
//	  "host_home": "/home/alice",               // from the manifest
//	  "container_home": "/home/playground",     // from the manifest
//	  "created_at": "2026-11-30T08:00:00Z",      // when setup ran (as written)
//	  "ok": true,                                // every credential valid (--check exits 1 when false)
//	  "files": [{
//	    "agent": "claude",
//	    "file": ".claude/.credentials.json",     // path in the container home
//	    "type": "credential",                    // credential | config
//	    "strategy": "bind-dir",                  // bind | bind-dir | copy
//	    "source": "/home/alice/.claude/.credentials.json", // host path, or "staged"
//	    "path": "/home/alice/.claude/.credentials.json",   // the file status read
//	    "exists": true,
//	    "modified": "2026-11-30T07:58:00Z",      // RFC 3339, null when missing
//	    "modified_ago": "2m",                    // "" when missing
//	    "state": "valid",                        // credentials: valid | expired | logged-out |
//	                                             // invalid | empty | missing; configs: "" (not classified)
//	    "expires_at": "2026-11-30T13:00:00Z",    // null when unknown or not a credential
//	    "token": "valid (5h 2m left)",           // human text, "-" for configs
//	    "problem": "permission denied"           // only when the file exists but could not be read
//	  }]
//	}
//
// No field ever holds a token or any other secret.
package host
