package radius

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
	// requests (it is sent by default: servers that require it drop
	// requests without it).
	NoMessageAuthenticator bool
	// Registerer receives the client's metrics; nil leaves them
	// unregistered.
	Registerer prometheus.Registerer
}

var (
	// ErrNoAnswer: no server answered a request.
	ErrNoAnswer = errors.New("radius: no accounting server answered")
	// ErrInvalidPacket: the request cannot be encoded (too large); no
	// server will ever take it.
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
	Packet *Packet
	RTT    time.Duration
}

// Send sends an Accounting-Request built by p (its Identifier is set
// here) and returns the first valid Accounting-Response. Servers that are
// held down are tried only when no other is left. It returns ErrNoAnswer
// when no server answered, and ctx's error when ctx ended first.
func (c *Client) Send(ctx context.Context, p *Packet) (*Response, error) {
	if _, _, err := p.encodeAttributes(!c.cfg.NoMessageAuthenticator); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPacket, err)
	}
	var errs []error
	for _, i := range c.order() {
		s := c.cfg.Servers[i]
		resp, err := c.exchange(ctx, s, p)
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
// spent. Each exchange has its own socket, so identifiers never collide.
func (c *Client) exchange(ctx context.Context, s Server, p *Packet) (*Response, error) {
	var id [1]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	req := *p
	req.Identifier = id[0]
	b, err := req.EncodeRequest([]byte(s.Secret), !c.cfg.NoMessageAuthenticator)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPacket, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", s.Addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// Closing the socket ends a read that ctx's end should interrupt.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	buf := make([]byte, maxPacket)
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
			resp, err := c.accept(buf[:n], req, s)
			if err != nil {
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

// accept checks that b answers req: an Accounting-Response with its
// identifier and a valid authenticator. Anything else is ignored.
func (c *Client) accept(b []byte, req Packet, s Server) (*Packet, error) {
	resp, err := Parse(b)
	if err != nil {
		return nil, err
	}
	if resp.Identifier != req.Identifier {
		return nil, fmt.Errorf("response for identifier %d, want %d", resp.Identifier, req.Identifier)
	}
	if resp.Code != CodeAccountingResponse {
		return nil, fmt.Errorf("radius: answer code %d, want Accounting-Response", resp.Code)
	}
	if err := verifyResponse(b, req.Authenticator, []byte(s.Secret)); err != nil {
		c.m.badResponses.WithLabelValues(s.Addr).Inc()
		return nil, err
	}
	return resp, nil
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
