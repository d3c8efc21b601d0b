package proxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// selfSigned writes a certificate for 127.0.0.1 and its key to dir and
// returns their paths and a pool that trusts the certificate.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "carrier test proxy"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// tlsCaller is a test phone whose client speaks TLS, trusting only the
// proxy's certificate. It does not listen on TLS: a request it gets over
// TLS came on a connection it opened, as for a phone behind NAT.
type tlsCaller struct {
	*testkit.SIPPhone
	ua *sipgo.UserAgent

	mu   sync.Mutex
	got  []*sip.Request
	more chan struct{}
}

func newTLSCaller(t *testing.T, pool *x509.CertPool) *tlsCaller {
	t.Helper()
	c := &tlsCaller{SIPPhone: testkit.NewSIPPhone(t, "alice"), more: make(chan struct{}, 1)}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("alice"), sipgo.WithUserAgentHostname("127.0.0.1"),
		sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ua.Close() })
	c.ua = ua
	if c.Client, err = sipgo.NewClient(ua, sipgo.WithClientLogger(quiet), sipgo.WithClientHostname("127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		c.record(req)
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { c.record(req) })
	// Called, it answers with a Contact at a private address, which the
	// proxy could not reach.
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		c.record(req)
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte(testkit.SDP))
		res.To().Params.Add("tag", sip.GenerateTagN(10))
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "10.0.0.7", Port: 5061,
			UriParams: sip.HeaderParams{{K: "transport", V: "tls"}}}})
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		_ = tx.Respond(res)
	})
	return c
}

func (c *tlsCaller) record(req *sip.Request) {
	c.mu.Lock()
	c.got = append(c.got, req)
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
}

// waitRequest is the first request of a method in a call the phone got
// on a TLS connection.
func (c *tlsCaller) waitRequest(t *testing.T, method sip.RequestMethod, callID string) *sip.Request {
	t.Helper()
	deadline := time.After(patience)
	for {
		c.mu.Lock()
		got := append([]*sip.Request(nil), c.got...)
		c.mu.Unlock()
		for _, r := range got {
			if r.Method == method && r.CallID().Value() == callID {
				return r
			}
		}
		select {
		case <-c.more:
		case <-deadline:
			t.Fatalf("%s: no %s in call %s", c.Name, method, callID)
		}
	}
}

// connection is the caller's TLS connection to the proxy's listener at
// addr; nil when it has none.
func (c *tlsCaller) connection(addr string) sip.Connection {
	conn, err := c.ua.TransportLayer().GetConnection("tls", addr)
	if err != nil {
		return nil
	}
	conn.TryClose() // GetConnection took a reference
	return conn
}

// tlsHarness is a proxy with UDP and TCP on its port and TLS on tlsAddr,
// the gateway on UDP.
func tlsHarness(t *testing.T, gateway string, tune func(*Config)) (h *harness, tlsAddr string, pool *x509.CertPool) {
	t.Helper()
	certFile, keyFile, pool := selfSigned(t)
	tlsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	h = startProxy(t, gateway, "udp", func(c *Config) {
		c.Listeners = append(c.Listeners, Listener{Transport: "tls", Addr: tlsAddr})
		c.TLS = TLS{CertFile: certFile, KeyFile: keyFile}
		if tune != nil {
			tune(c)
		}
	})
	return h, tlsAddr, pool
}

