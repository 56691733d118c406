package host_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caw-dev/caw/host"
)

// exampleHome is a throwaway home where Codex is logged in with an API key
// and Claude Code with an OAuth token valid until 17:00.
func exampleHome() (home, authDir string, cleanup func()) {
	tmp, err := os.MkdirTemp("", "caw-example-")
	if err != nil {
		panic(err)
	}
	home = filepath.Join(tmp, "home")
	files := map[string]string{
		".codex/auth.json":          `{"OPENAI_API_KEY":"sk-proj-example"}`,
		".codex/config.toml":        "model = \"gpt-5-codex\"\n[projects.\"/home/me/src\"]\ntrust_level = \"trusted\"\n",
		".claude/.credentials.json": `{"claudeAiOauth":{"accessToken":"sk-ant-oat01-x","refreshToken":"sk-ant-ort01-x","expiresAt":1764522000000}}`,
	}
	for p, data := range files {
		p = filepath.Join(home, p)
		os.MkdirAll(filepath.Dir(p), 0o700)
		os.WriteFile(p, []byte(data), 0o600)
	}
	return home, filepath.Join(tmp, "auth"), func() { os.RemoveAll(tmp) }
}

var exampleNow = func() time.Time { return time.Date(2025, 11, 30, 12, 0, 0, 0, time.UTC) }

func ExampleSetup() {
	home, authDir, cleanup := exampleHome()
	defer cleanup()

	res, err := host.Setup(host.SetupOptions{
		AuthDir: authDir, SourceHome: home, ContainerHome: "/home/dev", Now: exampleNow,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, a := range res.Agents {
		fmt.Println(a.Name, a.Strategy, a.Status.Describe(exampleNow()))
	}
	for _, w := range res.Warnings {
		fmt.Println("warning:", strings.ReplaceAll(w, home, "~"))
	}
	// Output:
	// claude bind-dir valid (5h 0m left)
	// codex bind valid
	// warning: claude: no config at ~/.claude.json, skipped
}

func ExampleStatus() {
	home, authDir, cleanup := exampleHome()
	defer cleanup()
	if _, err := host.Setup(host.SetupOptions{AuthDir: authDir, SourceHome: home, Now: exampleNow}); err != nil {
		fmt.Println(err)
		return
	}

	rep, err := host.Status(host.StatusOptions{AuthDir: authDir, Now: exampleNow})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range rep.Files {
		fmt.Printf("%s %s %s %s\n", f.Agent, f.File, f.Strategy, f.Token)
	}
	fmt.Println("all valid:", rep.OK)
	// Output:
	// claude .claude/.credentials.json bind-dir valid (5h 0m left)
	// codex .codex/auth.json bind valid
	// codex .codex/config.toml copy -
	// all valid: true
}

func ExampleDockerFlags() {
	home, authDir, cleanup := exampleHome()
	defer cleanup()
	if _, err := host.Setup(host.SetupOptions{AuthDir: authDir, SourceHome: home, Agents: []string{"codex"}, Now: exampleNow}); err != nil {
		fmt.Println(err)
		return
	}

	mounts, err := host.DockerFlags(authDir)
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := host.Render(mounts, host.FormatJSON)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(strings.NewReplacer(authDir, "$AUTH", home, "$HOME").Replace(out))
	// Output:
	// [
	//   "-v",
	//   "$AUTH:/tmp/caw_auth:ro",
	//   "-v",
	//   "$HOME/.codex/auth.json:/tmp/caw_auth/codex/mnt/auth.json:rw"
	// ]
}

func ExampleTeardown() {
	home, authDir, cleanup := exampleHome()
	defer cleanup()
	if _, err := host.Setup(host.SetupOptions{AuthDir: authDir, SourceHome: home, Now: exampleNow}); err != nil {
		fmt.Println(err)
		return
	}

	res, err := host.Teardown(host.TeardownOptions{AuthDir: authDir, Home: home})
	if err != nil {
		fmt.Println(err)
		return
	}
	_, statErr := os.Stat(filepath.Join(home, ".codex/auth.json"))
	fmt.Println("removed:", res.Removed, "host credential kept:", statErr == nil)
	// Output:
	// removed: true host credential kept: true
}
