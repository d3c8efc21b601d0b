package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

// DefaultBillingDurable is the billing consumer on the CDR stream. It is
// a contract: a renamed consumer starts again from the stream's
// beginning (harmless, as billing is idempotent, but slow).
const DefaultBillingDurable = "billing"

var (
	// ErrInvalidBillingConfig: NewBilling was given a configuration it cannot run.
	ErrInvalidBillingConfig = errors.New("invalid billing config")
	// ErrBillingRunning: Run was called while billing was already running.
	ErrBillingRunning = errors.New("billing already running")
)

// Correct applies a rerate's correction to the account: a positive delta
// is debited, a negative one credited back. It is recorded as a debit of
// the signed delta naming the correction (the rated event id of the
// rerate, schema.RatedID), so, like a CDR's debit, it applies at most
// once however often it is replayed.
func (l *Ledger) Correct(ctx context.Context, account string, delta schema.Money, correctionID string) (Receipt, error) {
	if delta == 0 {
		return Receipt{}, fmt.Errorf("correct %s: delta 0 changes nothing: %w", account, ErrInvalid)
	}
	if err := checkText("correction id", correctionID); err != nil {
		return Receipt{}, fmt.Errorf("correct %s: %w", account, err)
	}
	return l.write(ctx, account, func(s *state) (string, any, error) {
		if s.has(debitKey(correctionID)) {
			return "", nil, nil
		}
		return schema.TypeDebited, schema.Debited{Amount: int64(delta), CDR: correctionID}, nil
	})
}

// BillingConfig configures Billing.
type BillingConfig struct {
	// Durable names the consumer (DefaultBillingDurable).
	Durable string
	// MaxBatch and MaxWait are passed to the consumer (eventlog defaults
	// when zero).
	MaxBatch int
	MaxWait  time.Duration
	// Accounts is how many accounts of one batch are billed at once
	// (default 16); one account's CDRs are always billed in order.
	Accounts int
	Logger   *slog.Logger
	// Registerer receives the carrier_billing_* metrics; nil: not registered.
	Registerer prometheus.Registerer
}

// Billing charges rated calls to their accounts' ledgers. It consumes the
// CDR stream's rated CDRs and failed calls:
//
//   - a rating (run 0) of a priced call debits its sell cost, naming the
//     CDR, then releases what the call held under credit control;
//   - a rerate's correction (run > 0) debits its SellDelta, or credits it
//     back when negative, naming the correction;
//   - an unrated call and a failed call only release the call's hold.
//
// Every effect is idempotent (a CDR or a correction is debited once, a
// release of nothing is nothing), so a redelivery or a replay of the whole
// stream into a new consumer leaves every balance as it was. Calls of
// accounts without a ledger are skipped and counted.
type Billing struct {
	js      jetstream.JetStream
	l       *Ledger
	cfg     BillingConfig
	log     *slog.Logger
	m       *billingMetrics
	running atomic.Bool
}

