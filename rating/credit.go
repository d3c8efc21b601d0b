package rating

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/schema"
)

// Credit control defaults.
const (
	// DefaultCreditWindow is the talk time a call is granted at a time
	// when the proxy does not ask for a window of its own.
	DefaultCreditWindow = 30 * time.Second
	// DefaultMaxCallDuration caps every grant: a call to a free
	// destination would otherwise be granted for ever.
	DefaultMaxCallDuration = 4 * time.Hour
)

var (
	// ErrInvalidCreditConfig: NewCreditControl was given a configuration it cannot run.
	ErrInvalidCreditConfig = errors.New("invalid credit control config")
	// ErrCreditRunning: Run was called while the service was already running.
	ErrCreditRunning = errors.New("credit control already running")
	// ErrBadCreditRequest: a credit request that is missing or breaks a field.
	ErrBadCreditRequest = errors.New("bad credit request")
)

// CreditLedger is the ledger as credit control uses it: a call's hold,
// decided from the account's state in the same write, and its release.
// *ledger.Ledger is one.
type CreditLedger interface {
	Hold(ctx context.Context, account, callID string, decide ledger.HoldFunc) (ledger.Receipt, error)
	Release(ctx context.Context, account, callID string) (ledger.Receipt, error)
}

// CreditConfig configures a CreditControl.
type CreditConfig struct {
	// Book prices the calls, Accounts gives each account its kind and sell
	// plan, Ledger holds the money (all required).
	Book     *Book
	Accounts Accounts
	Ledger   CreditLedger
	// Window is the talk time granted at a time when a request asks for
	// none (DefaultCreditWindow).
	Window time.Duration
	// MaxDuration caps a call's total grant (DefaultMaxCallDuration).
	MaxDuration time.Duration
	// Workers bounds the requests answered at once (default 64); one
	// account's requests are serialised by the ledger anyway.
	Workers int
	// Timeout bounds one answer (default 1.5s, under the proxy's 2s
	// wait): a request whose ledger write hangs is answered with an
	// error rather than left to time out.
	Timeout time.Duration
	Logger  *slog.Logger
	// Registerer receives the carrier_credit_* metrics; nil: not registered.
	Registerer prometheus.Registerer
}

// CreditControl answers the proxy's credit requests (schema.CreditRequest)
// on schema.SubjectAuthorize, in the queue group schema.QueueAuthorize:
// how long may this call last, given what its account has. It keeps no
// state of its own: what a call holds is a ledger reservation keyed by its
// CDR id, so any instance can answer any request of any call.
//
// Prepaid and postpaid accounts are the same arithmetic: the ledger's
// Available already counts a postpaid credit limit. An account without a
// kind (no ledger) or sell plan is not under credit control.
type CreditControl struct {
	nc      *nats.Conn
	cfg     CreditConfig
	log     *slog.Logger
	m       *creditMetrics
	running atomic.Bool
}

// NewCreditControl checks cfg and fills in its defaults. It does not
// subscribe; Run does.
func NewCreditControl(nc *nats.Conn, cfg CreditConfig) (*CreditControl, error) {
	switch {
	case nc == nil:
		return nil, fmt.Errorf("credit control: no NATS connection: %w", ErrInvalidCreditConfig)
	case cfg.Book == nil || cfg.Accounts == nil || cfg.Ledger == nil:
		return nil, fmt.Errorf("credit control: a Book, Accounts and a Ledger are required: %w", ErrInvalidCreditConfig)
	case cfg.Window < 0 || cfg.MaxDuration < 0 || cfg.Timeout < 0 || cfg.Workers < 0:
		return nil, fmt.Errorf("credit control: window %s, max duration %s, timeout %s, workers %d: want 0 (default) or more: %w",
			cfg.Window, cfg.MaxDuration, cfg.Timeout, cfg.Workers, ErrInvalidCreditConfig)
	}
	if cfg.Window == 0 {
		cfg.Window = DefaultCreditWindow
	}
	if cfg.MaxDuration == 0 {
		cfg.MaxDuration = DefaultMaxCallDuration
	}
	if cfg.Window < time.Second || cfg.MaxDuration < cfg.Window {
		return nil, fmt.Errorf("credit control: window %s, max call duration %s: want a window of 1s or more and a max duration of at least the window: %w",
			cfg.Window, cfg.MaxDuration, ErrInvalidCreditConfig)
	}
	if cfg.Workers == 0 {
		cfg.Workers = 64
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 1500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newCreditMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &CreditControl{nc: nc, cfg: cfg, log: cfg.Logger.With("component", "credit-control"), m: m}, nil
}

// Run answers credit requests until ctx is done, then returns ctx.Err().
// On the way out it stops taking requests and answers those it has.
func (cc *CreditControl) Run(ctx context.Context) error {
	if !cc.running.CompareAndSwap(false, true) {
		return ErrCreditRunning
	}
	defer cc.running.Store(false)
	// Answers in progress finish after ctx ends, within their timeout:
	// a request taken is a request answered.
	base := context.WithoutCancel(ctx)
	sem := make(chan struct{}, cc.cfg.Workers)
	var (
		mu      sync.Mutex
		stopped bool
		wg      sync.WaitGroup
	)
	// The subscription's callbacks run one at a time; each answer runs on
	// its own goroutine so that one slow ledger write does not hold up
	// the other accounts.
	sub, err := cc.nc.QueueSubscribe(schema.SubjectAuthorize, schema.QueueAuthorize, func(m *nats.Msg) {
		sem <- struct{}{}
		mu.Lock()
		if stopped {
			mu.Unlock()
			<-sem
			return
		}
		wg.Add(1)
		mu.Unlock()
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cc.serve(base, m)
		}()
	})
	if err != nil {
		return fmt.Errorf("credit control: subscribe to %s: %w", schema.SubjectAuthorize, err)
	}
	closed := sub.StatusChanged(nats.SubscriptionClosed)
	cc.log.Info("answering credit requests", "subject", schema.SubjectAuthorize, "queue", schema.QueueAuthorize,
		"window", cc.cfg.Window, "max_duration", cc.cfg.MaxDuration)
	stop := func() {
		mu.Lock()
		stopped = true
		mu.Unlock()
		wg.Wait()
	}
	select {
	case <-ctx.Done():
	case <-closed:
		// Only a closed connection closes the subscription under us.
		stop()
		return fmt.Errorf("credit control: subscription to %s closed: %w", schema.SubjectAuthorize, nats.ErrConnectionClosed)
	}
	// Drain: the server sends no more, what it sent is still answered.
	if err := sub.Drain(); err == nil {
		select {
		case <-closed:
		case <-time.After(cc.cfg.Timeout):
			_ = sub.Unsubscribe()
		}
	}
	stop()
	return ctx.Err()
}

