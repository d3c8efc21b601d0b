package proxy

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// TLS is the certificate the proxy's TLS listeners present (SIP over TLS,
// RFC 3261 26.2 and RFC 5630: the transport is TLS, the URIs stay sip:).
type TLS struct {
	// CertFile is a PEM file with the certificate and its chain; KeyFile
	// the PEM private key. Both are required when a listener's transport
	// is tls. They are read once, by New: replacing the certificate takes
	// a restart.
	CertFile, KeyFile string
	// HandshakeTimeout bounds a new connection's TLS handshake, so that a
	// client that connects and says nothing does not keep it open
	// (default 10s).
	HandshakeTimeout time.Duration
}

const defaultHandshakeTimeout = 10 * time.Second

// serverConfig loads the certificate; nil when no listener needs one.
func (t *TLS) serverConfig(listeners []Listener) (*tls.Config, error) {
	need := false
	for _, l := range listeners {
		need = need || l.Transport == "tls"
	}
	if !need {
		return nil, nil
	}
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, fmt.Errorf("tls listener: set TLS.CertFile and TLS.KeyFile (--tls-cert, --tls-key): %w", ErrInvalidConfig)
	}
	if t.HandshakeTimeout < 0 {
		return nil, fmt.Errorf("tls handshake timeout %v: want 0 (default) or more: %w", t.HandshakeTimeout, ErrInvalidConfig)
	}
	if t.HandshakeTimeout == 0 {
		t.HandshakeTimeout = defaultHandshakeTimeout
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s and key %s: %v: %w", t.CertFile, t.KeyFile, err, ErrInvalidConfig)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// tlsListener accepts TCP connections and serves TLS on them. The
// handshake is left to the connection's first read, on the goroutine
// sipgo reads it with, so that a slow client never holds up Accept.
type tlsListener struct {
	net.Listener
	cfg     *tls.Config
	timeout time.Duration
	p       *Proxy
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tlsServerConn{Conn: tls.Server(c, l.cfg), timeout: l.timeout, p: l.p}, nil
}

// tlsServerConn completes the handshake within its timeout before the
// first read.
type tlsServerConn struct {
	*tls.Conn
	timeout time.Duration
	p       *Proxy
	once    sync.Once
	err     error
}

func (c *tlsServerConn) Read(b []byte) (int, error) {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		if err := c.HandshakeContext(ctx); err != nil {
			c.p.log.Debug("tls handshake failed", "src", c.RemoteAddr(), "err", err)
			// EOF: sipgo closes the connection quietly, as for a peer
			// that went away; the cause is in the debug log.
			c.err = io.EOF
		}
	})
	if c.err != nil {
		return 0, c.err
	}
	return c.Conn.Read(b)
}

// Connection reuse towards TLS peers (RFC 5626 sections 5.2 and 5.3, as
// Kamailio and OpenSIPS do it). A phone on TLS is usually behind NAT and
// accepts no connections, so every request to it must go on the connection
// it opened. The proxy never dials TLS itself: it holds only a server
// certificate, and a peer's certificate could not be verified against
// anything but the system roots, which a phone's self-signed one never
// chains to. Skipping verification would hand the call to anyone on the
// path, so instead a request with no connection to use is refused
// (errFlowFailed, errNoFlow), which the sender sees as a final error
// response.
//
// The Record-Route entry a tls listener adds facing a peer carries a flow
// token in its user part: the peer connection's remote address, signed, so
// that the token cannot be pointed at another phone's connection. An
// in-dialog request whose last Route entry of ours carries a token goes on
// that connection, whatever its Request-URI (the Contact, often a private
// address) says.

var (
	// errFlowFailed: the connection a flow token names is closed, or the
	// token is not one of this listener's (RFC 5626 430 Flow Failed).
	errFlowFailed = errors.New("tls flow failed")
	// errNoFlow: a request is for a TLS next hop that has no connection
	// open to the proxy, and the proxy does not dial TLS.
	errNoFlow = errors.New("no open tls connection to the next hop")
)

const flowMACSize = 8

// flowEncoding spells tokens in lower-case letters and digits, which a
// SIP URI user part takes unescaped.
var flowEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// newFlowKey is a listener's token key. It lives as long as the process:
// tokens of an earlier run name connections that closed with it.
func newFlowKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("tls flow token key: %w", err)
	}
	return k, nil
}

// reusesFlows reports whether requests to peers of l go only on the
// connections the peers opened.
func (l *listener) reusesFlows() bool { return l.flowKey != nil }

// recordRoute is the Record-Route entry l adds facing a peer at raddr:
// with a flow token for raddr's connection on a tls listener.
func (l *listener) recordRoute(raddr string) sip.Header {
	if !l.reusesFlows() {
		return l.rr
	}
	token, ok := l.flowToken(raddr)
	if !ok {
		return l.rr
	}
	return sip.NewHeader("Record-Route", "<sip:"+token+"@"+l.viaHost+":"+strconv.Itoa(l.port)+";transport="+l.network+";lr>")
}

// flowToken signs raddr (ip:port); false when it is not one.
func (l *listener) flowToken(raddr string) (string, bool) {
	ap, err := netip.ParseAddrPort(raddr)
	if err != nil {
		return "", false
	}
	b := ap.Addr().Unmap().AsSlice()
	b = binary.BigEndian.AppendUint16(b, ap.Port())
	mac := hmac.New(sha256.New, l.flowKey)
	mac.Write(b)
	b = mac.Sum(b)[:len(b)+flowMACSize]
	return flowEncoding.EncodeToString(b), true
}

// flowAddr is the remote address a token of l names.
func (l *listener) flowAddr(token string) (string, error) {
	b, err := flowEncoding.DecodeString(token)
	if err != nil || (len(b) != 4+2+flowMACSize && len(b) != 16+2+flowMACSize) {
		return "", fmt.Errorf("flow token %q malformed: %w", token, errFlowFailed)
	}
	payload := b[:len(b)-flowMACSize]
	mac := hmac.New(sha256.New, l.flowKey)
	mac.Write(payload)
	if !hmac.Equal(mac.Sum(nil)[:flowMACSize], b[len(payload):]) {
		return "", fmt.Errorf("flow token %q not signed by listener %s: %w", token, l.local, errFlowFailed)
	}
	ip, _ := netip.AddrFromSlice(payload[:len(payload)-2])
	return netip.AddrPortFrom(ip, binary.BigEndian.Uint16(payload[len(payload)-2:])).String(), nil
}

// flowFrom is the tls listener that holds a connection from raddr; nil
// when none does.
func (p *Proxy) flowFrom(raddr string) *listener {
	for _, l := range p.listeners {
		if l.reusesFlows() && l.tcp.open(raddr) {
			return l
		}
	}
	return nil
}

// toFlow points h at the connection from raddr, which l accepted.
func (h *hop) toFlow(l *listener, raddr string) error {
	if !l.tcp.open(raddr) {
		return fmt.Errorf("connection from %s on %s closed: %w", raddr, l.local, errFlowFailed)
	}
	h.out, h.transport, h.dest = l, l.transport, raddr
	return nil
}
