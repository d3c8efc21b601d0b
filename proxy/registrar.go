package proxy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/schema"
)

// Registrations keeps the registrar's bindings, one record per
// subscriber id. KVRegistrations is the JetStream KV one, shared by every
// proxy of the network.
type Registrations interface {
	// Lookup is the subscriber's current bindings (none: an empty
	// registration), expired ones left out.
	Lookup(ctx context.Context, subscriber string) (schema.Registration, error)
	// Update applies change to the subscriber's bindings (expired ones
	// already dropped) and stores the result atomically: a concurrent
	// change by another proxy makes Update read again and re-apply. An
	// error from change is returned and nothing is stored.
	Update(ctx context.Context, subscriber string, change func(*schema.Registration) error) (schema.Registration, error)
}

// ErrRegistrationConflict: the bindings kept changing under Update.
var ErrRegistrationConflict = errors.New("registration changed concurrently too often")

// KVRegistrations are bindings in the JetStream KV bucket
// schema.BucketRegistrations, one JSON value per subscriber id.
type KVRegistrations struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// NewKVRegistrations keeps bindings in kv.
func NewKVRegistrations(kv jetstream.KeyValue) *KVRegistrations {
	return &KVRegistrations{kv: kv, now: time.Now}
}

// OpenRegistrations opens the registrations bucket, creating it with
// single-node defaults when it does not exist yet (an existing bucket is
// used as it is, so a cluster's replication is never changed).
func OpenRegistrations(ctx context.Context, js jetstream.JetStream) (*KVRegistrations, error) {
	kv, err := js.KeyValue(ctx, schema.BucketRegistrations)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, schema.RegistrationsBucket(schema.DefaultStreamOptions()))
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, schema.BucketRegistrations)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open registrations bucket %s: %w", schema.BucketRegistrations, err)
	}
	return NewKVRegistrations(kv), nil
}

func (s *KVRegistrations) read(ctx context.Context, id string) (schema.Registration, uint64, error) {
	reg := schema.Registration{Subscriber: id}
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return reg, 0, nil
	}
	if err != nil {
		return reg, 0, fmt.Errorf("read registration %s: %w", id, err)
	}
	if err := json.Unmarshal(e.Value(), &reg); err != nil {
		return schema.Registration{Subscriber: id}, e.Revision(), fmt.Errorf("decode registration %s: %w", id, err)
	}
	reg.Bindings = live(reg.Bindings, s.now())
	return reg, e.Revision(), nil
}

// live drops the bindings expired at now.
func live(bs []schema.Binding, now time.Time) []schema.Binding {
	ms := schema.Millis(now)
	return slices.DeleteFunc(bs, func(b schema.Binding) bool { return b.ExpiresAt <= ms })
}

// Lookup implements Registrations.
func (s *KVRegistrations) Lookup(ctx context.Context, id string) (schema.Registration, error) {
	reg, _, err := s.read(ctx, id)
	return reg, err
}

// Update implements Registrations.
func (s *KVRegistrations) Update(ctx context.Context, id string, change func(*schema.Registration) error) (schema.Registration, error) {
	for range 8 {
		reg, rev, err := s.read(ctx, id)
		if err != nil && rev == 0 {
			return reg, err
		}
		// An undecodable value is replaced rather than blocking the user.
		if err := change(&reg); err != nil {
			return reg, err
		}
		reg.Subscriber = id
		switch {
		case len(reg.Bindings) == 0 && rev == 0:
			return reg, nil
		case len(reg.Bindings) == 0:
			err = s.kv.Delete(ctx, id, jetstream.LastRevision(rev))
		default:
			data, merr := json.Marshal(reg)
			if merr != nil {
				return reg, fmt.Errorf("encode registration %s: %w", id, merr)
			}
			if rev == 0 {
				_, err = s.kv.Create(ctx, id, data)
			} else {
				_, err = s.kv.Update(ctx, id, data, rev)
			}
		}
		if err == nil {
			return reg, nil
		}
		var apiErr *jetstream.APIError
		if !errors.Is(err, jetstream.ErrKeyExists) && !(errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence) {
			return reg, fmt.Errorf("store registration %s: %w", id, err)
		}
	}
	return schema.Registration{}, fmt.Errorf("registration %s: %w", id, ErrRegistrationConflict)
}

