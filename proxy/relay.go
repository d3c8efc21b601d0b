package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
)

// request is one server transaction while the proxy handles it.
type request struct {
	p   *Proxy
	req *sip.Request
	tx  *sip.ServerTx
	in  *listener
	up  string // where responses go
	ev  schema.Transaction

	// final: a final response went upstream (sent by us or by sipgo).
	final bool
	// cancel is shared with sipgo's CANCEL callback. It is apart from the
	// request so that the server transaction, which keeps the callback for
	// as long as it lingers, does not keep the whole request alive.
	cancel *cancelWatch
	// credit is the call's credit while credit control holds it.
	credit *creditSession
	// slot gives back the call's place under its account's concurrent
	// calls limit; the dialog takes it over when the call is answered.
	slot func()
	// slotKeys are the callCounter keys slot holds places under (for a
	// dialog restored after a restart, which takes them again).
	slotKeys []string
	// gatewaySlot is the place under a gateway's concurrent-calls limit
	// admitGateway took for the attempt about to start (gatewayKeys its
	// key); the attempt's branch takes it over.
	gatewaySlot func()
	gatewayKeys []string
	// call is whose call an initial INVITE is and whether it goes to a
	// DID (dialplan.go).
	call callRouting
}

// cancelWatch receives the CANCEL that sipgo matched to an INVITE.
type cancelWatch struct {
	// done is set under the server transaction's lock before sipgo sends
	// 487: a response relayed after it never reaches the caller.
	done atomic.Bool
	ch   chan cancelSignal
}

// cancelSignal is a CANCEL sipgo matched to the INVITE and answered.
type cancelSignal struct {
	req *sip.Request
	at  time.Time
}

// onCancel is sipgo's CANCEL callback; it runs under the INVITE server
// transaction's lock and must not block.
func (w *cancelWatch) onCancel(c *sip.Request) {
	// Queued before the flag is set: whoever sees the flag finds the signal.
	select {
	case w.ch <- cancelSignal{req: c, at: time.Now()}:
	default:
	}
	w.done.Store(true)
}

// cancelledBy records that sipgo answered the caller's CANCEL and sent
// 487 upstream; whatever was relayed after that was dropped.
func (r *request) cancelledBy(sig cancelSignal) *cancelSignal {
	r.final = true
	r.ev.Status, r.ev.Reason, r.ev.FinalAt, r.ev.ToTag = 487, "Request Terminated", schema.Millis(sig.at), ""
	r.ev.Q850 = 0
	return &sig
}

// cancelled reports whether sipgo answered a CANCEL of this INVITE.
func (r *request) cancelled() bool { return r.cancel != nil && r.cancel.done.Load() }

