package proxy

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Digest authentication (RFC 3261 22, RFC 7616, RFC 8760): the proxy
// challenges with SHA-256 and MD5, qop=auth.
//
// Nonces are stateless: base64url of the issue time, 8 random bytes and an
// HMAC-SHA256 over both and the realm, keyed by a secret of the proxy (or
// shared by several proxies). A challenge costs no memory, so a flood of
// unauthenticated requests cannot fill any table; the time in the nonce
// makes it expire. What a stateless nonce cannot stop alone is a replay
// within its lifetime, so the proxy keeps, for each nonce that passed a
// correct response, the highest nonce-count (nc) seen: a request must
// bring a higher one. Only authenticated uses enter that book, it forgets
// a nonce once the nonce has expired anyway (two generations swapped every
// lifetime), and it is bounded: when full, new nonces are answered with a
// fresh challenge rather than accepted untracked.

// Digest algorithms the proxy offers, most preferred first (RFC 8760 says
// a server lists its challenges in order of preference).
const (
	algSHA256 = "SHA-256"
	algMD5    = "MD5"
)

var (
	errNoCredentials  = errors.New("no credentials for our realm")
	errBadCredentials = errors.New("malformed credentials")
	errBadNonce       = errors.New("nonce not issued by this proxy")
	errStaleNonce     = errors.New("nonce expired or already used")
	errUnknownUser    = errors.New("unknown user")
	errWrongPassword  = errors.New("wrong response (password)")
	errNoHA1          = errors.New("subscriber has no HA1 for the algorithm")
)

const nonceRawLen = 8 + 8 + 16

// nonces issues and checks the proxy's nonces.
type nonces struct {
	secret   []byte
	lifetime time.Duration
	book     nonceBook
}

func newNonces(secret []byte, lifetime time.Duration, maxTracked int) *nonces {
	return &nonces{secret: secret, lifetime: lifetime, book: nonceBook{period: lifetime, max: maxTracked,
		cur: map[string]uint32{}, prev: map[string]uint32{}}}
}

func (n *nonces) mac(b []byte, realm string) []byte {
	m := hmac.New(sha256.New, n.secret)
	m.Write(b)
	m.Write([]byte(realm))
	return m.Sum(nil)[:16]
}

// issue makes a nonce for realm at now.
func (n *nonces) issue(realm string, now time.Time) string {
	var b [nonceRawLen]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixNano()))
	_, _ = rand.Read(b[8:16])
	copy(b[16:], n.mac(b[:16], realm))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// check verifies that nonce is ours for realm and fresh at now.
func (n *nonces) check(nonce, realm string, now time.Time) error {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != nonceRawLen {
		return errBadNonce
	}
	if !hmac.Equal(b[16:], n.mac(b[:16], realm)) {
		return errBadNonce
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(b[:8])))
	// A little skew allowed for nonces of another proxy sharing the secret.
	if now.Sub(issued) > n.lifetime || issued.Sub(now) > 5*time.Second {
		return errStaleNonce
	}
	return nil
}

// nonceBook keeps the highest nc of each nonce in use. Entries live at
// least one period (the nonce lifetime) after their last use, longer
// than the nonce stays valid.
type nonceBook struct {
	mu        sync.Mutex
	cur, prev map[string]uint32
	rotated   time.Time
	period    time.Duration
	max       int
}

// use records nc for nonce; false when nc is not above the last one seen
// (a replay) or the book is full.
func (b *nonceBook) use(nonce string, nc uint32, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rotated.IsZero() {
		b.rotated = now
	}
	if now.Sub(b.rotated) >= b.period {
		b.prev, b.cur, b.rotated = b.cur, make(map[string]uint32, len(b.cur)), now
	}
	last, ok := b.cur[nonce]
	if !ok {
		last, ok = b.prev[nonce]
	}
	if ok && nc <= last {
		return false
	}
	if _, inCur := b.cur[nonce]; !inCur && len(b.cur) >= b.max {
		return false
	}
	b.cur[nonce] = nc
	return true
}

// challenge is the value of a WWW-Authenticate or Proxy-Authenticate
// header for one algorithm.
func challenge(realm, nonce, alg string, stale bool) string {
	v := `Digest realm="` + realm + `", nonce="` + nonce + `", algorithm=` + alg + `, qop="auth"`
	if stale {
		v += ", stale=true"
	}
	return v
}

// credentials are the parameters of a Digest Authorization or
// Proxy-Authorization header.
type credentials struct {
	username, realm, nonce, uri, response, alg, qop, cnonce string
	nc                                                      uint32
}

