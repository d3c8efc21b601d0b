package proxy

import (
	"crypto/tls"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/carrier-core/carrier/schema"
)

// Limits says how the proxy refuses calls over a limit. The limits
// themselves are provisioned: schema.Account.CPS and schema.Gateway.CPS.
type Limits struct {
	// AccountReply is the status code of a call refused because its
	// account is over its calls per second: 503 (the default) or 486,
	// for customers whose equipment would retry a 503 elsewhere.
	AccountReply int
}

// Notes of calls refused for a limit.
const (
	// noteAccountCPS: the account started more calls per second than
	// its cps allows.
	noteAccountCPS = "account_cps"
	// noteAccountCalls: the account has MaxCalls calls in progress.
	noteAccountCalls = "account_calls"
	// noteGatewaysBusy: every gateway the call could go to was at its
	// calls per second or its calls in progress (the event's Skipped say
	// which).
	noteGatewaysBusy = "gateways_busy"
)

func (l Limits) withDefaults() (Limits, error) {
	switch l.AccountReply {
	case 0:
		l.AccountReply = 503
	case 486, 503:
	default:
		return l, fmt.Errorf("account limit reply %d: want 503 or 486: %w", l.AccountReply, ErrInvalidConfig)
	}
	return l, nil
}

// guards is the state of the proxy's safety features, built from its
// Config by withDefaults and kept with it.
type guards struct {
	flood  *floodGuard // nil while flood protection is off
	limits *limiter
	tls    *tls.Config // nil without a TLS listener
}

// newGuards checks the safety settings of c and builds their state.
func (c *Config) newGuards() (*guards, error) {
	flood, err := c.Flood.withDefaults()
	if err != nil {
		return nil, err
	}
	c.Flood = flood
	limits, err := c.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	c.Limits = limits
	tlsCfg, err := c.TLS.serverConfig(c.Listeners)
	if err != nil {
		return nil, err
	}
	return &guards{flood: newFloodGuard(flood), limits: newLimiter(), tls: tlsCfg}, nil
}

// cpsBucket is a token bucket of calls per second: it holds at most rate
// calls (one second's worth, so a burst up to the limit passes) and
// refills at rate per second. Tokens are counted in billionths, so that
// the arithmetic is exact in integers.
type cpsBucket struct {
	mu     sync.Mutex
	rate   int64
	tokens int64 // billionths of a call
	last   int64 // Unix nanoseconds of the last refill
}

const tokenUnit = int64(time.Second) // one call, in the bucket's units

// setRate changes the limit (0: none); a changed limit starts full.
func (b *cpsBucket) setRate(rate int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if int64(rate) != b.rate {
		b.rate, b.tokens, b.last = int64(rate), int64(rate)*tokenUnit, 0
	}
}

// take spends one call at now (Unix nanoseconds); false when the bucket
// is empty. A bucket without a rate always has room.
func (b *cpsBucket) take(now int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rate <= 0 {
		return true
	}
	full := b.rate * tokenUnit
	if b.last != 0 && now > b.last {
		// At most a second counts: the bucket is full by then, and the
		// product stays far from overflowing.
		b.tokens = min(full, b.tokens+min(now-b.last, int64(time.Second))*b.rate)
	}
	b.last = now
	if b.tokens < tokenUnit {
		return false
	}
	b.tokens -= tokenUnit
	return true
}

// limiter holds the accounts' buckets and follows the provisioning: the
// gateways' buckets live with their health (gwHealth), which is kept
// across provisioning changes the same way.
type limiter struct {
	// table is the admission table the limits were last set from.
	table atomic.Pointer[admission]

	mu        sync.Mutex
	accounts  map[string]*cpsBucket // accounts with a cps limit
	suppliers map[string]*cpsBucket // suppliers with a cps limit

	calls callCounter
}

func newLimiter() *limiter {
	return &limiter{accounts: map[string]*cpsBucket{}, suppliers: map[string]*cpsBucket{}, calls: callCounter{n: map[string]int{}}}
}