var durableName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// NewBilling checks cfg and fills in its defaults. It does not talk to
// JetStream; Run does.
func NewBilling(js jetstream.JetStream, l *Ledger, cfg BillingConfig) (*Billing, error) {
	switch {
	case js == nil:
		return nil, fmt.Errorf("billing: no jetstream: %w", ErrInvalidBillingConfig)
	case l == nil:
		return nil, fmt.Errorf("billing: no ledger: %w", ErrInvalidBillingConfig)
	}
	if cfg.Durable == "" {
		cfg.Durable = DefaultBillingDurable
	}
	if !durableName.MatchString(cfg.Durable) {
		return nil, fmt.Errorf("billing: consumer name %q: use letters, digits, '-' and '_': %w", cfg.Durable, ErrInvalidBillingConfig)
	}
	if cfg.Accounts <= 0 {
		cfg.Accounts = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newBillingMetrics(cfg.Registerer, cfg.Durable)
	if err != nil {
		return nil, err
	}
	return &Billing{js: js, l: l, cfg: cfg, log: cfg.Logger.With("component", "billing", "consumer", cfg.Durable), m: m}, nil
}

// Run bills until ctx is done, then returns ctx.Err().
func (b *Billing) Run(ctx context.Context) error {
	if !b.running.CompareAndSwap(false, true) {
		return ErrBillingRunning
	}
	defer b.running.Store(false)
	b.log.Info("billing rated calls")
	return eventlog.Consume(ctx, b.js, eventlog.ConsumerConfig{
		Stream:         schema.StreamCDR,
		Durable:        b.cfg.Durable,
		FilterSubjects: []string{schema.AllRatedCalls, schema.FinishedCallsFailed},
		MaxBatch:       b.cfg.MaxBatch,
		MaxWait:        b.cfg.MaxWait,
		Logger:         b.cfg.Logger.With("component", "billing"),
	}, b.handle)
}

// charge is what one event asks of an account's ledger.
type charge struct {
	seq     uint64
	cdr     string       // the CDR id: what a debit names and a hold is keyed by
	debit   schema.Money // a rating's sell cost (0: nothing to debit)
	correct schema.Money // a correction's delta (0: none)
	fix     string       // the correction's id
	release bool
}

// handle bills a batch: the accounts in parallel, each account's events in
// stream order. An error (JetStream) fails the batch, which is retried
// whole; what was applied already is a no-op the second time.
func (b *Billing) handle(ctx context.Context, batch []eventlog.Msg) error {
	byAccount := map[string][]charge{}
	var order []string
	for _, msg := range batch {
		account, c, ok := b.read(msg)
		if !ok {
			continue
		}
		if _, seen := byAccount[account]; !seen {
			order = append(order, account)
		}
		byAccount[account] = append(byAccount[account], c)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(b.cfg.Accounts)
	for _, account := range order {
		g.Go(func() error {
			for _, c := range byAccount[account] {
				if err := b.apply(ctx, account, c); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// read turns an event into a charge; false for events that charge nothing
// (counted and logged as they deserve).
func (b *Billing) read(msg eventlog.Msg) (string, charge, bool) {
	env := msg.Envelope
	switch env.Type {
	case schema.TypeCallFailed:
		var c schema.CDR
		if err := env.Decode(env.Type, schema.CDRVersion, &c); err != nil {
			b.skip("unreadable", "skipping failed call this build cannot read", "seq", msg.Seq, "err", err)
			return "", charge{}, false
		}
		if c.Account == "" {
			b.m.skipped.WithLabelValues("no_account").Inc()
			return "", charge{}, false
		}
		return c.Account, charge{seq: msg.Seq, cdr: cdrID(c), release: true}, true
	case schema.TypeCallRated:
	default:
		return "", charge{}, false
	}
	var rc schema.RatedCDR
	if err := env.Decode(env.Type, schema.RatedVersion, &rc); err != nil {
		b.skip("unreadable", "skipping rated CDR this build cannot read", "seq", msg.Seq, "err", err)
		return "", charge{}, false
	}
	account, id := rc.CDR.Account, cdrID(rc.CDR)
	if account == "" {
		b.m.skipped.WithLabelValues("no_account").Inc()
		return "", charge{}, false
	}
	c := charge{seq: msg.Seq, cdr: id}
	switch {
	case rc.Run > 0:
		if rc.Status != schema.StatusRated || rc.SellDelta == "" {
			return "", charge{}, false
		}
		delta, err := schema.ParseMoney(rc.SellDelta)
		if err != nil {
			b.skip("invalid", "skipping correction with an unreadable sell delta", "cdr", id, "event", env.ID, "err", err)
			return "", charge{}, false
		}
		if delta == 0 {
			return "", charge{}, false
		}
		c.correct, c.fix = delta, env.ID
	case rc.Status != schema.StatusRated:
		// Not debited: a rerate debits it once it can be priced. The
		// hold is released all the same, or the money would stay held.
		b.m.unrated.WithLabelValues(rc.Reason).Inc()
		b.log.Debug("unrated call not debited", "cdr", id, "account", account, "reason", rc.Reason)
		c.release = true
	default:
		cost, err := schema.ParseMoney(rc.SellCost)
		if err != nil || cost < 0 {
			b.skip("invalid", "rated CDR with an unreadable sell cost: not debited", "cdr", id, "sell_cost", rc.SellCost, "err", err)
			c.release = true
			return account, c, true
		}
		c.debit, c.release = cost, true
	}
	return account, c, true
}

func cdrID(c schema.CDR) string {
	if c.ID != "" {
		return c.ID
	}
	return schema.CDRID(c.CallID, c.FromTag)
}

func (b *Billing) skip(reason, msg string, args ...any) {
	b.m.skipped.WithLabelValues(reason).Inc()
	b.log.Error(msg, args...)
}

// apply makes one charge. A step the ledger refuses for good (no ledger,
// an invalid id) ends the charge and is counted; an error is one a retry
// may cure.
func (b *Billing) apply(ctx context.Context, account string, c charge) error {
	step := func(what string, r Receipt, err error) (bool, error) {
		switch {
		case errors.Is(err, ErrUnknownAccount):
			b.m.skipped.WithLabelValues("no_ledger").Inc()
			return true, nil
		case errors.Is(err, ErrInvalid):
			// A CDR id or amount the ledger can never take: retrying
			// would block the stream for ever.
			b.skip("invalid", "billing: charge refused", "account", account, "cdr", c.cdr, "seq", c.seq, "err", err)
			return true, nil
		case err != nil:
			return false, fmt.Errorf("billing: %s of %s for CDR %s: %w", what, account, c.cdr, err)
		case r.Duplicate:
			b.m.noops.WithLabelValues(what).Inc()
		default:
			b.m.applied.WithLabelValues(what).Inc()
		}
		return false, nil
	}
	if c.debit > 0 {
		r, err := b.l.Debit(ctx, account, c.debit, c.cdr)
		if skip, err := step("debit", r, err); skip || err != nil {
			return err
		}
	}
	if c.correct != 0 {
		what := "correction_debit"
		if c.correct < 0 {
			what = "correction_credit"
		}
		r, err := b.l.Correct(ctx, account, c.correct, c.fix)
		if skip, err := step(what, r, err); skip || err != nil {
			return err
		}
	}
	if c.release {
		r, err := b.l.Release(ctx, account, c.cdr)
		_, err = step("release", r, err)
		return err
	}
	return nil
}

type billingMetrics struct {
	applied *prometheus.CounterVec
	noops   *prometheus.CounterVec
	unrated *prometheus.CounterVec
	skipped *prometheus.CounterVec
}

func newBillingMetrics(reg prometheus.Registerer, consumer string) (*billingMetrics, error) {
	labels := prometheus.Labels{"consumer": consumer}
	m := &billingMetrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "carrier_billing_applied_total",
			Help:        "Ledger events billing appended, by kind (debit, correction_debit, correction_credit, release).",
			ConstLabels: labels,
		}, []string{"kind"}),
		noops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "carrier_billing_noops_total",
			Help:        "Billing steps that found their effect applied already (a replay, a call that held nothing), by kind.",
			ConstLabels: labels,
		}, []string{"kind"}),
		unrated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "carrier_billing_unrated_total",
			Help:        "Unrated calls billing could not debit (their hold is released), by reason.",
			ConstLabels: labels,
		}, []string{"reason"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "carrier_billing_skipped_total",
			Help:        "Events billing skipped, by reason (no_account, no_ledger, unreadable, invalid).",
			ConstLabels: labels,
		}, []string{"reason"}),
	}
	for _, k := range []string{"debit", "correction_debit", "correction_credit", "release"} {
		m.applied.WithLabelValues(k)
		m.noops.WithLabelValues(k)
	}
	for _, r := range []string{"no_account", "no_ledger", "unreadable", "invalid"} {
		m.skipped.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.applied, m.noops, m.unrated, m.skipped} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("register billing metrics for consumer %s: %w", consumer, err)
		}
		done = append(done, c)
	}
	return m, nil
}
