package harness

import (
	"bytes"
	"testing"
	"time"

	"github.com/caw-dev/caw/agents"
)

// The torture suite is only as sharp as Seq: it must accept exactly a
// credential Cred wrote (with the trailing whitespace a padded in-place
// write leaves) and nothing else.
func TestSeqAcceptsOnlyWhatCredWrote(t *testing.T) {
	c := Cred(42)
	if s, ok := Seq(c); !ok || s != 42 {
		t.Fatalf("Seq(Cred(42)) = %d, %v", s, ok)
	}
	if s, ok := Seq(append(bytes.Clone(c), "   \n"...)); !ok || s != 42 {
		t.Errorf("padded credential: Seq = %d, %v", s, ok)
	}
	for i := 0; i < len(c); i++ {
		if _, ok := Seq(c[:i]); ok {
			t.Fatalf("a prefix of %d bytes passed as a credential", i)
		}
	}
	// The head of one token and the tail of another (a torn overwrite).
	cut := bytes.Index(Cred(43), []byte(`","refreshToken`))
	mix := append(bytes.Clone(Cred(43)[:cut]), Cred(42)[cut:]...)
	if _, ok := Seq(mix); ok {
		t.Errorf("a mix of two tokens passed: %s", mix)
	}
	if _, ok := Seq([]byte(`{"claudeAiOauth":{"accessToken":"","refreshToken":"","expiresAt":0}}`)); ok {
		t.Error("a logged-out stub passed")
	}
	// And the real classifier agrees it is a valid, fresher-by-seq login.
	a, b := agents.Classify("claude", Cred(1), time.Now()), agents.Classify("claude", Cred(2), time.Now())
	if a.State != agents.Valid || agents.Compare(b, a) != 1 {
		t.Errorf("agents sees Cred(1) as %v and Cred(2) vs Cred(1) as %d", a.State, agents.Compare(b, a))
	}
}
