package main

import (
	"strings"
	"testing"
	"time"
)

func TestParsePoll(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"auto", 0, true},
		{"off", -1, true},
		{"0", -1, true},
		{"2s", 2 * time.Second, true},
		{"10ms", 10 * time.Millisecond, true},
		{"9ms", 0, false},
		{"-1s", 0, false},
		{"0s", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	} {
		got, err := parsePoll(tc.in)
		if (err == nil) != tc.ok || tc.ok && got != tc.want {
			t.Errorf("parsePoll(%q) = %v, %v; want %v (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestPollOption(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	o, code := parseOptions([]string{"--poll", "250ms", "true"}, env(nil))
	if code != -1 || o.poll != 250*time.Millisecond {
		t.Fatalf("--poll 250ms: code %d poll %v", code, o.poll)
	}
	o, code = parseOptions([]string{"true"}, env(map[string]string{"CAW_POLL": "off"}))
	if code != -1 || o.poll != -1 {
		t.Fatalf("CAW_POLL=off: code %d poll %v", code, o.poll)
	}
	o, code = parseOptions([]string{"--poll", "auto", "true"}, env(map[string]string{"CAW_POLL": "off"}))
	if code != -1 || o.poll != 0 {
		t.Fatalf("--poll auto over CAW_POLL=off: code %d poll %v", code, o.poll)
	}
	if _, code = parseOptions([]string{"--poll", "1ns", "true"}, env(nil)); code != 2 {
		t.Fatalf("--poll 1ns: code %d, want 2", code)
	}
	if _, code = parseOptions([]string{"true"}, env(map[string]string{"CAW_POLL": "x"})); code != 2 {
		t.Fatalf("CAW_POLL=x: code %d, want 2", code)
	}
}

func TestEntrypointOption(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want []string
		code int
	}{
		{[]string{"claude"}, map[string]string{"CAW_ENTRYPOINT": "/ep.sh"}, []string{"/ep.sh", "claude"}, -1},
		{nil, map[string]string{"CAW_ENTRYPOINT": `["tini","--"]`}, []string{"tini", "--"}, -1},
		{[]string{"--entrypoint", "/a", "--", "-x"}, map[string]string{"CAW_ENTRYPOINT": "/b"}, []string{"/a", "-x"}, -1},
		{nil, map[string]string{"CAW_ENTRYPOINT": `["a",`}, nil, 2},
		{nil, map[string]string{"CAW_ENTRYPOINT": `[]`}, nil, 2},
		{nil, nil, nil, 2},
	} {
		o, code := parseOptions(tc.args, env(tc.env))
		if code != tc.code {
			t.Errorf("%v %v: code %d, want %d", tc.args, tc.env, code, tc.code)
			continue
		}
		if code == -1 && strings.Join(o.argv, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%v %v: argv %q, want %q", tc.args, tc.env, o.argv, tc.want)
		}
	}
}
