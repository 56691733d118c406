package torture

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/harness"
	"github.com/caw-dev/caw/internal/testenv"
)

// monitor reads a file on every inotify event until stopped and counts the
// contents that are not a complete credential the test wrote: what a guard
// must never put there. The file's directory is watched too, for renames.
type monitor struct {
	stop chan struct{}
	done sync.WaitGroup
	bad  int64
	seen int64
	last []byte
}

func watchDest(t *testing.T, path string) *monitor {
	t.Helper()
	w, err := harness.NewWatch(harness.MaskWritten, filepath.Dir(path), path)
	if err != nil {
		t.Fatal(err)
	}
	m := &monitor{stop: make(chan struct{})}
	m.done.Add(1)
	go func() {
		defer m.done.Done()
		defer w.Close()
		for {
			select {
			case <-m.stop:
				return
			default:
			}
			if _, err := w.Next(time.Now().Add(20 * time.Millisecond)); err != nil {
				return
			}
			data, err := harness.ReadSmall(path)
			if err != nil {
				continue
			}
			m.seen++
			if _, ok := harness.Seq(data); !ok {
				m.bad++
				m.last = data
			}
		}
	}()
	return m
}

func (m *monitor) close() { close(m.stop); m.done.Wait() }

// TestTornWrites: a writer truncates the credential on one side, writes a
// prefix cut at a random offset, and then either pauses before finishing
// (the file stays open) or closes the torn file and rewrites it whole a
// moment later. The other side must never hold anything but a complete
// credential, and must end with the finished one. Both directions; 10,000
// rounds in all under CAW_TORTURE=full.
func TestTornWrites(t *testing.T) {
	bin := cawInit(t)
	perDir := rounds(300, 5000)
	for _, dir := range []string{"host-to-home", "home-to-host"} {
		t.Run(dir, func(t *testing.T) {
			n := tornWrites(t, harness.CawInit(bin, fastWrites...), dir == "home-to-host", perDir, 2*time.Millisecond)
			n.report(t, "torn writes "+dir, "invalid_propagated", "lost")
		})
	}
}

// TestTornWritesCatchesTheShellGuard runs a few rounds against the shell
// guard built like the original caw's (bench/shellguard.sh), which copies a
// file on close_write without validating it: the monitor must catch it
// propagating torn content, or the torn-write test above proves nothing.
func TestTornWritesCatchesTheShellGuard(t *testing.T) {
	cawInit(t)
	testenv.LookPath(t, "inotifywait", "inotify-tools")
	script := filepath.Join(testenv.ModuleRoot(t), "bench", "shellguard.sh")
	argv := func(c *harness.Container) []string {
		return []string{"/bin/sh", script, c.Mounted, c.HomeFile, strconv.Itoa(c.UID), strconv.Itoa(c.GID)}
	}
	n := tornWrites(t, argv, false, 10, 100*time.Millisecond)
	t.Logf("shell guard: invalid_propagated=%d of %d closed-torn rounds", n.get("invalid_propagated"), n.get("closed_torn"))
	if n.get("closed_torn") > 0 && n.get("invalid_propagated") == 0 {
		t.Error("the shell guard copied no torn write: the monitor does not see what it should")
	}
}

// tornWrites runs the torn-writer rounds against one guard and returns the
// tallies. Pauses are random up to maxPause.
func tornWrites(t *testing.T, argv func(*harness.Container) []string, toHost bool, count int, maxPause time.Duration) *counts {
	r := rng(t)
	d := scratch(t)
	host, err := harness.NewHost(d, 1, hostUID, hostGID)
	if err != nil {
		t.Fatal(err)
	}
	c, err := harness.Start(d, host, harness.Spec{UID: userUID, GID: userGID, Argv: argv}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Kill()
	must(t, waitSeq(c.HomeFile, 1, 5*time.Second))
	src, dst := host.File, c.HomeFile
	if toHost {
		src, dst = c.HomeFile, host.File
	}
	n := newCounts("rounds", "invalid_propagated", "lost", "paused", "closed_torn")
	m := watchDest(t, dst)
	for i := 0; i < count; i++ {
		seq := int64(i + 2)
		full := harness.Cred(seq)
		cut := r.IntN(len(full))
		f, err := os.OpenFile(src, os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(full[:cut]); err != nil {
			t.Fatal(err)
		}
		pause := time.Duration(r.Int64N(int64(maxPause)))
		if r.IntN(2) == 0 {
			n.add("paused", 1)
			time.Sleep(pause)
			_, err = f.Write(full[cut:])
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		} else {
			n.add("closed_torn", 1)
			f.Close()
			time.Sleep(pause)
			err = harness.WriteInPlace(src, full)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := waitSeq(dst, seq, 3*time.Second); err != nil {
			n.add("lost", 1)
			t.Logf("round %d: %v", i, err)
		}
		n.add("rounds", 1)
	}
	m.close()
	n.add("invalid_propagated", m.bad)
	n.add("destination_reads", m.seen)
	if m.bad > 0 {
		t.Logf("last invalid content seen on the destination: %q", m.last)
	}
	if s := c.Stderr(); s != "" {
		t.Logf("guard stderr:\n%s", tail(s, 20))
	}
	return n
}