// onRequest is sipgo's request callback. The transaction layer runs it on
// a goroutine of its own for every new server transaction, so it may wait
// for the whole transaction.
func (p *Proxy) onRequest(req *sip.Request, tx *sip.ServerTx) {
	if !p.enter() {
		tx.Terminate()
		return
	}
	defer p.leave()
	now := time.Now()
	in, local := p.inbound(req, tx)
	r := &request{p: p, req: req, tx: tx, in: in, up: upstream(req)}
	r.ev = newTransaction(req, local, now)

	if err := incomplete(req); err != nil {
		// Only reachable for messages that skipped the screen (those on
		// connections sipgo dialled itself).
		p.m.malformed.Inc()
		if req.IsAck() {
			tx.Terminate()
			return
		}
		r.respond(400, "Bad Request", noteMalformed)
		r.finish()
		return
	}
	initial := !r.ev.InDialog
	switch req.Method {
	case sip.ACK:
		r.ack()
		return
	case sip.CANCEL:
		// A CANCEL matching an INVITE never gets here: sipgo answers it and
		// calls onCancel on the INVITE's transaction.
		r.respond(481, "Call/Transaction Does Not Exist", noteNoTransaction)
		r.finish()
		return
	}
	// Inside a dialog the Route set the proxy record-routed leads the way;
	// a new request must come from a trunk, which names the customer. (An
	// in-dialog request may come from the callee's side: its source says
	// nothing about who pays.)
	if initial {
		trunk := p.table.Load().lookup(r.ev.Source, req.Transport())
		if trunk != nil {
			r.ev.Account, r.ev.Trunk = trunk.account, trunk.id
		}
		// The registrar, and digest auth for sources no trunk holds.
		if r.subscribers(&trunk) {
			return
		}
		// The trunk's dial plan, and DIDs (dialplan.go).
		if req.IsInvite() {
			if req, trunk = r.steer(trunk); req == nil {
				return
			}
		}
		if !r.admitted(trunk) {
			return
		}
	}
	if mf := req.MaxForwards(); mf != nil && *mf == 0 {
		r.respond(483, "Too Many Hops", noteMaxForwards)
		r.finish()
		return
	}
	if req.IsInvite() {
		// At once, so that the caller stops retransmitting (RFC 3261 16.2).
		if err := tx.Respond(sip.NewResponseFromRequest(req, 100, "Trying", nil)); err != nil {
			p.log.Debug("send 100 Trying", "call_id", r.ev.CallID, "err", err)
		}
	}
	// The account's limits hold for every call it places, wherever it goes
	// (limits.go).
	if initial && req.IsInvite() && !r.withinLimits() {
		return
	}
	// Calls to a registered subscriber go to its contacts.
	if initial && r.deliver() {
		return
	}
	if initial && req.IsInvite() {
		r.call.admit = r.admitGateway
	}
	h, err := p.routeCall(req, in, initial, &r.call)
	if err != nil {
		p.log.Debug("no route", "call_id", r.ev.CallID, "method", r.ev.Method, "ruri", r.ev.RequestURI, "err", err)
		switch {
		case errors.Is(err, errGatewaysBusy):
			r.respond(503, "Service Unavailable", noteGatewaysBusy)
		case errors.Is(err, errFlowFailed):
			// The connection the dialog's Route names is gone (RFC 5626 5.3).
			r.respond(430, "Flow Failed", noteUnreachable)
		case errors.Is(err, errNoFlow):
			r.respond(503, "Service Unavailable", noteUnreachable)
		default:
			r.respond(404, "Not Found", noteNoRoute)
		}
		if req.Method == sip.BYE && (errors.Is(err, errFlowFailed) || errors.Is(err, errNoFlow)) {
			// A BYE that followed our Route set to a party whose
			// connection is gone: the call is over all the same.
			p.inDialog(req, &r.ev)
		}
		r.finish()
		return
	}
	if !initial && !p.inDialogAdmitted(req, &h) {
		p.m.refusedDialog.Inc()
		r.respond(403, "Forbidden", noteNotRecordRouted)
		r.finish()
		return
	}
	if !initial {
		p.inDialog(req, &r.ev)
	} else if req.IsInvite() && !r.authorizeCredit() {
		return
	}
	r.relay(p.forward(req, &h, initial && req.IsInvite()), &h)
	if r.credit != nil {
		r.credit.unanswered()
	}
}

// inbound finds the listener a request arrived on and the local address.
func (p *Proxy) inbound(req *sip.Request, tx *sip.ServerTx) (*listener, string) {
	conn := tx.Connection()
	switch c := conn.(type) {
	case *sip.UDPConnection:
		if u, ok := c.PacketConn.(*udpConn); ok {
			return u.l, u.l.local
		}
	case *sip.TCPConnection:
		if t, ok := c.Conn.(*tcpConn); ok {
			return t.l, t.local
		}
	}
	// A connection sipgo dialled itself, for example to the gateway.
	l := p.listenerFor(strings.ToUpper(req.Transport()))
	if l == nil {
		l = p.listeners[0]
	}
	local := l.local
	if conn != nil {
		local = conn.LocalAddr().String()
	}
	return l, local
}

// respond sends a final response of the proxy's own.
func (r *request) respond(code int, reason, note string) {
	res := sip.NewResponseFromRequest(r.req, code, reason, nil)
	now := time.Now()
	if err := r.tx.Respond(res); err != nil {
		r.p.log.Debug("send response", "call_id", r.ev.CallID, "code", code, "err", err)
	}
	r.final = true
	final(&r.ev, res, now, note)
}

