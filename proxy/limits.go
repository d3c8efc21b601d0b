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
	// noteGatewayCPS: every gateway the call could go to was at its cps.
	noteGatewayCPS = "gateway_cps"
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

	mu       sync.Mutex
	accounts map[string]*cpsBucket // accounts with a cps limit

	calls callCounter
}

func newLimiter() *limiter {
	return &limiter{accounts: map[string]*cpsBucket{}, calls: callCounter{n: map[string]int{}}}
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
	var accounts map[string]schema.Account
	var gateways map[string]schema.Gateway
	if pv != nil {
		accounts, gateways = pv.Accounts, pv.Gateways
	}
	for id, b := range l.accounts {
		if accounts[id].CPS == 0 {
			delete(l.accounts, id)
		} else {
			b.setRate(accounts[id].CPS)
		}
	}
	for id, acc := range accounts {
		if _, ok := l.accounts[id]; !ok && acc.CPS > 0 {
			b := &cpsBucket{}
			b.setRate(acc.CPS)
			l.accounts[id] = b
		}
	}
	for _, t := range a.targets {
		if t.health != nil {
			t.health.cps.setRate(gateways[t.id].CPS)
		}
	}
	l.table.Store(a)
	return l
}

// accountBucket is the bucket of an account, nil when it has no limit.
func (l *limiter) accountBucket(id string) *cpsBucket {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accounts[id]
}

// withinLimits decides whether an initial INVITE headed for hop h may
// go: its account must be under its calls per second, and h's gateway
// under its own, else the call moves on to the route's next gateway
// that is. It answers refusals itself; false means the request is done.
func (r *request) withinLimits(h *hop) bool {
	p := r.p
	l := p.refreshLimits()
	now := time.Now().UnixNano()
	if b := l.accountBucket(r.ev.Account); b != nil && !b.take(now) {
		p.m.limited.WithLabelValues("account").Inc()
		p.log.Debug("call over its account's cps refused", "account", r.ev.Account, "call_id", r.ev.CallID)
		code, reason := 503, "Service Unavailable"
		if p.cfg.Limits.AccountReply == 486 {
			code, reason = 486, "Busy Here"
		}
		r.respond(code, reason, noteAccountCPS)
		r.finish()
		return false
	}
	if max := p.account(r.ev.Account).MaxCalls; max > 0 {
		release, ok := l.calls.acquire([]string{"account:" + r.ev.Account}, []int{max})
		if !ok {
			p.m.limited.WithLabelValues("account_calls").Inc()
			p.log.Debug("call over its account's concurrent calls refused", "account", r.ev.Account, "call_id", r.ev.CallID, "max_calls", max)
			code, reason := 503, "Service Unavailable"
			if p.cfg.Limits.AccountReply == 486 {
				code, reason = 486, "Busy Here"
			}
			r.respond(code, reason, noteAccountCalls)
			r.finish()
			return false
		}
		// Handed to the dialog when the call is answered (dialog.go),
		// given back by onRequest otherwise.
		r.slot = release
	}
	t := h.target
	if t == nil || t.health == nil || t.health.cps.take(now) {
		return true
	}
	// The route's first gateway is at its limit: the hunt goes on with
	// the next that is not (take skips those at theirs).
	p.m.limited.WithLabelValues("gateway").Inc()
	p.log.Debug("gateway at its cps skipped", "gateway", t.id, "call_id", r.ev.CallID)
	if h.hunt != nil {
		for next := h.hunt.take(); next != nil; next = h.hunt.take() {
			if err := h.toGateway(p, next); err == nil {
				return true
			}
		}
	}
	r.respond(503, "Service Unavailable", noteGatewayCPS)
	r.finish()
	return false
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
