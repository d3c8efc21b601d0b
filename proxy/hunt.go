package proxy

import (
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/schema"
)

// noteNoGatewayLeft: every gateway of the route failed (or none could be
// tried); the caller got 503.
const noteNoGatewayLeft = "no_gateway_left"

// gwHealth is what the proxy knows of one gateway's health. It outlives
// provisioning changes (the book keeps it by gateway id), so that a
// recompiled table does not forget a gateway that just failed.
type gwHealth struct {
	// holdUntil is when a hold-down (after a 503 or a timeout) ends, in
	// Unix nanoseconds; 0 for none.
	holdUntil atomic.Int64
	// probeDown: the last OPTIONS probe got no answer.
	probeDown atomic.Bool
	// probed: a probe is in flight; the next round leaves the gateway alone.
	probed atomic.Bool
	up     prometheus.Gauge
	// cps holds the gateway's calls per second (limits.go).
	cps cpsBucket
}

// healthy reports whether the gateway is neither held down nor probed
// down at now (Unix nanoseconds). The first look after a hold-down ended
// clears it, so that the up gauge follows without probing.
func (g *gwHealth) healthy(now int64) bool {
	if g.probeDown.Load() {
		return false
	}
	until := g.holdUntil.Load()
	if until == 0 {
		return true
	}
	if until > now {
		return false
	}
	if g.holdUntil.CompareAndSwap(until, 0) {
		g.up.Set(1)
	}
	return true
}

func (g *gwHealth) publish(now int64) {
	v := 0.0
	if g.healthy(now) {
		v = 1
	}
	g.up.Set(v)
}

// healthBook holds the gateways' health by id. It is read when
// provisioning is compiled, never on the request path, which holds the
// *gwHealth it needs.
type healthBook struct {
	mu sync.Mutex
	m  map[string]*gwHealth
	up *prometheus.GaugeVec
}

func (b *healthBook) get(id string) *gwHealth {
	b.mu.Lock()
	defer b.mu.Unlock()
	if g, ok := b.m[id]; ok {
		return g
	}
	g := &gwHealth{up: b.up.WithLabelValues(id)}
	g.up.Set(1)
	b.m[id] = g
	return g
}

// prune forgets the gateways no longer provisioned, and their metrics.
func (b *healthBook) prune(keep map[string]bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id := range b.m {
		if !keep[id] {
			delete(b.m, id)
			b.up.DeleteLabelValues(id)
		}
	}
}

// target is a gateway a call can be sent to.
type target struct {
	gatewayHop
	health *gwHealth
	// gw is the gateway as provisioned, whose buy rates order lcr routes.
	gw schema.Gateway
	// supplier is the gateway's supplier as provisioned, for the limits
	// it shares with its other gateways (zero: none).
	supplier schema.Supplier
}

// routeEntry is a route compiled for the request path.
type routeEntry struct {
	id          string
	targets     []*target
	weights     []int // nil: ordered
	maxAttempts int
	// lcr orders the targets of each call by buy rate (lcr.go).
	lcr bool
	// limits are the accounts and times the route is for; nil: any.
	limits *routeLimits
}

// routeTable finds the route with the longest prefix of a destination
// that is for the caller's account at the time of the call: one map
// lookup per prefix length in use, longest first. Routes of one prefix
// are kept most specific first (see routeLimits.specificity).
type routeTable struct {
	lens     []int
	byPrefix map[string][]*routeEntry
}

func (t *routeTable) add(prefix string, r *routeEntry) {
	if t.byPrefix == nil {
		t.byPrefix = map[string][]*routeEntry{}
	}
	if !slices.Contains(t.lens, len(prefix)) {
		t.lens = append(t.lens, len(prefix))
	}
	t.byPrefix[prefix] = append(t.byPrefix[prefix], r)
}

func (t *routeTable) seal() {
	slices.SortFunc(t.lens, func(a, b int) int { return b - a })
	for _, rs := range t.byPrefix {
		// Stable: routes are added in id order, which breaks ties.
		slices.SortStableFunc(rs, func(a, b *routeEntry) int { return b.limits.specificity() - a.limits.specificity() })
	}
}

