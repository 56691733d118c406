package agents

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
)

var formats = map[string]Format{
	"claude":   {Name: "claude", classify: classifyClaude},
	"codex":    {Name: "codex", classify: classifyCodex},
	"gemini":   {Name: "gemini", classify: classifyGemini},
	"opencode": {Name: "opencode", classify: classifyOpencode},
}

// obj is one JSON object's members as the agents' own parsers see them:
// keys compared exactly (encoding/json's struct decoding matches them
// case-insensitively, JavaScript's JSON.parse and serde_json do not), and a
// duplicate key's last value wins (as in JSON.parse and serde_json's maps).
// Decoding into a map gives both.
type obj map[string]json.RawMessage

// decodeObject parses data as one JSON object; anything else (null, an
// array, invalid JSON) is false.
func decodeObject(data []byte) (obj, bool) {
	var o obj
	rest := bytes.TrimLeft(data, " \t\r\n")
	if len(rest) == 0 || rest[0] != '{' || json.Unmarshal(data, &o) != nil {
		return nil, false
	}
	return o, true
}

// has reports whether key is present (null included).
func (o obj) has(key string) bool { _, ok := o[key]; return ok }

// object is member key as an object; ok is false when it is absent, null or
// not an object.
func (o obj) object(key string) (obj, bool) {
	raw, ok := o[key]
	if !ok {
		return nil, false
	}
	return decodeObject(raw)
}

// str is member key as a string: "" when absent or null; ok is false when
// it is present with another type.
func (o obj) str(key string) (s string, present, ok bool) {
	raw, present := o[key]
	if !present || isNull(raw) {
		return "", present, true
	}
	ok = json.Unmarshal(raw, &s) == nil
	return s, true, ok
}

// num is member key as a number: 0 when absent or null.
func (o obj) num(key string) (n float64, present, ok bool) {
	raw, present := o[key]
	if !present || isNull(raw) {
		return 0, present, true
	}
	ok = json.Unmarshal(raw, &n) == nil
	return n, true, ok
}