// serve answers one request message.
func (cc *CreditControl) serve(base context.Context, m *nats.Msg) {
	start := time.Now()
	var req schema.CreditRequest
	var reply schema.CreditReply
	action := "invalid"
	if err := json.Unmarshal(m.Data, &req); err != nil {
		reply = schema.CreditReply{Result: schema.CreditError, Reason: fmt.Sprintf("credit request is not JSON: %v", err)}
	} else {
		if knownAction(req.Action) {
			action = string(req.Action)
		}
		ctx, cancel := context.WithTimeout(base, cc.cfg.Timeout)
		reply = cc.Answer(ctx, req)
		cancel()
	}
	cc.m.requests.WithLabelValues(action, string(reply.Result)).Inc()
	cc.m.latency.WithLabelValues(action).Observe(time.Since(start).Seconds())
	if reply.Result == schema.CreditError {
		cc.log.Warn("credit request not answered", "action", req.Action, "cdr", req.CDRID, "account", req.Account, "reason", reply.Reason)
	}
	if m.Reply == "" {
		return // published, not requested: nobody to tell
	}
	data, err := json.Marshal(reply)
	if err == nil {
		err = m.Respond(data)
	}
	if err != nil {
		cc.m.replyErrors.Inc()
		cc.log.Warn("credit reply not sent", "cdr", req.CDRID, "err", err)
	}
}

func knownAction(a schema.CreditAction) bool {
	return a == schema.CreditStart || a == schema.CreditExtend || a == schema.CreditRelease
}

// Answer decides one credit request; it never fails, an error is a reply
// with result error and the reason.
func (cc *CreditControl) Answer(ctx context.Context, req schema.CreditRequest) schema.CreditReply {
	if err := cc.check(req); err != nil {
		return schema.CreditReply{Result: schema.CreditError, Reason: err.Error()}
	}
	if req.Action == schema.CreditRelease {
		r, err := cc.cfg.Ledger.Release(ctx, req.Account, req.CDRID)
		if err != nil {
			return refusal(err)
		}
		return schema.CreditReply{Result: schema.CreditReleased, Reserved: r.Balance.Reservations[req.CDRID].String()}
	}
	return cc.grant(ctx, req)
}

func (cc *CreditControl) check(req schema.CreditRequest) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s request for CDR %q: %s: %w", req.Action, req.CDRID, fmt.Sprintf(format, args...), ErrBadCreditRequest)
	}
	switch {
	case !knownAction(req.Action):
		return bad("action %q: want start, extend or release", req.Action)
	case req.CDRID == "":
		return bad("no cdr_id")
	case req.Account == "":
		return bad("no account")
	case req.Action == schema.CreditRelease:
		return nil
	case req.Callee == "":
		return bad("no callee")
	case req.At <= 0:
		return bad("at %d: want the call's time in ms since the Unix epoch", req.At)
	case req.Want < 0 || req.Granted < 0:
		return bad("want_s %d, granted_s %d: want 0 or more", req.Want, req.Granted)
	}
	return nil
}

