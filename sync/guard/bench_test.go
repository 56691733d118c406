package guard

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/caw-dev/caw/internal/safefs"
	"github.com/caw-dev/caw/internal/testenv"
	"golang.org/x/sys/unix"
)

// Latency from a write on one side to the finished write on the other,
// through a real guard, real bind mounts and real inotify: the benchmark
// writes, then blocks on an inotify watch of the other side until it holds
// the new token. Reported as p50/p99 in microseconds.
//
//	go test -run '^$' -bench Latency -benchtime 2000x ./sync/guard/

func BenchmarkLatencyHomeToHostBind(b *testing.B) { benchLatency(b, "bind", true) }
func BenchmarkLatencyHostToHomeBind(b *testing.B) { benchLatency(b, "bind", false) }
func BenchmarkLatencyHomeToHostDir(b *testing.B)  { benchLatency(b, "bind-dir", true) }
func BenchmarkLatencyHostToHomeDir(b *testing.B)  { benchLatency(b, "bind-dir", false) }

func benchLatency(b *testing.B, strategy string, toHost bool) {
	f := newFx(b)
	var hostFile string
	if strategy == "bind" {
		hostFile = f.bind("claude", ".claude/.credentials.json", claudeTok(1))
	} else {
		hostFile = f.bindDir("claude", ".claude/.credentials.json", claudeTok(1))
	}
	f.start()
	homeFile := f.homePath(".claude/.credentials.json")
	src, dst := hostFile, homeFile
	srcUID := hostUID
	if toHost {
		src, dst, srcUID = homeFile, hostFile, userUID
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(dst), unix.IN_MODIFY|unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 64*1024)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		tok := claudeTok(i + 2)
		t0 := time.Now()
		// What each agent does on its side: temp + rename in the home and
		// in a bind-dir directory, in place through a file bind mount.
		if toHost || strategy == "bind-dir" {
			renameOwned(b, src, tok, srcUID, srcUID)
		} else {
			writeOwned(b, src, tok, srcUID, srcUID, 0o600)
		}
		if err := watchUntil(fd, dst, tok, buf); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	percentiles(b, lat)
}

// watchUntil blocks on inotify events in dir until p holds want.
func watchUntil(fd int, p string, want []byte, buf []byte) error {
	deadline := time.Now().Add(5 * time.Second)
	for !same(readFile(p), want) {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out waiting for %s", p)
		}
		unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 100)
		for {
			if n, err := unix.Read(fd, buf); n <= 0 || err != nil {
				break
			}
		}
	}
	return nil
}

func percentiles(b *testing.B, d []time.Duration) {
	slices.Sort(d)
	if len(d) == 0 {
		return
	}
	p := func(q float64) float64 { return float64(d[int(q*float64(len(d)-1))].Microseconds()) }
	b.ReportMetric(p(0.5), "p50-µs")
	b.ReportMetric(p(0.99), "p99-µs")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkFanout64: 64 guards (containers) share one host file; latency
// from an in-place host write until all 64 home copies hold it. Each guard
// runs in a process of its own, as caw-init does in each container (the
// guard blocks a thread in poll(2), which 64 guards in one process would
// multiply).
//
//	go test -run '^$' -bench Fanout -benchtime 200x ./sync/guard/
func BenchmarkFanout64(b *testing.B) {
	testenv.RequireRoot(b)
	hostFile := filepath.Join(b.TempDir(), "cred.json")
	writeOwned(b, hostFile, claudeTok(1), hostUID, hostGID, 0o600)
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	var homes []string
	for range 64 {
		f := newFx(b)
		src := "claude/cred.json"
		f.placeholder(src)
		mount(b, hostFile, filepath.Join(f.auth, src))
		f.entry("claude", manifestFile(src, ".claude/.credentials.json", "credential", "bind", "0600"))
		f.startProc(false)
		homes = append(homes, f.homePath(".claude/.credentials.json"))
		unix.InotifyAddWatch(fd, filepath.Dir(homes[len(homes)-1]), unix.IN_MOVED_TO)
	}
	buf := make([]byte, 64*1024)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		tok := claudeTok(i + 2)
		t0 := time.Now()
		writeOwned(b, hostFile, tok, hostUID, hostGID, 0o600)
		for _, h := range homes {
			if err := watchUntil(fd, h, tok, buf); err != nil {
				b.Fatal(err)
			}
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	percentiles(b, lat)
}

// Floors for BenchmarkLatencyHomeToHostDir, on the same filesystem: what no
// guard writing a bind-dir credential crash-safe can beat.
//
//	go test -run '^$' -bench 'LatencyHomeToHostDir|Floor' -benchtime 2000x ./sync/guard/

// BenchmarkFloorDirSyscalls: the bare create + write + fsync + rename of a
// credential-sized file, without any event or read.
func BenchmarkFloorDirSyscalls(b *testing.B) {
	dir := b.TempDir()
	data := claudeTok(12345)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		tmp := filepath.Join(dir, fmt.Sprintf(".tmp%d", i))
		fd, err := unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		if err := safefs.WriteAll(fd, data); err != nil {
			b.Fatal(err)
		}
		if err := unix.Fsync(fd); err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
		if err := unix.Rename(tmp, filepath.Join(dir, "cred.json")); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	percentiles(b, lat)
}

// BenchmarkFloorDirCopier: a bare inotify copier (no checks, no decision,
// no lock) from a home dir to a host dir, measured as
// BenchmarkLatencyHomeToHostDir measures the guard.
func BenchmarkFloorDirCopier(b *testing.B) {
	src, dst := b.TempDir(), b.TempDir()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := unix.InotifyAddWatch(fd, src, unix.IN_MOVED_TO); err != nil {
		b.Fatal(err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	defer func() { close(stop); <-done; unix.Close(fd) }()
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for i := 0; ; i++ {
			// The timeout only lets the copier see stop.
			unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 50)
			select {
			case <-stop:
				return
			default:
			}
			n, err := unix.Read(fd, buf)
			if n <= 0 || err != nil {
				continue
			}
			if !bytes.Contains(buf[:n], []byte("cred.json\x00")) {
				continue
			}
			data, err := os.ReadFile(filepath.Join(src, "cred.json"))
			if err != nil {
				continue
			}
			tmp := filepath.Join(dst, fmt.Sprintf(".tmp%d", i))
			f, err := unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
			if err != nil {
				continue
			}
			safefs.WriteAll(f, data)
			unix.Fsync(f)
			unix.Close(f)
			unix.Rename(tmp, filepath.Join(dst, "cred.json"))
		}
	}()
	w, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(w)
	unix.InotifyAddWatch(w, dst, unix.IN_MOVED_TO)
	buf := make([]byte, 64*1024)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		tok := claudeTok(i + 2)
		t0 := time.Now()
		renameOwned(b, filepath.Join(src, "cred.json"), tok, userUID, userGID)
		if err := watchUntil(w, filepath.Join(dst, "cred.json"), tok, buf); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	percentiles(b, lat)
}
