package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
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
