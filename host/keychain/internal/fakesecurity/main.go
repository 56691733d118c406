// Command fakesecurity is a stand-in for macOS's /usr/bin/security that
// the keychain and bridge tests run on Linux. It keeps the real tool's
// command line (find-generic-password -w, add-generic-password in -i mode),
// its interactive line reader (lines cut at 4095 bytes, the rest run as a
// command of its own) and quoting, its printing of passwords (hex when a
// byte is not printable, sign-extended) and its exit statuses (the low
// byte of the OSStatus: 44 not found, 36 locked with no UI, 51 denied, 128
// cancelled, 45 duplicate).
//
// It refuses what the real tool would accept but caw must never do: any
// add-generic-password on its argv, and any argv holding a stored secret.
// Each refusal is logged as VIOLATION in the argv log, which tests check.
//
// State is in the fakedb file $FAKE_SECURITY_DB; every argv is appended to
// $FAKE_SECURITY_DB.argv, one JSON array a line.
package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/caw-dev/caw/host/keychain/internal/fakedb"
)

// OSStatus values the real tool returns.
const (
	errSecItemNotFound          = -25300
	errSecInteractionNotAllowed = -25308
	errSecAuthFailed            = -25293
	errSecUserCanceled          = -128
	errSecDuplicateItem         = -25299
	errSecParam                 = -50
	usage                       = 2
	violation                   = 99
)

const maxLineLen = 4096

var db = os.Getenv("FAKE_SECURITY_DB")

func main() {
	logArgv(os.Args)
	if db == "" {
		fmt.Fprintln(os.Stderr, "fakesecurity: FAKE_SECURITY_DB is not set")
		os.Exit(violation)
	}
	if secretOnArgv(os.Args[1:]) {
		os.Exit(violation)
	}
	args := os.Args[1:]
	interactive, quiet := false, false
	for len(args) > 0 && strings.HasPrefix(args[0], "-") && args[0] != "-" {
		for _, c := range args[0][1:] {
			switch c {
			case 'i':
				interactive = true
			case 'q':
				quiet = true
			case 'v', 'l':
			default:
				fmt.Fprintf(os.Stderr, "fakesecurity: unknown option -%c\n", c)
				os.Exit(usage)
			}
		}
		args = args[1:]
	}
	if len(args) > 0 {
		if args[0] == "add-generic-password" {
			refuse("add-generic-password on argv: the secret (or a tty prompt) would be on the command line")
		}
		os.Exit(exitOf(execute(args)))
	}
	if !interactive {
		os.Exit(usage)
	}
	r := bufio.NewReader(os.Stdin)
	result := 0
	for {
		line, ok := readline(r)
		if !ok {
			break
		}
		av := splitLine(line)
		result = execute(av)
		if result != 0 && !quiet && len(av) > 0 {
			fmt.Fprintf(os.Stderr, "%s: returned %d\n", av[0], result)
		}
	}
	os.Exit(exitOf(result))
}

func exitOf(result int) int { return result & 0xff }

func refuse(msg string) {
	logLine("VIOLATION " + msg)
	fmt.Fprintln(os.Stderr, "fakesecurity: "+msg)
	os.Exit(violation)
}

func logArgv(argv []string) {
	if db == "" {
		return
	}
	b, _ := json.Marshal(argv)
	logLine(string(b))
}

func logLine(s string) {
	f, err := os.OpenFile(db+".argv", os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return
	}
	f.WriteString(s + "\n")
	f.Close()
}

// secretOnArgv refuses an argv holding any stored secret (or its hex).
func secretOnArgv(args []string) bool {
	bad := false
	fakedb.Update(db, func(d *fakedb.DB) error {
		for _, it := range d.Items {
			if len(it.Data) < 8 {
				continue
			}
			for _, a := range args {
				if bytes.Contains([]byte(a), it.Data) || strings.Contains(a, hex.EncodeToString(it.Data)) {
					bad = true
				}
			}
		}
		return errors.New("read only")
	})
	if bad {
		refuse("a stored secret is on the command line")
	}
	return bad
}

// readline is SecurityTool's readline into a MAX_LINE_LEN buffer: at most
// 4095 bytes, the rest of a longer line left for the next read.
func readline(r *bufio.Reader) (string, bool) {
	var b []byte
	for len(b) < maxLineLen-1 {
		c, err := r.ReadByte()
		if err == io.EOF {
			return "", false
		}
		if c == '\n' {
			break
		}
		b = append(b, c)
	}
	return string(b), true
}