// grant answers start and extend: the longest talk time on the rate's
// grid, up to what was asked, that the call's money pays, where the
// call's money is what it holds plus what the account has available.
// The hold becomes that time's cost, in one conditional ledger write.
func (cc *CreditControl) grant(ctx context.Context, req schema.CreditRequest) schema.CreditReply {
	p := cc.cfg.Accounts.Snapshot()
	if p == nil {
		return schema.CreditReply{Result: schema.CreditError, Reason: ErrNoProvisioning.Error()}
	}
	acct, ok := p.Accounts[req.Account]
	switch {
	case !ok:
		return schema.CreditReply{Result: schema.CreditUnknownAccount, Reason: fmt.Sprintf("account %q is not provisioned", req.Account)}
	case acct.Kind == "":
		return schema.CreditReply{Result: schema.CreditUnknownAccount, Reason: fmt.Sprintf("account %s has no ledger (no kind)", acct.ID)}
	case acct.SellPlan == "":
		return schema.CreditReply{Result: schema.CreditUnknownAccount, Reason: fmt.Sprintf("account %s has no sell plan", acct.ID)}
	}
	maxSec := int64(cc.cfg.MaxDuration / time.Second)
	want := req.Want
	if want == 0 {
		want = int64(cc.cfg.Window / time.Second)
	}
	granted := int64(0)
	if req.Action == schema.CreditExtend {
		granted = min(req.Granted, maxSec)
	}
	target := min(granted+min(want, maxSec), maxSec)
	at := schema.FromMillis(req.At)

	var (
		seconds int64
		final   bool
		next    int
	)
	decide := func(b ledger.Balance, held schema.Money) (schema.Money, error) {
		amount, err := b.Available.Add(held)
		if err != nil {
			return 0, fmt.Errorf("money of account %s: %w", acct.ID, err)
		}
		a, _, err := cc.cfg.Book.Authorize(acct.SellPlan, req.Callee, at, amount, time.Duration(target)*time.Second)
		next = a.Rate.NextIncrement
		if req.Action == schema.CreditExtend && (errors.Is(err, ErrInsufficientCredit) || (err == nil && a.Seconds <= granted)) {
			// Nothing more is paid for: the call keeps what it holds
			// and ends at what it was granted.
			seconds, final = granted, true
			return held, nil
		}
		if err != nil {
			return 0, err
		}
		seconds = a.Seconds
		if final, err = cc.lastGrant(acct.SellPlan, req.Callee, at, amount, a, maxSec); err != nil {
			return 0, err
		}
		return a.Cost, nil
	}
	r, err := cc.cfg.Ledger.Hold(ctx, acct.ID, req.CDRID, decide)
	if err != nil {
		return refusal(err)
	}
	return schema.CreditReply{
		Result: schema.CreditGranted, Seconds: seconds, Final: final, Increment: int64(next),
		Reserved: r.Balance.Reservations[req.CDRID].String(),
	}
}

// lastGrant says whether no later request can get more than a: the next
// increment either costs more than amount or takes the call past the
// maximum duration.
func (cc *CreditControl) lastGrant(plan, callee string, at time.Time, amount schema.Money, a Authorization, maxSec int64) (bool, error) {
	more := a.Seconds + int64(max(a.Rate.NextIncrement, 1))
	if more > maxSec {
		return true, nil
	}
	q, _, err := cc.cfg.Book.Quote(plan, callee, at, time.Duration(more)*time.Second)
	if err != nil {
		return false, err
	}
	return q.Total > amount, nil
}

// refusal turns a failed hold or release into its reply.
func refusal(err error) schema.CreditReply {
	result := schema.CreditError
	switch {
	case errors.Is(err, ErrInsufficientCredit):
		result = schema.CreditInsufficient
	case errors.Is(err, ErrNoRate), errors.Is(err, ErrBadNumber), errors.Is(err, ErrUnknownPlan):
		// The call could not be charged: refused like a missing rate.
		result = schema.CreditNoRate
	case errors.Is(err, ledger.ErrUnknownAccount):
		result = schema.CreditUnknownAccount
	}
	return schema.CreditReply{Result: result, Reason: err.Error()}
}

type creditMetrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	replyErrors prometheus.Counter
}

func newCreditMetrics(reg prometheus.Registerer) (*creditMetrics, error) {
	m := &creditMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_credit_requests_total",
			Help: "Credit requests answered, by action (start, extend, release, invalid) and result.",
		}, []string{"action", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "carrier_credit_request_seconds",
			Help:    "Time to answer a credit request, from its arrival to the reply, by action.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 15), // 0.1 ms to 1.6 s
		}, []string{"action"}),
		replyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_credit_reply_errors_total",
			Help: "Credit replies that could not be sent (the connection was lost).",
		}),
	}
	for _, a := range []schema.CreditAction{schema.CreditStart, schema.CreditExtend, schema.CreditRelease} {
		m.latency.WithLabelValues(string(a))
	}
	if reg == nil {
		return m, nil
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.requests, m.latency, m.replyErrors} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("register credit control metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}
