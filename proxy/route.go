package proxy

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
)

var (
	errLoop                 = errors.New("next hop is this proxy")
	errUnsupportedTransport = errors.New("next hop transport not supported")
	// errGatewaysBusy: every gateway an initial INVITE could go to is at
	// a limit (the event's Skipped say which).
	errGatewaysBusy = errors.New("every gateway is at its limit")
	errNoGateway    = errors.New("no route and no default gateway")
)

// hop is where a request goes next and how it is rewritten on the way.
type hop struct {
	dest      string // host:port
	transport string // UDP, TCP or TLS
	in, out   *listener
	uri       sip.Uri // Request-URI to send
	gateway   bool
	gatewayID string  // the gateway's id for the events
	target    *target // the gateway, for its health and metrics
	hunt      *hunt   // the route's further gateways; nil without a route

	routes   int  // Route header values in the request
	popped   int  // own Route values removed from the top (RFC 16.4)
	dropLast bool // strict routing: the last Route became the Request-URI
}

// route decides the next hop: initial requests go to the gateway, requests
// inside a dialog (and initial ones a trusted peer preloaded a Route on)
// follow their Route set, then the Request-URI (loose routing, RFC 3261
// 16.4 and 16.12).
func (p *Proxy) route(req *sip.Request, in *listener, initial bool) (hop, error) {
	return p.routeCall(req, in, initial, nil)
}

// routeCall is route for a request whose caller the proxy knows: c
// carries the account (whose routes apply) and a DID to deliver to; nil
// routes by destination alone.
func (p *Proxy) routeCall(req *sip.Request, in *listener, initial bool, c *callRouting) (hop, error) {
	h := hop{in: in, uri: req.Recipient}
	var buf [8]*sip.RouteHeader
	routes := buf[:0]
	for _, hdr := range req.Headers() {
		if r, ok := hdr.(*sip.RouteHeader); ok {
			routes = append(routes, r)
		}
	}
	h.routes = len(routes)
	// A strict router before us put our Record-Route URI into the
	// Request-URI: the real target is the last Route value.
	if len(routes) > 0 && p.own(&req.Recipient) != nil {
		h.uri = routes[len(routes)-1].Address
		h.dropLast = true
		routes = routes[:len(routes)-1]
	}
	var lastOwn *listener
	flow := "" // the flow token of the last own entry
	for h.popped < len(routes) {
		l := p.own(&routes[h.popped].Address)
		if l == nil {
			break
		}
		lastOwn, flow = l, routes[h.popped].Address.User
		h.popped++
	}

	if initial && h.popped == len(routes) {
		if c != nil && c.did != nil {
			return h, h.toDID(p, c.did)
		}
		a := p.table.Load()
		t := a.gateway
		now := time.Now()
		if re := a.routes.match(h.uri.User, c.accountOf(), now); re != nil {
			h.hunt = re.planFor(h.uri.User, now, p.cfg.BuyRates)
			var admit func(*target) bool
			if c != nil {
				admit = c.admit
			}
			if t = h.hunt.take(admit); t == nil {
				return h, errGatewaysBusy
			}
		} else if t != nil && c != nil && c.admit != nil && !c.admit(t) {
			return h, errGatewaysBusy
		}
		if t == nil {
			return h, errNoGateway
		}
		return h, h.toGateway(p, t)
	}

	// Our entry facing the next hop names the connection to it (tls.go),
	// unless the request came on that connection: then it goes onwards.
	if lastOwn != nil && lastOwn.reusesFlows() && flow != "" {
		raddr, err := lastOwn.flowAddr(flow)
		if err != nil {
			return h, err
		}
		if raddr != req.Source() {
			return h, h.toFlow(lastOwn, raddr)
		}
	}
	next := &h.uri
	if h.popped < len(routes) {
		next = &routes[h.popped].Address
	}
	if p.own(next) != nil {
		return h, errLoop
	}
	if next.Scheme != "" && next.Scheme != "sip" {
		return h, errUnsupportedTransport
	}
	// The next hop's own transport parameter wins; otherwise the Route
	// entry of ours that was popped last names the side the request leaves
	// from (double Record-Route, RFC 5658).
	transport := ""
	if t, ok := next.UriParams.Get("transport"); ok {
		transport = strings.ToUpper(t)
	} else if lastOwn != nil {
		transport = lastOwn.transport
	} else {
		transport = "UDP"
	}
	if transport != "UDP" && transport != "TCP" && transport != "TLS" {
		return h, errUnsupportedTransport
	}
	h.transport = transport
	if lastOwn != nil && lastOwn.transport == transport {
		h.out = lastOwn
	} else {
		h.out = p.listenerFor(transport)
	}
	if h.out == nil {
		return h, errNoListener
	}
	port := next.Port
	if port == 0 {
		port = 5060
		if transport == "TLS" {
			port = 5061
		}
	}
	h.dest = net.JoinHostPort(strings.TrimSuffix(strings.TrimPrefix(next.Host, "["), "]"), strconv.Itoa(port))
	if transport == "TLS" {
		// Without a token: only a connection the next hop opened will do.
		l := p.flowFrom(h.dest)
		if l == nil {
			return h, fmt.Errorf("%s: %w", h.dest, errNoFlow)
		}
		h.out = l
	}
	return h, nil
}