// splitLine is SecurityTool's split_line: whitespace separates arguments,
// '"' or '\” quote, a backslash takes the next character as it is.
func splitLine(line string) []string {
	var out []string
	var cur []byte
	in, quoted, esc := false, byte(0), false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case esc:
			cur, esc = append(cur, c), false
		case c == '\\' && in:
			esc = true
		case quoted != 0 && c == quoted:
			out, cur, in, quoted = append(out, string(cur)), nil, false, 0
		case quoted != 0:
			cur = append(cur, c)
		case !in && isSpace(c):
		case !in && (c == '"' || c == '\''):
			in, quoted = true, c
		case !in:
			in = true
			if c == '\\' {
				esc = true
			} else {
				cur = append(cur, c)
			}
		case isSpace(c):
			out, cur, in = append(out, string(cur)), nil, false
		default:
			cur = append(cur, c)
		}
	}
	if in {
		out = append(out, string(cur))
	}
	return out
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// getopt parses POSIX-style options; spec lists letters, ':' after one
// that takes a value.
func getopt(args []string, spec string) (map[byte]string, []string, bool) {
	opts := map[byte]string{}
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		for j := 1; j < len(a); j++ {
			k := strings.IndexByte(spec, a[j])
			if k < 0 {
				return nil, nil, false
			}
			if k+1 < len(spec) && spec[k+1] == ':' {
				switch {
				case j+1 < len(a):
					opts[a[j]] = a[j+1:]
				case i+1 < len(args):
					i++
					opts[a[j]] = args[i]
				default:
					return nil, nil, false
				}
				break
			}
			opts[a[j]] = ""
		}
	}
	return opts, args[i:], true
}

func modeStatus(mode string) int {
	switch mode {
	case fakedb.Locked:
		return errSecInteractionNotAllowed
	case fakedb.Deny:
		return errSecAuthFailed
	case fakedb.Cancel:
		return errSecUserCanceled
	}
	return 0
}

var messages = map[int]string{
	errSecItemNotFound:          "The specified item could not be found in the keychain.",
	errSecInteractionNotAllowed: "User interaction is not allowed.",
	errSecAuthFailed:            "The user name or passphrase you entered is not correct.",
	errSecUserCanceled:          "User canceled the operation.",
	errSecDuplicateItem:         "The specified item already exists in the keychain.",
}

func execute(av []string) int {
	if len(av) == 0 {
		return 0
	}
	switch av[0] {
	case "find-generic-password":
		return find(av[1:])
	case "add-generic-password":
		return add(av[1:])
	}
	fmt.Fprintf(os.Stderr, "security: unknown command \"%s\"\n", av[0])
	return 1
}

func find(args []string) int {
	opts, _, ok := getopt(args, "a:c:C:D:G:j:l:s:gw")
	if !ok {
		return usage
	}
	_, printPw := opts['w']
	var data []byte
	status := 0
	fakedb.Update(db, func(d *fakedb.DB) error {
		i := d.Find(opts['s'], opts['a'])
		if i < 0 {
			status = errSecItemNotFound
			return nil
		}
		if printPw {
			if status = modeStatus(d.Mode); status != 0 {
				return nil
			}
			d.Reads++
			data = d.Items[i].Data
		}
		return nil
	})
	if status != 0 {
		fmt.Fprintf(os.Stderr, "security: SecKeychainSearchCopyNext: %s\n", messages[status])
		return status
	}
	if printPw {
		os.Stdout.Write(printed(data))
	}
	return 0
}

// printed is do_password_item_printing: as is when every byte is
// printable, else each byte as printf("%02x") of a signed char.
func printed(data []byte) []byte {
	hexed := false
	for _, c := range data {
		if c < 0x20 || c > 0x7e {
			hexed = true
		}
	}
	if !hexed {
		return append(append([]byte{}, data...), '\n')
	}
	var b strings.Builder
	for _, c := range data {
		if c >= 0x80 {
			b.WriteString("ffffff")
		}
		fmt.Fprintf(&b, "%02x", c)
	}
	return []byte(b.String() + "\n")
}

func add(args []string) int {
	opts, _, ok := getopt(args, "a:c:C:D:G:j:l:s:p:w:X:UAT:")
	if !ok {
		return usage
	}
	var data []byte
	if v, ok := opts['X']; ok {
		var err error
		if data, err = hex.DecodeString(v); err != nil {
			fmt.Fprintln(os.Stderr, "security: -X: not a hexadecimal string")
			return usage
		}
	} else if v, ok := opts['w']; ok {
		data = []byte(v)
	} else if v, ok := opts['p']; ok {
		data = []byte(v)
	} else {
		fmt.Fprintln(os.Stderr, "fakesecurity: add-generic-password with no password: the real tool would prompt on a tty")
		return usage
	}
	if opts['s'] == "" || opts['a'] == "" {
		return errSecParam
	}
	_, update := opts['U']
	status := 0
	fakedb.Update(db, func(d *fakedb.DB) error {
		if status = modeStatus(d.Mode); status != 0 {
			return nil
		}
		i := d.Find(opts['s'], opts['a'])
		switch {
		case i >= 0 && !update:
			status = errSecDuplicateItem
		case i >= 0:
			d.Items[i].Data = data
		default:
			d.Items = append(d.Items, fakedb.Item{Service: opts['s'], Account: opts['a'], Data: data})
		}
		if status == 0 {
			d.Writes++
		}
		return nil
	})
	if status != 0 {
		fmt.Fprintf(os.Stderr, "security: SecKeychainItemCreateFromContent (<default>): %s\n", messages[status])
	}
	return status
}
