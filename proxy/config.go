package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	// ErrInvalidConfig: New was given a configuration it cannot run with.
	ErrInvalidConfig = errors.New("invalid proxy config")
	// ErrRunning: Run was called on a proxy that is running or has run.
	ErrRunning = errors.New("proxy already started")
)

// Listener is one socket the proxy serves SIP on.
type Listener struct {
	// Transport is "udp", "tcp" or "tls" (TLS over TCP, with the
	// certificate of Config.TLS).
	Transport string
	// Addr is the local host:port, for example "127.0.0.1:5060". Port 0
	// takes a free port.
	Addr string
	// Advertise is the host[:port] the proxy puts in Via and Record-Route
	// for this listener. It defaults to Addr, which must then not be a
	// wildcard address unless the host has a default route.
	Advertise string
}

// Timers bound how long the proxy waits for the next hop.
type Timers struct {
	// Response bounds the wait for the first response to an INVITE and for
	// the final response to any other request (RFC 3261 timers B and F).
	// Default 32s (64*T1).
	Response time.Duration
	// Invite bounds the wait for the final response to an INVITE once a
	// provisional came (RFC 3261 timer C). Default 3 minutes.
	Invite time.Duration
	// Linger is how long a finished non-INVITE server transaction over UDP
	// stays to answer retransmissions of its request (sipgo keeps it for
	// timer J, 64*T1 = 32s). Retransmissions stop within seconds unless
	// every response is lost, and each transaction kept costs memory at
	// thousands of calls a second. Default 5s, as Kamailio's wait timer.
	Linger time.Duration
}

// Health says how the proxy judges its gateways.
type Health struct {
	// HoldDown is how long a gateway that answered 503 or did not answer
	// in time is tried only after the route's other gateways. Default 30s;
	// negative turns hold-downs off.
	HoldDown time.Duration
	// ProbeInterval is how often every provisioned gateway gets an
	// OPTIONS; one that does not answer (or answers 503) is down until it
	// answers again. 0 (the default) probes nothing.
	ProbeInterval time.Duration
	// ProbeTimeout bounds the wait for a probe's answer. Default 2s, at
	// most ProbeInterval.
	ProbeTimeout time.Duration
}

// Config configures a proxy.
type Config struct {
	// Node names this proxy in its events.
	Node string
	// Listeners are the sockets to serve; at least one, and one of
	// GatewayTransport.
	Listeners []Listener
	// Gateway is the host[:port] (default port 5060) of the outbound
	// gateway calls go to while no gateway is provisioned.
	Gateway string
	// GatewayTransport is "udp" (default) or "tcp".
	GatewayTransport string
	// Provisioning names the trunks whose sources may start calls (and
	// as which account) and the provisioned gateways; the proxy follows
	// its changes while it runs. Nil provisions nothing: every initial
	// request is refused, as there is no open relay.
	Provisioning Provisioning
	// Timers default as documented on Timers. A route fails over to its
	// next gateway when Timers.Response passes without any response.
	Timers Timers
	// Health defaults as documented on Health.
	Health Health
	// BuyRates orders the gateways of lcr routes by their buy rate for
	// each call's destination (BookBuyRates reads the rating Book); nil
	// tries them in the order listed.
	BuyRates BuyRates
	// Subscribers configures digest authentication and the registrar
	// for the subscribers of our domains.
	Subscribers SubscriberConfig
	// Credit is credit control for prepaid and postpaid accounts; off
	// while Credit.Control is nil.
	Credit Credit
	// DialogTimeout ends an established call with a BYE to both sides
	// this long after its answer, when no BYE came (default 3h; negative
	// turns it off). Keep it below the correlator's maximum call
	// duration, so that the proxy's end, with its reason, comes first.
	DialogTimeout time.Duration
	// Dialogs keeps the established calls (KVDialogs, in JetStream KV),
	// so that a restarted proxy takes them back: it ends them at their
	// dialog timeout, goes on with their credit control and counts them
	// under their limits. Nil keeps them in memory only: a restart
	// forgets them.
	Dialogs Dialogs
	// MaxMessageSize is the largest SIP message accepted (default and at
	// most 65535 bytes); larger requests get 413. Over UDP the effective
	// limit is also bounded by sipgo's read buffer (sip.TransportBufferReadSize).
	MaxMessageSize int
	// UDPBufferSize is the kernel receive and send buffer asked for each
	// UDP socket (default 4 MiB; the kernel caps it at net.core.rmem_max
	// and wmem_max). Bursts above what the proxy reads at once wait there
	// instead of being dropped.
	UDPBufferSize int
	// Logger defaults to discarding.
	Logger *slog.Logger
	// Registerer takes the proxy's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// TLS is the certificate of the tls listeners.
	TLS TLS
	// Flood is the per-source flood protection; off by default.
	Flood Flood
	// Limits says how calls over a provisioned limit are refused.
	Limits Limits

	// guards is the state of TLS, Flood and Limits, built by withDefaults.
	guards *guards
}

