package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/carrier-core/carrier/schema"
)

// CreditControl decides how long the calls of credit-controlled accounts
// may last (schema/credit.go has the exchange). NATSCredit asks the rating
// service; Authorize must return within ctx.
type CreditControl interface {
	Authorize(ctx context.Context, req schema.CreditRequest) (schema.CreditReply, error)
}

// Credit configures credit control. The calls of accounts whose
// provisioning names a kind (prepaid or postpaid) are controlled; other
// accounts' calls are not.
type Credit struct {
	// Control answers the credit requests; nil turns credit control off.
	Control CreditControl
	// Timeout bounds each request (default 2s).
	Timeout time.Duration
	// Window is the talk time asked for at a time (default 30s). Smaller
	// windows share an account's money more evenly between its
	// concurrent calls; larger ones ask less often.
	Window time.Duration
	// Lead is how long before a grant runs out the proxy asks for more
	// (default a third of Window, at most 10s).
	Lead time.Duration
	// Guard ends a call this long before its grant runs out (default
	// 250ms), so that timer and network jitter never make the call last
	// into an increment the money does not pay for.
	Guard time.Duration
	// AdmitUnavailable admits a prepaid call, uncontrolled, when the
	// rating service does not answer its first request; by default it
	// gets 503. Postpaid calls are always admitted then.
	AdmitUnavailable bool
}

const (
	defaultCreditTimeout = 2 * time.Second
	defaultCreditWindow  = 30 * time.Second
	defaultCreditGuard   = 250 * time.Millisecond
	// creditRetry is the pause between asks while the service is silent.
	creditRetry = time.Second
)

func (c Credit) withDefaults() (Credit, error) {
	if c.Timeout <= 0 {
		c.Timeout = defaultCreditTimeout
	}
	if c.Window <= 0 {
		c.Window = defaultCreditWindow
	}
	if c.Window < time.Second {
		return c, fmt.Errorf("credit window %v: want at least 1s: %w", c.Window, ErrInvalidConfig)
	}
	if c.Lead <= 0 {
		c.Lead = min(c.Window/3, 10*time.Second)
	}
	if c.Guard <= 0 {
		c.Guard = defaultCreditGuard
	}
	if c.Lead >= c.Window || c.Guard >= c.Window {
		return c, fmt.Errorf("credit lead %v and guard %v must be shorter than the window %v: %w", c.Lead, c.Guard, c.Window, ErrInvalidConfig)
	}
	return c, nil
}

// Notes of INVITEs refused by credit control.
const (
	noteInsufficientCredit = "insufficient_credit"
	noteNoRate             = "no_rate"
	noteNoCreditAccount    = "no_credit_account"
)

// creditSession is the credit of one call: what it was granted, and the
// timer that asks for more or ends the call.
type creditSession struct {
	p    *Proxy
	kind schema.AccountKind
	req  schema.CreditRequest

	mu      sync.Mutex
	d       *dialog
	answer  time.Time
	granted int64 // seconds of talk time from answer
	// exhausted: asked for more, the service granted nothing more.
	exhausted bool
	stopped   bool
	timer     *time.Timer
	released  bool
}

// ask sends one credit request; an error is no usable answer.
func (p *Proxy) ask(req schema.CreditRequest) (schema.CreditReply, error) {
	ctx, cancel := context.WithTimeout(p.runCtx, p.cfg.Credit.Timeout)
	defer cancel()
	reply, err := p.cfg.Credit.Control.Authorize(ctx, req)
	result := string(reply.Result)
	switch {
	case err != nil:
		result = "no_answer"
	case reply.Result == schema.CreditError:
		err = fmt.Errorf("rating service: %s", reply.Reason)
	}
	p.dialogs.credit.WithLabelValues(string(req.Action), result).Inc()
	return reply, err
}

// account is the provisioned account; zero when there is none.
func (p *Proxy) account(id string) schema.Account {
	if p.cfg.Provisioning == nil {
		return schema.Account{}
	}
	pv := p.cfg.Provisioning.Snapshot()
	if pv == nil {
		return schema.Account{}
	}
	return pv.Accounts[id]
}

