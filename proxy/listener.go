package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// listener is one bound socket and the addresses the proxy gives out for it.
type listener struct {
	p         *Proxy
	network   string // udp, tcp or tls
	transport string // UDP, TCP or TLS, as sipgo spells it
	local     string // bound host:port
	laddr     sip.Addr
	// host and port are advertised in Via and Record-Route (viaHost is
	// host with IPv6 brackets).
	host    string
	viaHost string
	port    int
	// bindHost is the bound IP, matched as ours in Route headers too.
	bindHost string
	rr       sip.Header
	// flowKey signs the flow tokens of a tls listener (tls.go); nil on
	// the others.
	flowKey []byte

	udp *udpConn
	tcp *tcpListener
}

func (p *Proxy) bind(lc Listener) (*listener, error) {
	l := &listener{p: p, network: lc.Transport, transport: strings.ToUpper(lc.Transport)}
	var bound net.Addr
	switch lc.Transport {
	case "udp":
		pc, err := net.ListenPacket("udp", lc.Addr)
		if err != nil {
			return nil, fmt.Errorf("listen udp %s: %w", lc.Addr, err)
		}
		if uc, ok := pc.(*net.UDPConn); ok {
			// Best effort: the kernel caps the size, and a smaller buffer
			// only means earlier drops under bursts.
			_ = uc.SetReadBuffer(p.cfg.UDPBufferSize)
			_ = uc.SetWriteBuffer(p.cfg.UDPBufferSize)
		}
		l.udp = &udpConn{PacketConn: pc, l: l, buf: make([]byte, maxMessageSize+1)}
		bound = pc.LocalAddr()
	default:
		ln, err := net.Listen("tcp", lc.Addr)
		if err != nil {
			return nil, fmt.Errorf("listen tcp %s: %w", lc.Addr, err)
		}
		if lc.Transport == "tls" {
			ln = &tlsListener{Listener: ln, cfg: p.cfg.guards.tls, timeout: p.cfg.TLS.HandshakeTimeout, p: p}
			if l.flowKey, err = newFlowKey(); err != nil {
				_ = ln.Close()
				return nil, err
			}
		}
		l.tcp = &tcpListener{Listener: ln, l: l, conns: make(map[*tcpConn]struct{}), byRemote: make(map[string]*tcpConn)}
		bound = ln.Addr()
	}
	l.local = bound.String()
	host, port, err := sip.ParseAddr(l.local)
	if err != nil {
		l.close()
		return nil, fmt.Errorf("listener address %s: %w", l.local, err)
	}
	ip := net.ParseIP(host)
	l.laddr = sip.Addr{IP: ip, Port: port}
	l.bindHost, l.host, l.port = host, host, port
	if ip != nil && ip.IsUnspecified() {
		l.bindHost = ""
	}
	switch {
	case lc.Advertise != "":
		h, pt, _ := splitHostPortDefault(lc.Advertise, port)
		l.host, l.port = h, pt
	case l.bindHost == "":
		h, err := outboundIP()
		if err != nil {
			l.close()
			return nil, fmt.Errorf("listener %s is on a wildcard address and no outbound address was found (set Advertise): %w", l.local, err)
		}
		l.host = h
	}
	l.viaHost = uriHost(l.host)
	l.rr = sip.NewHeader("Record-Route", "<sip:"+l.viaHost+":"+strconv.Itoa(l.port)+";transport="+l.network+";lr>")
	return l, nil
}

