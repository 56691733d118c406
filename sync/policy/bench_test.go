package policy

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkHomeRefresh is the decision part of one home-to-host sync as
// the guard makes it: classify the home's new content and the host's (the
// content written there the round before), the decision, the agent's merge,
// and the bookkeeping around them. No I/O: this is what a sync adds to the
// system calls the floor makes too.
func BenchmarkHomeRefresh(b *testing.B) {
	exp := time.Now().Add(time.Hour).UnixMilli()
	doc := func(seq int) []byte {
		return fmt.Appendf(nil, `{"claudeAiOauth":{"accessToken":"sk-ant-oat01-caw-%012d","refreshToken":"sk-ant-ort01-caw-%012d","expiresAt":%d,"scopes":["user:inference","user:profile"],"subscriptionType":"max"}}`,
			seq, seq, exp+int64(seq))
	}
	m := Memory{Format: "claude", Limits: Limits{Burst: 1 << 30}}
	now := time.Now()
	host := Read("claude", doc(0), now)
	m.Taken(Decide(m.Input(OnStart, now, [2]Content{host, host}, NoSide)), [2]Content{host, host}, OnStart, now)
	seq := 0
	for b.Loop() {
		seq++
		now = now.Add(time.Second)
		v := [2]Content{m.Read(doc(seq), now), m.Read(host.Data, now)}
		a := Decide(m.Input(OnEvent, now, v, NoSide))
		m.Taken(a, v, OnEvent, now)
		if a.Verb != Write || a.Dst != Host {
			b.Fatalf("round %d: %v", seq, a)
		}
		src := m.Merge(v[Home], v[Host], now)
		m.Wrote(Host, src, OnEvent, now)
		m.Held(v)
		host = src
	}
}