// authorizeCredit asks for the first window of an initial INVITE of a
// credit-controlled account; false when the proxy refused the call (the
// answer is sent and the event written).
func (r *request) authorizeCredit() bool {
	p := r.p
	if p.cfg.Credit.Control == nil || r.ev.Account == "" {
		return true
	}
	kind := p.account(r.ev.Account).Kind
	if kind == "" {
		return true
	}
	req := schema.CreditRequest{
		Action:  schema.CreditStart,
		CDRID:   schema.CDRID(r.ev.CallID, r.ev.FromTag),
		CallID:  r.ev.CallID,
		Account: r.ev.Account,
		Callee:  r.req.Recipient.User,
		At:      schema.Millis(time.Now()),
		Want:    int64(p.cfg.Credit.Window / time.Second),
	}
	reply, err := p.ask(req)
	if err != nil {
		if kind == schema.Postpaid || p.cfg.Credit.AdmitUnavailable {
			p.log.Warn("credit control did not answer: call admitted without control", "call_id", r.ev.CallID, "account", r.ev.Account, "kind", kind, "err", err)
			return true
		}
		p.log.Warn("credit control did not answer: call refused", "call_id", r.ev.CallID, "account", r.ev.Account, "err", err)
		r.respond(503, "Service Unavailable", noteCreditUnavailable)
		r.finish()
		return false
	}
	switch reply.Result {
	case schema.CreditGranted:
		// A Final grant is asked again before it runs out all the same:
		// a top-up in the meantime lets the call go on.
		r.credit = &creditSession{p: p, kind: kind, req: req, granted: reply.Seconds}
		return true
	case schema.CreditInsufficient:
		r.respond(402, "Payment Required", noteInsufficientCredit)
	case schema.CreditNoRate:
		r.respond(403, "Forbidden", noteNoRate)
	default: // unknown account, or an answer this proxy does not know
		p.log.Warn("credit control refused the account", "call_id", r.ev.CallID, "account", r.ev.Account, "result", reply.Result, "reason", reply.Reason)
		r.respond(403, "Forbidden", noteNoCreditAccount)
	}
	r.finish()
	return false
}

// unanswered gives back what an INVITE that was not answered held. The
// ledger also releases it when the call.failed event comes; this makes
// the money available again at once.
func (c *creditSession) unanswered() {
	c.mu.Lock()
	if c.d != nil || c.released {
		c.mu.Unlock()
		return
	}
	c.released = true
	c.mu.Unlock()
	req := c.req
	req.Action, req.Want = schema.CreditRelease, 0
	if _, err := c.p.ask(req); err != nil {
		c.p.log.Debug("credit release", "call_id", req.CallID, "err", err)
	}
}

// answered starts the session's clock; d.mu is held.
func (c *creditSession) answered(p *Proxy, d *dialog) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.d, c.answer = d, d.answered
	c.req.At = schema.Millis(d.answered)
	c.schedule()
}

// schedule arms the timer for the next step: ask for more before the
// grant runs out, or, when the last ask got nothing more, end the call.
// c.mu is held.
func (c *creditSession) schedule() {
	if c.stopped {
		return
	}
	cfg := c.p.cfg.Credit
	end := c.answer.Add(time.Duration(c.granted) * time.Second)
	if c.exhausted {
		c.timer = time.AfterFunc(time.Until(end.Add(-cfg.Guard)), func() { c.p.hangUp(c.d, noteCreditExhausted) })
		return
	}
	c.timer = time.AfterFunc(time.Until(end.Add(-cfg.Lead)), c.extend)
}