// outboundIP is the address the host would use to reach the outside; a
// UDP "connect" sends nothing.
func outboundIP() (string, error) {
	c, err := net.Dial("udp", "192.0.2.1:9")
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

func uriHost(h string) string {
	if strings.IndexByte(h, ':') >= 0 && !strings.HasPrefix(h, "[") {
		return "[" + h + "]"
	}
	return h
}

func (l *listener) serve(tpl *sip.TransportLayer) error {
	if l.udp != nil {
		return tpl.ServeUDP(l.udp)
	}
	if l.network == "tls" {
		return tpl.ServeTLS(l.tcp)
	}
	return tpl.ServeTCP(l.tcp)
}

func (l *listener) close() {
	if l.udp != nil {
		_ = l.udp.PacketConn.Close()
	}
	if l.tcp != nil {
		l.tcp.close()
	}
	l.p.cfg.guards.flood.stop()
}

// owns reports whether host:port names this listener (port 0 is 5060).
func (l *listener) owns(host string, port int) bool {
	if port == 0 {
		port = 5060
	}
	if port != l.port && port != l.laddr.Port {
		return false
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return (host == l.host && port == l.port) || (l.bindHost != "" && host == l.bindHost && port == l.laddr.Port)
}

// replier sends a reply the proxy wrote itself (400, 413) to the sender of
// a message that never reached sipgo.
type replier interface {
	reply(b []byte, to net.Addr)
}

// udpConn screens every datagram before sipgo's UDP transport parses it.
// Only sipgo's single reader goroutine calls ReadFrom, so buf needs no lock;
// writes go straight to the socket, which is safe concurrently.
type udpConn struct {
	net.PacketConn
	l   *listener
	buf []byte
}

func (c *udpConn) ReadFrom(b []byte) (int, net.Addr, error) {
	failures := 0
	for {
		n, addr, err := c.PacketConn.ReadFrom(c.buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || failures > 100 {
				return 0, addr, err
			}
			// A transient error must not end sipgo's read loop, which
			// would silently take the listener down.
			failures++
			c.l.p.log.Warn("udp read", "local", c.l.local, "err", err)
			continue
		}
		failures = 0
		data := c.buf[:n]
		if isKeepalive(data) || !c.l.p.floodAllowed(addr, data, "udp") {
			continue
		}
		if !c.l.p.admit(data, min(len(b), c.l.p.cfg.MaxMessageSize), c.l, addr, "", c) {
			continue
		}
		return copy(b, data), addr, nil
	}
}

func (c *udpConn) reply(b []byte, to net.Addr) {
	if _, err := c.PacketConn.WriteTo(b, to); err != nil {
		c.l.p.log.Debug("reply to malformed message", "to", to, "err", err)
	}
}

// isKeepalive is true for datagrams of only CRLF and NUL bytes (RFC 5626
// keep-alives and padding).
func isKeepalive(b []byte) bool {
	for _, c := range b {
		if c != '\r' && c != '\n' && c != 0 {
			return false
		}
	}
	return true
}

// tcpListener wraps accepted connections so that every message is screened
// before sipgo parses it, and closes them all on shutdown. It knows them by
// remote address too, the key sipgo's connection pool sends on, so that a
// request to a peer that cannot take connections (a phone behind NAT) goes
// only where one is open.
type tcpListener struct {
	net.Listener
	l        *listener
	mu       sync.Mutex
	conns    map[*tcpConn]struct{}
	byRemote map[string]*tcpConn
	closed   bool
}

func (t *tcpListener) Accept() (net.Conn, error) {
	c, err := t.Listener.Accept()
	for err == nil && t.l.p.floodBanned(c.RemoteAddr()) {
		// Before any TLS handshake: a banned address costs an accept.
		_ = c.Close()
		c, err = t.Listener.Accept()
	}
	if err != nil {
		return nil, err
	}
	tc := &tcpConn{Conn: c, l: t.l, local: c.LocalAddr().String(), remote: c.RemoteAddr().String(), owner: t}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = c.Close()
		return nil, net.ErrClosed
	}
	t.conns[tc] = struct{}{}
	t.byRemote[tc.remote] = tc
	t.mu.Unlock()
	return tc, nil
}

// open reports whether a connection from raddr (ip:port, as
// net.Addr.String spells it) is open on this listener.
func (t *tcpListener) open(raddr string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byRemote[raddr] != nil
}

func (t *tcpListener) close() {
	_ = t.Listener.Close()
	t.mu.Lock()
	t.closed = true
	conns := t.conns
	t.conns, t.byRemote = nil, nil
	t.mu.Unlock()
	for c := range conns {
		_ = c.Conn.Close()
	}
}

func (t *tcpListener) forget(c *tcpConn) {
	t.mu.Lock()
	delete(t.conns, c)
	if t.byRemote[c.remote] == c {
		delete(t.byRemote, c.remote)
	}
	t.mu.Unlock()
}

var (
	errFraming  = errors.New("sip stream framing lost")
	errTooLarge = errors.New("sip message too large")
)

// tcpConn frames the stream into messages (RFC 3261 18.3), screens each
// and hands sipgo only the ones that pass. A framing error or an oversized
// message ends the connection after the reply, as there is no message
// boundary left to resynchronise on.
type tcpConn struct {
	net.Conn
	l      *listener
	local  string
	remote string
	owner  *tcpListener
	once   sync.Once

	in    []byte // received, not yet framed
	out   []byte // screened, not yet read by sipgo
	off   int
	err   error // ends the stream once out is drained
	crlfs int   // CRLFs seen between messages, for keep-alive pings
}

func (c *tcpConn) Read(b []byte) (int, error) {
	for c.off == len(c.out) {
		c.out, c.off = c.out[:0], 0
		if c.err != nil {
			return 0, c.err
		}
		c.fill()
	}
	n := copy(b, c.out[c.off:])
	c.off += n
	return n, nil
}

func (c *tcpConn) Close() error {
	c.once.Do(func() { c.owner.forget(c) })
	return c.Conn.Close()
}

const tcpReadChunk = 16 << 10

// fill reads once from the socket and frames what it can.
func (c *tcpConn) fill() {
	if cap(c.in)-len(c.in) < tcpReadChunk {
		grown := make([]byte, len(c.in), 2*cap(c.in)+tcpReadChunk)
		copy(grown, c.in)
		c.in = grown
	}
	n, err := c.Conn.Read(c.in[len(c.in):cap(c.in)])
	c.in = c.in[:len(c.in)+n]
	c.frame()
	if err != nil && c.err == nil {
		c.err = err
	}
}

// frame moves every complete message in c.in through the screen.
func (c *tcpConn) frame() {
	p := c.l.p
	limit := p.cfg.MaxMessageSize
	in := c.in
	for len(in) > 0 {
		// CRLFs between messages are keep-alives; a double CRLF is a ping
		// that wants a CRLF pong (RFC 5626 3.5.1).
		crlf := 0
		for crlf+1 < len(in) && in[crlf] == '\r' && in[crlf+1] == '\n' {
			crlf += 2
		}
		if crlf > 0 {
			// Counted across reads: a ping may arrive in pieces.
			if c.crlfs += crlf / 2; c.crlfs >= 2 {
				_, _ = c.Conn.Write(crlfcrlf[:2])
				c.crlfs = 0
			}
			in = in[crlf:]
			continue
		}
		if len(in) == 1 && in[0] == '\r' {
			break
		}
		c.crlfs = 0
		end := bytes.Index(in, crlfcrlf)
		if end < 0 {
			if len(in) > limit {
				p.reject(in, 413, "Request Entity Too Large", noteTooLarge, "header section over the size limit", c.l, c.RemoteAddr(), c.local, c)
				c.err, in = errTooLarge, nil
			}
			break
		}
		head := in[:end+4]
		cl, ok := contentLength(head)
		if !ok {
			// RFC 3261 18.3: a stream message needs Content-Length to be framed.
			p.reject(head, 400, "Bad Request", noteMalformed, "no Content-Length on a stream", c.l, c.RemoteAddr(), c.local, c)
			c.err, in = errFraming, nil
			break
		}
		total := len(head) + cl
		if total > limit || cl > limit {
			p.reject(head, 413, "Request Entity Too Large", noteTooLarge, "message over the size limit", c.l, c.RemoteAddr(), c.local, c)
			c.err, in = errTooLarge, nil
			break
		}
		if len(in) < total {
			break
		}
		if p.floodAllowed(c.RemoteAddr(), in[:total], c.l.network) && p.admit(in[:total], limit, c.l, c.RemoteAddr(), c.local, c) {
			c.out = append(c.out, in[:total]...)
		}
		in = in[total:]
	}
	// Keep the unframed tail at the front of the buffer.
	c.in = c.in[:copy(c.in, in)]
}

func (c *tcpConn) reply(b []byte, _ net.Addr) {
	if _, err := c.Conn.Write(b); err != nil {
		c.l.p.log.Debug("reply to malformed message", "to", c.RemoteAddr(), "err", err)
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// contentLength finds Content-Length (or its compact form l) in a header
// block; false when it is absent or not a number.
func contentLength(head []byte) (int, bool) {
	for line := range bytes.SplitSeq(head, []byte("\r\n")) {
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		name := bytes.TrimSpace(line[:colon])
		if !bytes.EqualFold(name, []byte("content-length")) && !bytes.EqualFold(name, []byte("l")) {
			continue
		}
		v := bytes.TrimSpace(line[colon+1:])
		if len(v) == 0 || len(v) > 7 {
			return 0, false
		}
		n := 0
		for _, d := range v {
			if d < '0' || d > '9' {
				return 0, false
			}
			n = n*10 + int(d-'0')
		}
		return n, true
	}
	return 0, false
}

var _ io.Reader = (*tcpConn)(nil)
