package radius

import (
	"context"
	"crypto/md5"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	layeh "layeh.com/radius"
)

// Server is an accounting server and the secret we share with it.
type Server struct {
	// Addr is host:port of its accounting port (usually 1813).
	Addr   string
	Secret string
}

// ClientConfig configures a Client. Zero fields take defaults.
type ClientConfig struct {
	// Servers in order of preference: the first is the primary, the
	// others are tried in turn when it does not answer.
	Servers []Server
	// Timeout is how long to wait for the first answer (3s); each
	// retransmission waits twice as long as the one before, up to
	// MaxTimeout (30s).
	Timeout    time.Duration
	MaxTimeout time.Duration
	// Retries is how many times a request is sent again to a server
	// before the next server is tried (2; negative: none).
	Retries int
	// HoldDown is how long a server that did not answer is passed over
	// in favour of the next (30s), so that an outage does not cost every
	// request a full round of timeouts.
	HoldDown time.Duration
	// NoMessageAuthenticator leaves Message-Authenticator out of
	// requests. It is sent by default: servers set to require it drop
	// requests without it, and those that take accounting without it
	// (FreeRADIUS 3.2) still check it when it is there.
	NoMessageAuthenticator bool
	// Registerer receives the client's metrics; nil leaves them
	// unregistered.
	Registerer prometheus.Registerer
}

var (
	// ErrNoAnswer: no server answered a request.
	ErrNoAnswer = errors.New("radius: no accounting server answered")
	// ErrInvalidPacket: the request cannot be encoded (too large, an
	// attribute that does not fit, not an Accounting-Request); no server
	// will ever take it.
	ErrInvalidPacket = errors.New("radius: request cannot be encoded")
)

// Client sends accounting requests and waits for their responses, with
// retransmission, backoff and failover to the next server.
type Client struct {
	cfg ClientConfig
	m   *clientMetrics

	mu   sync.Mutex
	down []time.Time // per server: passed over until then
}

// NewClient checks the configuration and builds a client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("radius client: no server configured")
	}
	for i, s := range cfg.Servers {
		if _, _, err := net.SplitHostPort(s.Addr); err != nil {
			return nil, fmt.Errorf("radius server %d %q: want host:port: %w", i+1, s.Addr, err)
		}
		if s.Secret == "" {
			return nil, fmt.Errorf("radius server %s: no shared secret", s.Addr)
		}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Second
	}
	if cfg.MaxTimeout < cfg.Timeout {
		cfg.MaxTimeout = max(30*time.Second, cfg.Timeout)
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	} else if cfg.Retries == 0 {
		cfg.Retries = 2
	}
	if cfg.HoldDown <= 0 {
		cfg.HoldDown = 30 * time.Second
	}
	m, err := newClientMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, m: m, down: make([]time.Time, len(cfg.Servers))}, nil
}

// Response is what a server answered.
type Response struct {
	// Server is the address that answered.
	Server string
	Packet *layeh.Packet
	RTT    time.Duration
}

// Send sends p, an Accounting-Request, and returns the first valid
// Accounting-Response. Servers that are held down are tried only when no
// other is left. It returns an error wrapping ErrInvalidPacket when p
// cannot be sent to any server, ErrNoAnswer when no server answered, and
// ctx's error when ctx ended first.
func (c *Client) Send(ctx context.Context, p *Packet) (*Response, error) {
	if err := c.check(p); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPacket, err)
	}
	var errs []error
	for _, i := range c.order() {
		s := c.cfg.Servers[i]
		resp, err := c.exchange(ctx, s, p)
		if errors.Is(err, ErrInvalidPacket) {
			// Our fault, not the server's: no hold-down, no failover.
			return nil, err
		}
		if err == nil {
			c.setDown(i, time.Time{})
			c.m.requests.WithLabelValues(s.Addr, "ok").Inc()
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c.m.requests.WithLabelValues(s.Addr, "no_answer").Inc()
		c.setDown(i, time.Now().Add(c.cfg.HoldDown))
		errs = append(errs, fmt.Errorf("%s: %w", s.Addr, err))
	}
	return nil, fmt.Errorf("%w: %w", ErrNoAnswer, errors.Join(errs...))
}

