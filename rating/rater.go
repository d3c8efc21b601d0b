package rating

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

// DefaultRaterDurable is the rater's consumer on the CDR stream. It is a
// contract: a renamed consumer starts again from the stream's beginning.
const DefaultRaterDurable = "rater"

// BuyPlanPrefix names buy plans: a supplier's deck is "buy-<supplier>"
// unless the supplier names its own (schema.Supplier.BuyPlan), and a
// gateway's is "buy-<gateway>", used when its supplier has none.
const BuyPlanPrefix = schema.BuyPlanPrefix

// BuyPlan is the name of the buy plan of a supplier or gateway.
func BuyPlan(id string) string { return BuyPlanPrefix + id }

var (
	// ErrInvalidRaterConfig: NewRater was given a configuration it cannot run.
	ErrInvalidRaterConfig = errors.New("invalid rater config")
	// ErrRaterRunning: Run was called while the rater was already running.
	ErrRaterRunning = errors.New("rater already running")
	// ErrNoProvisioning: the accounts are not loaded yet; the CDR is
	// retried rather than rated unrated for want of them.
	ErrNoProvisioning = errors.New("provisioning not loaded")
)

// Accounts is where the rater finds an account's sell plan and currency;
// *eventlog.ProvisionWatcher is one. Snapshot returns nil until loaded.
type Accounts interface {
	Snapshot() *schema.Provisioning
}

// RaterConfig configures a Rater.
type RaterConfig struct {
	// Book prices the calls and Store backs it for versions the Book does
	// not hold (a plan imported a moment ago, a call older than the Book
	// keeps). Both are required.
	Book  *Book
	Store *Store
	// Accounts gives each CDR's account its sell plan (required).
	Accounts Accounts
	// Durable names the consumer (DefaultRaterDurable).
	Durable string
	// Node names this rater in the events it writes (default: host name).
	Node string
	// MaxBatch and MaxWait are passed to the consumer (eventlog defaults
	// when zero).
	MaxBatch int
	MaxWait  time.Duration
	Logger   *slog.Logger
	// Registerer receives the carrier_rater_* metrics; nil: not registered.
	Registerer prometheus.Registerer
}

// Rater prices finished CDRs: it consumes call.ended and call.failed from
// the CDR stream and publishes one call.rated per call, acking a CDR only
// once its rated CDR is stored. The rated event's id is derived from the
// CDR id, so a redelivery or replay publishes nothing new.
//
// A call that never connected costs nothing; it is published as rated at
// zero, with the destination its sell plan gives the number when there
// is one, so that analytics reads one stream of rated CDRs for revenue
// and answer ratios alike. An answered call that cannot be priced is
// published as unrated with the reason, never dropped.
type Rater struct {
	js      jetstream.JetStream
	cfg     RaterConfig
	log     *slog.Logger
	m       *raterMetrics
	decks   deckCache
	running atomic.Bool
}

// NewRater checks cfg and fills in its defaults. It does not talk to
// JetStream; Run does.
func NewRater(js jetstream.JetStream, cfg RaterConfig) (*Rater, error) {
	switch {
	case js == nil:
		return nil, fmt.Errorf("rater: no jetstream: %w", ErrInvalidRaterConfig)
	case cfg.Book == nil || cfg.Store == nil:
		return nil, fmt.Errorf("rater: a Book and its Store are required: %w", ErrInvalidRaterConfig)
	case cfg.Accounts == nil:
		return nil, fmt.Errorf("rater: no accounts: %w", ErrInvalidRaterConfig)
	}
	if cfg.Durable == "" {
		cfg.Durable = DefaultRaterDurable
	}
	if !planName.MatchString(cfg.Durable) {
		return nil, fmt.Errorf("rater: consumer name %q: use letters, digits, '-' and '_': %w", cfg.Durable, ErrInvalidRaterConfig)
	}
	if cfg.Node == "" {
		cfg.Node = "rater"
		if h, err := os.Hostname(); err == nil && h != "" {
			cfg.Node = h
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newRaterMetrics(cfg.Registerer, cfg.Durable)
	if err != nil {
		return nil, err
	}
	return &Rater{js: js, cfg: cfg, log: cfg.Logger.With("component", "rater", "consumer", cfg.Durable), m: m}, nil
}

// Run rates until ctx is done, then returns ctx.Err().
func (r *Rater) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRaterRunning
	}
	defer r.running.Store(false)
	r.log.Info("rating finished calls")
	return eventlog.Consume(ctx, r.js, eventlog.ConsumerConfig{
		Stream:         schema.StreamCDR,
		Durable:        r.cfg.Durable,
		FilterSubjects: []string{schema.FinishedCallsEnded, schema.FinishedCallsFailed},
		MaxBatch:       r.cfg.MaxBatch,
		MaxWait:        r.cfg.MaxWait,
		Logger:         r.cfg.Logger.With("component", "rater"),
	}, r.handle)
}

