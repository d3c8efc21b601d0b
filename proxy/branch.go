package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
)

// branch is one client transaction of a request the proxy relays: the
// attempt at one gateway of a hunt, or at one contact of a forked call
// (RFC 3261 16.6). Its transaction runs on a goroutine of its own (run),
// which reports to the request's response context (relayAll) and takes
// cancellations from it; the attempt and the outcome are the response
// context's alone.
type branch struct {
	out *sip.Request
	h   *hop
	ct  sip.ClientTransaction
	// dialCancel bounds the TCP connection set-up of the transaction.
	dialCancel context.CancelFunc
	ctl        chan branchCtl // what the request wants of the branch; one at most

	a schema.Attempt
	// slot gives back the gateway's place under its concurrent-calls
	// limit; the dialog takes it over when the branch answers.
	slot     func()
	slotKeys []string

	// The outcome: the final response (nil when the proxy makes one up:
	// code, reason and note) once decided.
	decided      bool
	res          *sip.Response
	code         int
	reason, note string
	signalled    bool // a branchCtl went to the goroutine
}

// branchCtl is what a request asks of a pending branch: a CANCEL (with
// the request whose Reason is passed on, or nil), or, when the caller is
// gone (drop), a CANCEL if it rang and giving up at once otherwise.
type branchCtl struct {
	reason *sip.Request
	drop   bool
}

// branchEvent is what a branch's transaction reports.
type branchEvent struct {
	b    *branch
	kind int
	res  *sip.Response
	at   time.Time
	// For failed: the response the proxy stands in for the next hop's,
	// and whether the next hop did not answer in time.
	code         int
	reason, note string
	timedOut     bool
	dc           *downCancel // for done: the CANCEL the branch sent
}

// Kinds of branchEvent.
const (
	branchProvisional = iota // a provisional other than 100
	branchFinal              // the next hop's final response
	branchFailed             // no final response: timeout, transport, shutdown
	branchRang               // timer C: rang too long; the branch cancels itself
	branchDone               // the transaction and its CANCEL are over
)

// start sends the branch's request on a new client transaction.
func (b *branch) start(p *Proxy) error {
	ctx := p.runCtx
	b.dialCancel = func() {}
	if b.h.transport == "TCP" {
		// Bounds the connection set-up; sipgo's own dial timeout is a minute.
		ctx, b.dialCancel = context.WithTimeout(ctx, p.cfg.Timers.Response)
	}
	ct, err := p.txl.Request(ctx, b.out)
	if err != nil {
		b.dialCancel()
		return err
	}
	b.ct = ct
	b.ctl = make(chan branchCtl, 1)
	return nil
}

// cancel asks the branch to CANCEL its pending INVITE; reason is the
// caller's CANCEL whose Reason is passed on, or a request carrying the
// proxy's own Reason. Only the first cancel or drop counts.
func (b *branch) cancel(reason *sip.Request) {
	if b.ct == nil || b.signalled {
		return
	}
	b.signalled = true
	b.ctl <- branchCtl{reason: reason}
}

// drop tells the branch the caller is gone: a ringing INVITE is
// cancelled, one with no provisional yet is given up at once.
func (b *branch) drop() {
	if b.ct == nil || b.signalled {
		return
	}
	b.signalled = true
	b.ctl <- branchCtl{drop: true}
}

// releaseSlot gives back the branch's place under its gateway's limit.
func (b *branch) releaseSlot() {
	if b.slot != nil {
		b.slot()
		b.slot = nil
	}
}