// registrarTimeout bounds one registrar operation on the bucket.
const registrarTimeout = 5 * time.Second

var (
	errTooManyContacts = errors.New("too many contacts")
	errBadRegister     = errors.New("bad REGISTER")
)

const noteBadRegister = "bad_register"

// register is the registrar (RFC 3261 10.3) for a REGISTER to domain.
func (r *request) register(t *subscriberTable, domain string) {
	p := r.p
	cfg := &p.cfg.Subscribers
	sub, done := r.authenticate(t, domain)
	if done {
		cfg.state.m.registers.WithLabelValues(codeLabel(r.ev.Status)).Inc()
		return
	}
	r.ev.Account, r.ev.Subscriber = sub.account, sub.id
	defer func() { cfg.state.m.registers.WithLabelValues(codeLabel(r.ev.Status)).Inc() }()
	if to := r.req.To(); to == nil || to.Address.User != sub.user {
		r.respond(403, "Forbidden", noteAuthMismatch)
		r.finish()
		return
	}
	now := time.Now()
	change, minExpires, err := r.bindingChange(sub, now)
	if err != nil {
		p.log.Debug("registrar: bad REGISTER", "subscriber", sub.id, "call_id", r.ev.CallID, "err", err)
		r.respond(400, "Bad Request", noteBadRegister)
		r.finish()
		return
	}
	if minExpires {
		res := sip.NewResponseFromRequest(r.req, 423, "Interval Too Brief", nil)
		res.AppendHeader(sip.NewHeader("Min-Expires", strconv.Itoa(int(cfg.MinExpires/time.Second))))
		r.respondWith(res, noteRegistrar)
		r.finish()
		return
	}
	ctx, cancel := context.WithTimeout(p.runCtx, registrarTimeout)
	defer cancel()
	var reg schema.Registration
	if change == nil {
		reg, err = cfg.Registrations.Lookup(ctx, sub.id)
	} else {
		reg, err = cfg.Registrations.Update(ctx, sub.id, change)
	}
	switch {
	case errors.Is(err, errTooManyContacts):
		res := sip.NewResponseFromRequest(r.req, 403, "Too Many Contacts", nil)
		r.respondWith(res, "max_contacts")
		r.finish()
		return
	case err != nil:
		p.log.Warn("registrar: bindings not stored", "subscriber", sub.id, "err", err)
		r.respond(500, "Server Internal Error", noteRegistrar)
		r.finish()
		return
	}
	res := sip.NewResponseFromRequest(r.req, 200, "OK", nil)
	ms := schema.Millis(now)
	for _, b := range reg.Bindings {
		var u sip.Uri
		if sip.ParseUri(b.Contact, &u) != nil {
			continue
		}
		left := max((b.ExpiresAt-ms+999)/1000, 1)
		res.AppendHeader(&sip.ContactHeader{Address: u, Params: sip.HeaderParams{{K: "expires", V: strconv.FormatInt(left, 10)}}})
	}
	res.AppendHeader(sip.NewHeader("Date", now.UTC().Format(time.RFC1123)))
	r.respondWith(res, noteRegistrar)
	r.finish()
}