// refresh sets the limits from the provisioning whenever the admission
// table changed since the last call. It runs on the request path, so a
// change takes effect with the first call after it; the common case is
// one atomic load.
func (p *Proxy) refreshLimits() *limiter {
	l := p.cfg.guards.limits
	a := p.table.Load()
	if l.table.Load() == a {
		return l
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.table.Load() == a {
		return l
	}
	var pv *schema.Provisioning
	if p.cfg.Provisioning != nil {
		pv = p.cfg.Provisioning.Snapshot()
	}
	accountCPS, supplierCPS := map[string]int{}, map[string]int{}
	var gateways map[string]schema.Gateway
	if pv != nil {
		gateways = pv.Gateways
		for id, acc := range pv.Accounts {
			accountCPS[id] = acc.CPS
		}
		for id, s := range pv.Suppliers {
			supplierCPS[id] = s.CPS
		}
	}
	syncBuckets(l.accounts, accountCPS)
	syncBuckets(l.suppliers, supplierCPS)
	for _, t := range a.targets {
		if t.health != nil {
			t.health.cps.setRate(gateways[t.id].CPS)
		}
	}
	l.table.Store(a)
	return l
}

// syncBuckets makes buckets hold one bucket for each id with a rate
// above 0, at that rate; a bucket whose rate is unchanged keeps its
// tokens.
func syncBuckets(buckets map[string]*cpsBucket, rates map[string]int) {
	for id, b := range buckets {
		if rates[id] == 0 {
			delete(buckets, id)
		} else {
			b.setRate(rates[id])
		}
	}
	for id, rate := range rates {
		if _, ok := buckets[id]; !ok && rate > 0 {
			b := &cpsBucket{}
			b.setRate(rate)
			buckets[id] = b
		}
	}
}

// accountBucket is the bucket of an account, nil when it has no limit.
func (l *limiter) accountBucket(id string) *cpsBucket {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accounts[id]
}

// supplierBucket is the bucket of a supplier, nil when it has no limit.
func (l *limiter) supplierBucket(id string) *cpsBucket {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.suppliers[id]
}

// withinLimits decides whether an initial INVITE may go as its account's
// call: the account must be under its calls per second and its calls in
// progress. It answers refusals itself; false means the request is done.
// (The gateways' limits are the hunt's: admitGateway.)
func (r *request) withinLimits() bool {
	p := r.p
	l := p.refreshLimits()
	if b := l.accountBucket(r.ev.Account); b != nil && !b.take(time.Now().UnixNano()) {
		p.m.limited.WithLabelValues("account").Inc()
		p.log.Debug("call over its account's cps refused", "account", r.ev.Account, "call_id", r.ev.CallID)
		r.refuseForAccount(noteAccountCPS)
		return false
	}
	if max := p.account(r.ev.Account).MaxCalls; max > 0 {
		key := "account:" + r.ev.Account
		release, ok := l.calls.acquire([]string{key}, []int{max})
		if !ok {
			p.m.limited.WithLabelValues("account_calls").Inc()
			p.log.Debug("call over its account's concurrent calls refused", "account", r.ev.Account, "call_id", r.ev.CallID, "max_calls", max)
			r.refuseForAccount(noteAccountCalls)
			return false
		}
		// Handed to the dialog when the call is answered (dialog.go),
		// given back by publish otherwise.
		r.holdSlot(release, key)
	}
	return true
}

// refuseForAccount answers a call its account's limit holds back: 503,
// or 486 for customers whose equipment would retry a 503 elsewhere.
func (r *request) refuseForAccount(note string) {
	code, reason := 503, "Service Unavailable"
	if r.p.cfg.Limits.AccountReply == 486 {
		code, reason = 486, "Busy Here"
	}
	r.respond(code, reason, note)
	r.finish()
}

// holdSlot adds a place under a concurrent-calls limit to those the call
// holds: given back when it ends unanswered, handed to its dialog when it
// is answered.
func (r *request) holdSlot(release func(), keys ...string) {
	if prev := r.slot; prev != nil {
		r.slot = func() { prev(); release() }
	} else {
		r.slot = release
	}
	r.slotKeys = append(r.slotKeys, keys...)
}

// admitGateway decides whether an initial INVITE may be sent to gateway
// t now: t must be under its calls per second and its calls in progress.
// A gateway that is not is skipped, and the event says why. The place t
// gives the call is the attempt's (branch.slot): given back when the
// attempt fails, held by the dialog when it answers.
func (r *request) admitGateway(t *target) bool {
	p := r.p
	l := p.refreshLimits()
	skip := func(reason string) bool {
		p.m.limited.WithLabelValues("gateway").Inc()
		p.log.Debug("gateway at its limit skipped", "gateway", t.id, "reason", reason, "call_id", r.ev.CallID)
		r.ev.Skipped = append(r.ev.Skipped, schema.SkippedGateway{Gateway: t.id, Supplier: t.gw.Supplier, Reason: reason})
		return false
	}
	// Places first, then tokens: a token spent on a call that is then
	// refused for its calls in progress would be lost.
	var keys []string
	var max []int
	if t.gw.MaxCalls > 0 {
		keys, max = append(keys, "gw:"+t.id), append(max, t.gw.MaxCalls)
	}
	if s := t.supplier; s.MaxCalls > 0 {
		keys, max = append(keys, "supplier:"+s.ID), append(max, s.MaxCalls)
	}
	release := func() {}
	if len(keys) > 0 {
		var ok bool
		if release, ok = l.calls.acquire(keys, max); !ok {
			if t.gw.MaxCalls > 0 && l.calls.inProgress(keys[0]) >= t.gw.MaxCalls {
				return skip(schema.SkipCalls)
			}
			return skip(schema.SkipSupplierCalls)
		}
	}
	now := time.Now().UnixNano()
	if t.health != nil && !t.health.cps.take(now) {
		release()
		return skip(schema.SkipCPS)
	}
	if b := l.supplierBucket(t.gw.Supplier); b != nil && !b.take(now) {
		release()
		return skip(schema.SkipSupplierCPS)
	}
	if len(keys) > 0 {
		r.gatewaySlot, r.gatewayKeys = release, keys
	}
	return true
}

// callCounter counts the calls in progress per key (an account, or a
// gateway as "gw:" + id), for concurrent-call limits.
//
// A call takes its slots with acquire when its INVITE is admitted. The
// release function it gets must run exactly once: at the final response
// when that is not a 2xx, or, for an answered call, when its dialog ends
// (BYE, dialog timeout or a forced end), which is where dialog tracking
// (dialog.go) hands it back. It is safe to call more than once; only the
// first call counts.
type callCounter struct {
	mu sync.Mutex
	n  map[string]int
}

// acquire takes one slot for each key whose limit (same index in max; 0
// is none) allows it, or none at all: ok is false when any key is at its
// limit.
func (c *callCounter) acquire(keys []string, max []int) (release func(), ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, k := range keys {
		if max[i] > 0 && c.n[k] >= max[i] {
			return func() {}, false
		}
	}
	for _, k := range keys {
		c.n[k]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, k := range keys {
				if c.n[k]--; c.n[k] <= 0 {
					delete(c.n, k)
				}
			}
		})
	}, true
}

// inProgress is the count of a key.
func (c *callCounter) inProgress(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}