// run follows the branch's client transaction until it is over and its
// CANCEL, if one went, is answered: it restarts timer C with every
// provisional (RFC 3261 16.7), sends a CANCEL only after a provisional
// (9.1), and gives up on a next hop that says nothing in time.
func (b *branch) run(r *request, invite bool, events chan<- branchEvent) {
	p := r.p
	defer b.dialCancel()
	var (
		phase       = waitFirst
		timer       = time.NewTimer(p.cfg.Timers.Response)
		provisional bool
		downFinal   bool
		wantCancel  bool
		cancelWith  *sip.Request
		dc          *downCancel
		ctDone      = b.ct.Done()
		stop        = p.stop
		cancelResps <-chan *sip.Response
		cancelDone  <-chan struct{}
	)
	defer timer.Stop()
	report := func(e branchEvent) {
		e.b = b
		events <- e
	}
	sendCancel := func() {
		dc = r.sendCancel(b.out, cancelWith)
		if dc.tx != nil {
			cancelResps, cancelDone = dc.tx.Responses(), dc.tx.Done()
		}
		phase = waitCancelled
		timer.Reset(p.cfg.Timers.Response)
	}
	for !downFinal || (dc != nil && !dc.done) {
		select {
		case res := <-b.ct.Responses():
			now := time.Now()
			if res.StatusCode < 200 {
				provisional = true
				if invite && phase == waitFirst {
					phase = waitFinal
				}
				if phase == waitFinal {
					// Timer C restarts with every provisional.
					timer.Reset(p.cfg.Timers.Invite)
				}
				if res.StatusCode > 100 {
					report(branchEvent{kind: branchProvisional, res: res, at: now})
				}
				if wantCancel && dc == nil {
					sendCancel()
				}
				continue
			}
			if downFinal {
				continue
			}
			downFinal = true
			report(branchEvent{kind: branchFinal, res: res, at: now})
			if !invite {
				b.ct.Terminate()
			}

		case <-ctDone:
			ctDone = nil
			if downFinal {
				continue
			}
			downFinal = true
			e := branchEvent{kind: branchFailed, at: time.Now(), code: 408, reason: "Request Timeout", note: noteTimeout, timedOut: true}
			switch {
			case p.stopping():
				e.code, e.reason, e.note, e.timedOut = 503, "Service Unavailable", noteShutdown, false
			case errors.Is(b.ct.Err(), sip.ErrTransactionTransport):
				e.code, e.reason, e.note, e.timedOut = 503, "Service Unavailable", noteUnreachable, false
			}
			report(e)

		case <-timer.C:
			if phase == waitFinal {
				// Rang for too long (timer C): the caller is told, and
				// the attempt cancelled.
				report(branchEvent{kind: branchRang, at: time.Now()})
				wantCancel = true
				sendCancel()
				continue
			}
			// No answer in time, or no final after the CANCEL.
			if !downFinal {
				downFinal = true
				b.ct.Terminate()
				// After a CANCEL the next hop owes no answer to the INVITE.
				report(branchEvent{kind: branchFailed, at: time.Now(), code: 408, reason: "Request Timeout", note: noteTimeout, timedOut: phase == waitFirst})
			}
			if dc != nil && !dc.done {
				dc.finish(408, "Request Timeout")
			}

		case c := <-b.ctl:
			if downFinal || wantCancel {
				continue
			}
			wantCancel, cancelWith = true, c.reason
			switch {
			case provisional:
				sendCancel()
			case c.drop:
				// Nothing to cancel yet, and nobody to answer: give up.
				downFinal = true
				b.ct.Terminate()
				report(branchEvent{kind: branchFailed, at: time.Now()})
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

		case <-stop:
			stop = nil
			if !downFinal {
				downFinal = true
				b.ct.Terminate()
				report(branchEvent{kind: branchFailed, at: time.Now(), code: 503, reason: "Service Unavailable", note: noteShutdown})
			}
			if dc != nil && !dc.done {
				dc.finish(503, "Service Unavailable")
			}
		}
	}
	report(branchEvent{kind: branchDone, dc: dc})
}

// rank orders the outcomes of a forked request for the response the
// caller gets when no branch answered (RFC 3261 16.7 step 6): a 6xx
// first, then the lowest class; a response of the next hop before one
// the proxy made up in its class; lower is better.
func (b *branch) rank() int {
	code := b.code
	if b.res != nil {
		code = b.res.StatusCode
	}
	r := 0
	if code < 600 {
		r = code / 100 * 10
	}
	if b.res == nil {
		r += 5
	}
	return r
}
