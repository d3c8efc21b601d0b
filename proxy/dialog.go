package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/schema"
)

// Reasons the proxy ends an established call itself; they are the Note of
// the BYE events it writes, which the correlator turns into the CDR's
// hangup reason.
const (
	noteCreditExhausted   = schema.EndCreditExhausted
	noteCreditUnavailable = schema.EndCreditUnavailable
	noteDialogTimeout     = schema.EndNoBye
)

// leg is one party of an established call, as the proxy reaches it with a
// request of its own.
type leg struct {
	target    sip.Uri  // Request-URI: the party's Contact
	routes    []string // Route values, nearest first
	dest      string   // host:port of the first hop
	transport string   // as sipgo spells it
	via       *listener
	from      *sip.FromHeader // the other party, with its tag
	to        *sip.ToHeader   // this party, with its tag
}

// dialog is an established call the proxy can end: it knows both legs,
// the CSeq each side has used and what credit the call was given.
type dialog struct {
	callID               string
	callerTag, calleeTag string
	account, trunk       string
	answered             time.Time

	caller, callee leg

	mu sync.Mutex
	// callerSeq and calleeSeq are the highest CSeq each side has sent; a
	// BYE of the proxy's goes out above the other side's.
	callerSeq, calleeSeq uint32
	timeout              *time.Timer
	credit               *creditSession
	// slot gives back the call's place under its account's limit;
	// slotKeys are the counters it holds a place in.
	slot     func()
	slotKeys []string

	// stored is the write-through of the call to Config.Dialogs.
	stored storedState
}

// storedState orders the writes of one call's record: one at a time, each
// of the latest state, and none after its delete.
type storedState struct {
	mu      sync.Mutex
	dirty   bool // the record changed since it was last written
	ended   bool // the call is over: delete the record
	written bool // a write was made (or is under way) since the last delete
	running bool // a writer goroutine is at work
}

type dialogKey struct{ callID, tag string }

// dialogTable holds the established calls, under both tags: an in-dialog
// request carries the tag of whichever side sent it in From.
type dialogTable struct {
	mu sync.Mutex
	m  map[dialogKey]*dialog

	active        prometheus.Gauge
	hangups       *prometheus.CounterVec
	credit        *prometheus.CounterVec
	restored      prometheus.Counter
	restoreFailed prometheus.Counter
	storeErrors   *prometheus.CounterVec

	// writes are the writers of records to Config.Dialogs under way;
	// none starts once closing.
	wmu     sync.Mutex
	closing bool
	writes  sync.WaitGroup
}

func newDialogTable(reg prometheus.Registerer) (*dialogTable, error) {
	t := &dialogTable{
		m: map[dialogKey]*dialog{},
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carrier_sip_active_calls",
			Help: "Established calls (answered INVITEs) the proxy is tracking.",
		}),
		hangups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_sip_forced_hangups_total",
			Help: "Calls the proxy ended with a BYE to both sides, by reason (credit_exhausted, credit_unavailable, no_bye for the dialog timeout).",
		}, []string{"reason"}),
		credit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_sip_credit_requests_total",
			Help: "Credit-control requests the proxy sent, by action (start, extend, release) and result (granted, insufficient, no_rate, unknown_account, released, error, no_answer).",
		}, []string{"action", "result"}),
		restored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_sip_restored_calls_total",
			Help: "Established calls a starting proxy took back from the dialogs store (calls up across a restart).",
		}),
		restoreFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_sip_restore_failed_total",
			Help: "Stored calls a starting proxy could not take back (no listener of their transport, an unreadable record); they are forgotten.",
		}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_sip_dialog_store_errors_total",
			Help: "Writes of established calls to the dialogs store that failed, by op (put, delete); such a call may not survive a restart, or be restored after it ended.",
		}, []string{"op"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{t.active, t.hangups, t.credit, t.restored, t.restoreFailed, t.storeErrors} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if errors.As(err, &are) {
					return nil, fmt.Errorf("register dialog metrics (one proxy per registry): %v: %w", err, ErrInvalidConfig)
				}
				return nil, fmt.Errorf("register dialog metrics: %w", err)
			}
		}
	}
	return t, nil
}

// add tracks d; false when the call is tracked already (a 2xx from a
// second fork of it).
func (t *dialogTable) add(d *dialog) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	k1, k2 := dialogKey{d.callID, d.callerTag}, dialogKey{d.callID, d.calleeTag}
	if _, dup := t.m[k1]; dup {
		return false
	}
	t.m[k1], t.m[k2] = d, d
	t.active.Inc()
	return true
}