// relayResponse passes a response of the next hop upstream (RFC 3261 16.7):
// without our Via, over the server transaction.
func (r *request) relayResponse(res *sip.Response) {
	res.RemoveHeader("Via")
	res.SetDestination(r.up)
	if err := r.tx.Respond(res); err != nil {
		r.p.sendFailed("relay response", r.ev.CallID, err)
	}
}

// sendFailed logs a message that could not be sent. sipgo refuses UDP
// messages over sip.UDPMTUSize-200 bytes (1300 by default) rather than
// fragment them; that one is worth a warning, as only the process that
// embeds the proxy can raise the limit.
func (p *Proxy) sendFailed(what, callID string, err error) {
	if errors.Is(err, sip.ErrUDPMTUCongestion) {
		p.log.Warn(what+": message over sipgo's UDP size limit (raise sip.UDPMTUSize)", "call_id", callID, "limit", sip.UDPMTUSize-200)
		return
	}
	p.log.Debug(what, "call_id", callID, "err", err)
}

// publish writes the event of a finished transaction. An unanswered call
// gives its place under its account's limit back here, as its final
// response went out (an answered one handed it to its dialog).
func (r *request) publish() {
	if r.slot != nil {
		r.slot()
		r.slot = nil
	}
	r.releaseGatewaySlot()
	r.p.publish(&r.ev, time.Now())
}

// releaseGatewaySlot gives back a gateway place no attempt took.
func (r *request) releaseGatewaySlot() {
	if r.gatewaySlot != nil {
		r.gatewaySlot()
		r.gatewaySlot, r.gatewayKeys = nil, nil
	}
}

// finish publishes the event of a request the proxy answered itself and,
// for an INVITE, takes the caller's ACK of that answer.
func (r *request) finish() {
	r.publish()
	if r.req.IsInvite() && r.ev.Status >= 300 {
		r.awaitAck()
	}
	r.linger()
}

// linger ends a finished non-INVITE server transaction over UDP after
// Timers.Linger instead of sipgo's 32s.
func (r *request) linger() {
	if r.req.IsInvite() || !r.final || sip.IsReliable(r.req.Transport()) {
		return
	}
	time.AfterFunc(r.p.cfg.Timers.Linger, r.tx.Terminate)
}

// ack relays an ACK for a 2xx: it is end to end and has no transaction, so
// it goes out statelessly along the route set. (The ACK for a non-2xx final
// response matches its INVITE's transaction and never gets here.)
func (r *request) ack() {
	// sipgo made a server transaction for the ACK; SIP has none, end it.
	defer r.tx.Terminate()
	p := r.p
	switch mf := r.req.MaxForwards(); {
	case !r.ev.InDialog:
		r.ev.Note = noteNoRoute
	case mf != nil && *mf == 0:
		r.ev.Note = noteMaxForwards
	default:
		h, err := p.route(r.req, r.in, false)
		if err != nil {
			r.ev.Note = noteNoRoute
			break
		}
		if !p.inDialogAdmitted(r.req, &h) {
			p.m.refusedDialog.Inc()
			r.ev.Note = noteNotRecordRouted
			break
		}
		r.ev.Destination = h.dest
		if err := p.tpl.WriteMsg(p.forward(r.req, &h, false)); err != nil {
			r.ev.Note = noteUnreachable
			p.sendFailed("relay ACK", r.ev.CallID, err)
		}
	}
	r.publish()
}

// Phases of a branch's wait for the next hop, each bounded by its timer.
const (
	waitFirst     = iota // no response yet (timer B); non-INVITE: no final yet (timer F)
	waitFinal            // INVITE with a provisional (timer C)
	waitCancelled        // CANCEL sent downstream, waiting for the final
)

// downCancel is the CANCEL the proxy sent for a pending INVITE.
type downCancel struct {
	tx      sip.ClientTransaction
	attempt schema.Attempt
	done    bool
}

// forkTarget is one place a request is relayed to: the request as it
// goes there and the hop.
type forkTarget struct {
	out *sip.Request
	h   *hop
}

// relay sends the request to hop h and carries its responses upstream
// until the transaction is over, then publishes its event. An INVITE
// that fails at a route's gateway with 408 or 5xx, or gets no response
// in time, goes on to the route's next gateway (the hunt).
func (r *request) relay(out *sip.Request, h *hop) {
	r.relayAll([]forkTarget{{out, h}})
}

