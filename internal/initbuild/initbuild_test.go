package initbuild

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSpelledTheSame: the builds that are not Go code (make, docker build,
// the README's manual line) link caw-init with the same flags.
func TestSpelledTheSame(t *testing.T) {
	for _, f := range []string{"Makefile", "Dockerfile", "README.md"} {
		data, err := os.ReadFile(filepath.Join("..", "..", f))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), LDFlags) {
			t.Errorf("%s does not link caw-init with %q", f, LDFlags)
		}
	}
}