// TestTLSCall: a phone calls over TLS through the proxy to a UDP
// gateway; the proxy advertises its TLS address towards the caller.
func TestTLSCall(t *testing.T) {
	t.Parallel()
	gw := testkit.NewSIPPhone(t, "gw")
	h, tlsAddr, pool := tlsHarness(t, gw.Addr, nil)
	alice := newTLSCaller(t, pool)

	c := alice.Invite(t, tlsAddr, "TLS", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("INVITE over TLS answered %d", res.StatusCode)
	}
	// Towards the caller the proxy is on TLS; towards the gateway on UDP.
	rrs := c.Final.GetHeaders("Record-Route")
	if len(rrs) != 2 {
		t.Fatalf("Record-Route %v, want the proxy's UDP and TLS entries", rrs)
	}
	// The caller-side entry names the caller's connection (a flow token).
	rr := rrs[1].(*sip.RecordRouteHeader).Address
	if rr.User == "" || net.JoinHostPort(rr.Host, strconv.Itoa(rr.Port)) != tlsAddr || !rr.UriParams.Has("lr") {
		t.Errorf("caller-side Record-Route %s, want a flow token at %s", rrs[1].Value(), tlsAddr)
	}
	if tp, _ := rr.UriParams.Get("transport"); tp != "tls" {
		t.Errorf("caller-side Record-Route %s, want transport=tls", rrs[1].Value())
	}
	inv := gw.WaitRequest(t, sip.INVITE, c.CallID, 1)
	if via := inv.Via(); via.Transport != "UDP" || via.Port != h.port {
		t.Errorf("proxy Via towards the gateway %s", via.Value())
	}
	var vias []*sip.ViaHeader
	for _, hdr := range inv.GetHeaders("Via") {
		vias = append(vias, hdr.(*sip.ViaHeader))
	}
	if len(vias) != 2 || vias[1].Transport != "TLS" {
		t.Errorf("gateway saw Vias %v, want the caller's TLS Via below the proxy's", inv.GetHeaders("Via"))
	}
	c.Ack()
	gw.WaitRequest(t, sip.ACK, c.CallID, 1)
	if res := c.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE over TLS answered %d", res.StatusCode)
	}
	ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
	if ev.Status != 200 || ev.Transport != "tls" || ev.Local != tlsAddr || ev.Destination != gw.Addr || ev.Account != "local" {
		t.Errorf("INVITE event %+v", ev)
	}
	if bye := h.ev.wait(t, "BYE", of(c.CallID, sip.BYE)).tx; bye.Status != 200 || bye.Transport != "tls" {
		t.Errorf("BYE event %+v", bye)
	}
}

// TestTLSHandshakeTimeout: a client that connects and never completes a
// handshake is disconnected.
func TestTLSHandshakeTimeout(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _ := selfSigned(t)
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	startProxy(t, "127.0.0.1:5070", "udp", func(c *Config) {
		c.Listeners = append(c.Listeners, Listener{Transport: "tls", Addr: tlsAddr})
		c.TLS = TLS{CertFile: certFile, KeyFile: keyFile, HandshakeTimeout: 100 * time.Millisecond}
	})
	conn, err := net.Dial("tcp", tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(patience))
	_, err = conn.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("silent client still connected: read %v", err)
	}
}

// TestTLSConfig: a tls listener needs a readable certificate and key.
func TestTLSConfig(t *testing.T) {
	certFile, keyFile, _ := selfSigned(t)
	base := func() Config {
		return Config{Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}, {Transport: "tls", Addr: "127.0.0.1:0"}}, Gateway: "127.0.0.1:5070"}
	}
	for name, tls := range map[string]TLS{
		"no certificate": {},
		"no key":         {CertFile: certFile},
		"missing file":   {CertFile: certFile + ".missing", KeyFile: keyFile},
		"key as cert":    {CertFile: keyFile, KeyFile: keyFile},
	} {
		cfg := base()
		cfg.TLS = tls
		if _, err := New(cfg, newCollector()); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig", name, err)
		}
	}
	cfg := base()
	cfg.TLS = TLS{CertFile: certFile, KeyFile: keyFile}
	if _, err := New(cfg, newCollector()); err != nil {
		t.Errorf("valid certificate: %v", err)
	}
}

// answeredTLSCall places a call from a TLS caller to the UDP gateway gw
// through the proxy at tlsAddr, acknowledges the answer and returns it
// with the caller's connection.
func answeredTLSCall(t *testing.T, alice *tlsCaller, gw *testkit.SIPPhone, tlsAddr string) (*testkit.SIPCall, sip.Connection) {
	t.Helper()
	c := alice.Invite(t, tlsAddr, "TLS", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("INVITE over TLS answered %d", res.StatusCode)
	}
	c.Ack()
	gw.WaitRequest(t, sip.ACK, c.CallID, 1)
	conn := alice.connection(tlsAddr)
	if conn == nil {
		t.Fatal("caller has no TLS connection to the proxy")
	}
	return c, conn
}

// checkByeToCaller checks a BYE the caller got: on its own TLS connection
// to the proxy (it listens on no TLS port), at its Contact, in its dialog.
func checkByeToCaller(t *testing.T, bye *sip.Request, c *testkit.SIPCall, alice *tlsCaller, tlsAddr string) {
	t.Helper()
	if bye.Transport() != "TLS" || bye.Source() != tlsAddr {
		t.Errorf("BYE to the caller came over %s from %s, want TLS from the proxy's %s", bye.Transport(), bye.Source(), tlsAddr)
	}
	if bye.Recipient.User != "alice" || bye.Recipient.Port != alice.Port {
		t.Errorf("BYE to the caller: Request-URI %s, want the caller's Contact", bye.Recipient.String())
	}
	if tag, _ := bye.To().Params.Get("tag"); tag != c.FromTag() {
		t.Errorf("BYE to the caller: To tag %q, want the caller's %q", tag, c.FromTag())
	}
	if tag, _ := bye.From().Params.Get("tag"); tag != c.ToTag() {
		t.Errorf("BYE to the caller: From tag %q, want the callee's %q", tag, c.ToTag())
	}
}