// completedElsewhere is the Reason of the CANCEL a fork's other branches
// get when one answers (RFC 3326), so that phones do not log a missed call.
var completedElsewhere = func() *sip.Request {
	req := sip.NewRequest(sip.CANCEL, sip.Uri{})
	req.AppendHeader(sip.NewHeader("Reason", `SIP;cause=200;text="Call completed elsewhere"`))
	return req
}()

// lateAnswer is a 2xx the caller never saw: the proxy ACKs it and hangs
// up (releaseLate).
type lateAnswer struct {
	b      *branch
	res    *sip.Response
	code   int
	reason string
}

// relayAll is the response context of a request (RFC 3261 16.7): it
// relays the request to every target at once (a fork: the first 2xx
// wins, the other branches are cancelled), carries provisionals and the
// chosen final response upstream, and publishes the event when every
// branch is over. With one target whose hop has a hunt, a failed attempt
// goes on to the hunt's next gateway instead.
func (r *request) relayAll(targets []forkTarget) {
	p := r.p
	invite := r.req.IsInvite()
	r.ev.Destination = targets[0].h.dest
	var cancels chan cancelSignal
	if invite {
		r.cancel = &cancelWatch{ch: make(chan cancelSignal, 1)}
		cancels = r.cancel.ch
		if !r.tx.OnCancel(r.cancel.onCancel) {
			// The CANCEL, or the end, came before we could listen for it.
			r.final = true
			if errors.Is(r.tx.Err(), sip.ErrTransactionCanceled) {
				r.ev.Status, r.ev.Reason, r.ev.FinalAt = 487, "Request Terminated", schema.Millis(time.Now())
			} else {
				r.ev.Note = noteShutdown
			}
			r.publish()
			return
		}
	}
	var hu *hunt
	if invite && len(targets) == 1 {
		hu = targets[0].h.hunt
	}
	var (
		branches []*branch
		live     int
		events   = make(chan branchEvent, 4*len(targets)+4)
		lastErr  error
	)
	// begin starts a branch; false when its transaction could not start
	// (the branch then has its outcome).
	begin := func(t forkTarget) bool {
		b := &branch{out: t.out, h: t.h, a: schema.Attempt{Destination: t.h.dest, StartAt: schema.Millis(time.Now())}}
		if t.h.gateway {
			b.a.Gateway = t.h.gatewayID
			if t.h.target != nil {
				b.a.Supplier = t.h.target.gw.Supplier
			}
		}
		b.slot, b.slotKeys, r.gatewaySlot, r.gatewayKeys = r.gatewaySlot, r.gatewayKeys, nil, nil
		branches = append(branches, b)
		if err := b.start(p); err != nil {
			lastErr = err
			p.sendFailed("relay "+r.ev.Method+" to "+t.h.dest, r.ev.CallID, err)
			b.a.Status, b.a.Reason, b.a.FinalAt = 503, "Service Unavailable", schema.Millis(time.Now())
			if invite {
				p.attempted(t.h.target, 503, false, time.Now())
			}
			b.releaseSlot()
			b.decided, b.code, b.reason, b.note = true, 503, "Service Unavailable", noteUnreachable
			if errors.Is(err, sip.ErrUDPMTUCongestion) {
				b.note = noteTooLarge
			}
			return false
		}
		live++
		go b.run(r, invite, events)
		return true
	}
	// hunting reports whether a failed attempt may go on to another gateway.
	hunting := func() bool { return hu != nil && !r.final && !r.cancelled() && !p.stopping() }
	// nextGateway starts an attempt at the hunt's next gateway that
	// takes the call; false when none is left.
	nextGateway := func() bool {
		for hunting() {
			t := hu.take(r.admitGateway)
			if t == nil {
				return false
			}
			h := *branches[len(branches)-1].h
			if err := h.toGateway(p, t); err != nil {
				r.releaseGatewaySlot()
				continue // compile keeps only gateways with a listener
			}
			r.ev.Destination = h.dest
			if begin(forkTarget{p.forward(r.req, &h, true), &h}) {
				return true
			}
		}
		return false
	}
	for _, t := range targets {
		begin(t)
	}
	if live == 0 && !nextGateway() {
		// Nothing could be sent anywhere.
		note := noteUnreachable
		switch {
		case errors.Is(lastErr, sip.ErrUDPMTUCongestion):
			note = noteTooLarge
		case hu != nil:
			note = noteNoGatewayLeft
		}
		r.ev.Attempts = branchAttempts(branches)
		r.respond(503, "Service Unavailable", note)
		if r.cancelled() {
			// sipgo had answered a CANCEL with 487 already.
			r.ev.Status, r.ev.Reason, r.ev.Note = 487, "Request Terminated", ""
		}
		r.finish()
		return
	}

	var (
		late     []lateAnswer
		upCancel *cancelSignal
		dcs      []*downCancel
		acked    bool
		srvDone  = r.tx.Done()
	)
	// settle sends the caller the best final response once no branch is
	// pending (the hunt, when there is one, is over).
	settle := func() {
		if r.final {
			return
		}
		var best *branch
		for _, b := range branches {
			if !b.decided {
				return
			}
			if hu != nil || best == nil || b.rank() < best.rank() {
				// A hunt answers with its last attempt's outcome.
				best = b
			}
		}
		r.ev.Destination = best.h.dest
		if best.res == nil {
			r.respond(best.code, best.reason, best.note)
			return
		}
		r.relayResponse(best.res)
		if !r.cancelled() {
			r.final = true
			final(&r.ev, best.res, time.Now(), "")
		}
	}
	cancelOthers := func(winner *branch, why *sip.Request) {
		for _, o := range branches {
			if o != winner && !o.decided {
				o.cancel(why)
			}
		}
	}
	// failed closes branch b with an outcome of the proxy's and goes on
	// with the hunt when it may.
	failed := func(b *branch, code int, reason, note string, hunt bool) {
		b.decided, b.code, b.reason, b.note = true, code, reason, note
		if hunt && hunting() {
			if nextGateway() {
				return
			}
			b.res, b.code, b.reason, b.note = nil, 503, "Service Unavailable", noteNoGatewayLeft
		}
		settle()
	}

	for live > 0 {
		select {
		case e := <-events:
			b := e.b
			switch e.kind {
			case branchProvisional:
				if b.a.ProvisionalAt == 0 {
					b.a.ProvisionalAt = schema.Millis(e.at)
				}
				if !r.final {
					r.relayResponse(e.res)
					if r.ev.ProvisionalAt == 0 && !r.cancelled() {
						r.ev.ProvisionalAt, r.ev.ProvisionalStatus = schema.Millis(e.at), e.res.StatusCode
					}
				}

			case branchFinal:
				res := e.res
				code := res.StatusCode
				b.a.Status, b.a.Reason, b.a.FinalAt, b.a.Q850 = code, res.Reason, schema.Millis(e.at), q850(res.Headers())
				if invite {
					p.attempted(b.h.target, code, false, e.at)
				}
				if !res.IsSuccess() {
					b.releaseSlot()
					if b.decided {
						// Its outcome was given when it rang too long.
						continue
					}
					if code >= 600 {
						// A 6xx speaks for the callee everywhere (16.7 step 5).
						cancelOthers(b, nil)
					}
					if invite && failover(code) && hunting() {
						b.res = res
						failed(b, code, res.Reason, "", true)
						continue
					}
					b.decided, b.res = true, res
					settle()
					continue
				}
				if r.final || b.decided {
					// The caller had its final response (a CANCEL, timer
					// C or another branch's 2xx came first): this answer
					// never reaches it.
					if invite {
						la := lateAnswer{b: b, res: res, code: r.ev.Status, reason: r.ev.Reason}
						if r.ev.Status >= 200 && r.ev.Status < 300 {
							la.code, la.reason = 200, "Call completed elsewhere"
						}
						late = append(late, la)
					}
					b.decided = true
					continue
				}
				b.decided, b.res = true, res
				r.ev.Destination = b.h.dest
				// The dialog is in the table before the caller has the
				// 2xx: its ACK and BYE may follow at once.
				answered := invite && !r.ev.InDialog && !r.cancelled()
				if answered {
					if b.slot != nil {
						r.holdSlot(b.slot, b.slotKeys...)
						b.slot = nil
					}
					r.established(b.out, res, b.h, e.at)
				}
				r.relayResponse(res)
				if r.cancelled() {
					// sipgo answered the caller's CANCEL first.
					if answered {
						p.forgetDialog(r.ev.CallID, r.ev.FromTag)
					}
					if invite {
						late = append(late, lateAnswer{b: b, res: res, code: 487, reason: "Request Terminated"})
					}
					continue
				}
				r.final = true
				final(&r.ev, res, e.at, "")
				if invite {
					// 2xx retransmissions come while the client transaction
					// lingers (RFC 6026) and go up the same way.
					tx, up := r.tx, r.up
					b.ct.OnRetransmission(func(res *sip.Response) { relay2xx(tx, up, res) })
					cancelOthers(b, completedElsewhere)
				}

			case branchFailed:
				if e.code != 0 {
					if b.a.Status == 0 {
						b.a.Status, b.a.Reason, b.a.FinalAt = e.code, e.reason, schema.Millis(e.at)
					}
					if invite && e.note != noteShutdown {
						p.attempted(b.h.target, e.code, e.timedOut, e.at)
					}
				}
				b.releaseSlot()
				if b.decided {
					continue
				}
				if e.code == 0 {
					// Given up for a caller who is gone.
					b.decided = true
					continue
				}
				failed(b, e.code, e.reason, e.note, e.timedOut || e.note == noteUnreachable)

			case branchRang:
				if !b.decided {
					b.decided, b.code, b.reason, b.note = true, 408, "Request Timeout", noteTimeout
					settle()
				}

			case branchDone:
				live--
				if e.dc != nil {
					dcs = append(dcs, e.dc)
				}
			}

		case sig := <-cancels:
			cancels = nil
			upCancel = r.cancelledBy(sig)
			for _, b := range branches {
				if !b.decided {
					b.cancel(sig.req)
				}
			}

		case <-r.tx.Acks():
			acked = true

		case <-srvDone:
			srvDone = nil
			if r.final {
				continue
			}
			// The caller's side is gone (transport error or shutdown).
			r.final = true
			r.ev.Note = noteUpstreamLost
			if p.stopping() {
				r.ev.Note = noteShutdown
			}
			for _, b := range branches {
				if !b.decided {
					b.drop()
				}
			}
		}
	}

	if cancels != nil {
		// A CANCEL that raced the final response: sipgo's 487 went first,
		// and the flag that held our final back means its signal waits.
		select {
		case sig := <-cancels:
			upCancel = r.cancelledBy(sig)
		default:
		}
	}
	r.ev.Attempts = branchAttempts(branches)
	if len(late) > 0 && (r.ev.Status < 200 || r.ev.Status >= 300) {
		r.ev.Note = noteLateAnswer
	}
	r.publish()
	if upCancel != nil {
		r.publishCancel(upCancel, dcs)
	}
	for _, la := range late {
		p.releaseLate(la.b.out, la.res, la.b.h, la.code, la.reason)
	}
	if invite && !acked && r.ev.Status >= 300 {
		r.awaitAck()
	}
	r.linger()
}