// lookup is the route for the Request-URI user dest of a call of no
// particular account, nil for none.
func (t *routeTable) lookup(dest string) *routeEntry { return t.match(dest, "", time.Now()) }

// match is the route for the Request-URI user dest of a call of account
// at now, nil for none. A leading '+' is not part of the digits routes
// match.
func (t *routeTable) match(dest, account string, now time.Time) *routeEntry {
	if len(t.lens) == 0 {
		return nil
	}
	if len(dest) > 0 && dest[0] == '+' {
		dest = dest[1:]
	}
	for _, n := range t.lens {
		if n > len(dest) {
			continue
		}
		for _, r := range t.byPrefix[dest[:n]] {
			if r.limits.admit(account, now) {
				return r
			}
		}
	}
	return nil
}

// hunt is the order in which one call tries a route's gateways.
type hunt struct {
	route  *routeEntry
	order  []*target
	next   int // index in order of the next gateway to try
	tried  int
	maxTry int
}

// plan orders the route's gateways for one call: in order or drawn by
// weight, then the healthy ones first. Gateways that are down are tried
// only after the healthy ones failed, rather than not at all: a probe or
// a hold-down that is wrong must not refuse every call.
func (r *routeEntry) plan(now time.Time) *hunt { return r.planFor("", now, nil) }

// planFor is plan for a call to number; an lcr route orders its gateways
// by their rates for it (none without rates: as listed).
func (r *routeEntry) planFor(number string, now time.Time, rates BuyRates) *hunt {
	h := &hunt{route: r, order: make([]*target, 0, len(r.targets)), maxTry: r.maxAttempts}
	if h.maxTry <= 0 || h.maxTry > len(r.targets) {
		h.maxTry = len(r.targets)
	}
	switch {
	case r.lcr && rates != nil:
		h.order = lcrOrder(h.order, r.targets, number, now, rates)
	case r.weights == nil:
		h.order = append(h.order, r.targets...)
	default:
		h.order = weightedOrder(h.order, r.targets, r.weights)
	}
	// A stable partition in place: the healthy first, each side in its
	// order. Writes never overtake reads, so up can share order's array.
	ns := now.UnixNano()
	var buf [schema.MaxRouteGateways]*target
	down := buf[:0]
	up := h.order[:0]
	for _, t := range h.order {
		if t.health.healthy(ns) {
			up = append(up, t)
		} else {
			down = append(down, t)
		}
	}
	h.order = append(up, down...)
	return h
}

// weightedOrder appends to dst the targets in a random order in which
// each remaining target comes next with a chance proportional to its
// weight (sampling without replacement).
func weightedOrder(dst []*target, ts []*target, weights []int) []*target {
	var buf [schema.MaxRouteGateways]int
	w := append(buf[:0], weights...)
	total := 0
	for _, x := range w {
		total += x
	}
	left := slices.Clone(ts)
	for len(left) > 0 {
		n := rand.IntN(total)
		i := 0
		for ; i < len(w)-1 && n >= w[i]; i++ {
			n -= w[i]
		}
		dst = append(dst, left[i])
		total -= w[i]
		left = slices.Delete(left, i, i+1)
		w = slices.Delete(w, i, i+1)
	}
	return dst
}

// take is the next gateway to try, nil when the hunt is over. admit, when
// not nil, decides whether a gateway may take the call now (its limits:
// admitGateway); one it refuses is skipped and does not count as tried.
func (h *hunt) take(admit func(*target) bool) *target {
	for h.tried < h.maxTry && h.next < len(h.order) {
		t := h.order[h.next]
		h.next++
		if admit != nil && !admit(t) {
			continue
		}
		h.tried++
		return t
	}
	return nil
}