// handle rates a batch in order. An error (JetStream or a deck not
// reachable) fails the batch, which is retried whole: what was already
// published is dropped as a duplicate by its id.
func (r *Rater) handle(ctx context.Context, batch []eventlog.Msg) error {
	for _, msg := range batch {
		env := msg.Envelope
		if env.Type != schema.TypeCallEnded && env.Type != schema.TypeCallFailed {
			continue
		}
		var c schema.CDR
		if err := env.Decode(env.Type, schema.CDRVersion, &c); err != nil {
			r.m.skipped.Inc()
			r.log.Error("skipping CDR this build cannot read", "seq", msg.Seq, "err", err)
			continue
		}
		if c.ID == "" {
			c.ID = schema.CDRID(c.CallID, c.FromTag)
		}
		rc, err := r.Rate(ctx, c)
		if err != nil {
			return err
		}
		ev, err := schema.NewEnvelopeWithID(schema.RatedID(c.ID, 0), schema.TypeCallRated, schema.RatedVersion, schema.FromMillis(rc.RatedAt), r.cfg.Node, rc)
		if err != nil {
			return err
		}
		if err := eventlog.Publish(ctx, r.js, schema.RatedSubject(c.CallID), ev); err != nil {
			return fmt.Errorf("rater: %w", err)
		}
		r.m.cdrs.WithLabelValues(string(rc.Status)).Inc()
		if rc.Status == schema.StatusUnrated {
			r.m.unrated.WithLabelValues(rc.Reason).Inc()
			// Per call at debug: carrier_rater_unrated_total{reason}
			// is what an operator watches; at thousands of calls a
			// second a line each would drown the log.
			r.log.Debug("CDR not rated", "cdr", c.ID, "account", c.Account, "callee", callee(c), "reason", rc.Reason, "detail", rc.Detail)
		}
	}
	return nil
}

