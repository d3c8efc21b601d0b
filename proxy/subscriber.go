package proxy

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/schema"
)

// SubscriberConfig configures the subscribers of the proxy's domains:
// digest authentication and the registrar.
type SubscriberConfig struct {
	// Domains are the SIP domains the proxy serves besides those of the
	// provisioned subscribers. The first is the default: a request whose
	// URI names the proxy's own address is taken as for that domain.
	Domains []string
	// Registrations keeps the registrar's bindings (KVRegistrations, on
	// JetStream KV); nil runs no registrar: a REGISTER is relayed, or
	// refused, like any other request.
	Registrations Registrations
	// NonceLifetime is how long a digest nonce is accepted. Default 5
	// minutes; an older one gets a new challenge with stale=true.
	NonceLifetime time.Duration
	// NonceSecret signs the nonces. Proxies sharing one accept each
	// other's nonces; empty takes a random secret of this proxy.
	NonceSecret []byte
	// MaxTrackedNonces bounds the record of nonce counts used against
	// replays (default 100000 nonces per lifetime).
	MaxTrackedNonces int
	// MinExpires, MaxExpires and DefaultExpires bound a registration:
	// shorter asks get 423 with Min-Expires, longer ones are cut to
	// MaxExpires, and a contact without expires gets DefaultExpires.
	// Defaults 60s, 1h, 1h.
	MinExpires, MaxExpires, DefaultExpires time.Duration

	// state is made by Config.withDefaults and shared by the copies of
	// the configuration.
	state *subscriberState
}

// subscriberState is what authentication keeps while the proxy runs.
type subscriberState struct {
	nonces *nonces
	m      *subscriberMetrics
}

type subscriberMetrics struct {
	auth      *prometheus.CounterVec
	registers *prometheus.CounterVec
}

const (
	defaultNonceLifetime  = 5 * time.Minute
	defaultMaxNonces      = 100_000
	defaultMinExpires     = 60 * time.Second
	defaultMaxExpires     = time.Hour
	defaultDefaultExpires = time.Hour
)

// withDefaults checks c, fills in the defaults and prepares the state.
func (c SubscriberConfig) withDefaults(reg prometheus.Registerer) (SubscriberConfig, error) {
	doms := make([]string, 0, len(c.Domains))
	for _, d := range c.Domains {
		d = strings.ToLower(strings.TrimSpace(d))
		probe := schema.Subscriber{ID: "x", User: "x", Domain: d, Account: "x", HA1MD5: strings.Repeat("0", 32)}
		if err := probe.Validate(); err != nil {
			return c, fmt.Errorf("domain %q: want a host name such as sip.example.com: %w", d, ErrInvalidConfig)
		}
		doms = append(doms, d)
	}
	c.Domains = doms
	if c.NonceLifetime <= 0 {
		c.NonceLifetime = defaultNonceLifetime
	}
	if c.MaxTrackedNonces <= 0 {
		c.MaxTrackedNonces = defaultMaxNonces
	}
	if c.MinExpires <= 0 {
		c.MinExpires = defaultMinExpires
	}
	if c.MaxExpires <= 0 {
		c.MaxExpires = defaultMaxExpires
	}
	if c.DefaultExpires <= 0 {
		c.DefaultExpires = defaultDefaultExpires
	}
	if c.MaxExpires < c.MinExpires {
		return c, fmt.Errorf("max expires %v below min expires %v: %w", c.MaxExpires, c.MinExpires, ErrInvalidConfig)
	}
	c.DefaultExpires = min(max(c.DefaultExpires, c.MinExpires), c.MaxExpires)
	secret := c.NonceSecret
	if len(secret) == 0 {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return c, fmt.Errorf("nonce secret: %w", err)
		}
	}
	m := &subscriberMetrics{
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_proxy_digest_auth_total",
			Help: "Digest authentications by result: challenged, ok, stale, failed, mismatch, malformed.",
		}, []string{"result"}),
		registers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_proxy_registrations_total",
			Help: "REGISTER requests the registrar answered, by final status code.",
		}, []string{"code"}),
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{m.auth, m.registers} {
			if err := reg.Register(col); err != nil {
				return c, fmt.Errorf("register subscriber metrics: %w", err)
			}
		}
	}
	c.state = &subscriberState{nonces: newNonces(secret, c.NonceLifetime, c.MaxTrackedNonces), m: m}
	return c, nil
}

