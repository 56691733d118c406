package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"github.com/caw-dev/caw/internal/harness"
)

// helper runs one of the bench's own helper modes (this binary re-executed
// inside a namespace). It returns the exit status.
func helper(mode string, args []string) int {
	var err error
	switch mode {
	case "__reap":
		err = helperReap(args)
	case "__floor":
		err = helperFloor(args)
	default:
		err = fmt.Errorf("unknown helper %s", mode)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", mode, err)
		return 1
	}
	return 0
}

// helperReap is the main child of the init under test, PID 2 of a new PID
// namespace: busybox shells fork N background sleeps and exit, so they
// are re-parented to the init; once all exist, one kill(-1, SIGKILL) ends
// every one of them at the same instant, and the time until /proc lists
// nothing but the init and this helper (zombies stay listed until reaped)
// is the init's time to reap N orphans. It prints that time in ns.
func helperReap(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: __reap N BUSYBOX")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	// kill(-1) below must only ever reach this namespace's orphans: refuse
	// to run anywhere but as the only child of the init of a fresh PID
	// namespace (its /proc lists the init and this process, nothing else).
	if os.Getppid() != 1 || procs() != 2 {
		return fmt.Errorf("must run as the only child of PID 1 in a new PID namespace (unshare -p -f --mount-proc INIT -- ...); here the parent is %d and /proc lists %d processes", os.Getppid(), procs())
	}
	// Forked by groups of 100 subshells, each with its own parent: one
	// busybox shell forking all of them scans a job list that grows with
	// every fork (10,000 took over 10 minutes on a 2-core VM).
	storm := exec.Command(args[1], "sh", "-c", `left=$1
while [ $left -gt 0 ]; do
	k=$(( left < 100 ? left : 100 )); left=$((left-k))
	( i=0; while [ $i -lt $k ]; do sleep 100000 & i=$((i+1)); done ) &
done
wait`, "sh", args[0])
	storm.Stderr = os.Stderr
	if err := storm.Run(); err != nil {
		return fmt.Errorf("spawn the orphans: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for procs() < n+2 {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d processes after the storm, want %d", procs(), n+2)
		}
		time.Sleep(time.Millisecond)
	}
	begin := time.Now()
	if err := syscall.Kill(-1, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill(-1): %w", err)
	}
	// A scan of /proc costs about as much as the init's reaping of a few
	// hundred orphans; a short pause between scans leaves the CPU to it.
	for left := procs(); left > 2; left = procs() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d processes still listed (zombies not reaped)", left-2)
		}
		time.Sleep(200 * time.Microsecond)
	}
	fmt.Println(time.Since(begin).Nanoseconds())
	return nil
}

// procs counts the processes /proc lists (the namespace's own /proc).
func procs() int {
	f, err := os.Open("/proc")
	if err != nil {
		return -1
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	n := 0
	for _, s := range names {
		if s[0] >= '0' && s[0] <= '9' {
			n++
		}
	}
	return n
}

// helperFloor is the floor of the sync rows: the least a guard can do, a
// bare inotify copier with no validation, no ownership or symlink care and
// no crash safety: on close_write of either file, copy it over the other
// in place unless they are equal.
func helperFloor(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("usage: __floor MOUNTED HOME_COPY UID GID")
	}
	mnt, home := args[0], args[1]
	uid, _ := strconv.Atoi(args[2])
	gid, _ := strconv.Atoi(args[3])
	data, err := os.ReadFile(mnt)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(home), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(home, data, 0o600); err != nil {
		return err
	}
	for _, p := range []string{home, filepath.Dir(home)} {
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
	}
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC)
	if err != nil {
		return err
	}
	other := map[int32][2]string{}
	for _, pair := range [][2]string{{mnt, home}, {home, mnt}} {
		wd, err := syscall.InotifyAddWatch(fd, pair[0], syscall.IN_CLOSE_WRITE)
		if err != nil {
			return fmt.Errorf("watch %s: %w", pair[0], err)
		}
		other[int32(wd)] = pair
	}
	fmt.Println("ready")
	buf := make([]byte, 64<<10)
	for {
		n, err := syscall.Read(fd, buf)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			pair, ok := other[ev.Wd]
			if !ok {
				continue
			}
			src, err := os.ReadFile(pair[0])
			if err != nil {
				continue
			}
			if dst, err := os.ReadFile(pair[1]); err == nil && bytes.Equal(src, dst) {
				continue
			}
			_ = harness.WriteInPlace(pair[1], src)
		}
	}
}