// toGateway points h at gateway t.
func (h *hop) toGateway(p *Proxy, t *target) error {
	h.dest, h.transport, h.gateway, h.gatewayID, h.target = t.dest, t.transport, true, t.id, t
	h.out = p.listenerFor(h.transport)
	if h.out == nil {
		return errNoListener
	}
	return nil
}

// own is the listener a SIP URI names, nil when it is not this proxy.
func (p *Proxy) own(u *sip.Uri) *listener {
	for _, l := range p.listeners {
		if l.owns(u.Host, u.Port) {
			return l
		}
	}
	return nil
}

// listenerFor is the first listener of a transport (UDP or TCP).
func (p *Proxy) listenerFor(transport string) *listener {
	for _, l := range p.listeners {
		if l.transport == transport {
			return l
		}
	}
	return nil
}

// forward builds the request relayed to h (RFC 3261 16.6): our Via on
// top, the sender's Via marked with received/rport, Max-Forwards
// decremented, our Route entries removed and, when asked, Record-Route
// added. Header values the proxy does not change are shared with req,
// which nobody modifies.
func (p *Proxy) forward(req *sip.Request, h *hop, recordRoute bool) *sip.Request {
	out := sip.NewRequest(req.Method, h.uri)
	out.SipVersion = req.SipVersion
	if recordRoute {
		// The entry facing the next hop goes on top: the callee's route set
		// is the list in order, the caller's the list reversed (RFC 5658).
		// A tls listener's entries name the connection each side is on
		// (tls.go), so it adds two even when both sides are on it.
		if h.out != h.in || h.out.reusesFlows() {
			out.AppendHeader(h.out.recordRoute(h.dest))
		}
		out.AppendHeader(h.in.recordRoute(req.Source()))
	}
	out.AppendHeader(&sip.ViaHeader{
		ProtocolName:    "SIP",
		ProtocolVersion: "2.0",
		Transport:       h.transport,
		Host:            h.out.viaHost,
		Port:            h.out.port,
		Params:          sip.HeaderParams{{K: "branch", V: p.newBranch()}},
	})
	firstVia, hasMaxForwards, route := true, false, 0
	for _, hdr := range req.Headers() {
		switch v := hdr.(type) {
		case *sip.ViaHeader:
			if firstVia {
				firstVia = false
				hdr = receivedVia(v, req.Source())
			}
		case *sip.RouteHeader:
			i := route
			route++
			if i < h.popped || (h.dropLast && i == h.routes-1) {
				continue
			}
		case *sip.MaxForwardsHeader:
			hasMaxForwards = true
			mf := *v
			if mf > 0 {
				mf--
			}
			hdr = &mf
		}
		out.AppendHeader(hdr)
	}
	if !hasMaxForwards {
		mf := sip.MaxForwardsHeader(70)
		out.AppendHeader(&mf)
	}
	out.SetBody(req.Body())
	out.SetTransport(h.transport)
	out.SetDestination(h.dest)
	if h.transport == "UDP" {
		// Send from the listener socket, so that the next hop sees the
		// address it answers and routes to. (Over TCP sipgo keys its pool
		// by the listener address too, so a local address would pick an
		// arbitrary accepted connection.)
		out.Laddr = h.out.laddr
	}
	return out
}

