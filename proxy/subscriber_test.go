package proxy

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

const testDomain = "example.com"

// subNet is a network with subscribers: account acme with alice (two
// contacts at most) and bob, and a trunk "pstn" of account carrier for
// one phone's address and port, which also serves as the gateway.
type subNet struct {
	nats  *testkit.NATS
	regs  *KVRegistrations
	gw    *testkit.SIPPhone // the trunk's phone and the default gateway
	pv    *schema.Provisioning
	alice schema.Subscriber
	bob   schema.Subscriber
}

func newSubNet(t *testing.T) *subNet {
	t.Helper()
	n := &subNet{nats: testkit.StartNATS(t), gw: testkit.NewSIPPhone(t, "gw")}
	_, js := n.nats.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	regs, err := OpenRegistrations(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	n.regs = regs
	n.alice = schema.Subscriber{ID: "alice", User: "alice", Domain: testDomain, Account: "acme", MaxContacts: 2}
	n.bob = schema.Subscriber{ID: "bob", User: "bob", Domain: testDomain, Account: "acme"}
	for _, s := range []*schema.Subscriber{&n.alice, &n.bob} {
		if err := s.SetPassword(s.User + "-secret"); err != nil {
			t.Fatal(err)
		}
	}
	pv := schema.NewProvisioning()
	pv.Accounts["acme"] = schema.Account{ID: "acme", Currency: "EUR"}
	pv.Accounts["carrier"] = schema.Account{ID: "carrier", Currency: "USD"}
	pv.Trunks["pstn"] = schema.Trunk{ID: "pstn", Account: "carrier", Sources: []schema.Source{{CIDR: "127.0.0.1", Port: n.gw.Port}}}
	pv.Subscribers["alice"], pv.Subscribers["bob"] = n.alice, n.bob
	if err := pv.Check(); err != nil {
		t.Fatal(err)
	}
	n.pv = pv
	return n
}

var testNonceSecret = []byte("0123456789abcdef0123456789abcdef")

// start runs a proxy of the network; stop ends it before the test does.
func (n *subNet) start(t *testing.T) (h *harness, stop func()) {
	t.Helper()
	h = newHarness(t)
	cfg := h.config(n.gw.Addr)
	cfg.Provisioning = FixedProvisioning(n.pv)
	cfg.Subscribers = SubscriberConfig{
		Domains:       []string{testDomain},
		Registrations: n.regs,
		NonceSecret:   testNonceSecret,
	}
	return h, h.run(t, cfg, h.ev)
}

// registerReq builds a REGISTER of user from ph to the proxy; contacts
// are Contact header values (none: a query).
func registerReq(ph *testkit.SIPPhone, h *harness, user, callID string, cseq uint32, contacts ...string) *sip.Request {
	req := ph.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: testDomain}, "UDP", h.addr)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	aor := sip.Uri{Scheme: "sip", User: user, Host: testDomain}
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: sip.HeaderParams{{K: "tag", V: "reg" + user}}})
	req.AppendHeader(&sip.ToHeader{Address: aor})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.REGISTER})
	for _, c := range contacts {
		req.AppendHeader(sip.NewHeader("Contact", c))
	}
	req.SetBody(nil)
	return req
}

var (
	reNonce = regexp.MustCompile(`nonce="([^"]+)"`)
	reRealm = regexp.MustCompile(`realm="([^"]+)"`)
)

// challengeFor is the challenge of res for algorithm alg.
func challengeFor(t *testing.T, res *sip.Response, alg string) (realm, nonce string, stale bool) {
	t.Helper()
	name := "WWW-Authenticate"
	if res.StatusCode == 407 {
		name = "Proxy-Authenticate"
	}
	for _, h := range res.GetHeaders(name) {
		v := h.Value()
		if !strings.Contains(v, "algorithm="+alg+",") || !strings.Contains(v, `qop="auth"`) {
			continue
		}
		return reRealm.FindStringSubmatch(v)[1], reNonce.FindStringSubmatch(v)[1], strings.Contains(v, "stale=true")
	}
	t.Fatalf("%d: no %s challenge for %s: %v", res.StatusCode, name, alg, res.GetHeaders(name))
	return
}