// forgetDialog drops the dialog of a call whose answer the caller never
// got (its CANCEL won the race): the late answer is hung up apart.
func (p *Proxy) forgetDialog(callID, fromTag string) {
	if d, _ := p.dialogs.find(callID, fromTag); d != nil && p.dialogs.remove(d) {
		d.stop()
	}
}

// branchAttempts are the attempts of a request's branches, in the order they
// started.
func branchAttempts(bs []*branch) []schema.Attempt {
	out := make([]schema.Attempt, len(bs))
	for i, b := range bs {
		out[i] = b.a
	}
	return out
}

// awaitAck takes the caller's ACK of a non-2xx final response off the
// server transaction (which otherwise parks a goroutine until it ends).
func (r *request) awaitAck() {
	select {
	case <-r.tx.Acks():
	case <-r.tx.Done():
	case <-r.p.stop:
	}
}

func upCancelReq(s *cancelSignal) *sip.Request {
	if s == nil {
		return nil
	}
	return s.req
}

func (d *downCancel) finish(code int, reason string) {
	d.attempt.Status, d.attempt.Reason, d.attempt.FinalAt = code, reason, schema.Millis(time.Now())
	d.done = true
	if d.tx != nil {
		d.tx.Terminate()
	}
}

// sendCancel cancels the pending INVITE out downstream (RFC 3261 9.1,
// 16.10). up is the caller's CANCEL, whose Reason is passed on; nil when
// the proxy cancels on its own.
func (r *request) sendCancel(out *sip.Request, up *sip.Request) *downCancel {
	p := r.p
	c := sip.NewRequest(sip.CANCEL, out.Recipient)
	c.SipVersion = out.SipVersion
	c.AppendHeader(out.Via())
	for _, hdr := range out.Headers() {
		if rh, ok := hdr.(*sip.RouteHeader); ok {
			c.AppendHeader(rh)
		}
	}
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.AppendHeader(out.From())
	c.AppendHeader(out.To())
	c.AppendHeader(out.CallID())
	c.AppendHeader(&sip.CSeqHeader{SeqNo: out.CSeq().SeqNo, MethodName: sip.CANCEL})
	if up != nil {
		for _, hdr := range up.Headers() {
			if strings.EqualFold(hdr.Name(), "Reason") {
				c.AppendHeader(hdr)
			}
		}
	}
	c.SetBody(nil)
	c.SetTransport(out.Transport())
	c.SetDestination(out.Destination())
	c.Laddr = out.Laddr

	d := &downCancel{attempt: schema.Attempt{Destination: out.Destination(), StartAt: schema.Millis(time.Now())}}
	tx, err := p.txl.Request(p.runCtx, c)
	if err != nil {
		p.log.Debug("send CANCEL", "call_id", r.ev.CallID, "err", err)
		d.finish(503, "Service Unavailable")
		return d
	}
	d.tx = tx
	return d
}