// Rate prices one CDR with the decks in force at its answer time (its
// INVITE time for a call that never connected). The error is for
// failures that a retry may cure (a deck that cannot be read now); a CDR
// that cannot be priced is a RatedCDR with StatusUnrated.
func (r *Rater) Rate(ctx context.Context, c schema.CDR) (schema.RatedCDR, error) {
	p := r.cfg.Accounts.Snapshot()
	if p == nil {
		return schema.RatedCDR{}, fmt.Errorf("rater: %w", ErrNoProvisioning)
	}
	rc := schema.RatedCDR{CDR: c, RatedAt: schema.Millis(time.Now())}
	answered := c.Disposition == schema.Answered
	unrated := func(reason, detail string) (schema.RatedCDR, error) {
		rc.Status, rc.Reason, rc.Detail = schema.StatusUnrated, reason, detail
		return rc, nil
	}
	acct, ok := p.Accounts[c.Account]
	if ok {
		rc.Currency = acct.Currency
	}
	if !answered {
		// Nothing to charge; name the destination when the plan can.
		zero := schema.Money(0).String()
		rc.Status, rc.SellCost, rc.BuyCost, rc.Margin = schema.StatusRated, zero, zero, zero
		if ok && acct.SellPlan != "" {
			leg, err := r.lookup(ctx, acct.SellPlan, callee(c), schema.FromMillis(c.InviteAt))
			if err != nil {
				return schema.RatedCDR{}, err
			}
			rc.Sell = leg
		}
		return rc, nil
	}
	switch {
	case c.Account == "" || !ok:
		return unrated(schema.UnratedNoAccount, fmt.Sprintf("account %q is not provisioned", c.Account))
	case acct.SellPlan == "":
		return unrated(schema.UnratedNoPlan, fmt.Sprintf("account %s has no sell plan", acct.ID))
	}
	answer := schema.FromMillis(c.AnswerAt)
	if answer.IsZero() || c.DurationMs < 0 {
		return unrated(schema.UnratedBadCDR, fmt.Sprintf("answered call with answer time %d and duration %d ms", c.AnswerAt, c.DurationMs))
	}
	dur := time.Duration(c.DurationMs) * time.Millisecond
	sell, reason, err := r.price(ctx, acct.SellPlan, callee(c), answer, dur)
	if err != nil {
		return schema.RatedCDR{}, err
	}
	if reason.code != "" {
		return unrated(reason.code, reason.detail)
	}
	rc.Status, rc.Sell, rc.SellCost = schema.StatusRated, sell.leg, sell.cost.String()

	buy, err := r.priceBuy(ctx, c, answer, dur)
	if err != nil {
		return schema.RatedCDR{}, err
	}
	switch {
	case buy.plan == "":
		rc.BuyCost, rc.Margin = schema.Money(0).String(), rc.SellCost
	case buy.reason.code != "":
		rc.BuyReason = buy.reason.code
	default:
		rc.Buy, rc.BuyCost = buy.leg, buy.cost.String()
		margin, err := sell.cost.Add(-buy.cost)
		if err != nil {
			return unrated(schema.UnratedOutOfRange, fmt.Sprintf("margin %s - %s: %v", sell.cost, buy.cost, err))
		}
		rc.Margin = margin.String()
	}
	return rc, nil
}

// callee is the number a CDR is priced on: the normalised callee, or as
// received when the proxy did not normalise it.
func callee(c schema.CDR) string {
	if c.CalleeE164 != "" {
		return c.CalleeE164
	}
	return c.Callee
}

// unpriced is why a leg was not priced: a Unrated* code and the error.
type unpriced struct{ code, detail string }

type pricedLeg struct {
	plan   string
	leg    *schema.RatedLeg
	cost   schema.Money
	reason unpriced
}

// price quotes a call on plan. A reason is returned for what a retry
// cannot change; an error for what it may.
func (r *Rater) price(ctx context.Context, plan, number string, answer time.Time, dur time.Duration) (pricedLeg, unpriced, error) {
	d, info, reason, err := r.deckAt(ctx, plan, answer)
	if err != nil || reason.code != "" {
		return pricedLeg{}, reason, err
	}
	q, err := d.Quote(number, answer, dur)
	if err != nil {
		return pricedLeg{}, quoteReason(err), nil
	}
	leg := legOf(info, q)
	if len(q.Segments) == 0 {
		// A 0 s call pays the connection fee alone; its rate is still
		// the one at answer.
		if rt, err := d.Lookup(number, answer); err == nil {
			leg.Rate = rt.PerMinute.String()
		}
	}
	return pricedLeg{plan: plan, leg: leg, cost: q.Total}, unpriced{}, nil
}

// priceBuy prices the supplier's side on the buy plan of the billed
// attempt's supplier (its BuyPlanName when provisioned, else
// "buy-<supplier>"), or else of its gateway. Whether such a plan exists
// is the Book's word: asking the Store for every call to a supplier
// without a deck would cost a JetStream request per CDR.
func (r *Rater) priceBuy(ctx context.Context, c schema.CDR, answer time.Time, dur time.Duration) (pricedLeg, error) {
	var gateway string
	if c.Gateway != "" {
		gateway = BuyPlan(c.Gateway)
	}
	for _, plan := range []string{r.cfg.Accounts.Snapshot().SupplierBuyPlan(c.Supplier), gateway} {
		if plan == "" || !planName.MatchString(plan) || !r.cfg.Book.known(plan) {
			continue
		}
		leg, reason, err := r.price(ctx, plan, callee(c), answer, dur)
		if err != nil {
			return pricedLeg{}, err
		}
		leg.plan, leg.reason = plan, reason
		return leg, nil
	}
	return pricedLeg{}, nil
}