// extend asks for the next window.
func (c *creditSession) extend() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	req := c.req
	req.Action, req.Granted = schema.CreditExtend, c.granted
	if behind := time.Since(c.answer) - time.Duration(c.granted)*time.Second; behind > 0 {
		// The call talked past its grant: the proxy was restarted, or a
		// postpaid call's service was silent. Ask for that time too, so
		// that one answer catches up rather than one window at a time.
		req.Want += int64((behind + time.Second - 1) / time.Second)
	}
	c.mu.Unlock()

	reply, err := c.p.ask(req)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return
	}
	if err == nil && reply.Result == schema.CreditGranted {
		// Final or not, more time is asked for again before it runs out;
		// the call ends only when an ask brings nothing more.
		c.exhausted = reply.Seconds <= c.granted
		c.granted = max(c.granted, reply.Seconds)
		c.schedule()
		// A restarted proxy goes on from this grant.
		c.p.storeDialog(c.d)
		return
	}
	if err == nil {
		err = fmt.Errorf("unexpected answer %q: %s", reply.Result, reply.Reason)
	}
	// No usable answer: ask again shortly. A prepaid call ends when what
	// it was granted runs out (it may not outlive its money); a postpaid
	// call goes on, as its account is invoiced anyway.
	cut := c.answer.Add(time.Duration(c.granted)*time.Second - c.p.cfg.Credit.Guard)
	if c.kind == schema.Postpaid || time.Until(cut) > creditRetry {
		c.p.log.Warn("credit control did not answer; asking again", "call_id", req.CallID, "account", req.Account, "granted_s", c.granted, "err", err)
		c.timer = time.AfterFunc(creditRetry, c.extend)
		return
	}
	c.p.log.Warn("credit control did not answer before the grant ran out: ending the call", "call_id", req.CallID, "account", req.Account, "granted_s", c.granted, "err", err)
	c.timer = time.AfterFunc(time.Until(cut), func() { c.p.hangUp(c.d, noteCreditUnavailable) })
}

// record is the session as stored with its call; c.mu is taken.
func (c *creditSession) record() *CreditRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &CreditRecord{Kind: c.kind, CDRID: c.req.CDRID, Callee: c.req.Callee, Want: c.req.Want,
		Granted: c.granted, Exhausted: c.exhausted,
		GrantEnd: schema.Millis(c.answer.Add(time.Duration(c.granted) * time.Second))}
}

// resumeCredit goes on with the credit control of d, restored after a
// restart, from the grant rec stored; d.mu is held.
//
// A grant that ran out while the proxy was down is asked on at once, as
// a live call asks before its grant ends, for the time talked since and a
// window more: the rating service decides with the account's real balance
// (the time talked is billed by the CDR either way), so a call whose
// money covers it goes on, and one whose money does not is cut at once
// (credit_exhausted). Without an answer a prepaid call is cut at once
// (credit_unavailable), a postpaid one goes on, as for a live call.
func (p *Proxy) resumeCredit(d *dialog, rec *CreditRecord) *creditSession {
	c := &creditSession{p: p, kind: rec.Kind, d: d, answer: d.answered,
		granted: rec.Granted, exhausted: rec.Exhausted,
		req: schema.CreditRequest{CDRID: rec.CDRID, CallID: d.callID, Account: d.account,
			Callee: rec.Callee, At: schema.Millis(d.answered), Want: rec.Want}}
	if c.req.CDRID == "" {
		c.req.CDRID = schema.CDRID(d.callID, d.callerTag)
	}
	if c.req.Want <= 0 {
		c.req.Want = int64(p.cfg.Credit.Window / time.Second)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.schedule()
	return c
}

// stop ends the session's timer: the call is over.
func (c *creditSession) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	if c.timer != nil {
		c.timer.Stop()
	}
}

// NATSCredit asks the rating service over NATS request/reply on
// schema.SubjectAuthorize.
type NATSCredit struct{ nc *nats.Conn }

// NewNATSCredit asks over nc.
func NewNATSCredit(nc *nats.Conn) *NATSCredit { return &NATSCredit{nc: nc} }

// ErrNoRatingService: no rating service is subscribed to the subject.
var ErrNoRatingService = errors.New("no rating service answers credit requests")

// Authorize sends req and waits for the answer until ctx is done.
func (c *NATSCredit) Authorize(ctx context.Context, req schema.CreditRequest) (schema.CreditReply, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return schema.CreditReply{}, fmt.Errorf("credit request: %w", err)
	}
	msg, err := c.nc.RequestWithContext(ctx, schema.SubjectAuthorize, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return schema.CreditReply{}, fmt.Errorf("credit %s for call %s: %w", req.Action, req.CallID, ErrNoRatingService)
	}
	if err != nil {
		return schema.CreditReply{}, fmt.Errorf("credit %s for call %s: %w", req.Action, req.CallID, err)
	}
	var reply schema.CreditReply
	if err := json.Unmarshal(msg.Data, &reply); err != nil {
		return schema.CreditReply{}, fmt.Errorf("credit %s for call %s: bad answer: %w", req.Action, req.CallID, err)
	}
	return reply, nil
}