// TestTLSCallerCalleeHangsUp: the callee of a TLS caller hangs up; the
// proxy sends the BYE on the connection the caller opened (the caller's
// Contact names a port with no TLS behind it, as behind NAT), and the
// caller's 200 reaches the callee.
func TestTLSCallerCalleeHangsUp(t *testing.T) {
	t.Parallel()
	gw := testkit.NewSIPPhone(t, "gw")
	gw.SetUAS(gw.Answer(false))
	h, tlsAddr, pool := tlsHarness(t, gw.Addr, nil)
	alice := newTLSCaller(t, pool)
	c, conn := answeredTLSCall(t, alice, gw, tlsAddr)

	if res := gw.HangUp(t, "UDP"); res.StatusCode != 200 {
		t.Fatalf("callee's BYE answered %d, want the caller's 200", res.StatusCode)
	}
	checkByeToCaller(t, alice.waitRequest(t, sip.BYE, c.CallID), c, alice, tlsAddr)
	ev := h.ev.wait(t, "BYE", of(c.CallID, sip.BYE)).tx
	if ev.Status != 200 || ev.Transport != "udp" || ev.Destination != conn.LocalAddr().String() {
		t.Errorf("BYE event %+v: want 200, from udp, to the caller's connection %s", ev, conn.LocalAddr())
	}
	waitMetric(t, h, "carrier_sip_active_calls", 0)
	// The call is over; the caller's connection stays for its next one.
	if alice.connection(tlsAddr) != conn {
		t.Error("caller's TLS connection replaced")
	}
}

