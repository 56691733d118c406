// Command credprobe is a test probe for caw-init's privilege drop: run as
// the child, it prints the identity and capabilities it got and whether it
// can regain root, one "key=value" per line.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"syscall"
)

func main() {
	groups, _ := syscall.Getgroups()
	fmt.Printf("uid=%d\neuid=%d\ngid=%d\negid=%d\n", syscall.Getuid(), syscall.Geteuid(), syscall.Getgid(), syscall.Getegid())
	fmt.Printf("groups=%v\n", groups)
	f, err := os.Open("/proc/self/status")
	if err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.HasPrefix(k, "Cap") {
				fmt.Printf("%s=%s\n", k, strings.TrimSpace(v))
			}
		}
		f.Close()
	}
	// Go applies these to every thread; any success means root came back.
	fmt.Printf("setuid0=%v\n", syscall.Setuid(0))
	fmt.Printf("setgid0=%v\n", syscall.Setgid(0))
	fmt.Printf("setegid0=%v\n", syscall.Setegid(0))
	fmt.Printf("setgroups0=%v\n", syscall.Setgroups([]int{0}))
}
