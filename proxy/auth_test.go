package proxy

import (
	"testing"
	"time"
)

// The nonce book remembers a nonce's count for at least one lifetime
// after its use, and refuses new nonces rather than grow past its bound.
func TestNonceBook(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	b := nonceBook{period: time.Minute, max: 2, cur: map[string]uint32{}, prev: map[string]uint32{}}
	steps := []struct {
		nonce string
		nc    uint32
		at    time.Duration
		want  bool
	}{
		{"a", 1, 0, true},
		{"a", 1, time.Second, false}, // replay
		{"a", 3, 2 * time.Second, true},
		{"b", 1, 3 * time.Second, true},
		{"c", 1, 4 * time.Second, false},            // full
		{"a", 3, 70 * time.Second, false},           // rotated: still known
		{"c", 1, 71 * time.Second, true},            // room again
		{"b", 1, 3*time.Minute + time.Second, true}, // forgotten, long expired by then
	}
	for i, s := range steps {
		if got := b.use(s.nonce, s.nc, t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d: use(%s, %d) = %v, want %v", i, s.nonce, s.nc, got, s.want)
		}
	}
}

func TestParseCredentials(t *testing.T) {
	c, err := parseCredentials(`Digest username="al\"ice", realm="example.com", nonce="n", uri="sip:example.com", response="ABC", algorithm=sha-256, qop=auth, nc=0000000a, cnonce="c"`)
	if err != nil || c.username != `al"ice` || c.alg != algSHA256 || c.nc != 10 || c.response != "abc" {
		t.Fatalf("%+v, %v", c, err)
	}
	for _, bad := range []string{
		`Basic dXNlcjpwdw==`,
		`Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth, nc=1, cnonce="c"`,
		`Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth-int, nc=00000001, cnonce="c"`,
		`Digest username="a", realm="r", nonce="n", uri="u", response="x", algorithm=SHA-512-256, qop=auth, nc=00000001, cnonce="c"`,
		`Digest username="a, realm="r"`,
		`Digest username="a", username="b"`,
	} {
		if _, err := parseCredentials(bad); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}