// find is the dialog an in-dialog request belongs to, and whether its
// sender is the caller.
func (t *dialogTable) find(callID, fromTag string) (*dialog, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.m[dialogKey{callID, fromTag}]
	if d == nil {
		return nil, false
	}
	return d, fromTag == d.callerTag
}

// remove takes d out; false when it was gone already (ended by a BYE of a
// party or by the proxy).
func (t *dialogTable) remove(d *dialog) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	k1 := dialogKey{d.callID, d.callerTag}
	if t.m[k1] != d {
		return false
	}
	delete(t.m, k1)
	delete(t.m, dialogKey{d.callID, d.calleeTag})
	t.active.Dec()
	return true
}

// all is every dialog, for shutdown.
func (t *dialogTable) all() []*dialog {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*dialog, 0, len(t.m)/2)
	for k, d := range t.m {
		if k.tag == d.callerTag {
			out = append(out, d)
		}
	}
	return out
}

// established starts tracking the call an initial INVITE set up: out is
// the INVITE as relayed to h, res the 2xx that answered it at answered.
func (r *request) established(out *sip.Request, res *sip.Response, h *hop, answered time.Time) {
	p := r.p
	to := res.To()
	if to == nil || r.req.From() == nil {
		return
	}
	calleeTag, _ := to.Params.Get("tag")
	if calleeTag == "" || r.ev.FromTag == "" {
		return
	}
	d := &dialog{
		callID:    r.ev.CallID,
		callerTag: r.ev.FromTag,
		calleeTag: calleeTag,
		account:   r.ev.Account,
		trunk:     r.ev.Trunk,
		answered:  answered,
		callerSeq: out.CSeq().SeqNo,
	}
	d.callee = p.calleeLeg(out, res, h)
	d.caller = p.callerLeg(r, res)
	d.slot, r.slot = r.slot, nil
	d.slotKeys = r.slotKeys
	if !p.dialogs.add(d) {
		// A second fork's 2xx: the call holds its slot already.
		if d.slot != nil {
			d.slot()
		}
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := p.cfg.DialogTimeout; t > 0 {
		d.timeout = time.AfterFunc(t, func() { p.hangUp(d, noteDialogTimeout) })
	}
	if r.credit != nil {
		d.credit = r.credit
		d.credit.answered(p, d)
	}
	p.storeDialog(d)
}

// calleeLeg is how the proxy reaches the callee of a call it relayed to h:
// at the 2xx's Contact through the Record-Route entries above ours,
// reversed (RFC 3261 12.1.2), as the caller's own requests go.
func (p *Proxy) calleeLeg(out *sip.Request, res *sip.Response, h *hop) leg {
	var above []string
	var next *sip.Uri
	for _, hdr := range res.Headers() {
		rr, ok := hdr.(*sip.RecordRouteHeader)
		if !ok {
			continue
		}
		if p.own(&rr.Address) != nil {
			break
		}
		above = append(above, rr.Value())
		next = &rr.Address
	}
	l := leg{target: out.Recipient, transport: h.transport, via: h.out, from: out.From(), to: res.To()}
	if c := res.Contact(); c != nil {
		l.target = c.Address
	}
	for i := len(above) - 1; i >= 0; i-- {
		l.routes = append(l.routes, above[i])
	}
	if next == nil {
		next = &l.target
	}
	l.dest = uriDest(next, h.transport)
	if h.out.reusesFlows() {
		// Over TLS only the connection the INVITE went on reaches it.
		l.dest = h.dest
	}
	return l
}

// callerLeg is how the proxy reaches the caller: at the INVITE's Contact
// through the Record-Route entries below ours, in order; with none, at the
// address the INVITE came from (received/rport), which also reaches a
// caller behind NAT.
func (p *Proxy) callerLeg(r *request, res *sip.Response) leg {
	var below []string
	var first *sip.Uri
	ours := false
	for _, hdr := range res.Headers() {
		rr, ok := hdr.(*sip.RecordRouteHeader)
		if !ok {
			continue
		}
		if p.own(&rr.Address) != nil {
			ours = true
			continue
		}
		if ours {
			if first == nil {
				first = &rr.Address
			}
			below = append(below, rr.Value())
		}
	}
	l := leg{target: r.req.Recipient, transport: strings.ToUpper(r.req.Transport()), via: r.in, routes: below, dest: r.up}
	if c := r.req.Contact(); c != nil {
		l.target = c.Address
	}
	// Over TLS the connection the INVITE came on (r.up) is the way back,
	// whoever record-routed below us (tls.go).
	if first != nil && !r.in.reusesFlows() {
		l.dest = uriDest(first, l.transport)
	}
	if to := res.To(); to != nil {
		l.from = &sip.FromHeader{DisplayName: to.DisplayName, Address: to.Address, Params: to.Params.Clone()}
	}
	if f := r.req.From(); f != nil {
		l.to = &sip.ToHeader{DisplayName: f.DisplayName, Address: f.Address, Params: f.Params.Clone()}
	}
	return l
}

// uriDest is the host:port a request to u goes to over transport.
func uriDest(u *sip.Uri, transport string) string {
	port := u.Port
	if port == 0 {
		port = 5060
		if strings.EqualFold(transport, "TLS") {
			port = 5061
		}
	}
	return uriHost(strings.Trim(u.Host, "[]")) + ":" + strconv.Itoa(port)
}

// request builds a request of the proxy's own to the party of l.
func (p *Proxy) request(l *leg, method sip.RequestMethod, callID string, seq uint32) *sip.Request {
	req := sip.NewRequest(method, l.target)
	req.AppendHeader(&sip.ViaHeader{
		ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: l.transport,
		Host: l.via.viaHost, Port: l.via.port,
		Params: sip.HeaderParams{{K: "branch", V: p.newBranch()}},
	})
	for _, r := range l.routes {
		req.AppendHeader(sip.NewHeader("Route", r))
	}
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(l.from)
	req.AppendHeader(l.to)
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	req.SetTransport(l.transport)
	req.SetDestination(l.dest)
	if l.transport == "UDP" {
		req.Laddr = l.via.laddr
	}
	return req
}

// inDialog notes an in-dialog request the proxy admitted: its CSeq, and,
// for a BYE, the end of the call (whether or not the BYE gets a 200).
func (p *Proxy) inDialog(req *sip.Request, ev *schema.Transaction) {
	if req.Method == sip.ACK || req.Method == sip.CANCEL {
		return
	}
	d, fromCaller := p.dialogs.find(ev.CallID, ev.FromTag)
	if d == nil {
		return
	}
	if req.Method == sip.BYE {
		if p.dialogs.remove(d) {
			d.stop()
			p.dialogEnded(d)
		}
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	seq := &d.calleeSeq
	if fromCaller {
		seq = &d.callerSeq
	}
	if ev.CSeq > *seq {
		// A restarted proxy's BYE must go above it, or the party
		// refuses it (RFC 3261 12.2.2).
		*seq = ev.CSeq
		p.storeDialog(d)
	}
}

// stop ends d's timers; d is out of the table.
func (d *dialog) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timeout != nil {
		d.timeout.Stop()
	}
	if d.slot != nil {
		d.slot()
	}
	if d.credit != nil {
		d.credit.stop()
	}
}

// hangUp ends an established call: a BYE to each side, each written to the
// log as a transaction with the reason in its Note. Both events carry the
// same request time, so whichever the correlator reads first gives the
// same CDR.
func (p *Proxy) hangUp(d *dialog, reason string) {
	if !p.dialogs.remove(d) {
		return // a party's BYE, or another reason, ended it first
	}
	d.stop()
	if !p.enter() {
		// Shutting down: the transports are going. The call stays
		// stored, for the next start to end it.
		return
	}
	defer p.leave()
	p.dialogEnded(d)
	p.dialogs.hangups.WithLabelValues(reason).Inc()
	p.log.Info("ending call", "call_id", d.callID, "account", d.account, "reason", reason,
		"talk_time", time.Since(d.answered).Round(time.Millisecond))
	d.mu.Lock()
	toCallee := p.request(&d.callee, sip.BYE, d.callID, d.callerSeq+1)
	toCaller := p.request(&d.caller, sip.BYE, d.callID, d.calleeSeq+1)
	d.mu.Unlock()
	at := time.Now()
	var wg sync.WaitGroup
	for _, b := range []struct {
		req *sip.Request
		l   *leg
	}{{toCallee, &d.callee}, {toCaller, &d.caller}} {
		wg.Go(func() { p.sendBye(d, b.req, b.l, reason, at) })
	}
	wg.Wait()
}

// sendBye sends one BYE of the proxy's, waits for its final response and
// writes its event.
func (p *Proxy) sendBye(d *dialog, bye *sip.Request, l *leg, reason string, at time.Time) {
	bye.SetBody(nil)
	ev := newTransaction(bye, l.via.local, at)
	ev.Source, ev.Destination = l.via.local, l.dest
	ev.Account, ev.Trunk, ev.Note = d.account, d.trunk, reason
	code, text := 408, "Request Timeout"
	tx, err := p.txl.Request(p.runCtx, bye)
	if err != nil {
		p.sendFailed("send BYE", d.callID, err)
		code, text = 503, "Service Unavailable"
	} else {
		code, text = p.awaitFinal(tx, code, text)
		tx.Terminate()
	}
	ev.Status, ev.Reason, ev.FinalAt = code, text, schema.Millis(time.Now())
	p.publish(&ev, time.Now())
}

// awaitFinal waits for the final response of a client transaction of the
// proxy's own; def when none comes in time.
func (p *Proxy) awaitFinal(tx sip.ClientTransaction, defCode int, defReason string) (int, string) {
	timer := time.NewTimer(p.cfg.Timers.Response)
	defer timer.Stop()
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode >= 200 {
				return res.StatusCode, res.Reason
			}
		case <-tx.Done():
			return defCode, defReason
		case <-timer.C:
			return defCode, defReason
		case <-p.stop:
			return 503, "Service Unavailable"
		}
	}
}

