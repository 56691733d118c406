package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Proc is what /proc says about a process (or a tree of them, summed).
type Proc struct {
	// CPU is the time spent on a CPU, summed over threads (schedstat, in
	// ns, finer than the clock ticks of /proc/PID/stat).
	CPU time.Duration
	// RSS and HWM are VmRSS and VmHWM (peak) in KiB.
	RSS, HWM int64
	// Threads and FDs are the counts of tasks and open descriptors.
	Threads, FDs int
	// Switches is voluntary plus nonvoluntary context switches summed
	// over threads: each is a wake-up or a preemption.
	Switches int64
	// Procs is how many processes were summed.
	Procs int
}

// ReadProc reads one process.
func ReadProc(pid int) (Proc, error) {
	var p Proc
	base := fmt.Sprintf("/proc/%d", pid)
	status, err := os.ReadFile(base + "/status")
	if err != nil {
		return p, fmt.Errorf("read %s/status: %w", base, err)
	}
	p.RSS = statusKB(status, "VmRSS:")
	p.HWM = statusKB(status, "VmHWM:")
	tasks, err := os.ReadDir(base + "/task")
	if err != nil {
		return p, err
	}
	for _, t := range tasks {
		td := filepath.Join(base, "task", t.Name())
		if s, err := os.ReadFile(td + "/schedstat"); err == nil {
			if f := strings.Fields(string(s)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				p.CPU += time.Duration(ns)
			}
		}
		if s, err := os.ReadFile(td + "/status"); err == nil {
			p.Switches += statusKB(s, "voluntary_ctxt_switches:") + statusKB(s, "nonvoluntary_ctxt_switches:")
		}
		p.Threads++
	}
	fds, err := os.ReadDir(base + "/fd")
	if err != nil {
		return p, err
	}
	p.FDs = len(fds)
	p.Procs = 1
	return p, nil
}

// ReadTree reads pid and all its descendants, summed (HWM is summed too:
// the peak of each, an upper bound of the tree's peak).
func ReadTree(pid int) (Proc, error) {
	sum, err := ReadProc(pid)
	if err != nil {
		return sum, err
	}
	for _, c := range children(pid) {
		p, err := ReadTree(c)
		if err != nil {
			continue // exited meanwhile
		}
		sum.CPU += p.CPU
		sum.RSS += p.RSS
		sum.HWM += p.HWM
		sum.Threads += p.Threads
		sum.FDs += p.FDs
		sum.Switches += p.Switches
		sum.Procs += p.Procs
	}
	return sum, nil
}

func children(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, t.Name()))
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// statusKB finds "key   N kB" (or "key N") in a status file.
func statusKB(status []byte, key string) int64 {
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}