// receivedVia marks the sender's Via with where the request really came
// from (RFC 3261 18.2.1, RFC 3581), so that responses find their way back.
// It returns v itself when nothing needs adding.
func receivedVia(v *sip.ViaHeader, source string) *sip.ViaHeader {
	host, port := splitSource(source)
	rport, hasRport := v.Params.Get("rport")
	needRport := hasRport && rport == ""
	if !needRport && strings.TrimSuffix(strings.TrimPrefix(v.Host, "["), "]") == host {
		return v
	}
	c := v.Clone()
	c.Params.Add("received", host)
	if needRport {
		c.Params.Add("rport", port)
	}
	return c
}

// upstream is where responses to req go: over UDP the source address with
// the Via port unless rport asked for the source port (RFC 3261 18.2.2,
// RFC 3581); over TCP sipgo uses the connection anyway.
func upstream(req *sip.Request) string {
	src := req.Source()
	via := req.Via()
	if via == nil || via.Params.Has("rport") || sip.IsReliable(req.Transport()) {
		return src
	}
	host, port := splitSource(src)
	vp := via.Port
	if vp == 0 {
		vp = 5060
	}
	if atoi(port) == vp {
		return src
	}
	return net.JoinHostPort(host, strconv.Itoa(vp))
}

// splitSource splits an ip:port source address without allocating.
func splitSource(src string) (host, port string) {
	i := strings.LastIndexByte(src, ':')
	if i < 0 {
		return src, ""
	}
	host, port = src[:i], src[i+1:]
	if len(host) > 1 && host[0] == '[' {
		host = host[1 : len(host)-1]
	}
	return host, port
}

// atoi parses a decimal port; -1 when it is not one.
func atoi(s string) int {
	if s == "" || len(s) > 5 {
		return -1
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return -1
		}
		n = n*10 + int(s[i]-'0')
	}
	return n
}

// routeLimits are the accounts and time windows a route is for.
type routeLimits struct {
	accounts []string // empty: any
	windows  []window // empty: always
	loc      *time.Location
}

// window is a schema.TimeWindow compiled: days a bit per time.Weekday,
// [from, to) minutes of the local day; from >= to wraps past midnight.
type window struct {
	days     uint8
	from, to int
}

// newRouteLimits compiles the limits of r; nil when it has none.
func newRouteLimits(r schema.Route) *routeLimits {
	if len(r.Accounts) == 0 && len(r.Windows) == 0 {
		return nil
	}
	l := &routeLimits{accounts: r.Accounts, loc: r.Location()}
	for _, w := range r.Windows {
		days, from, to, err := w.Compile()
		if err != nil {
			continue // validated by the store; never reached
		}
		l.windows = append(l.windows, window{days: days, from: from, to: to})
	}
	return l
}

// admit reports whether the route is for a call of account at now.
func (l *routeLimits) admit(account string, now time.Time) bool {
	if l == nil {
		return true
	}
	if len(l.accounts) > 0 && !slices.Contains(l.accounts, account) {
		return false
	}
	if len(l.windows) == 0 {
		return true
	}
	local := now.In(l.loc)
	day := uint8(1) << local.Weekday()
	minute := local.Hour()*60 + local.Minute()
	for _, w := range l.windows {
		if w.days&day == 0 {
			continue
		}
		if w.from < w.to && minute >= w.from && minute < w.to || w.from >= w.to && (minute >= w.from || minute < w.to) {
			return true
		}
	}
	return false
}

// specificity ranks routes of one prefix: one for some accounts beats
// one for any, then one for some times beats one for always.
func (l *routeLimits) specificity() int {
	if l == nil {
		return 0
	}
	s := 0
	if len(l.accounts) > 0 {
		s += 2
	}
	if len(l.windows) > 0 {
		s++
	}
	return s
}
