package pid1

import (
	"errors"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// killWait bounds the wait for SIGKILLed leftovers: a process in
// uninterruptible sleep must not keep caw-init (and docker stop) hanging.
const killWait = 2 * time.Second

// Shutdown ends the processes left once the main child has exited: SIGTERM
// (and SIGCONT, so stopped ones see it), up to Grace for them to go, then
// SIGKILL, reaping all of them. As PID 1 that is every other process of the
// namespace; as a subreaper, every descendant. It returns at once when
// nothing is left, the common case.
func (s *Supervisor) Shutdown() {
	s.reap()
	if s.noChildren {
		return
	}
	// From here on, wait by SIGCHLD so the grace timer can interrupt; a
	// child that ended before this registration is caught by the reap
	// pass in waitGone.
	signal.Notify(s.sigs.chld, syscall.SIGCHLD)
	n := s.signalLeftovers(syscall.SIGTERM)
	s.signalLeftovers(syscall.SIGCONT)
	s.cfg.Logf(1, "sent SIGTERM to %s; SIGKILL in %v", n, s.cfg.Grace)
	if s.waitGone(s.cfg.Grace, false) {
		return
	}
	n = s.signalLeftovers(syscall.SIGKILL)
	s.cfg.Logf(1, "grace %v over: sent SIGKILL to %s", s.cfg.Grace, n)
	if !s.waitGone(killWait, true) {
		s.cfg.Logf(0, "leftover processes still not reaped %v after SIGKILL; exiting anyway", killWait)
	}
}

// waitGone reaps until no child is left or d has passed. With rekill, every
// SIGCHLD also re-sends SIGKILL, for descendants forked after the last round.
func (s *Supervisor) waitGone(d time.Duration, rekill bool) bool {
	s.reap()
	if s.noChildren {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-s.sigs.chld:
			s.reap()
			if s.noChildren {
				return true
			}
			if rekill {
				s.signalLeftovers(syscall.SIGKILL)
			}
		case sig := <-s.sigs.fwd:
			s.cfg.Logf(1, "shutting down: %s not forwarded", signalName(sig))
		case <-t.C:
			return false
		}
	}
}

// signalLeftovers sends sig to every leftover process and says to whom.
func (s *Supervisor) signalLeftovers(sig syscall.Signal) string {
	if s.cfg.PID1 {
		// kill(-1) from PID 1 reaches every other process in the namespace.
		if err := syscall.Kill(-1, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			s.cfg.Logf(0, "kill(-1, %s): %v", signalName(sig), err)
		}
		return "all processes"
	}
	pids, err := descendants(os.Getpid())
	if err != nil {
		s.cfg.Logf(0, "cannot list leftover processes: %v", err)
	}
	for _, p := range pids {
		_ = syscall.Kill(p, sig) // gone already is fine
	}
	return strconv.Itoa(len(pids)) + " descendants"
}

// descendants lists every process below root, from /proc's parent links.
func descendants(root int) ([]int, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(pid); ok {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out, nil
}

// parentOf reads the ppid from /proc/PID/stat ("pid (comm) state ppid ...";
// comm may hold spaces and parentheses, so parse after the last ')').
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}