// TestTLSCallerDialogTimeout: the proxy ends a TLS caller's call itself;
// both sides get a BYE, the caller on its connection, and both events
// say why.
func TestTLSCallerDialogTimeout(t *testing.T) {
	t.Parallel()
	gw := testkit.NewSIPPhone(t, "gw")
	gw.SetUAS(gw.Answer(false))
	h, tlsAddr, pool := tlsHarness(t, gw.Addr, func(c *Config) { c.DialogTimeout = time.Second })
	alice := newTLSCaller(t, pool)
	c, conn := answeredTLSCall(t, alice, gw, tlsAddr)

	toCallee := gw.WaitRequest(t, sip.BYE, c.CallID, 1)
	if tag, _ := toCallee.To().Params.Get("tag"); tag != c.ToTag() {
		t.Errorf("BYE to the callee: To tag %q, want the callee's %q", tag, c.ToTag())
	}
	checkByeToCaller(t, alice.waitRequest(t, sip.BYE, c.CallID), c, alice, tlsAddr)

	byes := map[string]schema.Transaction{}
	deadline := time.Now().Add(patience)
	for len(byes) < 2 && time.Now().Before(deadline) {
		for _, e := range h.ev.all() {
			if e.tx.CallID == c.CallID && e.tx.Method == "BYE" {
				byes[e.tx.Destination] = e.tx
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(byes) != 2 {
		t.Fatalf("BYE events %+v, want one per side", byes)
	}
	for _, dest := range []string{gw.Addr, conn.LocalAddr().String()} {
		if b, ok := byes[dest]; !ok || b.Status != 200 || b.Note != schema.EndNoBye {
			t.Errorf("BYE event to %s: %+v, want status 200, note %s", dest, b, schema.EndNoBye)
		}
	}
	waitMetric(t, h, "carrier_sip_active_calls", 0)
}

// TestTLSCallerGone: once the caller's connection is closed the proxy
// has no way to it (it does not dial TLS): the callee's BYE gets a final
// error response at once, its event says so, and nothing is left
// running.
func TestTLSCallerGone(t *testing.T) {
	t.Parallel()
	gw := testkit.NewSIPPhone(t, "gw")
	gw.SetUAS(gw.Answer(false))
	h, tlsAddr, pool := tlsHarness(t, gw.Addr, nil)
	alice := newTLSCaller(t, pool)
	c, conn := answeredTLSCall(t, alice, gw, tlsAddr)

	src := conn.LocalAddr().String()
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(patience)
	for h.p.flowFrom(src) != nil {
		if time.Now().After(deadline) {
			t.Fatal("proxy still holds the caller's closed connection")
		}
		time.Sleep(5 * time.Millisecond)
	}

	res := gw.HangUp(t, "UDP")
	if res.StatusCode < 400 {
		t.Fatalf("callee's BYE to a caller with no connection answered %d, want an error", res.StatusCode)
	}
	ev := h.ev.wait(t, "BYE", of(c.CallID, sip.BYE)).tx
	if ev.Status != res.StatusCode || ev.Note == "" {
		t.Errorf("BYE event %+v: want status %d and a note", ev, res.StatusCode)
	}
	waitMetric(t, h, "carrier_sip_inflight_transactions", 0)
	// The proxy dialled nothing: it holds no TLS connection, and the
	// caller got no BYE on a new one.
	for _, l := range h.p.listeners {
		if !l.reusesFlows() {
			continue
		}
		l.tcp.mu.Lock()
		if n := len(l.tcp.byRemote); n != 0 {
			t.Errorf("proxy holds %d TLS connections", n)
		}
		l.tcp.mu.Unlock()
	}
	if alice.connection(tlsAddr) != nil {
		t.Error("caller has a new TLS connection")
	}
}

// TestTLSSubscriberCalled: a subscriber registered over TLS, from behind
// NAT (its Contact a private address), is called on the connection its
// REGISTER came on, and the dialog's requests follow that connection.
func TestTLSSubscriberCalled(t *testing.T) {
	t.Parallel()
	n := newSubNet(t)
	certFile, keyFile, pool := selfSigned(t)
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	h := newHarness(t)
	cfg := h.config(n.gw.Addr)
	cfg.Listeners = append(cfg.Listeners, Listener{Transport: "tls", Addr: tlsAddr})
	cfg.TLS = TLS{CertFile: certFile, KeyFile: keyFile}
	cfg.Provisioning = FixedProvisioning(n.pv)
	cfg.Subscribers = SubscriberConfig{Domains: []string{testDomain}, Registrations: n.regs, NonceSecret: testNonceSecret}
	h.run(t, cfg, h.ev)

	alice := newTLSCaller(t, pool)
	contact := "<sip:alice@10.0.0.7:5061;transport=tls>;expires=300"
	register := func() *sip.Request {
		req := registerReq(alice.SIPPhone, h, "alice", "tls-reg", nextCSeq(), contact)
		req.Via().Transport = "TLS"
		req.SetTransport("TLS")
		req.SetDestination(tlsAddr)
		req.Laddr = sip.Addr{} // registerReq's UDP socket; over TLS the phone dials
		return req
	}
	res := alice.Do(t, register())
	realm, nonce, _ := challengeFor(t, res, "MD5")
	req := register()
	authorize(req, "Authorization", "alice", "alice-secret", realm, nonce, "MD5", 1)
	if res := alice.Do(t, req); res.StatusCode != 200 {
		t.Fatalf("REGISTER over TLS: %d", res.StatusCode)
	}
	conn := alice.connection(tlsAddr)
	if conn == nil {
		t.Fatal("phone has no TLS connection to the proxy")
	}

	call := n.gw.Invite(t, h.addr, "UDP", toUser("alice"))
	if res := call.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("call to the TLS subscriber answered %d", res.StatusCode)
	}
	inv := alice.waitRequest(t, sip.INVITE, call.CallID)
	if inv.Transport() != "TLS" || inv.Source() != tlsAddr || inv.Recipient.Host != "10.0.0.7" {
		t.Errorf("INVITE over %s from %s to %s, want TLS from %s to the registered contact", inv.Transport(), inv.Source(), inv.Recipient.String(), tlsAddr)
	}
	call.Ack()
	alice.waitRequest(t, sip.ACK, call.CallID)
	if res := call.Bye(); res.StatusCode != 200 {
		t.Fatalf("caller's BYE answered %d, want the subscriber's 200", res.StatusCode)
	}
	alice.waitRequest(t, sip.BYE, call.CallID)
	ev := h.ev.wait(t, "INVITE", of(call.CallID, sip.INVITE)).tx
	if ev.Status != 200 || ev.Destination != conn.LocalAddr().String() {
		t.Errorf("INVITE event %+v: want 200 to the phone's connection %s", ev, conn.LocalAddr())
	}
}