// subscriberRef is a subscriber compiled for the request path.
type subscriberRef struct {
	id, user, domain, account string
	ha1MD5, ha1SHA256         string
	maxContacts               int
}

// subscriberTable finds subscribers by address and knows our domains.
type subscriberTable struct {
	byAOR         map[string]*subscriberRef
	byID          map[string]*subscriberRef // for the DIDs they own
	domains       map[string]bool
	defaultDomain string
}

// compileSubscribers builds the subscriber table of a snapshot (nil: the
// configured domains only).
func (p *Proxy) compileSubscribers(pv *schema.Provisioning) subscriberTable {
	t := subscriberTable{byAOR: map[string]*subscriberRef{}, byID: map[string]*subscriberRef{}, domains: map[string]bool{}}
	for _, d := range p.cfg.Subscribers.Domains {
		t.domains[d] = true
	}
	if len(p.cfg.Subscribers.Domains) > 0 {
		t.defaultDomain = p.cfg.Subscribers.Domains[0]
	}
	if pv == nil {
		return t
	}
	for _, id := range schema.SortedIDs(pv.Subscribers) {
		s := pv.Subscribers[id]
		if _, ok := pv.Accounts[s.Account]; !ok {
			p.log.Warn("subscriber skipped: its account is not provisioned", "subscriber", s.ID, "account", s.Account)
			continue
		}
		ref := &subscriberRef{id: s.ID, user: s.User, domain: s.Domain, account: s.Account,
			ha1MD5: s.HA1MD5, ha1SHA256: s.HA1SHA256, maxContacts: s.MaxContactsOrDefault()}
		t.byAOR[s.User+"@"+s.Domain] = ref
		t.byID[s.ID] = ref
		t.domains[s.Domain] = true
	}
	return t
}

// enabled: there is a domain to serve.
func (t *subscriberTable) enabled() bool { return len(t.domains) > 0 }

// domainOf is the domain of ours a URI names: one of our domains, or the
// default domain for the proxy's own address.
func (p *Proxy) domainOf(t *subscriberTable, u *sip.Uri) (string, bool) {
	if u == nil {
		return "", false
	}
	host := strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(u.Host, "["), "]"))
	if t.domains[host] {
		return host, true
	}
	if t.defaultDomain != "" && p.own(u) != nil {
		return t.defaultDomain, true
	}
	return "", false
}

func (t *subscriberTable) lookup(user, domain string) *subscriberRef { return t.byAOR[user+"@"+domain] }

// Notes of the subscriber path.
const (
	noteChallenged   = "auth_challenge"
	noteStaleNonce   = "auth_stale"
	noteAuthFailed   = "auth_failed"
	noteAuthMismatch = "auth_user_mismatch"
	noteAuthBad      = "auth_malformed"
	noteNotReachable = "subscriber_not_registered"
	noteRegistrar    = "registrar"
)

