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
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

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

// TestTLSCall: a phone calls over TLS through the proxy to a UDP
// gateway; the proxy advertises its TLS address towards the caller.
func TestTLSCall(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := selfSigned(t)
	gw := testkit.NewSIPPhone(t, "gw")
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	h := startProxy(t, gw.Addr, "udp", func(c *Config) {
		c.Listeners = append(c.Listeners, Listener{Transport: "tls", Addr: tlsAddr})
		c.TLS = TLS{CertFile: certFile, KeyFile: keyFile}
	})

	// The caller is a test phone whose client speaks TLS, trusting only
	// the proxy's certificate.
	alice := testkit.NewSIPPhone(t, "alice")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("alice"), sipgo.WithUserAgentHostname("127.0.0.1"),
		sipgo.WithUserAgenTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ua.Close() })
	if alice.Client, err = sipgo.NewClient(ua, sipgo.WithClientLogger(quiet), sipgo.WithClientHostname("127.0.0.1")); err != nil {
		t.Fatal(err)
	}

	c := alice.Invite(t, tlsAddr, "TLS", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("INVITE over TLS answered %d", res.StatusCode)
	}
	// Towards the caller the proxy is on TLS; towards the gateway on UDP.
	rrs := c.Final.GetHeaders("Record-Route")
	if len(rrs) != 2 {
		t.Fatalf("Record-Route %v, want the proxy's UDP and TLS entries", rrs)
	}
	if got, want := rrs[1].Value(), "<sip:"+tlsAddr+";transport=tls;lr>"; got != want {
		t.Errorf("caller-side Record-Route %s, want %s", got, want)
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