// parseCredentials reads a Digest credentials value; the parameters the
// proxy needs must all be there (qop=auth is mandatory: it is offered).
func parseCredentials(v string) (credentials, error) {
	var c credentials
	scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	if !strings.EqualFold(scheme, "Digest") {
		return c, fmt.Errorf("scheme %q, want Digest: %w", scheme, errBadCredentials)
	}
	params, err := parseAuthParams(rest)
	if err != nil {
		return c, err
	}
	c.username, c.realm, c.nonce, c.uri = params["username"], params["realm"], params["nonce"], params["uri"]
	c.response, c.qop, c.cnonce = strings.ToLower(params["response"]), params["qop"], params["cnonce"]
	c.alg = strings.ToUpper(params["algorithm"])
	if c.alg == "" {
		c.alg = algMD5
	}
	for _, k := range []string{"username", "realm", "nonce", "uri", "response", "cnonce", "nc"} {
		if params[k] == "" {
			return c, fmt.Errorf("no %s: %w", k, errBadCredentials)
		}
	}
	if !strings.EqualFold(c.qop, "auth") {
		return c, fmt.Errorf("qop %q, want auth: %w", c.qop, errBadCredentials)
	}
	nc, err := strconv.ParseUint(params["nc"], 16, 32)
	if err != nil || len(params["nc"]) != 8 || nc == 0 {
		return c, fmt.Errorf("nc %q, want 8 hex digits above 0: %w", params["nc"], errBadCredentials)
	}
	c.nc = uint32(nc)
	if c.alg != algMD5 && c.alg != algSHA256 {
		return c, fmt.Errorf("algorithm %q, want MD5 or SHA-256: %w", c.alg, errBadCredentials)
	}
	return c, nil
}

// parseAuthParams reads comma-separated name=value pairs, values quoted
// (with backslash escapes) or tokens. Names are lower-cased.
func parseAuthParams(s string) (map[string]string, error) {
	out := map[string]string{}
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return out, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, fmt.Errorf("parameter %q has no value: %w", s, errBadCredentials)
		}
		name := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("parameter %s: unterminated quote: %w", name, errBadCredentials)
			}
			val, s = b.String(), s[i+1:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			val, s = strings.TrimSpace(s[:end]), s[end:]
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("parameter %s given twice: %w", name, errBadCredentials)
		}
		out[name] = val
	}
}

func hasher(alg string) func() hash.Hash {
	if alg == algSHA256 {
		return sha256.New
	}
	return md5.New
}

func hexHash(newHash func() hash.Hash, parts ...string) string {
	h := newHash()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{':'})
		}
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// digestResponse is the expected response for qop=auth (RFC 7616 3.4.1).
func digestResponse(c credentials, ha1, method string) string {
	h := hasher(c.alg)
	ha2 := hexHash(h, method, c.uri)
	return hexHash(h, ha1, c.nonce, fmt.Sprintf("%08x", c.nc), c.cnonce, "auth", ha2)
}

// authHeaders are the request header carrying credentials and the
// response header carrying challenges: Authorization/WWW-Authenticate for
// a REGISTER (the registrar is the UAS, 401), Proxy-* for anything else
// (407).
func authHeaders(register bool) (credHeader, challengeHeader string, code int, reason string) {
	if register {
		return "Authorization", "WWW-Authenticate", 401, "Unauthorized"
	}
	return "Proxy-Authorization", "Proxy-Authenticate", 407, "Proxy Authentication Required"
}

// findCredentials is the first credentials of the request for realm.
func findCredentials(req *sip.Request, header, realm string) (credentials, error) {
	var firstErr error
	for _, h := range req.Headers() {
		if !strings.EqualFold(h.Name(), header) {
			continue
		}
		c, err := parseCredentials(h.Value())
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if strings.EqualFold(c.realm, realm) {
			return c, nil
		}
	}
	if firstErr != nil {
		return credentials{}, firstErr
	}
	return credentials{}, errNoCredentials
}

// stripCredentials removes the credentials for our realms from req before
// it is relayed (they are of no use downstream and must not leak); those
// for other realms stay, for a proxy further on.
func stripCredentials(req *sip.Request, header string, ours func(realm string) bool) {
	var keep []sip.Header
	found := false
	for _, h := range req.Headers() {
		if !strings.EqualFold(h.Name(), header) {
			continue
		}
		found = true
		if c, err := parseCredentials(h.Value()); err == nil && ours(strings.ToLower(c.realm)) {
			continue
		}
		keep = append(keep, h)
	}
	if !found {
		return
	}
	for _, h := range req.Headers() {
		if strings.EqualFold(h.Name(), header) {
			// RemoveHeader matches the name exactly and removes one.
			for req.RemoveHeader(h.Name()) {
			}
		}
	}
	for _, h := range keep {
		req.AppendHeader(h)
	}
}

// verify checks credentials c of a request with method against sub at
// now. It consumes the nonce count only when the response is right.
func (n *nonces) verify(c credentials, sub *subscriberRef, method string, now time.Time) error {
	if err := n.check(c.nonce, c.realm, now); err != nil {
		return err
	}
	if sub == nil {
		return errUnknownUser
	}
	ha1 := sub.ha1MD5
	if c.alg == algSHA256 {
		ha1 = sub.ha1SHA256
	}
	if ha1 == "" {
		return errNoHA1
	}
	want := digestResponse(c, ha1, method)
	if subtle.ConstantTimeCompare([]byte(want), []byte(c.response)) != 1 {
		return errWrongPassword
	}
	if !n.book.use(c.nonce, c.nc, now) {
		return errStaleNonce
	}
	return nil
}
