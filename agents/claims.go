package agents

import (
	"fmt"
	"sort"
	"time"
)

// claimMargin is how far past an agent's Lifetime an expiry may be claimed
// and still be believed: clocks drift, and a token issued a moment ago by a
// server whose clock runs ahead carries a slightly later expiry.
const claimMargin = 30 * time.Minute

// Claims is what a credential says about itself that the one who wrote it
// could have made up: whose account it is and how long it lasts. The guard
// never lets a container's word on either overrule the host (see
// sync/guard's package doc).
type Claims struct {
	// Accounts is the account each login entry is for, where the format
	// names one: Codex's tokens.account_id (or the id token's
	// chatgpt_account_id) under "", opencode's accountId under the
	// provider's name; "" for a login entry that names none.
	Accounts map[string]string
	// Implausible says why an expiry the content claims is beyond now plus
	// the agent's Lifetime and claimMargin; "" when every claim is plausible.
	Implausible string
}

// SameAccount reports whether content claiming a may replace content
// claiming b: every entry b names an account for is, in a, absent or for
// that same account. An entry of a that names no account where b names one
// is refused: it cannot show whose it is (a made-up Codex file without
// account_id and id_token would otherwise pass for anyone's).
func SameAccount(a, b Claims) bool {
	for k, want := range b.Accounts {
		if got, ok := a.Accounts[k]; ok && want != "" && got != want {
			return false
		}
	}
	return true
}

// Inspect reads the claims of a credential's content; content that is not
// a usable credential claims nothing.
func Inspect(format string, data []byte, now time.Time) Claims {
	doc, _ := decodeObject(data)
	return inspect(format, doc, now, nil)
}

// inspect is Inspect on the decoded document (nil: not one JSON object).
// known, when not nil, is what classify made of doc: a usable Claude or
// Gemini status carries the very expiry the claim is about, which is then
// not decoded again.
func inspect(format string, doc obj, now time.Time, known *Status) Claims {
	usable := known != nil && known.State.Usable()
	a, ok := agentByFormat(format)
	if !ok {
		return Claims{}
	}
	limit := func(lifetime time.Duration) time.Time { return now.Add(lifetime + claimMargin) }
	beyond := func(what string, t time.Time, lifetime time.Duration) string {
		if t.After(limit(lifetime)) {
			return fmt.Sprintf("%s claims %s, beyond now + %s (the longest a %s token lasts)",
				what, t.UTC().Format(time.RFC3339), Duration(lifetime), a.Name)
		}
		return ""
	}
	var c Claims
	switch format {
	case "claude":
		var t time.Time
		if usable {
			t = known.Expiry // expiresAt, as classifyClaude read it
		} else {
			o, _ := doc.object("claudeAiOauth")
			exp, _, _ := o.integer("expiresAt")
			t = millis(exp)
		}
		c.Implausible = beyond("expiresAt", t, a.Lifetime)
	case "gemini":
		var t time.Time
		if usable {
			t = known.Expiry // expiry_date, as classifyGemini read it
		} else {
			exp, _, _ := doc.num("expiry_date")
			t = millis(int64(exp))
		}
		c.Implausible = beyond("expiry_date", t, a.Lifetime)
	case "codex":
		t, _ := doc.object("tokens")
		access, _, _ := t.str("access_token")
		c.Implausible = beyond("the access token's exp", jwtExpiry(access), a.Lifetime)
		if last, _, _ := doc.str("last_refresh"); c.Implausible == "" && last != "" {
			if lt, err := time.Parse(time.RFC3339Nano, last); err == nil {
				c.Implausible = beyond("last_refresh", lt, 0)
			}
		}
		acct, _, _ := t.str("account_id")
		if acct == "" {
			id, _, _ := t.str("id_token")
			auth, _ := jwtClaims(id).object("https://api.openai.com/auth")
			acct, _, _ = auth.str("chatgpt_account_id")
		}
		if refresh, _, _ := t.str("refresh_token"); access != "" || refresh != "" {
			c.Accounts = map[string]string{"": acct}
		}
	case "opencode":
		entries, _ := opencodeEntries(doc)
		names := make([]string, 0, len(entries))
		for name := range entries {
			names = append(names, name)
		}
		sort.Strings(names) // the same report every time
		for _, name := range names {
			p := entries[name]
			if p.Type != "oauth" {
				continue
			}
			life, ok := a.Providers[name]
			if !ok {
				life = a.Lifetime
			}
			if why := beyond(name+"'s expires", millis(p.Expires), life); why != "" && c.Implausible == "" {
				c.Implausible = why
			}
			if p.Access != "" || p.Refresh != "" {
				if c.Accounts == nil {
					c.Accounts = map[string]string{}
				}
				c.Accounts[name] = p.AccountID
			}
		}
	}
	return c
}

func agentByFormat(format string) (Agent, bool) {
	for _, a := range table {
		if a.Format == format {
			return a, true
		}
	}
	return Agent{}, false
}