// subscribers runs the subscriber steps of an initial request, before
// admission: a REGISTER for one of our domains goes to the registrar;
// a request from a source no trunk holds must authenticate as a
// subscriber of ours, whose account then pays, and the request goes on
// as if from a trunk of that account. It returns true when it answered
// the request itself.
func (r *request) subscribers(trunk **trunkRef) bool {
	p := r.p
	t := &p.table.Load().subs
	if !t.enabled() {
		return false
	}
	if r.req.Method == sip.REGISTER && p.cfg.Subscribers.Registrations != nil {
		if domain, ok := p.domainOf(t, &r.req.Recipient); ok {
			r.register(t, domain)
			return true
		}
	}
	if *trunk != nil {
		return false
	}
	from := r.req.From()
	domain, ok := p.domainOf(t, &from.Address)
	if !ok {
		// Not one of our users: refused by admission as an unknown source.
		return false
	}
	sub, done := r.authenticate(t, domain)
	if done {
		return true
	}
	if sub.user != from.Address.User {
		p.log.Debug("authenticated user is not the From user", "user", sub.user, "from", from.Address.User, "call_id", r.ev.CallID)
		p.cfg.Subscribers.state.m.auth.WithLabelValues("mismatch").Inc()
		r.respond(403, "Forbidden", noteAuthMismatch)
		r.finish()
		return true
	}
	cred, _, _, _ := authHeaders(false)
	stripCredentials(r.req, cred, func(realm string) bool { return t.domains[realm] })
	r.ev.Account, r.ev.Subscriber = sub.account, sub.id
	*trunk = &trunkRef{account: sub.account}
	return false
}

// authenticate checks the request's credentials for domain. It answers
// the request itself (challenge, 403) and returns done when they are not
// good.
func (r *request) authenticate(t *subscriberTable, domain string) (sub *subscriberRef, done bool) {
	p := r.p
	st := p.cfg.Subscribers.state
	register := r.req.Method == sip.REGISTER
	credHeader, _, _, _ := authHeaders(register)
	now := time.Now()
	c, err := findCredentials(r.req, credHeader, domain)
	if err == nil {
		sub = t.lookup(c.username, domain)
		err = st.nonces.verify(c, sub, string(r.req.Method), now)
	}
	switch {
	case err == nil:
		st.m.auth.WithLabelValues("ok").Inc()
		return sub, false
	case errors.Is(err, errNoCredentials), errors.Is(err, errBadNonce):
		st.m.auth.WithLabelValues("challenged").Inc()
		r.challenge(domain, false, noteChallenged)
	case errors.Is(err, errStaleNonce):
		st.m.auth.WithLabelValues("stale").Inc()
		r.challenge(domain, true, noteStaleNonce)
	case errors.Is(err, errBadCredentials):
		st.m.auth.WithLabelValues("malformed").Inc()
		p.log.Debug("malformed credentials", "src", r.ev.Source, "call_id", r.ev.CallID, "err", err)
		r.respond(400, "Bad Request", noteAuthBad)
		r.finish()
	default:
		// Unknown user and wrong password look alike from outside.
		st.m.auth.WithLabelValues("failed").Inc()
		p.log.Info("digest authentication failed", "user", c.username, "domain", domain, "src", r.ev.Source, "call_id", r.ev.CallID, "err", err)
		r.respond(403, "Forbidden", noteAuthFailed)
		r.finish()
	}
	return nil, true
}

// challenge answers 401 (REGISTER) or 407 with a challenge per algorithm.
func (r *request) challenge(realm string, stale bool, note string) {
	_, hdr, code, reason := authHeaders(r.req.Method == sip.REGISTER)
	res := sip.NewResponseFromRequest(r.req, code, reason, nil)
	n := r.p.cfg.Subscribers.state.nonces
	now := time.Now()
	for _, alg := range []string{algSHA256, algMD5} {
		res.AppendHeader(sip.NewHeader(hdr, challenge(realm, n.issue(realm, now), alg, stale)))
	}
	r.respondWith(res, note)
	r.finish()
}

// respondWith sends a final response the proxy built itself.
func (r *request) respondWith(res *sip.Response, note string) {
	now := time.Now()
	if err := r.tx.Respond(res); err != nil {
		r.p.log.Debug("send response", "call_id", r.ev.CallID, "code", res.StatusCode, "err", err)
	}
	r.final = true
	final(&r.ev, res, now, note)
}