// authorize adds credentials computed here, independently of the proxy's
// code (RFC 7616 3.4.1, qop=auth).
func authorize(req *sip.Request, header, user, password, realm, nonce, alg string, nc uint32) {
	h := func() hash.Hash { return md5.New() }
	if alg == "SHA-256" {
		h = sha256.New
	}
	hx := func(s string) string { x := h(); x.Write([]byte(s)); return hex.EncodeToString(x.Sum(nil)) }
	uri := req.Recipient.String()
	cnonce, ncs := "c0ffee"+strconv.Itoa(int(nc)), fmt.Sprintf("%08x", nc)
	resp := hx(hx(user+":"+realm+":"+password) + ":" + nonce + ":" + ncs + ":" + cnonce + ":auth:" + hx(string(req.Method)+":"+uri))
	req.AppendHeader(sip.NewHeader(header, fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=%s, qop=auth, nc=%s, cnonce="%s"`,
		user, realm, nonce, uri, resp, alg, ncs, cnonce)))
}

// registerAuth registers with a fresh challenge; it returns the final
// response to the authenticated REGISTER.
func registerAuth(t *testing.T, ph *testkit.SIPPhone, h *harness, user, password, alg string, contacts ...string) *sip.Response {
	t.Helper()
	callID := "reg-" + ph.Name
	res := ph.Do(t, registerReq(ph, h, user, callID, nextCSeq(), contacts...))
	if res.StatusCode != 401 {
		t.Fatalf("REGISTER without credentials: %d, want 401", res.StatusCode)
	}
	realm, nonce, _ := challengeFor(t, res, alg)
	req := registerReq(ph, h, user, callID, nextCSeq(), contacts...)
	authorize(req, "Authorization", user, password, realm, nonce, alg, 1)
	return ph.Do(t, req)
}

var cseqs = make(chan uint32, 1)

func init() { cseqs <- 1 }

// nextCSeq numbers the REGISTERs of the tests, in order.
func nextCSeq() uint32 { n := <-cseqs; cseqs <- n + 1; return n }

// contactsOf are the Contact addresses and expires of a 200 to REGISTER.
func contactsOf(res *sip.Response) map[string]string {
	out := map[string]string{}
	for _, h := range res.GetHeaders("Contact") {
		c := h.(*sip.ContactHeader)
		exp, _ := c.Params.Get("expires")
		out[c.Address.Host+":"+strconv.Itoa(c.Address.Port)] = exp
	}
	return out
}

func TestDigestRegisterSHA256AndMD5(t *testing.T) {
	t.Parallel()
	n := newSubNet(t)
	h, _ := n.start(t)
	for _, alg := range []string{"SHA-256", "MD5"} {
		t.Run(alg, func(t *testing.T) {
			ph := testkit.NewSIPPhone(t, "alice-"+strings.ToLower(strings.ReplaceAll(alg, "-", "")))
			res := ph.Do(t, registerReq(ph, h, "alice", "c-"+alg, nextCSeq(), "<sip:alice@"+ph.Addr+">"))
			if res.StatusCode != 401 {
				t.Fatalf("unauthenticated REGISTER: %d, want 401", res.StatusCode)
			}
			// Both offered, SHA-256 first (RFC 8760: in order of preference).
			chals := res.GetHeaders("WWW-Authenticate")
			if len(chals) != 2 || !strings.Contains(chals[0].Value(), "algorithm=SHA-256") || !strings.Contains(chals[1].Value(), "algorithm=MD5") {
				t.Fatalf("challenges = %v", chals)
			}
			res = registerAuth(t, ph, h, "alice", "alice-secret", alg, "<sip:alice@"+ph.Addr+">;expires=120")
			if res.StatusCode != 200 {
				t.Fatalf("authenticated REGISTER: %d %s, want 200", res.StatusCode, res.Reason)
			}
			if exp := contactsOf(res)[ph.Addr]; exp == "" || atoi(exp) > 120 || atoi(exp) < 1 {
				t.Fatalf("binding of %s not in the 200: %v", ph.Addr, res.GetHeaders("Contact"))
			}
		})
	}
	t.Run("sipgo client", func(t *testing.T) {
		// A third-party digest implementation (sipgo's, on icholy/digest)
		// answers the first challenge, SHA-256.
		ph := testkit.NewSIPPhone(t, "bob-sipgo")
		req := registerReq(ph, h, "bob", "c-sipgo", nextCSeq(), "<sip:bob@"+ph.Addr+">;expires=120")
		res := ph.Do(t, req)
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		res, err := ph.Client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: "bob", Password: "bob-secret"})
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("sipgo digest REGISTER: %v, %v", res, err)
		}
		if !strings.Contains(req.GetHeader("Authorization").Value(), "algorithm=SHA-256") {
			t.Fatalf("sipgo answered %s, want the first challenge, SHA-256", req.GetHeader("Authorization").Value())
		}
	})
	// Every REGISTER is in the log, with the subscriber's account once
	// authenticated.
	ev := h.ev.wait(t, "authenticated REGISTER", func(tx schema.Transaction) bool {
		return tx.Method == "REGISTER" && tx.Status == 200
	})
	if ev.tx.Account != "acme" || ev.tx.Subscriber != "alice" {
		t.Fatalf("REGISTER event account %q subscriber %q, want acme alice", ev.tx.Account, ev.tx.Subscriber)
	}
}

func TestDigestFailures(t *testing.T) {
	t.Parallel()
	n := newSubNet(t)
	h, _ := n.start(t)
	ph := testkit.NewSIPPhone(t, "mallory")
	contact := "<sip:alice@" + ph.Addr + ">"
	challenged := func(t *testing.T) (realm, nonce string) {
		res := ph.Do(t, registerReq(ph, h, "alice", "fail", nextCSeq(), contact))
		realm, nonce, _ = challengeFor(t, res, "MD5")
		return
	}
	try := func(t *testing.T, user, password, realm, nonce string, nc uint32) *sip.Response {
		req := registerReq(ph, h, user, "fail", nextCSeq(), contact)
		authorize(req, "Authorization", user, password, realm, nonce, "MD5", nc)
		return ph.Do(t, req)
	}
	t.Run("wrong password", func(t *testing.T) {
		realm, nonce := challenged(t)
		if res := try(t, "alice", "guess", realm, nonce, 1); res.StatusCode != 403 {
			t.Fatalf("%d, want 403", res.StatusCode)
		}
	})
	t.Run("unknown user", func(t *testing.T) {
		realm, nonce := challenged(t)
		if res := try(t, "eve", "eve-secret", realm, nonce, 1); res.StatusCode != 403 {
			t.Fatalf("%d, want 403", res.StatusCode)
		}
	})
	t.Run("replayed nonce count", func(t *testing.T) {
		realm, nonce := challenged(t)
		if res := try(t, "alice", "alice-secret", realm, nonce, 1); res.StatusCode != 200 {
			t.Fatalf("first use: %d, want 200", res.StatusCode)
		}
		// The same nonce with a higher count is a legitimate reuse.
		if res := try(t, "alice", "alice-secret", realm, nonce, 2); res.StatusCode != 200 {
			t.Fatalf("nc 2: %d, want 200", res.StatusCode)
		}
		res := try(t, "alice", "alice-secret", realm, nonce, 2)
		if _, _, stale := challengeFor(t, res, "MD5"); res.StatusCode != 401 || !stale {
			t.Fatalf("replay: %d stale=%v, want 401 stale=true", res.StatusCode, stale)
		}
	})
	t.Run("expired nonce", func(t *testing.T) {
		// A nonce this proxy issued (same secret) six minutes ago.
		old := newNonces(testNonceSecret, time.Minute, 10).issue(testDomain, time.Now().Add(-6*time.Minute))
		res := try(t, "alice", "alice-secret", testDomain, old, 1)
		if _, _, stale := challengeFor(t, res, "SHA-256"); res.StatusCode != 401 || !stale {
			t.Fatalf("expired: %d stale=%v, want 401 stale=true", res.StatusCode, stale)
		}
	})
	t.Run("forged nonce", func(t *testing.T) {
		forged := newNonces([]byte("another secret"), time.Minute, 10).issue(testDomain, time.Now())
		res := try(t, "alice", "alice-secret", testDomain, forged, 1)
		if _, _, stale := challengeFor(t, res, "MD5"); res.StatusCode != 401 || stale {
			t.Fatalf("forged: %d stale=%v, want 401 without stale", res.StatusCode, stale)
		}
	})
	t.Run("malformed credentials", func(t *testing.T) {
		// No qop: the RFC 2069 form, which the proxy does not offer.
		req := registerReq(ph, h, "alice", "fail", nextCSeq(), contact)
		req.AppendHeader(sip.NewHeader("Authorization", `Digest username="alice", realm="example.com", nonce="x", uri="sip:example.com", response="00"`))
		if res := ph.Do(t, req); res.StatusCode != 400 {
			t.Fatalf("%d, want 400", res.StatusCode)
		}
	})
	t.Run("From user mismatch", func(t *testing.T) {
		// bob authenticates but calls as alice.
		c := ph.Invite(t, h.addr, "UDP", func(req *sip.Request) { req.From().Address = sip.Uri{Scheme: "sip", User: "alice", Host: testDomain} })
		res := c.WaitFinal()
		realm, nonce, _ := challengeFor(t, res, "MD5")
		c = ph.Invite(t, h.addr, "UDP", func(req *sip.Request) {
			req.From().Address = sip.Uri{Scheme: "sip", User: "alice", Host: testDomain}
			authorize(req, "Proxy-Authorization", "bob", "bob-secret", realm, nonce, "MD5", 1)
		})
		if res := c.WaitFinal(); res.StatusCode != 403 {
			t.Fatalf("%d, want 403", res.StatusCode)
		}
		ev := h.ev.wait(t, "mismatch INVITE", of(c.CallID, sip.INVITE))
		if ev.tx.Note != noteAuthMismatch {
			t.Fatalf("note %q, want %q", ev.tx.Note, noteAuthMismatch)
		}
	})
	t.Run("no open relay for other domains", func(t *testing.T) {
		// Not a trunk, not one of our users: refused, not challenged.
		c := ph.Invite(t, h.addr, "UDP", func(req *sip.Request) { req.From().Address.Host = "elsewhere.example" })
		if res := c.WaitFinal(); res.StatusCode != 403 {
			t.Fatalf("%d, want 403", res.StatusCode)
		}
	})
}

func TestRegistrar(t *testing.T) {
	t.Parallel()
	n := newSubNet(t)
	h, _ := n.start(t)
	ph := testkit.NewSIPPhone(t, "alice-desk")
	reg := func(t *testing.T, contacts []string, extra ...sip.Header) *sip.Response {
		t.Helper()
		req := registerReq(ph, h, "alice", "registrar", nextCSeq(), contacts...)
		for _, e := range extra {
			req.AppendHeader(e)
		}
		res := ph.Do(t, req)
		if res.StatusCode != 401 {
			t.Fatalf("REGISTER without credentials: %d", res.StatusCode)
		}
		realm, nonce, _ := challengeFor(t, res, "SHA-256")
		req = registerReq(ph, h, "alice", "registrar", nextCSeq(), contacts...)
		for _, e := range extra {
			req.AppendHeader(e)
		}
		authorize(req, "Authorization", "alice", "alice-secret", realm, nonce, "SHA-256", 1)
		return ph.Do(t, req)
	}
	a, b, c := "127.0.0.1:20001", "127.0.0.1:20002", "127.0.0.1:20003"

	// The Expires header, then the contact parameter, which wins.
	res := reg(t, []string{"<sip:alice@" + a + ">"}, sip.NewHeader("Expires", "300"))
	if got := contactsOf(res); res.StatusCode != 200 || len(got) != 1 || atoi(got[a]) > 300 || atoi(got[a]) < 299 {
		t.Fatalf("first contact: %d %v", res.StatusCode, got)
	}
	res = reg(t, []string{"<sip:alice@" + b + ">;expires=600"}, sip.NewHeader("Expires", "300"))
	if got := contactsOf(res); res.StatusCode != 200 || len(got) != 2 || atoi(got[b]) < 599 {
		t.Fatalf("second contact: %d %v", res.StatusCode, got)
	}
	// alice may have two.
	res = reg(t, []string{"<sip:alice@" + c + ">"})
	if res.StatusCode != 403 {
		t.Fatalf("third contact: %d, want 403", res.StatusCode)
	}
	// Too brief.
	res = reg(t, []string{"<sip:alice@" + c + ">;expires=10"})
	if res.StatusCode != 423 || res.GetHeader("Min-Expires") == nil || res.GetHeader("Min-Expires").Value() != "60" {
		t.Fatalf("expires 10: %d %v, want 423 with Min-Expires: 60", res.StatusCode, res.GetHeader("Min-Expires"))
	}
	// A query lists the bindings, and changes nothing.
	res = reg(t, nil)
	if got := contactsOf(res); res.StatusCode != 200 || len(got) != 2 || got[a] == "" || got[b] == "" {
		t.Fatalf("query: %d %v", res.StatusCode, got)
	}
	// One removed by expires=0, then the rest by Contact: *.
	res = reg(t, []string{"<sip:alice@" + a + ">;expires=0"})
	if got := contactsOf(res); res.StatusCode != 200 || len(got) != 1 || got[b] == "" {
		t.Fatalf("remove one: %d %v", res.StatusCode, got)
	}
	if res := reg(t, []string{"*"}); res.StatusCode != 400 {
		t.Fatalf("Contact: * without Expires: 0: %d, want 400", res.StatusCode)
	}
	res = reg(t, []string{"*"}, sip.NewHeader("Expires", "0"))
	if res.StatusCode != 200 || len(res.GetHeaders("Contact")) != 0 {
		t.Fatalf("remove all: %d %v", res.StatusCode, res.GetHeaders("Contact"))
	}
	stored, err := n.regs.Lookup(context.Background(), "alice")
	if err != nil || len(stored.Bindings) != 0 {
		t.Fatalf("bucket after removal: %+v, %v", stored, err)
	}
	// Calls to alice now find nobody.
	call := n.gw.Invite(t, h.addr, "UDP", toUser("alice"))
	if res := call.WaitFinal(); res.StatusCode != 480 {
		t.Fatalf("call to unregistered alice: %d, want 480", res.StatusCode)
	}
}

// toUser addresses an INVITE to a subscriber of testDomain.
func toUser(user string) func(*sip.Request) {
	return func(req *sip.Request) {
		u := sip.Uri{Scheme: "sip", User: user, Host: testDomain}
		req.Recipient = u
		req.To().Address = u
	}
}

// TestCallToSubscriberBehindNAT registers a phone whose Contact port is
// not the port it sends from (a NAT rewrote it), restarts the proxy, and
// calls it from the trunk: the INVITE must reach the real source address
// with the Contact as Request-URI.
func TestCallToSubscriberBehindNAT(t *testing.T) {
	t.Parallel()
	n := newSubNet(t)
	first, stop := n.start(t)
	alice := testkit.NewSIPPhone(t, "alice")
	const natPort = 40404 // what the phone believes its port is
	contact := "<sip:alice@127.0.0.1:" + strconv.Itoa(natPort) + ">;expires=300"
	req := registerReq(alice, first, "alice", "nat", nextCSeq(), contact)
	req.Via().Params.Add("rport", "")
	res := alice.Do(t, req)
	realm, nonce, _ := challengeFor(t, res, "MD5")
	req = registerReq(alice, first, "alice", "nat", nextCSeq(), contact)
	req.Via().Params.Add("rport", "")
	authorize(req, "Authorization", "alice", "alice-secret", realm, nonce, "MD5", 1)
	if res := alice.Do(t, req); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %d", res.StatusCode)
	}

	// The binding is in the bucket, not in the proxy: another one takes
	// the call.
	stop()
	h, _ := n.start(t)
	call := n.gw.Invite(t, h.addr, "UDP", toUser("alice"))
	call.WaitFor(200)
	call.Ack()
	got := alice.WaitRequest(t, sip.INVITE, call.CallID, 1)
	if got.Recipient.Port != natPort || got.Recipient.User != "alice" {
		t.Fatalf("Request-URI %s, want the registered contact (port %d)", got.Recipient.String(), natPort)
	}
	if res := call.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE: %d", res.StatusCode)
	}
	ev := h.ev.wait(t, "INVITE to alice", of(call.CallID, sip.INVITE))
	if ev.tx.Status != 200 || ev.tx.Destination != alice.Addr || ev.tx.Account != "carrier" || ev.tx.Trunk != "pstn" {
		t.Fatalf("INVITE event: status %d dst %s account %s trunk %s; want 200 to %s from trunk pstn of carrier",
			ev.tx.Status, ev.tx.Destination, ev.tx.Account, ev.tx.Trunk, alice.Addr)
	}
}

// TestSubscriberCallBilledToAccount: alice calls out through the gateway
// after a 407; the call is alice's account's, and the credentials stop
// at the proxy.
func TestSubscriberCallBilledToAccount(t *testing.T) {
	t.Parallel()
	n := newSubNet(t)
	h, _ := n.start(t)
	alice := testkit.NewSIPPhone(t, "alice")
	from := func(req *sip.Request) { req.From().Address = sip.Uri{Scheme: "sip", User: "alice", Host: testDomain} }
	c := alice.Invite(t, h.addr, "UDP", from)
	res := c.WaitFinal()
	if res.StatusCode != 407 {
		t.Fatalf("unauthenticated INVITE: %d, want 407", res.StatusCode)
	}
	realm, nonce, _ := challengeFor(t, res, "SHA-256")
	c = alice.Invite(t, h.addr, "UDP", func(req *sip.Request) {
		from(req)
		// A credential for a proxy further on stays.
		req.AppendHeader(sip.NewHeader("Proxy-Authorization", `Digest username="a", realm="upstream.example", nonce="n", uri="sip:x", response="00", qop=auth, nc=00000001, cnonce="c"`))
		authorize(req, "Proxy-Authorization", "alice", "alice-secret", realm, nonce, "SHA-256", 1)
	})
	c.WaitFor(200)
	c.Ack()
	got := n.gw.WaitRequest(t, sip.INVITE, c.CallID, 1)
	var realms []string
	for _, hd := range got.GetHeaders("Proxy-Authorization") {
		realms = append(realms, reRealm.FindStringSubmatch(hd.Value())[1])
	}
	if !slices.Equal(realms, []string{"upstream.example"}) {
		t.Fatalf("gateway got Proxy-Authorization for realms %v, want only upstream.example", realms)
	}
	if res := c.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE: %d", res.StatusCode)
	}
	ev := h.ev.wait(t, "alice's INVITE", of(c.CallID, sip.INVITE))
	if ev.tx.Status != 200 || ev.tx.Account != "acme" || ev.tx.Subscriber != "alice" || ev.tx.Trunk != "" {
		t.Fatalf("INVITE event: status %d account %q subscriber %q trunk %q; want 200 acme alice", ev.tx.Status, ev.tx.Account, ev.tx.Subscriber, ev.tx.Trunk)
	}
}
