package agents

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
)

var formats = map[string]Format{
	"claude":   {Name: "claude", Classify: classifyClaude},
	"codex":    {Name: "codex", Classify: classifyCodex},
	"gemini":   {Name: "gemini", Classify: classifyGemini},
	"opencode": {Name: "opencode", Classify: classifyOpencode},
}

// decodeObject parses data as one JSON object; anything else is Invalid.
func decodeObject(data []byte, v any) bool {
	if json.Unmarshal(data, v) != nil {
		return false
	}
	// json.Unmarshal accepts "null" for a pointer or map, which is no
	// credential at all.
	rest := bytes.TrimLeft(data, " \t\r\n")
	return len(rest) > 0 && rest[0] == '{'
}

// byExpiry classifies a token that expires at exp (zero: unknown).
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
func classifyClaude(data []byte, now time.Time) Status {
	var doc struct {
		OAuth *struct {
			AccessToken  *string `json:"accessToken"`
			RefreshToken *string `json:"refreshToken"`
			ExpiresAt    *int64  `json:"expiresAt"`
		} `json:"claudeAiOauth"`
	}
	if !decodeObject(data, &doc) || doc.OAuth == nil {
		return Status{State: Invalid}
	}
	o := doc.OAuth
	if o.AccessToken == nil && o.RefreshToken == nil {
		return Status{State: Invalid}
	}
	access, refresh := deref(o.AccessToken), deref(o.RefreshToken)
	if refresh == "" && (access == "" || o.ExpiresAt == nil || *o.ExpiresAt == 0) {
		return Status{State: LoggedOut}
	}
	var exp int64
	if o.ExpiresAt != nil {
		exp = *o.ExpiresAt
	}
	return byExpiry(millis(exp), now)
}

// classifyCodex reads Codex's auth.json: {"OPENAI_API_KEY": str|null,
// "tokens": {"id_token","access_token","refresh_token","account_id"},
// "last_refresh": RFC3339}. Freshness is the access token's JWT exp, else
// last_refresh. A file holding only an API key is valid and never expires.
func classifyCodex(data []byte, now time.Time) Status {
	var doc struct {
		// Raw, because a present null (a logged-out file) and an absent key
		// (not a Codex file) mean different things.
		APIKey json.RawMessage `json:"OPENAI_API_KEY"`
		Tokens *struct {
			IDToken      string `json:"id_token"`
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		} `json:"tokens"`
		LastRefresh string `json:"last_refresh"`
	}
	if !decodeObject(data, &doc) {
		return Status{State: Invalid}
	}
	if doc.Tokens == nil {
		var key string
		if json.Unmarshal(doc.APIKey, &key) == nil && key != "" {
			return Status{State: Valid}
		}
		if doc.APIKey == nil && doc.LastRefresh == "" {
			return Status{State: Invalid}
		}
		return Status{State: LoggedOut}
	}
	t := doc.Tokens
	if t.AccessToken == "" && t.RefreshToken == "" {
		return Status{State: LoggedOut}
	}
	last, _ := time.Parse(time.RFC3339Nano, doc.LastRefresh)
	exp := jwtExpiry(t.AccessToken)
	st := byExpiry(exp, now)
	if exp.IsZero() {
		st.Fresh = last
	}
	return st
}

// jwtExpiry returns the exp claim of an unverified JWT, or zero.
func jwtExpiry(tok string) time.Time {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp float64 `json:"exp"`
	}
	if json.Unmarshal(raw, &claims) != nil || claims.Exp <= 0 || claims.Exp > 1e12 {
		return time.Time{}
	}
	return time.Unix(int64(claims.Exp), 0)
}

// classifyGemini reads Gemini CLI's oauth_creds.json (google-auth
// Credentials): access_token, refresh_token, expiry_date (ms), ...
func classifyGemini(data []byte, now time.Time) Status {
	var doc struct {
		AccessToken  *string `json:"access_token"`
		RefreshToken *string `json:"refresh_token"`
		ExpiryDate   float64 `json:"expiry_date"`
	}
	if !decodeObject(data, &doc) || (doc.AccessToken == nil && doc.RefreshToken == nil) {
		return Status{State: Invalid}
	}
	if deref(doc.AccessToken) == "" && deref(doc.RefreshToken) == "" {
		return Status{State: LoggedOut}
	}
	return byExpiry(millis(int64(doc.ExpiryDate)), now)
}

// classifyOpencode reads opencode's auth.json: a map by provider of
// {"type":"oauth","refresh","access","expires"(ms)} or {"type":"api","key"}.
// Its freshness is the latest expiry over its OAuth providers; it is expired
// when every OAuth provider is.
func classifyOpencode(data []byte, now time.Time) Status {
	var doc map[string]struct {
		Type    string `json:"type"`
		Refresh string `json:"refresh"`
		Access  string `json:"access"`
		Expires int64  `json:"expires"`
		Key     string `json:"key"`
	}
	if !decodeObject(data, &doc) {
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
	case !usable && len(doc) == 0:
		return Status{State: LoggedOut}
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
