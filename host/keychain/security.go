package keychain

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// DefaultSecurityPath is macOS's Keychain tool.
const DefaultSecurityPath = "/usr/bin/security"

// MaxLine is the longest command line `security -i` reads whole
// (MAX_LINE_LEN 4096 in SecurityTool's security.c, less the NUL): its
// readline cuts a longer line there and runs the rest as a command of its
// own, so Write refuses any line that does not fit.
const MaxLine = 4095

// maxSecret bounds what Read accepts: a credential is a few KiB.
const maxSecret = 1 << 20

// ErrTooLarge: the secret does not fit on one `security -i` line.
var ErrTooLarge = errors.New("too large for one security -i command line")

// Security is the Store backed by the security command-line tool.
type Security struct {
	// Path of the tool; empty means DefaultSecurityPath.
	Path string
}

func (s Security) path() string {
	if s.Path == "" {
		return DefaultSecurityPath
	}
	return s.Path
}

// Read runs `security find-generic-password -s SERVICE -a ACCOUNT -w`,
// which prints the password and a newline on stdout.
func (s Security) Read(ctx context.Context, it Item) ([]byte, error) {
	if err := checkName(it); err != nil {
		return nil, err
	}
	var out, errb limitedBuffer
	out.limit, errb.limit = maxSecret*2+16, 4096
	cmd := exec.CommandContext(ctx, s.path(), "find-generic-password", "-s", it.Service, "-a", it.Account, "-w")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := s.run(cmd, &errb, it, "read"); err != nil {
		return nil, err
	}
	if out.over {
		return nil, fmt.Errorf("read Keychain item %s: more than %d bytes", it, maxSecret)
	}
	return decodePrinted(bytes.TrimSuffix(out.Bytes(), []byte("\n"))), nil
}

// Write runs `security -i` and gives it one line on stdin:
// add-generic-password -U -s SERVICE -a ACCOUNT -X HEX. Hex leaves
// security's line splitter nothing to quote, and the item gets the very
// bytes given. A line longer than MaxLine is refused (ErrTooLarge): never
// put on argv instead, never cut.
func (s Security) Write(ctx context.Context, it Item, secret []byte) error {
	if err := checkName(it); err != nil {
		return err
	}
	line := AddLine(it, secret)
	if len(line) > MaxLine {
		return fmt.Errorf("write Keychain item %s: the %d-byte secret is %w (at most about %d bytes fit)",
			it, len(secret), ErrTooLarge, (MaxLine-len(AddLine(it, nil)))/2)
	}
	var out, errb limitedBuffer
	out.limit, errb.limit = 4096, 4096
	cmd := exec.CommandContext(ctx, s.path(), "-i")
	cmd.Stdin = strings.NewReader(line + "\n")
	cmd.Stdout, cmd.Stderr = &out, &errb
	return s.run(cmd, &errb, it, "write")
}

// AddLine is the `security -i` command line that stores secret in it.
func AddLine(it Item, secret []byte) string {
	return "add-generic-password -U -s " + lineArg(it.Service) + " -a " + lineArg(it.Account) + " -X " + hex.EncodeToString(secret)
}

// lineArg quotes s for security's split_line: inside double quotes a
// backslash takes the next character as it is, so only '"' and '\' need
// one. checkName has refused line breaks and NULs, which no quoting carries.
func lineArg(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func checkName(it Item) error {
	for _, v := range []string{it.Service, it.Account} {
		if strings.ContainsAny(v, "\n\r\x00") {
			return fmt.Errorf("Keychain item %q: a line break or NUL in its name cannot be passed to security", v)
		}
	}
	if it.Service == "" {
		return errors.New("Keychain item with no service name")
	}
	return nil
}

func (s Security) run(cmd *exec.Cmd, errb *limitedBuffer, it Item, what string) error {
	err := cmd.Run()
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("%s Keychain item %s: run %s: %w", what, it, s.path(), err)
	}
	msg := strings.TrimSpace(errb.String())
	switch ee.ExitCode() {
	case exitNotFound:
		return fmt.Errorf("%s %s: %w", what, it, ErrNotFound)
	case exitNotAllowed:
		return fmt.Errorf("%s %s: %w", what, it, ErrLocked)
	case exitAuthFailed, exitUserCanceled:
		return fmt.Errorf("%s %s: %w", what, it, ErrDenied)
	}
	if msg == "" {
		msg = ee.String()
	}
	return fmt.Errorf("%s Keychain item %s: security exited %d: %s", what, it, ee.ExitCode(), msg)
}

// decodePrinted undoes find-generic-password -w's printing: the bytes as
// they are when every one is printable (isprint in the C locale), else all
// of them as lowercase hex, with a byte of 0x80 or more sign-extended
// ("ffffffc3": printf("%02x") of a signed char). caw only stores JSON
// objects, which begin with '{', so hex is told apart by its first byte.
func decodePrinted(out []byte) []byte {
	if len(out) == 0 || out[0] == '{' {
		return out
	}
	var dec []byte
	for i := 0; i < len(out); {
		if i+2 > len(out) {
			return out
		}
		if c := out[i]; c == '8' || c == '9' || (c >= 'a' && c <= 'f') {
			// 8x..fx: only as the tail of a sign-extended byte.
			if i+8 > len(out) || string(out[i:i+6]) != "ffffff" {
				return out
			}
			i += 6
		}
		b, err := hex.DecodeString(string(out[i : i+2]))
		if err != nil {
			return out
		}
		dec = append(dec, b[0])
		i += 2
	}
	return dec
}

// limitedBuffer keeps at most limit bytes and notes that more came.
type limitedBuffer struct {
	bytes.Buffer
	limit int
	over  bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.limit - b.Len(); len(p) > room {
		b.over = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}