// lookup names the rate a call that never connected would have had, for
// its destination; nil when there is none. The error is for a deck that
// cannot be read now.
func (r *Rater) lookup(ctx context.Context, plan, number string, at time.Time) (*schema.RatedLeg, error) {
	if at.IsZero() {
		return nil, nil
	}
	d, info, reason, err := r.deckAt(ctx, plan, at)
	if err != nil || reason.code != "" {
		return nil, err
	}
	rt, err := d.Lookup(number, at)
	if err != nil {
		return nil, nil
	}
	zero := schema.Money(0).String()
	return &schema.RatedLeg{
		Plan: info.Plan, PlanVersion: info.Version, Prefix: rt.Prefix, Destination: rt.Destination,
		Rate: rt.PerMinute.String(), ConnectFee: rt.ConnectFee.String(),
		FirstIncrement: rt.FirstIncrement, NextIncrement: rt.NextIncrement, MinDuration: rt.MinDuration,
		Exact: zero, Cost: zero,
	}, nil
}

func quoteReason(err error) unpriced {
	code := schema.UnratedBadCDR
	switch {
	case errors.Is(err, ErrNoRate):
		code = schema.UnratedNoRate
	case errors.Is(err, ErrBadNumber):
		code = schema.UnratedBadNumber
	case errors.Is(err, schema.ErrOverflow):
		code = schema.UnratedOutOfRange
	}
	return unpriced{code: code, detail: err.Error()}
}

func legOf(info PlanInfo, q Quote) *schema.RatedLeg {
	leg := &schema.RatedLeg{
		Plan: info.Plan, PlanVersion: info.Version, Prefix: q.Prefix, Destination: q.Destination,
		ConnectFee: q.ConnectFee.String(), FirstIncrement: q.First, NextIncrement: q.Next, MinDuration: q.MinDuration,
		Seconds: q.Seconds, BilledSeconds: q.Billed, Exact: q.Exact.String(), Cost: q.Total.String(),
	}
	if len(q.Segments) > 0 {
		leg.Rate = q.Segments[0].PerMinute.String()
	}
	if len(q.Segments) > 1 {
		leg.Segments = len(q.Segments)
	}
	return leg
}

// deckAt finds the plan's deck in force at t: from the Book, or else from
// the Store (a version the Book has not loaded yet, or one older than it
// keeps). An unknown plan or one not in force yet is a reason; a Store
// that cannot be read is an error.
func (r *Rater) deckAt(ctx context.Context, plan string, t time.Time) (*Deck, PlanInfo, unpriced, error) {
	if d, info, ok := r.cfg.Book.DeckAt(plan, t); ok {
		return d, info, unpriced{}, nil
	}
	vs, err := r.cfg.Store.Versions(ctx, plan)
	if errors.Is(err, ErrUnknownPlan) {
		return nil, PlanInfo{}, unpriced{schema.UnratedUnknownPlan, err.Error()}, nil
	}
	if err != nil {
		return nil, PlanInfo{}, unpriced{}, err
	}
	v, ok := inForce(vs, t)
	if !ok {
		return nil, PlanInfo{}, unpriced{schema.UnratedNotInForce, fmt.Sprintf("plan %s has no version in force at %s", plan, t.UTC().Format(time.RFC3339))}, nil
	}
	d, err := r.decks.load(ctx, r.cfg.Store, v)
	if err != nil {
		return nil, PlanInfo{}, unpriced{}, err
	}
	return d, v, unpriced{}, nil
}

// known reports whether the Book holds any version of plan.
func (b *Book) known(plan string) bool {
	m := b.plans.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[plan]
	return ok
}

// deckCache keeps the few decks loaded from the Store for versions the
// Book does not hold, so a replay of old CDRs loads each once.
type deckCache struct {
	mu    sync.Mutex
	decks map[deckKey]*Deck
}

type deckKey struct {
	plan    string
	version uint64
}

const deckCacheSize = 4