// check finds what would make every server refuse p, before any is
// tried: the library's encoder skips attribute types outside 1-255
// without a word and only finds an oversize packet per server.
func (c *Client) check(p *Packet) error {
	if p.err != nil {
		return p.err
	}
	if p.Code != layeh.CodeAccountingRequest {
		return fmt.Errorf("code %v, want Accounting-Request", p.Code)
	}
	for _, a := range p.Attributes {
		if a.Type < 1 || a.Type > 255 {
			return fmt.Errorf("attribute type %d out of range", a.Type)
		}
	}
	n, err := layeh.AttributesEncodedLen(p.Attributes)
	if err != nil {
		return err
	}
	if !c.cfg.NoMessageAuthenticator {
		n += 2 + md5.Size
	}
	if n += 20; n > layeh.MaxPacketLength {
		return fmt.Errorf("packet of %d octets, at most %d allowed", n, layeh.MaxPacketLength)
	}
	return nil
}

// order is the servers to try: those not held down in preference order,
// then the held-down ones, the longest held first.
func (c *Client) order() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var up, held []int
	for i, until := range c.down {
		if until.After(now) {
			held = append(held, i)
		} else {
			up = append(up, i)
		}
	}
	for i := 1; i < len(held); i++ {
		for j := i; j > 0 && c.down[held[j]].Before(c.down[held[j-1]]); j-- {
			held[j], held[j-1] = held[j-1], held[j]
		}
	}
	return append(up, held...)
}

func (c *Client) setDown(i int, until time.Time) {
	c.mu.Lock()
	c.down[i] = until
	c.mu.Unlock()
}

// exchange sends p to one server, retransmitting the same packet with a
// doubling timeout, until a valid response comes or the retries are
// spent. Each exchange has its own socket, so identifiers never collide,
// and retransmissions come from the same port with the same identifier,
// so the server recognises them as duplicates and records them once.
//
// The library's Client.Exchange is not used: it resends at a fixed
// interval until ctx ends (no backoff, no attempt limit to fail over
// on), returns at once on an ICMP refusal, and accepts a response
// without checking its Message-Authenticator.
func (c *Client) exchange(ctx context.Context, s Server, p *Packet) (*Response, error) {
	req := layeh.New(p.Code, []byte(s.Secret))
	// The library's own copy: adding the Message-Authenticator must not
	// change the caller's packet, which goes to the next server too.
	req.Attributes = slices.Clone(p.Attributes)
	b, err := encodeRequest(req, !c.cfg.NoMessageAuthenticator)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPacket, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", s.Addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// A past deadline ends a read that ctx's end should interrupt.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	buf := make([]byte, layeh.MaxPacketLength)
	timeout := c.cfg.Timeout
	var last error
	for attempt := 0; attempt <= c.cfg.Retries; attempt++ {
		if attempt > 0 {
			c.m.retransmits.WithLabelValues(s.Addr).Inc()
		}
		start := time.Now()
		if _, err := conn.Write(b); err != nil {
			// An ICMP unreachable from the last attempt shows up here;
			// it is the same as no answer.
			last = err
		}
		deadline := start.Add(timeout)
		if err := conn.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		for {
			n, err := conn.Read(buf)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err != nil {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					last = err
					// Connection refused comes back at once: wait out
					// the timeout as if it were silence, so that a
					// restarting server is not hammered.
					if !sleepUntil(ctx, deadline) {
						return nil, ctx.Err()
					}
				} else if last == nil {
					last = fmt.Errorf("no answer in %s", timeout)
				}
				break
			}
			resp, err := checkResponse(buf[:n], req)
			if err != nil {
				// Anything else on the socket is ignored: a late or
				// forged answer must not end the wait for ours.
				if errors.Is(err, ErrBadAuthenticator) {
					c.m.badResponses.WithLabelValues(s.Addr).Inc()
				}
				last = err
				continue
			}
			rtt := time.Since(start)
			c.m.rtt.WithLabelValues(s.Addr).Observe(rtt.Seconds())
			return &Response{Server: s.Addr, Packet: resp, RTT: rtt}, nil
		}
		timeout = min(timeout*2, c.cfg.MaxTimeout)
	}
	return nil, fmt.Errorf("%d attempts: %w", c.cfg.Retries+1, last)
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