const (
	defaultResponseTimeout = 32 * time.Second
	defaultInviteTimeout   = 3 * time.Minute
	defaultLinger          = 5 * time.Second
	defaultHoldDown        = 30 * time.Second
	defaultProbeTimeout    = 2 * time.Second
	maxMessageSize         = 65535
	defaultUDPBuffer       = 4 << 20
	defaultDialogTimeout   = 3 * time.Hour
)

// withDefaults validates c and fills in the defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Node == "" {
		c.Node = "proxy"
	}
	if len(c.Listeners) == 0 {
		return c, fmt.Errorf("no listeners: %w", ErrInvalidConfig)
	}
	ls := make([]Listener, len(c.Listeners))
	for i, l := range c.Listeners {
		l.Transport = strings.ToLower(l.Transport)
		if l.Transport != "udp" && l.Transport != "tcp" && l.Transport != "tls" {
			return c, fmt.Errorf("listener %q: transport %q, want udp, tcp or tls: %w", l.Addr, l.Transport, ErrInvalidConfig)
		}
		if _, _, err := net.SplitHostPort(l.Addr); err != nil {
			return c, fmt.Errorf("listener %q: %v: %w", l.Addr, err, ErrInvalidConfig)
		}
		if l.Advertise != "" {
			if _, _, err := splitHostPortDefault(l.Advertise, 0); err != nil {
				return c, fmt.Errorf("listener %q: advertise %q: %v: %w", l.Addr, l.Advertise, err, ErrInvalidConfig)
			}
		}
		ls[i] = l
	}
	c.Listeners = ls
	if c.GatewayTransport == "" {
		c.GatewayTransport = "udp"
	}
	c.GatewayTransport = strings.ToLower(c.GatewayTransport)
	if c.GatewayTransport != "udp" && c.GatewayTransport != "tcp" {
		return c, fmt.Errorf("gateway transport %q, want udp or tcp: %w", c.GatewayTransport, ErrInvalidConfig)
	}
	if _, _, err := splitHostPortDefault(c.Gateway, 5060); err != nil || c.Gateway == "" {
		return c, fmt.Errorf("gateway %q: want host:port: %w", c.Gateway, ErrInvalidConfig)
	}
	found := false
	for _, l := range ls {
		found = found || l.Transport == c.GatewayTransport
	}
	if !found {
		// Via and Record-Route towards the gateway need an address of ours
		// on its transport.
		return c, fmt.Errorf("gateway transport %s has no listener: %w", c.GatewayTransport, ErrInvalidConfig)
	}
	if c.Timers.Response <= 0 {
		c.Timers.Response = defaultResponseTimeout
	}
	if c.Timers.Invite <= 0 {
		c.Timers.Invite = defaultInviteTimeout
	}
	if c.Timers.Linger <= 0 {
		c.Timers.Linger = defaultLinger
	}
	if c.Health.HoldDown == 0 {
		c.Health.HoldDown = defaultHoldDown
	}
	if c.Health.ProbeInterval < 0 {
		return c, fmt.Errorf("probe interval %v: want 0 (no probing) or more: %w", c.Health.ProbeInterval, ErrInvalidConfig)
	}
	if c.Health.ProbeTimeout <= 0 {
		c.Health.ProbeTimeout = defaultProbeTimeout
	}
	if c.Health.ProbeInterval > 0 {
		c.Health.ProbeTimeout = min(c.Health.ProbeTimeout, c.Health.ProbeInterval)
	}
	if c.Credit.Control != nil {
		cr, err := c.Credit.withDefaults()
		if err != nil {
			return c, err
		}
		c.Credit = cr
	}
	if c.DialogTimeout == 0 {
		c.DialogTimeout = defaultDialogTimeout
	}
	subs, err := c.Subscribers.withDefaults(c.Registerer)
	if err != nil {
		return c, err
	}
	c.Subscribers = subs
	if c.MaxMessageSize <= 0 || c.MaxMessageSize > maxMessageSize {
		c.MaxMessageSize = maxMessageSize
	}
	if c.UDPBufferSize <= 0 {
		c.UDPBufferSize = defaultUDPBuffer
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	g, err := c.newGuards()
	if err != nil {
		return c, err
	}
	c.guards = g
	return c, nil
}

// splitHostPortDefault splits host[:port], with def when the port is absent.
func splitHostPortDefault(s string, def int) (string, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		// No port: the whole string is the host (IPv6 literals in brackets).
		h := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		if h == "" || strings.ContainsAny(h, " /") {
			return "", 0, err
		}
		return h, def, nil
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", ps)
	}
	if host == "" {
		return "", 0, errors.New("empty host")
	}
	return host, port, nil
}