// integer is member key as an int64: 0 when absent or null; ok is false
// for a fraction or another type.
func (o obj) integer(key string) (n int64, present, ok bool) {
	raw, present := o[key]
	if !present || isNull(raw) {
		return 0, present, true
	}
	ok = json.Unmarshal(raw, &n) == nil
	return n, true, ok
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

// byExpiry classifies a token that expires at exp (zero: unknown). It is
// the only way a classification depends on the time (see Status.At).
func byExpiry(exp, now time.Time) Status {
	if !exp.IsZero() && !exp.After(now) {
		return Status{State: Expired, Expiry: exp, Fresh: exp}
	}
	return Status{State: Valid, Expiry: exp, Fresh: exp}
}

func millis(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// classifyClaude reads Claude Code's .credentials.json:
// {"claudeAiOauth":{"accessToken","refreshToken","expiresAt"(ms),...},...}.
func classifyClaude(doc obj, now time.Time) Status {
	o, ok := doc.object("claudeAiOauth")
	if !ok {
		return Status{State: Invalid}
	}
	access, hasA, okA := o.str("accessToken")
	refresh, hasR, okR := o.str("refreshToken")
	exp, hasE, okE := o.integer("expiresAt")
	if !okA || !okR || !okE {
		return Status{State: Invalid}
	}
	if (!hasA || isNull(o["accessToken"])) && (!hasR || isNull(o["refreshToken"])) {
		return Status{State: Invalid}
	}
	if refresh == "" && (access == "" || !hasE || exp == 0) {
		return Status{State: LoggedOut}
	}
	return byExpiry(millis(exp), now)
}

// classifyCodex reads Codex's auth.json: {"OPENAI_API_KEY": str|null,
// "tokens": {"id_token","access_token","refresh_token","account_id"},
// "last_refresh": RFC3339}. Freshness is the access token's JWT exp, else
// last_refresh. A file holding only an API key is valid and never expires.
// A tokens object with either token is a login (an access token alone
// works until it expires, a refresh token alone gets a new one).
func classifyCodex(doc obj, now time.Time) Status {
	last, _, okL := doc.str("last_refresh")
	key, hasKey, okK := doc.str("OPENAI_API_KEY")
	if !okL || !okK {
		return Status{State: Invalid}
	}
	t, ok := doc.object("tokens")
	if !ok {
		if doc.has("tokens") && !isNull(doc["tokens"]) {
			return Status{State: Invalid}
		}
		if key != "" {
			return Status{State: Valid}
		}
		// A present null key (a logged-out file) and an absent one (not a
		// Codex file) mean different things.
		if !hasKey && last == "" {
			return Status{State: Invalid}
		}
		return Status{State: LoggedOut}
	}
	access, _, okA := t.str("access_token")
	refresh, _, okR := t.str("refresh_token")
	_, _, okI := t.str("id_token")
	if !okA || !okR || !okI {
		return Status{State: Invalid}
	}
	if access == "" && refresh == "" {
		return Status{State: LoggedOut}
	}
	lastT, _ := time.Parse(time.RFC3339Nano, last)
	exp := jwtExpiry(access)
	st := byExpiry(exp, now)
	if exp.IsZero() {
		st.Fresh = lastT
	}
	return st
}

// jwtClaims returns the claims of an unverified JWT, or nil.
func jwtClaims(tok string) obj {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil
	}
	o, _ := decodeObject(raw)
	return o
}

// jwtExpiry returns the exp claim of an unverified JWT, or zero.
func jwtExpiry(tok string) time.Time {
	exp, _, ok := jwtClaims(tok).num("exp")
	if !ok || exp <= 0 || exp > 1e12 {
		return time.Time{}
	}
	return time.Unix(int64(exp), 0)
}

// classifyGemini reads Gemini CLI's oauth_creds.json (google-auth
// Credentials): access_token, refresh_token, expiry_date (ms), ...
func classifyGemini(doc obj, now time.Time) Status {
	access, _, okA := doc.str("access_token")
	refresh, _, okR := doc.str("refresh_token")
	exp, _, okE := doc.num("expiry_date")
	if !okA || !okR || !okE {
		return Status{State: Invalid}
	}
	if (!doc.has("access_token") || isNull(doc["access_token"])) && (!doc.has("refresh_token") || isNull(doc["refresh_token"])) {
		return Status{State: Invalid}
	}
	if access == "" && refresh == "" {
		return Status{State: LoggedOut}
	}
	return byExpiry(millis(int64(exp)), now)
}

// opencodeEntry is one provider's entry in opencode's auth.json.
type opencodeEntry struct {
	Type, Refresh, Access, Key, AccountID string
	Expires                               int64
}

// opencodeEntries reads opencode's auth.json, decoded, by provider; ok is
// false when it is not such a map.
func opencodeEntries(doc obj) (map[string]opencodeEntry, bool) {
	if doc == nil {
		return nil, false
	}
	out := make(map[string]opencodeEntry, len(doc))
	for name := range doc {
		if isNull(doc[name]) {
			continue
		}
		p, ok := doc.object(name)
		if !ok {
			return nil, false
		}
		var e opencodeEntry
		var oks [6]bool
		e.Type, _, oks[0] = p.str("type")
		e.Refresh, _, oks[1] = p.str("refresh")
		e.Access, _, oks[2] = p.str("access")
		e.Key, _, oks[3] = p.str("key")
		e.AccountID, _, oks[4] = p.str("accountId")
		e.Expires, _, oks[5] = p.integer("expires")
		for _, ok := range oks {
			if !ok {
				return nil, false
			}
		}
		out[name] = e
	}
	return out, true
}

// classifyOpencode reads opencode's auth.json: a map by provider of
// {"type":"oauth","refresh","access","expires"(ms)} or {"type":"api","key"}.
// Its freshness is the latest expiry over its OAuth providers; it is expired
// when every OAuth provider is.
func classifyOpencode(top obj, now time.Time) Status {
	doc, ok := opencodeEntries(top)
	if !ok {
		return Status{State: Invalid}
	}
	var latest time.Time
	usable, oauth := false, false
	for _, p := range doc {
		switch p.Type {
		case "oauth":
			if p.Refresh == "" && p.Access == "" {
				continue
			}
			usable, oauth = true, true
			if e := millis(p.Expires); e.After(latest) {
				latest = e
			}
		case "api", "wellknown":
			if p.Key != "" {
				usable = true
			}
		}
	}
	switch {
	case !usable:
		return Status{State: LoggedOut}
	case !oauth:
		return Status{State: Valid}
	}
	return byExpiry(latest, now)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
