package proxy

import (
	"cmp"
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
)

// Provisioning is where the proxy learns who may call and where calls
// go. eventlog.ProvisionWatcher satisfies it.
type Provisioning interface {
	// Snapshot is the current provisioning, never modified once
	// returned; nil while there is none.
	Snapshot() *schema.Provisioning
	// Changed is signalled after Snapshot changed; the proxy is its only
	// reader.
	Changed() <-chan struct{}
}

// FixedProvisioning is a Provisioning that never changes, for a proxy
// whose trunks and gateways are set in code.
func FixedProvisioning(p *schema.Provisioning) Provisioning { return fixed{p} }

type fixed struct{ p *schema.Provisioning }

func (f fixed) Snapshot() *schema.Provisioning { return f.p }
func (f fixed) Changed() <-chan struct{}       { return nil }

// Notes of admission refusals.
const (
	noteUnknownSource   = "unknown_source"
	notePreloadedRoute  = "preloaded_route"
	noteNotRecordRouted = "not_record_routed"
)

// admission is the provisioning compiled for the request path: a
// source-address table of the trunks and the default gateway. It is
// immutable; a change compiles a new one, swapped in atomically.
type admission struct {
	revision uint64
	sources  int
	v4, v6   prefixTable
	// gateway takes the initial requests no route matches.
	gateway *target
	routes  routeTable
	// targets are the provisioned gateways the proxy can reach, probed
	// when probing is on.
	targets []*target
	// dids are the trunk-owned DIDs by number, gatewayAddrs the addresses
	// inbound calls to them may come from (did.go).
	dids         map[string]*didEntry
	gatewayAddrs map[netip.Addr]bool
	// subs are the subscribers and our domains (subscriber.go).
	subs subscriberTable
}

// gatewayHop is where initial requests go.
type gatewayHop struct {
	id        string // gateway id (or the configured address) for the events
	dest      string // host:port, resolved where possible
	transport string // UDP or TCP
}

// trunkRef is what a matched source says about the caller.
type trunkRef struct {
	id, account string
	trusted     bool
	dialPlan    *dialPlan // nil: numbers pass as sent
}

// prefixTable finds the longest prefix that holds an address: one map
// lookup per prefix length in use (a handful in practice), most specific
// length first.
type prefixTable struct {
	lens     []int
	byPrefix map[netip.Prefix][]sourceEntry
}

// sourceEntry is one trunk source within a prefix; entries with a port or
// a transport come before those without.
type sourceEntry struct {
	port      int
	transport string // udp, tcp, tls or empty for any
	trunk     *trunkRef
}

func (e sourceEntry) specificity() int {
	s := 0
	if e.port != 0 {
		s += 2
	}
	if e.transport != "" {
		s++
	}
	return s
}

// lookup is the trunk a request from source (ip:port) over transport
// belongs to, nil for none.
func (a *admission) lookup(source, transport string) *trunkRef {
	ap, err := netip.ParseAddrPort(source)
	if err != nil {
		return nil
	}
	addr := ap.Addr().Unmap()
	t := &a.v6
	if addr.Is4() {
		t = &a.v4
	}
	tr := lowerTransport(transport)
	port := int(ap.Port())
	for _, bits := range t.lens {
		pfx, err := addr.Prefix(bits)
		if err != nil {
			continue
		}
		for _, e := range t.byPrefix[pfx] {
			if (e.port == 0 || e.port == port) && (e.transport == "" || e.transport == tr) {
				return e.trunk
			}
		}
	}
	return nil
}

func (t *prefixTable) add(p netip.Prefix, e sourceEntry) {
	if t.byPrefix == nil {
		t.byPrefix = map[netip.Prefix][]sourceEntry{}
	}
	if _, ok := t.byPrefix[p]; !ok && !slices.Contains(t.lens, p.Bits()) {
		t.lens = append(t.lens, p.Bits())
	}
	t.byPrefix[p] = append(t.byPrefix[p], e)
}

