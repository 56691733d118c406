package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/caw-dev/caw/agents"
	"github.com/caw-dev/caw/manifest"
)

// StatusSchema is the version of StatusReport's JSON encoding.
const StatusSchema = 1

// StatusOptions are caw status's inputs.
type StatusOptions struct {
	AuthDir string
	// Agents limits the report; nil: every agent in the manifest.
	Agents []string
	Now    func() time.Time
}

// StatusReport is the result of Status; its JSON encoding is the documented
// `caw status --json` schema (see the package doc).
type StatusReport struct {
	Schema        int          `json:"schema"`
	AuthDir       string       `json:"auth_dir"`
	HostHome      string       `json:"host_home"`
	ContainerHome string       `json:"container_home"`
	CreatedAt     string       `json:"created_at"`
	OK            bool         `json:"ok"`
	Files         []FileStatus `json:"files"`
}

// FileStatus is one managed file.
type FileStatus struct {
	Agent    string `json:"agent"`
	File     string `json:"file"`
	Type     string `json:"type"`
	Strategy string `json:"strategy"`
	// Source is the source of truth: the host path for bind and bind-dir,
	// "staged" for copy.
	Source      string     `json:"source"`
	Path        string     `json:"path"`
	Exists      bool       `json:"exists"`
	Modified    *time.Time `json:"modified"`
	ModifiedAgo string     `json:"modified_ago"`
	State       string     `json:"state"`
	ExpiresAt   *time.Time `json:"expires_at"`
	Token       string     `json:"token"`
	// Problem says why a file could not be read, "" when it could.
	Problem string `json:"problem,omitempty"`

	status agents.Status
}

// Valid reports whether the file is a credential whose token is valid.
func (f FileStatus) Valid() bool { return f.status.State == agents.Valid }

// Status reports every managed file of the staging dir's manifest. A
// credential is read from the host (its source of truth), never from staging.
func Status(opts StatusOptions) (*StatusReport, error) {
	authDir, err := absClean(opts.AuthDir)
	if err != nil {
		return nil, err
	}
	opts.AuthDir = authDir
	m, err := readManifest(authDir)
	if err != nil {
		return nil, err
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	t := now()
	want := map[string]bool{}
	for _, a := range opts.Agents {
		if _, ok := m.Agents[a]; !ok {
			return nil, withFix(fmt.Errorf("agent %s is not in the staging at %s, which has: %s", a, opts.AuthDir, strings.Join(manifestAgents(m), ", ")),
				"Agents", "run caw setup %s "+a)
		}
		want[a] = true
	}
	rep := &StatusReport{Schema: StatusSchema, AuthDir: opts.AuthDir, HostHome: m.HostHome,
		ContainerHome: m.ContainerHome, CreatedAt: m.CreatedAt, OK: true, Files: []FileStatus{}}
	for _, e := range m.Entries() {
		if len(want) > 0 && !want[e.Agent] {
			continue
		}
		fst := FileStatus{Agent: e.Agent, File: e.ContainerTarget, Type: e.Type, Strategy: e.Strategy}
		if e.Type == manifest.TypeCredential {
			fst.Source = hostPath(m, e.File)
			fst.Path = fst.Source
			fst.status = credentialStatus(&fst, e, t)
			fst.State = fst.status.State.String()
			fst.Token = fst.status.Describe(t)
			if !fst.status.Expiry.IsZero() {
				exp := fst.status.Expiry.UTC()
				fst.ExpiresAt = &exp
			}
			if fst.status.State != agents.Valid {
				rep.OK = false
			}
		} else {
			fst.Source = "staged"
			fst.Path = filepath.Join(opts.AuthDir, filepath.FromSlash(e.Src))
			fst.Token = "-"
			if _, fi, err := readRegular(fst.Path, maxConfigSize, true); err == nil {
				setModified(&fst, fi, t)
			} else if !errors.Is(err, fs.ErrNotExist) {
				fst.Problem = trimPathErr(err).Error()
			}
		}
		rep.Files = append(rep.Files, fst)
	}
	return rep, nil
}

func credentialStatus(fst *FileStatus, e manifest.Entry, now time.Time) agents.Status {
	if fst.Path == "" {
		fst.Problem = "the manifest has no host_original for it"
		return agents.Status{State: agents.Missing}
	}
	data, fi, err := readRegular(fst.Path, maxCredentialSize, false)
	if errors.Is(err, fs.ErrNotExist) {
		return agents.Status{State: agents.Missing}
	}
	if fi == nil {
		// Unreadable (permission denied): its age is still worth showing.
		fi, _ = os.Stat(fst.Path)
	}
	if fi != nil {
		setModified(fst, fi, now)
	}
	if err != nil {
		fst.Problem = trimPathErr(err).Error()
		return agents.Status{State: agents.Invalid}
	}
	return agents.Classify(e.CredentialFormat(), data, now)
}

func setModified(f *FileStatus, fi fs.FileInfo, now time.Time) {
	mt := fi.ModTime().UTC().Truncate(time.Second)
	f.Exists = true
	f.Modified = &mt
	f.ModifiedAgo = agents.Duration(now.Sub(mt))
}

func manifestAgents(m *manifest.Manifest) []string {
	var out []string
	for _, e := range m.Entries() {
		if len(out) == 0 || out[len(out)-1] != e.Agent {
			out = append(out, e.Agent)
		}
	}
	return out
}

// WriteTable prints the report as the table `caw status` shows.
func (r *StatusReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "AGENT\tFILE\tTYPE\tSTRATEGY\tSOURCE OF TRUTH\tMODIFIED\tTOKEN\n")
	for _, f := range r.Files {
		mod := "-"
		if f.Exists {
			mod = f.ModifiedAgo + " ago"
		}
		tok := f.Token
		if f.Problem != "" {
			tok += " (" + f.Problem + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Agent, f.File, f.Type, f.Strategy, f.Source, mod, tok)
	}
	return tw.Flush()
}

// JSON encodes the report in the documented schema, indented, with a final
// newline.
func (r *StatusReport) JSON() ([]byte, error) {
	out, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode status: %w", err)
	}
	return append(out, '\n'), nil
}