func (c *deckCache) load(ctx context.Context, s *Store, v PlanInfo) (*Deck, error) {
	k := deckKey{v.Plan, v.Version}
	c.mu.Lock()
	d, ok := c.decks[k]
	c.mu.Unlock()
	if ok {
		return d, nil
	}
	d, _, err := s.Load(ctx, v.Plan, v.Version)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.decks == nil {
		c.decks = map[deckKey]*Deck{}
	}
	for old := range c.decks {
		if len(c.decks) < deckCacheSize {
			break
		}
		delete(c.decks, old)
	}
	c.decks[k] = d
	return d, nil
}

type raterMetrics struct {
	cdrs    *prometheus.CounterVec
	unrated *prometheus.CounterVec
	skipped prometheus.Counter
}

func newRaterMetrics(reg prometheus.Registerer, consumer string) (*raterMetrics, error) {
	labels := prometheus.Labels{"consumer": consumer}
	m := &raterMetrics{
		cdrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "carrier_rater_cdrs_total",
			Help:        "Rated CDRs published by the rater, by status (rated, unrated).",
			ConstLabels: labels,
		}, []string{"status"}),
		unrated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "carrier_rater_unrated_total",
			Help:        "CDRs the rater published as unrated, by reason.",
			ConstLabels: labels,
		}, []string{"reason"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "carrier_rater_skipped_total",
			Help:        "CDR events the rater could not read (a newer schema version or a broken payload).",
			ConstLabels: labels,
		}),
	}
	for _, s := range []schema.RatingStatus{schema.StatusRated, schema.StatusUnrated} {
		m.cdrs.WithLabelValues(string(s))
	}
	if reg == nil {
		return m, nil
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.cdrs, m.unrated, m.skipped} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("register rater metrics for consumer %s: %w", consumer, err)
		}
		done = append(done, c)
	}
	return m, nil
}

// RerateConfig selects the CDRs a rerate reprices.
type RerateConfig struct {
	// From and To bound the calls by answer time (INVITE time for calls
	// that never connected): From inclusive, To exclusive.
	From, To time.Time
	// Account restricts the rerate to one account ("" all).
	Account string
	// Run numbers the rerate's corrections (schema.RatedID); give each
	// rerate its own, such as its start time in ms. It must not be 0, the
	// rater's own run.
	Run uint64
	// Progress, when set, is told how many rated CDRs were read so far.
	Progress func(read int)
}

// RerateSummary is what a rerate did.
type RerateSummary struct {
	Read      int `json:"read"`      // rated CDR events read from the log
	Calls     int `json:"calls"`     // answered calls in the window
	Unchanged int `json:"unchanged"` // priced as before
	Corrected int `json:"corrected"` // a correction was published
	// Unpriced calls cannot be priced with the current decks; they keep
	// their last rating (a rerate never refunds a call for want of a rate).
	Unpriced int `json:"unpriced"`
	// SellDelta is the sum of the corrections' SellDelta.
	SellDelta schema.Money `json:"sell_delta"`
}

// ErrBadRerate: the rerate's window or run is not usable.
var ErrBadRerate = errors.New("bad rerate")