// forgetDialogs stops the timers of every tracked call when the proxy
// stops: the calls go on end to end. Their records stay in
// Config.Dialogs, for a restarted proxy to take them back; the writes
// under way finish first. Without a store a restarted proxy no longer
// knows them (the correlator's maximum duration still closes their CDRs).
func (p *Proxy) forgetDialogs() {
	for _, d := range p.dialogs.all() {
		if p.dialogs.remove(d) {
			d.stop()
		}
	}
	p.dialogs.wmu.Lock()
	p.dialogs.closing = true
	p.dialogs.wmu.Unlock()
	p.dialogs.writes.Wait()
}

// storeDialog notes that d's record changed; a writer stores its latest
// state soon. It never blocks on the store, so it may run on the SIP path
// and under d.mu or d.credit's lock.
func (p *Proxy) storeDialog(d *dialog) {
	if p.cfg.Dialogs == nil {
		return
	}
	s := &d.stored
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	s.dirty = true
	p.startWriter(d)
}

// dialogEnded deletes d's record once the writes before are done.
func (p *Proxy) dialogEnded(d *dialog) {
	if p.cfg.Dialogs == nil {
		return
	}
	s := &d.stored
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ended, s.dirty = true, false
	if s.written {
		p.startWriter(d)
	}
}