// publishCancel writes the event of the caller's CANCEL, answered 200 by
// sipgo and carried downstream by the proxy.
func (r *request) publishCancel(s *cancelSignal, dcs []*downCancel) {
	ev := newTransaction(s.req, r.ev.Local, s.at)
	ev.Status, ev.Reason, ev.FinalAt = 200, "OK", schema.Millis(s.at)
	for _, dc := range dcs {
		if ev.Destination == "" {
			ev.Destination = dc.attempt.Destination
		}
		ev.Attempts = append(ev.Attempts, dc.attempt)
	}
	r.p.publish(&ev, time.Now())
}

// relay2xx passes a retransmitted 2xx of an INVITE upstream.
func relay2xx(tx *sip.ServerTx, up string, res *sip.Response) {
	if !res.IsSuccess() {
		return
	}
	res.RemoveHeader("Via")
	res.SetDestination(up)
	_ = tx.Respond(res)
}

// releaseLate ends a call the callee answered after the caller had its
// final response (a CANCEL or timer C raced the 2xx): the proxy ACKs the
// 2xx and hangs up, so that the callee is not left in a call nobody is on.
func (p *Proxy) releaseLate(out *sip.Request, res *sip.Response, h *hop, code int, reason string) {
	// The callee's route set seen from here: the Record-Route entries
	// above ours, reversed (RFC 3261 12.1.2).
	var above []*sip.RecordRouteHeader
	for _, hdr := range res.Headers() {
		rr, ok := hdr.(*sip.RecordRouteHeader)
		if !ok {
			continue
		}
		if p.own(&rr.Address) != nil {
			break
		}
		above = append(above, rr)
	}
	target := out.Recipient
	if c := res.Contact(); c != nil {
		target = c.Address
	}
	next := &target
	if len(above) > 0 {
		next = &above[len(above)-1].Address
	}
	port := next.Port
	if port == 0 {
		port = 5060
	}
	dest := uriHost(strings.Trim(next.Host, "[]")) + ":" + strconv.Itoa(port)
	build := func(method sip.RequestMethod, seq uint32) *sip.Request {
		req := sip.NewRequest(method, target)
		req.AppendHeader(&sip.ViaHeader{
			ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: h.transport,
			Host: h.out.viaHost, Port: h.out.port,
			Params: sip.HeaderParams{{K: "branch", V: p.newBranch()}},
		})
		for i := len(above) - 1; i >= 0; i-- {
			req.AppendHeader(sip.NewHeader("Route", above[i].Value()))
		}
		mf := sip.MaxForwardsHeader(70)
		req.AppendHeader(&mf)
		req.AppendHeader(out.From())
		req.AppendHeader(res.To())
		req.AppendHeader(out.CallID())
		req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
		req.SetTransport(h.transport)
		req.SetDestination(dest)
		if h.transport == "UDP" {
			req.Laddr = h.out.laddr
		}
		return req
	}
	seq := out.CSeq().SeqNo
	ack := build(sip.ACK, seq)
	ack.SetBody(nil)
	if err := p.tpl.WriteMsg(ack); err != nil {
		p.log.Debug("ACK late answer", "dst", dest, "err", err)
	}
	bye := build(sip.BYE, seq+1)
	bye.AppendHeader(sip.NewHeader("Reason", "SIP;cause="+strconv.Itoa(code)+";text=\""+reason+"\""))
	bye.SetBody(nil)
	tx, err := p.txl.Request(p.runCtx, bye)
	if err != nil {
		p.log.Debug("BYE late answer", "dst", dest, "err", err)
		return
	}
	defer tx.Terminate()
	timer := time.NewTimer(p.cfg.Timers.Response)
	defer timer.Stop()
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode >= 200 {
				return
			}
		case <-tx.Done():
			return
		case <-timer.C:
			return
		case <-p.stop:
			return
		}
	}
}

