package agents

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestInspect(t *testing.T) {
	now := time.UnixMilli(1764504000000)
	ms := func(d time.Duration) int64 { return now.Add(d).UnixMilli() }
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	jwt := func(claims string) string { return enc(`{"alg":"none"}`) + "." + enc(claims) + ".sig" }
	codex := func(exp time.Duration, acct, idClaims string) string {
		return fmt.Sprintf(`{"OPENAI_API_KEY":null,"tokens":{"id_token":%q,"access_token":%q,"refresh_token":"r","account_id":%q},"last_refresh":"2025-11-30T10:00:00Z"}`,
			jwt(idClaims), jwt(fmt.Sprintf(`{"exp":%d}`, now.Add(exp).Unix())), acct)
	}
	for _, c := range []struct {
		format, doc string
		implausible string // substring, "" for none
		accounts    string // fmt of the map
	}{
		{"claude", fmt.Sprintf(`{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":%d}}`, ms(8*time.Hour)), "", "map[]"},
		{"claude", `{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":9999999999999}}`, "expiresAt claims 2286", "map[]"},
		{"claude", fmt.Sprintf(`{"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":%d}}`, ms(9*time.Hour)), "beyond now + 8h", "map[]"},
		{"gemini", fmt.Sprintf(`{"access_token":"a","refresh_token":"r","expiry_date":%d}`, ms(time.Hour)), "", "map[]"},
		{"gemini", fmt.Sprintf(`{"access_token":"a","refresh_token":"r","expiry_date":%d}`, ms(3*time.Hour)), "expiry_date", "map[]"},
		{"codex", codex(10*24*time.Hour, "acct-1", `{}`), "", "map[:acct-1]"},
		{"codex", codex(30*24*time.Hour, "acct-1", `{}`), "exp", "map[:acct-1]"},
		{"codex", codex(time.Hour, "", `{"https://api.openai.com/auth":{"chatgpt_account_id":"acct-2"}}`), "", "map[:acct-2]"},
		{"codex", `{"OPENAI_API_KEY":null,"tokens":{"access_token":"opaque","refresh_token":"r"},"last_refresh":"2026-11-30T10:00:00Z"}`, "last_refresh", "map[:]"},
		{"codex", codex(time.Hour, "", `{}`), "", "map[:]"},
		{"codex", `{"OPENAI_API_KEY":"sk-key","tokens":null}`, "", "map[]"},
		{"codex", `{"OPENAI_API_KEY":null,"tokens":{"access_token":"","refresh_token":""}}`, "", "map[]"},
		{"opencode", fmt.Sprintf(`{"anthropic":{"type":"oauth","refresh":"r","access":"a","expires":%d,"accountId":"u1"},"openai":{"type":"oauth","refresh":"r","access":"a","expires":%d}}`, ms(8*time.Hour), ms(9*24*time.Hour)), "", "map[anthropic:u1 openai:]"},
		{"opencode", fmt.Sprintf(`{"anthropic":{"type":"oauth","refresh":"r","access":"a","expires":%d}}`, ms(9*24*time.Hour)), "anthropic's expires", "map[anthropic:]"},
		{"opencode", `{"anthropic":{"type":"oauth","refresh":"","access":""},"x":{"type":"api","key":"k"}}`, "", "map[]"},
	} {
		cl := Inspect(c.format, []byte(c.doc), now)
		if (c.implausible == "") != (cl.Implausible == "") || !strings.Contains(cl.Implausible, c.implausible) {
			t.Errorf("%s %.80s: implausible %q, want %q", c.format, c.doc, cl.Implausible, c.implausible)
		}
		if got := fmt.Sprint(cl.Accounts); got != c.accounts && !(got == "map[]" && c.accounts == "map[]") {
			t.Errorf("%s %.80s: accounts %s, want %s", c.format, c.doc, got, c.accounts)
		}
	}
}

func TestSameAccount(t *testing.T) {
	a := Claims{Accounts: map[string]string{"": "me"}}
	for _, c := range []struct {
		b    Claims
		want bool
	}{
		{Claims{}, true},
		{Claims{Accounts: map[string]string{"": "me"}}, true},
		{Claims{Accounts: map[string]string{"": ""}}, false}, // a login that cannot show whose it is
		{Claims{Accounts: map[string]string{"": "attacker"}}, false},
		{Claims{Accounts: map[string]string{"openai": "attacker"}}, true}, // an entry the other side lacks
	} {
		if got := SameAccount(c.b, a); got != c.want {
			t.Errorf("SameAccount(%v, %v) = %v", c.b.Accounts, a.Accounts, got)
		}
	}
	// Nothing named on the side replaced: nothing to compare.
	if !SameAccount(Claims{Accounts: map[string]string{"": "x", "a": ""}}, Claims{Accounts: map[string]string{"": "", "b": "u"}}) {
		t.Error("an entry the replaced side names no account for, or lacks, refused")
	}
}
