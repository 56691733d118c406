package manifest

import (
	"encoding/json"
	"os"
	"path/filepath"
)

// jsonOf encodes m without validating, as a hostile writer could.
func jsonOf(m *Manifest) ([]byte, error) { return json.Marshal(m) }

func readFile(name string) ([]byte, error) { return os.ReadFile(filepath.Join("testdata", name)) }