// onStrayResponse takes responses that match no client transaction. A
// 2xx to an INVITE is forwarded statelessly (RFC 3261 16.7 and 18.1.2:
// a retransmission that comes after the client transaction is gone must
// still reach the caller, whose UAS retransmits it until the ACK comes);
// other responses are dropped.
func (p *Proxy) onStrayResponse(res *sip.Response) {
	if p.forwardStray2xx(res) {
		p.m.strayForwarded.Inc()
		return
	}
	p.m.stray.Inc()
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		callID := ""
		if h := res.CallID(); h != nil {
			callID = h.Value()
		}
		p.log.Debug("stray response dropped", "code", res.StatusCode, "src", res.Source(), "call_id", callID)
	}
}

// forwardStray2xx sends a 2xx to an INVITE on to the Via below ours, as
// a stateless proxy does (RFC 3261 16.11); false when it is not one, or
// not one of ours: the top Via must carry a branch of this run on one of
// our listeners.
func (p *Proxy) forwardStray2xx(res *sip.Response) bool {
	if !res.IsSuccess() {
		return false
	}
	if cs := res.CSeq(); cs == nil || cs.MethodName != sip.INVITE {
		return false
	}
	var top, next *sip.ViaHeader
	for _, hdr := range res.Headers() {
		if v, ok := hdr.(*sip.ViaHeader); ok {
			if top == nil {
				top = v
				continue
			}
			next = v
			break
		}
	}
	if top == nil || next == nil {
		return false
	}
	if b, _ := top.Params.Get("branch"); !strings.HasPrefix(b, branchPrefix+p.idPrefix+".") || p.own(&sip.Uri{Host: top.Host, Port: top.Port}) == nil {
		return false
	}
	host := next.Host
	if r, ok := next.Params.Get("received"); ok && r != "" {
		host = r
	}
	port := next.Port
	if rp, ok := next.Params.Get("rport"); ok && atoi(rp) > 0 {
		port = atoi(rp)
	}
	if port == 0 {
		port = 5060
	}
	dest := net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
	transport := strings.ToUpper(next.Transport)
	res.RemoveHeader("Via")
	res.SetDestination(dest)
	var err error
	switch l := p.listenerFor(transport); {
	case l == nil:
		return false
	case transport == "UDP":
		// From the listener socket, where the caller sent its INVITE.
		conn := p.tpl.Pool("udp").Get(l.local)
		if conn == nil {
			return false
		}
		err = conn.WriteMsg(res)
		_, _ = conn.TryClose()
	default:
		// Over the caller's connection, if it is still open.
		res.SetTransport(transport)
		err = p.tpl.WriteMsg(res)
	}
	if err != nil {
		p.log.Debug("forward stray 2xx", "dst", dest, "err", err)
		return false
	}
	return true
}