// startWriter starts d's writer unless it runs; d.stored.mu is held.
func (p *Proxy) startWriter(d *dialog) {
	s := &d.stored
	if s.running {
		return
	}
	t := p.dialogs
	t.wmu.Lock()
	defer t.wmu.Unlock()
	if t.closing {
		return
	}
	s.running = true
	t.writes.Add(1)
	go func() {
		defer t.writes.Done()
		p.writeDialog(d)
	}()
}

// writeDialog is d's writer: it stores the latest record while the call
// changes, and deletes it, last, when the call ends. One writer per call
// at a time is what keeps a record from being written after its delete.
func (p *Proxy) writeDialog(d *dialog) {
	s := &d.stored
	for {
		s.mu.Lock()
		var put bool
		switch {
		case s.ended && s.written:
			s.written = false
		case !s.ended && s.dirty:
			s.dirty, s.written, put = false, true, true
		default:
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		// Not cancelled by the proxy's stop: a write under way finishes,
		// so that the next start finds the call as it was.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(p.runCtx), dialogStoreTimeout)
		op, err := "delete", error(nil)
		if put {
			op, err = "put", p.cfg.Dialogs.Put(ctx, d.record())
		} else {
			err = p.cfg.Dialogs.Delete(ctx, d.callID, d.callerTag)
		}
		cancel()
		if err != nil {
			p.dialogs.storeErrors.WithLabelValues(op).Inc()
			p.log.Warn("stored call not updated", "op", op, "call_id", d.callID, "account", d.account, "err", err)
		}
	}
}