// bindingChange reads the REGISTER's contacts into a change of the
// bindings; nil for a query (no Contact). minExpires reports a contact
// asking for less than MinExpires (423).
func (r *request) bindingChange(sub *subscriberRef, now time.Time) (change func(*schema.Registration) error, minExpires bool, err error) {
	cfg := &r.p.cfg.Subscribers
	req := r.req
	var contacts []*sip.ContactHeader
	for _, h := range req.GetHeaders("Contact") {
		if c, ok := h.(*sip.ContactHeader); ok {
			contacts = append(contacts, c)
		}
	}
	if len(contacts) == 0 {
		return nil, false, nil
	}
	headerExpires := -1
	if h := req.GetHeader("Expires"); h != nil {
		if headerExpires, err = strconv.Atoi(strings.TrimSpace(h.Value())); err != nil || headerExpires < 0 {
			return nil, false, fmt.Errorf("Expires %q: %w", h.Value(), errBadRegister)
		}
	}
	callID, cseq := r.ev.CallID, r.ev.CSeq
	if contacts[0].Address.Wildcard {
		// Contact: * removes every binding, and only with Expires: 0.
		if len(contacts) > 1 || headerExpires != 0 {
			return nil, false, fmt.Errorf("Contact * needs Expires: 0 and no other contact: %w", errBadRegister)
		}
		return func(reg *schema.Registration) error { reg.Bindings = nil; return nil }, false, nil
	}
	type want struct {
		b       schema.Binding
		expires time.Duration
	}
	wants := make([]want, 0, len(contacts))
	received, transport := req.Source(), lowerTransport(req.Transport())
	for _, c := range contacts {
		if c.Address.Wildcard {
			return nil, false, fmt.Errorf("Contact * among other contacts: %w", errBadRegister)
		}
		secs := headerExpires
		if v, ok := c.Params.Get("expires"); ok {
			if secs, err = strconv.Atoi(v); err != nil || secs < 0 {
				return nil, false, fmt.Errorf("contact expires %q: %w", v, errBadRegister)
			}
		}
		exp := time.Duration(secs) * time.Second
		switch {
		case secs < 0:
			exp = cfg.DefaultExpires
		case secs == 0:
		case exp < cfg.MinExpires:
			return nil, true, nil
		case exp > cfg.MaxExpires:
			exp = cfg.MaxExpires
		}
		b := schema.Binding{Contact: c.Address.String(), Transport: transport, CallID: callID, CSeq: cseq,
			Node: r.p.cfg.Node, UpdatedAt: schema.Millis(now), ExpiresAt: schema.Millis(now.Add(exp))}
		if natted(req, &c.Address) {
			b.Received = received
		}
		if q, ok := c.Params.Get("q"); ok {
			if f, err := strconv.ParseFloat(q, 64); err == nil && f >= 0 && f <= 1 {
				b.Q = int(f*1000 + 0.5)
			}
		}
		wants = append(wants, want{b: b, expires: exp})
	}
	return func(reg *schema.Registration) error {
		reg.AOR = sub.user + "@" + sub.domain
		for _, w := range wants {
			i := slices.IndexFunc(reg.Bindings, func(b schema.Binding) bool { return sameContact(b.Contact, w.b.Contact) })
			if i >= 0 && reg.Bindings[i].CallID == w.b.CallID && reg.Bindings[i].CSeq > w.b.CSeq {
				continue // an older REGISTER of the same phone, overtaken (RFC 3261 10.3 step 7)
			}
			switch {
			case w.expires == 0 && i >= 0:
				reg.Bindings = slices.Delete(reg.Bindings, i, i+1)
			case w.expires == 0:
			case i >= 0:
				reg.Bindings[i] = w.b
			default:
				reg.Bindings = append(reg.Bindings, w.b)
			}
		}
		if len(reg.Bindings) > sub.maxContacts {
			return fmt.Errorf("%d contacts, at most %d: %w", len(reg.Bindings), sub.maxContacts, errTooManyContacts)
		}
		return nil
	}, false, nil
}

// natted reports whether responses and requests to a phone must go to
// the address its REGISTER came from rather than to its Contact: it asked
// for rport (RFC 3581), or its Contact names another address than the
// source (a private address behind NAT, a port the NAT rewrote).
func natted(req *sip.Request, contact *sip.Uri) bool {
	if via := req.Via(); via != nil && via.Params.Has("rport") {
		return true
	}
	host, port := splitSource(req.Source())
	cport := contact.Port
	if cport == 0 {
		cport = 5060
	}
	return strings.Trim(contact.Host, "[]") != host || strconv.Itoa(cport) != port
}

// sameContact compares two contact URIs as the registrar does: scheme,
// user, host and port (RFC 3261 19.1.4 in spirit; parameters aside).
func sameContact(a, b string) bool {
	if a == b {
		return true
	}
	var ua, ub sip.Uri
	if sip.ParseUri(a, &ua) != nil || sip.ParseUri(b, &ub) != nil {
		return false
	}
	return ua.Scheme == ub.Scheme && ua.User == ub.User && strings.EqualFold(ua.Host, ub.Host) && cmp.Or(ua.Port, 5060) == cmp.Or(ub.Port, 5060)
}

