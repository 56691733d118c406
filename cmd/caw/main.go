// Command caw is the host CLI of caw: it stages agent credentials for Docker
// containers (setup), reports them (status), prints the docker run mounts
// (docker-flags) and removes the staging (teardown). It is a thin layer over
// package host; this file only maps flags to calls and errors to exit codes.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}
