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
	// Calls to a registered subscriber go to its contact.
	if initial && r.deliver() {
		return
	}
	h, err := p.routeCall(req, in, initial, &r.call)
	if err != nil {
		p.log.Debug("no route", "call_id", r.ev.CallID, "method", r.ev.Method, "ruri", r.ev.RequestURI, "err", err)
		r.respond(404, "Not Found", noteNoRoute)
		r.finish()
		return
	}
	if !initial && !p.inDialogAdmitted(req, &h) {
		p.m.refusedDialog.Inc()
		r.respond(403, "Forbidden", noteNotRecordRouted)
		r.finish()
		return
	}
	// Calls-per-second limits of the account and the gateway (limits.go).
	if initial && req.IsInvite() && !r.withinLimits(&h) {
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
	r.p.publish(&r.ev, time.Now())
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

// Phases of the wait for the next hop, each bounded by the timer.
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

// relay sends the request on a client transaction and carries its
// responses upstream until the transaction is over, then publishes its
// event.
func (r *request) relay(out *sip.Request, h *hop) {
	p := r.p
	invite := r.req.IsInvite()
	r.ev.Destination = h.dest
	a := schema.Attempt{Destination: h.dest, StartAt: schema.Millis(time.Now())}
	if h.gateway {
		a.Gateway = h.gatewayID
		if h.target != nil {
			a.Supplier = h.target.gw.Supplier
		}
	}
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

	// hu is the rest of the route's gateways: an INVITE that fails at one
	// gateway with 408 or 5xx, or gets no response in time, goes on to
	// the next, as long as the caller has neither a final response nor
	// cancelled.
	var hu *hunt
	if invite {
		hu = h.hunt
	}
	var (
		attempts   []schema.Attempt // the attempts before a
		ct         sip.ClientTransaction
		dialCancel = func() {}
	)
	defer func() { dialCancel() }()
	// start sends out on a new client transaction.
	start := func() error {
		dialCancel()
		ctx := p.runCtx
		if h.transport == "TCP" {
			// Bounds the connection set-up; sipgo's own dial timeout is a minute.
			ctx, dialCancel = context.WithTimeout(ctx, p.cfg.Timers.Response)
		}
		var err error
		ct, err = p.txl.Request(ctx, out)
		return err
	}
	// book counts the attempt a ended with at a gateway.
	book := func(timedOut bool) {
		if invite {
			p.attempted(h.target, a.Status, timedOut, time.Now())
		}
	}
	startErr := func(err error) {
		p.sendFailed("relay "+r.ev.Method+" to "+h.dest, r.ev.CallID, err)
		a.Status, a.Reason, a.FinalAt = 503, "Service Unavailable", schema.Millis(time.Now())
		book(false)
	}
	// nextGateway closes attempt a and starts one at the route's next
	// gateway; false when none is left or the hunt must stop.
	nextGateway := func() bool {
		if hu == nil || r.final || r.cancelled() {
			return false
		}
		for {
			t := hu.take()
			if t == nil {
				return false
			}
			attempts = append(attempts, a)
			next := *h
			if err := next.toGateway(p, t); err != nil {
				continue // compile keeps only gateways with a listener
			}
			h = &next
			out = p.forward(r.req, h, true)
			r.ev.Destination = h.dest
			a = schema.Attempt{Destination: h.dest, Gateway: t.id, Supplier: t.gw.Supplier, StartAt: schema.Millis(time.Now())}
			if err := start(); err != nil {
				startErr(err)
				continue
			}
			return true
		}
	}
	if err := start(); err != nil {
		startErr(err)
		if !nextGateway() {
			r.ev.Attempts = append(attempts, a)
			note := noteUnreachable
			switch {
			case errors.Is(err, sip.ErrUDPMTUCongestion):
				note = noteTooLarge
			case hu != nil:
				note = noteNoGatewayLeft
			}
			r.respond(503, "Service Unavailable", note)
			if r.cancelled() {
				// sipgo had answered a CANCEL with 487 already.
				r.ev.Status, r.ev.Reason, r.ev.Note = 487, "Request Terminated", ""
			}
			r.finish()
			return
		}
	}

	var (
		phase       = waitFirst
		timer       = time.NewTimer(p.cfg.Timers.Response)
		provisional bool // a provisional came: a CANCEL may be sent (RFC 3261 9.1)
		downFinal   bool // the attempt is over
		wantCancel  bool
		acked       bool
		late        *sip.Response // a 2xx that came after the caller had its final
		upCancel    *cancelSignal
		dc          *downCancel
		ctDone      = ct.Done()
		srvDone     = r.tx.Done()
		stop        = p.stop
		cancelResps <-chan *sip.Response
		cancelDone  <-chan struct{}
	)
	defer timer.Stop()
	// failedOver moves the wait on to the next gateway, or, when none is
	// left, gives the caller 503.
	failedOver := func() {
		if nextGateway() {
			phase, provisional, downFinal, wantCancel = waitFirst, false, false, false
			ctDone = ct.Done()
			timer.Reset(p.cfg.Timers.Response)
			return
		}
		r.respond(503, "Service Unavailable", noteNoGatewayLeft)
	}
	// hunting reports whether the failure of the current attempt may go
	// on to another gateway.
	hunting := func() bool { return hu != nil && !r.final && !r.cancelled() && !p.stopping() }
	sendCancel := func(reason *sip.Request) {
		dc = r.sendCancel(out, reason)
		if dc.tx != nil {
			cancelResps, cancelDone = dc.tx.Responses(), dc.tx.Done()
		}
		phase = waitCancelled
		timer.Reset(p.cfg.Timers.Response)
	}

	for !downFinal || (dc != nil && !dc.done) {
		select {
		case res := <-ct.Responses():
			now := time.Now()
			code := res.StatusCode
			if code < 200 {
				provisional = true
				if invite && phase == waitFirst {
					phase = waitFinal
				}
				if phase == waitFinal {
					// Timer C restarts with every provisional (RFC 3261 16.7).
					timer.Reset(p.cfg.Timers.Invite)
				}
				if code > 100 {
					if a.ProvisionalAt == 0 {
						a.ProvisionalAt = schema.Millis(now)
					}
					if !r.final {
						r.relayResponse(res)
						if r.ev.ProvisionalAt == 0 && !r.cancelled() {
							r.ev.ProvisionalAt, r.ev.ProvisionalStatus = schema.Millis(now), code
						}
					}
				}
				if wantCancel && dc == nil {
					sendCancel(upCancelReq(upCancel))
				}
				continue
			}
			if downFinal {
				continue
			}
			downFinal = true
			a.Status, a.Reason, a.FinalAt, a.Q850 = code, res.Reason, schema.Millis(now), q850(res.Headers())
			book(false)
			if failover(code) && hunting() {
				// sipgo's client transaction ACKs the failure and lingers
				// for its retransmissions (timer D).
				failedOver()
				continue
			}
			if !r.final {
				r.relayResponse(res)
				if !r.cancelled() {
					r.final = true
					final(&r.ev, res, now, "")
					if invite && res.IsSuccess() && !r.ev.InDialog {
						r.established(out, res, h, now)
					}
					if invite && res.IsSuccess() {
						// 2xx retransmissions come while the client transaction
						// lingers (RFC 6026) and go up the same way.
						tx, up := r.tx, r.up
						ct.OnRetransmission(func(res *sip.Response) { relay2xx(tx, up, res) })
					}
				} else if res.IsSuccess() {
					// sipgo answered the caller's CANCEL first: this answer
					// never reached the caller.
					late = res
				}
			} else if invite && res.IsSuccess() {
				late = res
			}
			if !invite {
				ct.Terminate()
			}

		case <-ctDone:
			ctDone = nil
			if downFinal {
				continue
			}
			downFinal = true
			code, reason, note := 408, "Request Timeout", noteTimeout
			switch {
			case p.stopping():
				code, reason, note = 503, "Service Unavailable", noteShutdown
			case errors.Is(ct.Err(), sip.ErrTransactionTransport):
				code, reason, note = 503, "Service Unavailable", noteUnreachable
			}
			a.Status, a.Reason, a.FinalAt = code, reason, schema.Millis(time.Now())
			book(code == 408)
			if hunting() {
				failedOver()
				continue
			}
			if !r.final {
				r.respond(code, reason, note)
			}

		case <-timer.C:
			switch {
			case phase == waitFinal:
				// Rang for too long (timer C): give the caller 408 and
				// cancel the attempt.
				if !r.final {
					r.respond(408, "Request Timeout", noteTimeout)
				}
				wantCancel = true
				sendCancel(nil)
			default:
				// No answer in time, or no final after the CANCEL.
				if !downFinal {
					downFinal = true
					if a.Status == 0 {
						a.Status, a.Reason, a.FinalAt = 408, "Request Timeout", schema.Millis(time.Now())
					}
					ct.Terminate()
					// After a CANCEL the gateway owes no answer to the INVITE.
					book(phase == waitFirst)
					if phase == waitFirst && hunting() {
						failedOver()
						continue
					}
				}
				if dc != nil && !dc.done {
					dc.finish(408, "Request Timeout")
				}
				if !r.final {
					r.respond(408, "Request Timeout", noteTimeout)
				}
			}

		case sig := <-cancels:
			cancels = nil
			upCancel = r.cancelledBy(sig)
			if !downFinal {
				wantCancel = true
				if provisional && dc == nil {
					sendCancel(sig.req)
				}
			}

		case res := <-cancelResps:
			if res.StatusCode >= 200 {
				dc.finish(res.StatusCode, res.Reason)
				cancelResps, cancelDone = nil, nil
			}

		case <-cancelDone:
			cancelResps, cancelDone = nil, nil
			if !dc.done {
				dc.finish(408, "Request Timeout")
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
			if invite && provisional && dc == nil {
				sendCancel(nil)
			} else if !downFinal {
				downFinal = true
				ct.Terminate()
			}

		case <-stop:
			stop = nil
			if !downFinal {
				downFinal = true
				if a.Status == 0 {
					a.Status, a.Reason, a.FinalAt = 503, "Service Unavailable", schema.Millis(time.Now())
				}
				ct.Terminate()
			}
			if dc != nil && !dc.done {
				dc.finish(503, "Service Unavailable")
			}
			if !r.final {
				r.respond(503, "Service Unavailable", noteShutdown)
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
	r.ev.Attempts = append(attempts, a)
	if late != nil {
		r.ev.Note = noteLateAnswer
	}
	r.publish()
	if upCancel != nil {
		r.publishCancel(upCancel, dc)
	}
	if late != nil {
		p.releaseLate(out, late, h, r.ev.Status, r.ev.Reason)
	}
	if invite && !acked && r.ev.Status >= 300 {
		r.awaitAck()
	}
	r.linger()
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
func (r *request) publishCancel(s *cancelSignal, dc *downCancel) {
	ev := newTransaction(s.req, r.ev.Local, s.at)
	ev.Status, ev.Reason, ev.FinalAt = 200, "OK", schema.Millis(s.at)
	if dc != nil {
		ev.Destination = dc.attempt.Destination
		ev.Attempts = []schema.Attempt{dc.attempt}
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
