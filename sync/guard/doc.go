// Package guard is the credential guard that runs inside caw-init as root.
package guard