// failover reports whether a final response of a gateway lets the hunt
// go on: 408 and 5xx do (RFC 3261 16.7 leaves the choice to the proxy);
// 486, 487, 6xx and the other 4xx say something about the callee and go
// to the caller.
func failover(code int) bool { return code == 408 || (code >= 500 && code < 600) }

// holdsDown reports a gateway result that takes it out of the hunt for
// a while: it is overloaded (503) or did not answer.
func holdsDown(code int, timedOut bool) bool { return timedOut || code == 503 }

// attempted books the result of one attempt at a gateway: the attempts
// metric and, for a 503 or a timeout, the hold-down.
func (p *Proxy) attempted(t *target, code int, timedOut bool, now time.Time) {
	if t == nil {
		return
	}
	p.m.gatewayAttempts.WithLabelValues(t.id, codeLabel(code)).Inc()
	p.m.answers.attempt(t.id, code)
	if t.health == nil || !holdsDown(code, timedOut) || p.cfg.Health.HoldDown <= 0 {
		return
	}
	t.health.holdUntil.Store(now.Add(p.cfg.Health.HoldDown).UnixNano())
	t.health.up.Set(0)
	p.log.Info("gateway held down", "gateway", t.id, "code", code, "timed_out", timedOut, "for", p.cfg.Health.HoldDown)
}

// probe sends OPTIONS to every provisioned gateway every interval and
// marks each down when it does not answer in time, up when it answers
// with anything but 503 (many gateways refuse OPTIONS with 4xx or 501,
// which shows they are alive all the same).
func (p *Proxy) probe(stop <-chan struct{}) {
	tick := time.NewTicker(p.cfg.Health.ProbeInterval)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		now := time.Now().UnixNano()
		for _, t := range p.table.Load().targets {
			// A lapsed hold-down shows in the gauge at the next round.
			t.health.publish(now)
			if !t.health.probed.CompareAndSwap(false, true) {
				continue
			}
			wg.Go(func() {
				defer t.health.probed.Store(false)
				p.probeOne(t, stop)
			})
		}
	}
}

// probeOne sends one OPTIONS to t and books the outcome.
func (p *Proxy) probeOne(t *target, stop <-chan struct{}) {
	l := p.listenerFor(t.transport)
	if l == nil {
		return
	}
	host, port := splitSource(t.dest)
	uri := sip.Uri{Scheme: "sip", Host: host, Port: atoi(port)}
	req := sip.NewRequest(sip.OPTIONS, uri)
	req.AppendHeader(&sip.ViaHeader{
		ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: t.transport,
		Host: l.viaHost, Port: l.port,
		Params: sip.HeaderParams{{K: "branch", V: p.newBranch()}},
	})
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "probe", Host: l.viaHost, Port: l.port},
		Params: sip.HeaderParams{{K: "tag", V: p.newTag()}}})
	req.AppendHeader(&sip.ToHeader{Address: uri})
	callID := sip.CallIDHeader(p.newID("probe"))
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	req.SetTransport(t.transport)
	req.SetDestination(t.dest)
	if t.transport == "UDP" {
		req.Laddr = l.laddr
	}
	code := 0
	ctx, cancel := context.WithTimeout(p.runCtx, p.cfg.Health.ProbeTimeout)
	defer cancel()
	if tx, err := p.txl.Request(ctx, req); err == nil {
		code = awaitFinal(tx, ctx.Done(), stop)
		tx.Terminate()
	}
	select {
	case <-stop:
		return
	default:
	}
	down := code == 0 || code == 503
	if was := t.health.probeDown.Swap(down); was != down {
		p.log.Info("gateway probe", "gateway", t.id, "addr", t.dest, "up", !down, "code", code)
	}
	t.health.publish(time.Now().UnixNano())
}

// awaitFinal is the final status code of tx, 0 when none comes.
func awaitFinal(tx sip.ClientTransaction, timeout, stop <-chan struct{}) int {
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode >= 200 {
				return res.StatusCode
			}
		case <-tx.Done():
			return 0
		case <-timeout:
			return 0
		case <-stop:
			return 0
		}
	}
}