func (t *prefixTable) seal() {
	slices.SortFunc(t.lens, func(a, b int) int { return b - a })
	for _, es := range t.byPrefix {
		slices.SortStableFunc(es, func(a, b sourceEntry) int {
			if c := b.specificity() - a.specificity(); c != 0 {
				return c
			}
			return cmp.Compare(a.trunk.id, b.trunk.id)
		})
	}
}

// compile builds the admission table of a provisioning snapshot (nil:
// nothing provisioned, every initial request is refused). The default
// gateway is the first provisioned one by id that the proxy has a
// listener for, or the configured Gateway when there is none. resolve
// turns its host:port into the address requests go to.
func (p *Proxy) compile(pv *schema.Provisioning, resolve func(hostport string) string) *admission {
	a := &admission{gateway: &target{gatewayHop: gatewayHop{id: p.cfg.Gateway, dest: p.gwDest, transport: p.gwTransport}}}
	a.subs = p.compileSubscribers(pv)
	if pv == nil {
		return a
	}
	a.revision = pv.Revision
	sources := 0
	plans := p.compileDialPlans(pv)
	for _, id := range schema.SortedIDs(pv.Trunks) {
		t := pv.Trunks[id]
		ref := &trunkRef{id: t.ID, account: t.Account, trusted: t.Trusted, dialPlan: p.trunkDialPlan(t, plans)}
		for _, s := range t.Sources {
			pfx, err := s.Prefix()
			if err != nil {
				continue // validated by the store; never reached
			}
			e := sourceEntry{port: s.Port, transport: s.Transport, trunk: ref}
			if pfx.Addr().Is4() {
				a.v4.add(pfx, e)
			} else {
				a.v6.add(pfx, e)
			}
			sources++
		}
	}
	a.v4.seal()
	a.v6.seal()
	byID := map[string]*target{}
	for _, id := range schema.SortedIDs(pv.Gateways) {
		g := pv.Gateways[id]
		transport := strings.ToUpper(g.TransportOrDefault())
		if !p.hasTransport(transport) {
			p.log.Warn("provisioned gateway skipped: no listener for its transport", "gateway", g.ID, "transport", g.TransportOrDefault())
			continue
		}
		host, port, err := g.HostPort()
		if err != nil {
			continue // validated by the store; never reached
		}
		t := &target{
			gatewayHop: gatewayHop{id: g.ID, dest: resolve(net.JoinHostPort(host, strconv.Itoa(port))), transport: transport},
			health:     p.health.get(g.ID),
			gw:         g,
			supplier:   pv.Suppliers[g.Supplier],
		}
		byID[g.ID] = t
		a.targets = append(a.targets, t)
	}
	if len(a.targets) > 0 {
		a.gateway = a.targets[0]
	}
	a.dids, a.gatewayAddrs = p.compileDIDs(pv, resolve), gatewayAddrs(a.targets)
	keep := make(map[string]bool, len(byID))
	for id := range byID {
		keep[id] = true
	}
	p.health.prune(keep)
	p.m.answers.prune(keep)
	for _, id := range schema.SortedIDs(pv.Routes) {
		r := pv.Routes[id]
		e := &routeEntry{id: r.ID, maxAttempts: r.MaxAttempts, lcr: r.ModeOrDefault() == schema.RouteLCR, limits: newRouteLimits(r)}
		weighted := r.ModeOrDefault() == schema.RouteWeighted
		for i, gid := range r.Gateways {
			t, ok := byID[gid]
			if !ok {
				p.log.Warn("route gateway skipped: not provisioned or not reachable", "route", r.ID, "gateway", gid)
				continue
			}
			e.targets = append(e.targets, t)
			if weighted {
				w := 1
				if len(r.Weights) == len(r.Gateways) {
					w = r.Weights[i]
				}
				e.weights = append(e.weights, w)
			}
		}
		if len(e.targets) == 0 {
			p.log.Warn("route skipped: none of its gateways can be used", "route", r.ID, "prefix", r.Prefix)
			continue
		}
		a.routes.add(r.MatchPrefix(), e)
	}
	a.routes.seal()
	a.sources = sources
	return a
}