// Rerate reprices the answered calls of a period with the current decks
// and provisioning, and publishes a correction for every call whose price
// changed: a call.rated of run cfg.Run that carries the new price, the id
// of the rating it replaces and SellDelta, the amount the ledger applies.
// The latest rating of a call is its price. Running the same rerate again
// finds the corrected prices and publishes nothing; a correction
// published twice has one id.
//
// The calls' latest ratings are read from the CDR stream's rated CDRs
// (every rating published since From), and held in memory for the
// period. A call the rater never rated is not in the log's rated CDRs;
// the rater rates it when it runs.
func (r *Rater) Rerate(ctx context.Context, cfg RerateConfig) (RerateSummary, error) {
	var sum RerateSummary
	if cfg.Run == 0 || cfg.From.IsZero() || !cfg.To.After(cfg.From) {
		return sum, fmt.Errorf("rerate from %s to %s, run %d: want From before To and a run other than 0: %w", cfg.From, cfg.To, cfg.Run, ErrBadRerate)
	}
	latest, order, err := r.latestRatings(ctx, cfg, &sum)
	if err != nil {
		return sum, err
	}
	for _, id := range order {
		prev := latest[id]
		sum.Calls++
		next, err := r.Rate(ctx, prev.rated.CDR)
		if err != nil {
			return sum, err
		}
		if next.Status != schema.StatusRated {
			sum.Unpriced++
			continue
		}
		if prev.rated.Status == schema.StatusRated && next.SellCost == prev.rated.SellCost &&
			next.BuyCost == prev.rated.BuyCost && next.Margin == prev.rated.Margin {
			sum.Unchanged++
			continue
		}
		delta, err := sellDelta(prev.rated, next)
		if err != nil {
			return sum, fmt.Errorf("rerate CDR %s: %w", id, err)
		}
		next.Run, next.Replaces, next.SellDelta = cfg.Run, prev.eventID, delta.String()
		ev, err := schema.NewEnvelopeWithID(schema.RatedID(id, cfg.Run), schema.TypeCallRated, schema.RatedVersion, schema.FromMillis(next.RatedAt), r.cfg.Node, next)
		if err != nil {
			return sum, err
		}
		if err := eventlog.Publish(ctx, r.js, schema.RatedSubject(next.CDR.CallID), ev); err != nil {
			return sum, fmt.Errorf("rerate: %w", err)
		}
		sum.Corrected++
		if sum.SellDelta, err = sum.SellDelta.Add(delta); err != nil {
			return sum, fmt.Errorf("rerate: sum of corrections: %w", err)
		}
	}
	return sum, nil
}

// sellDelta is next's sell cost minus prev's (0 when prev was unrated).
func sellDelta(prev, next schema.RatedCDR) (schema.Money, error) {
	var old schema.Money
	if prev.Status == schema.StatusRated && prev.SellCost != "" {
		var err error
		if old, err = schema.ParseMoney(prev.SellCost); err != nil {
			return 0, fmt.Errorf("previous sell cost: %w", err)
		}
	}
	cur, err := schema.ParseMoney(next.SellCost)
	if err != nil {
		return 0, fmt.Errorf("new sell cost: %w", err)
	}
	return cur.Add(-old)
}

type lastRating struct {
	eventID string
	rated   schema.RatedCDR
}

// latestRatings reads the rated CDRs published since cfg.From and keeps
// each selected call's latest rating, in the order calls first appear.
func (r *Rater) latestRatings(ctx context.Context, cfg RerateConfig, sum *RerateSummary) (map[string]lastRating, []string, error) {
	from := cfg.From
	cons, err := r.js.OrderedConsumer(ctx, schema.StreamCDR, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schema.AllRatedCalls},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &from,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("rerate: read rated CDRs: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("rerate: read rated CDRs: %w", err)
	}
	latest := map[string]lastRating{}
	var order []string
	for left := int(info.NumPending); left > 0; {
		b, err := cons.Fetch(min(left, 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, nil, fmt.Errorf("rerate: read rated CDRs: %w", err)
		}
		got := 0
		for m := range b.Messages() {
			got++
			sum.Read++
			env, err := schema.ParseEnvelope(m.Data())
			if err != nil {
				r.log.Error("rerate: skipping unreadable event", "subject", m.Subject(), "err", err)
				continue
			}
			var rc schema.RatedCDR
			if err := env.Decode(schema.TypeCallRated, schema.RatedVersion, &rc); err != nil {
				r.log.Error("rerate: skipping rated CDR this build cannot read", "id", env.ID, "err", err)
				continue
			}
			c := rc.CDR
			at := schema.FromMillis(c.AnswerAt)
			if c.Disposition != schema.Answered || at.Before(cfg.From) || !at.Before(cfg.To) ||
				(cfg.Account != "" && c.Account != cfg.Account) {
				continue
			}
			if _, seen := latest[c.ID]; !seen {
				order = append(order, c.ID)
			}
			latest[c.ID] = lastRating{eventID: env.ID, rated: rc}
		}
		if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return nil, nil, fmt.Errorf("rerate: read rated CDRs: %w", err)
		}
		if got == 0 {
			return nil, nil, fmt.Errorf("rerate: read rated CDRs: %d of them did not come", left)
		}
		left -= got
		if cfg.Progress != nil {
			cfg.Progress(sum.Read)
		}
	}
	return latest, order, nil
}