// deliver sends an initial request for a subscriber of ours, or for a
// DID a subscriber owns, to the subscriber's contacts and returns true;
// false when it is for neither, for the routes to handle. A subscriber
// without a live binding gets 480.
//
// With several bindings an INVITE forks (RFC 3261 16.6): it goes to
// every contact at once, the first to answer takes the call and the
// others are cancelled; the caller sees every contact's ringing. Other
// requests go to the best contact (highest q, then the most recently
// registered). A call to a DID keeps the DID as the Request-URI user.
func (r *request) deliver() bool {
	p := r.p
	if r.req.Method == sip.REGISTER {
		return false
	}
	t := &p.table.Load().subs
	var sub *subscriberRef
	did := r.call.did
	if did != nil && did.subscriber != "" {
		sub = t.byID[did.subscriber]
	} else if did == nil && t.enabled() {
		if domain, ok := p.domainOf(t, &r.req.Recipient); ok {
			sub = t.lookup(r.req.Recipient.User, domain)
		}
	}
	if sub == nil {
		if did != nil && did.subscriber != "" {
			// Provisioned, but not in this snapshot's subscribers.
			r.respond(480, "Temporarily Unavailable", noteNotReachable)
			r.finish()
			return true
		}
		return false
	}
	reg := p.cfg.Subscribers.Registrations
	if reg == nil {
		r.respond(480, "Temporarily Unavailable", noteNotReachable)
		r.finish()
		return true
	}
	ctx, cancel := context.WithTimeout(p.runCtx, registrarTimeout)
	bindings, err := reg.Lookup(ctx, sub.id)
	cancel()
	if err != nil {
		p.log.Warn("registrar: bindings not read", "subscriber", sub.id, "err", err)
		r.respond(500, "Server Internal Error", noteRegistrar)
		r.finish()
		return true
	}
	slices.SortStableFunc(bindings.Bindings, func(a, b schema.Binding) int {
		return cmp.Or(cmp.Compare(b.Q, a.Q), cmp.Compare(b.UpdatedAt, a.UpdatedAt))
	})
	invite := r.req.IsInvite()
	var targets []forkTarget
	for _, b := range bindings.Bindings {
		h, err := p.contactHop(r.in, b)
		if err != nil {
			p.log.Debug("binding skipped", "subscriber", sub.id, "contact", b.Contact, "err", err)
			continue
		}
		if did != nil {
			h.uri.User = did.number
		}
		targets = append(targets, forkTarget{p.forward(r.req, &h, invite), &h})
		if !invite {
			break
		}
	}
	if len(targets) == 0 {
		r.respond(480, "Temporarily Unavailable", noteNotReachable)
		r.finish()
		return true
	}
	r.relayAll(targets)
	return true
}

// contactHop is the hop to a binding: the Contact as Request-URI, sent to
// the address the REGISTER came from when the phone is behind NAT.
func (p *Proxy) contactHop(in *listener, b schema.Binding) (hop, error) {
	var u sip.Uri
	if err := sip.ParseUri(b.Contact, &u); err != nil {
		return hop{}, err
	}
	transport := strings.ToUpper(cmp.Or(b.Transport, "udp"))
	if b.Received == "" {
		if tp, ok := u.UriParams.Get("transport"); ok {
			transport = strings.ToUpper(tp)
		}
	}
	if transport != "UDP" && transport != "TCP" && transport != "TLS" {
		return hop{}, errUnsupportedTransport
	}
	h := hop{in: in, uri: u, transport: transport, out: p.listenerFor(transport)}
	if h.out == nil {
		return hop{}, errNoListener
	}
	h.dest = b.Received
	if h.dest == "" {
		h.dest = net.JoinHostPort(strings.Trim(u.Host, "[]"), strconv.Itoa(cmp.Or(u.Port, 5060)))
	}
	if p.own(&u) != nil {
		return hop{}, errLoop
	}
	if transport == "TLS" {
		// Only on the connection the REGISTER came over (tls.go): on
		// another proxy of the network, or closed, the binding is no use.
		if h.out = p.flowFrom(h.dest); h.out == nil {
			return hop{}, fmt.Errorf("binding %s: %w", h.dest, errNoFlow)
		}
	}
	return h, nil
}