// install compiles pv and puts it in force.
func (p *Proxy) install(ctx context.Context, pv *schema.Provisioning) {
	a := p.compile(pv, func(hostport string) string { return p.resolve(ctx, hostport) })
	p.table.Store(a)
	p.m.revision.Set(float64(a.revision))
	trunks := 0
	if pv != nil {
		trunks = len(pv.Trunks)
	}
	p.log.Info("provisioning in force", "revision", a.revision, "trunks", trunks, "sources", a.sources,
		"gateways", len(a.targets), "routes", len(a.routes.byPrefix), "default_gateway", a.gateway.id, "default_gateway_addr", a.gateway.dest)
}

func (p *Proxy) hasTransport(transport string) bool {
	for _, l := range p.cfg.Listeners {
		if strings.EqualFold(l.Transport, transport) {
			return true
		}
	}
	return false
}

// follow swaps in a new admission table whenever the provisioning
// changes from last, until ctx is done.
func (p *Proxy) follow(ctx context.Context, src Provisioning, last *schema.Provisioning) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-src.Changed():
		}
		pv := src.Snapshot()
		if pv == last {
			continue
		}
		last = pv
		p.install(ctx, pv)
	}
}

// admitted decides whether an initial request may pass: its source must
// belong to a trunk, and only a trusted trunk may preload a Route. It
// answers refusals itself; false means the request is done.
func (r *request) admitted(t *trunkRef) bool {
	if t == nil {
		r.p.log.Debug("request from an unknown source refused", "src", r.ev.Source, "transport", r.ev.Transport, "call_id", r.ev.CallID)
		r.p.m.refusedUnknown.Inc()
		r.respond(403, "Forbidden", noteUnknownSource)
		r.finish()
		return false
	}
	if !t.trusted && r.p.preloaded(r.req) {
		r.p.log.Debug("preloaded Route from an untrusted trunk refused", "trunk", t.id, "src", r.ev.Source, "call_id", r.ev.CallID)
		r.p.m.refusedPreloaded.Inc()
		r.respond(403, "Forbidden", notePreloadedRoute)
		r.finish()
		return false
	}
	return true
}

// inDialogAdmitted decides whether a request inside a dialog may go to
// hop h. Every dialog the proxy carries was record-routed, so its
// requests name the proxy in their Route set (or, from a strict router,
// in the Request-URI); one that does not would be relayed by its
// Request-URI alone, which only a trunk may ask for: otherwise anyone
// could send requests anywhere through the proxy.
func (p *Proxy) inDialogAdmitted(req *sip.Request, h *hop) bool {
	if h.popped > 0 || h.dropLast {
		return true
	}
	return p.table.Load().lookup(req.Source(), req.Transport()) != nil
}

// preloaded reports a Route header that does not name this proxy: the
// sender chose the next hop itself (RFC 3261 16.4 leaves our own entries
// to be removed).
func (p *Proxy) preloaded(req *sip.Request) bool {
	for _, hdr := range req.Headers() {
		if rh, ok := hdr.(*sip.RouteHeader); ok && p.own(&rh.Address) == nil {
			return true
		}
	}
	return false
}

// resolve looks a host name up once, so that requests do not wait for
// DNS (sipgo would resolve it for every request). When the lookup fails
// the name stays and sipgo keeps trying per request.
func (p *Proxy) resolve(ctx context.Context, hostport string) string {
	host, port, _ := net.SplitHostPort(hostport)
	if net.ParseIP(host) != nil {
		return hostport
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(addrs) == 0 {
		p.log.Warn("gateway address not resolved; resolving per request", "gateway", hostport, "err", err)
		return hostport
	}
	ip := addrs[0].IP
	for _, a := range addrs {
		if a.IP.To4() != nil {
			ip = a.IP
			break
		}
	}
	resolved := net.JoinHostPort(ip.String(), port)
	p.log.Info("gateway resolved", "gateway", hostport, "addr", resolved)
	return resolved
}
