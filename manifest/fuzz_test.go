package manifest

import (
	"path"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse: Parse never panics, and whatever it accepts obeys every rule
// caw-init relies on and survives a Marshal/Parse round trip unchanged.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"original-v1.json", "caw-v1.json", "caw-v1-full.json"} {
		data, err := readFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"version":1,"container_home":"/h","agents":{"a":{"files":[{"src":"a/b","container_target":"../x","type":"config","strategy":"copy","mode":"0644"}]}}}`))
	f.Add([]byte(`{"version":1,"container_home":"/h","agents":{"a":{"files":[{"src":"a/d/c","container_target":"c","host_original":"/x/c","type":"credential","strategy":"bind-dir","mode":"0600"}]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			if m != nil {
				t.Fatal("Parse returned a manifest with an error")
			}
			return
		}
		if m.Version != Version || !path.IsAbs(m.ContainerHome) {
			t.Fatalf("accepted a bad header: %+v", m)
		}
		for _, e := range m.Entries() {
			for _, p := range []string{e.Src, e.ContainerTarget} {
				if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") || strings.ContainsRune(p, 0) {
					t.Fatalf("accepted unsafe path %q in %s", p, e.Field("src"))
				}
			}
			if e.Perm()&^0o777 != 0 {
				t.Fatalf("accepted mode %q", e.Mode)
			}
			if e.Type == TypeConfig && e.Synced() {
				t.Fatalf("accepted a synced config %s", e.Field("strategy"))
			}
			if e.Strategy == StrategyBindDir && (e.MountSrc() == "." || path.IsAbs(e.MountSrc())) {
				t.Fatalf("bind-dir mounts over the staging root: %q", e.Src)
			}
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal of an accepted manifest: %v", err)
		}
		m2, err := Parse(out)
		if err != nil {
			t.Fatalf("reparse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(normalize(m), normalize(m2)) {
			t.Fatalf("round trip changed the manifest:\n%+v\n%+v", m, m2)
		}
	})
}

// normalize makes nil and empty equal, which JSON does not distinguish.
func normalize(m *Manifest) *Manifest {
	c := *m
	c.Agents = map[string]Agent{}
	for n, a := range m.Agents {
		if len(a.Files) == 0 {
			a.Files = nil
		}
		c.Agents[n] = a
	}
	return &c
}
