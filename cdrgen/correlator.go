package cdrgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

// Defaults of Config.
const (
	DefaultDurable         = "cdrgen"
	DefaultCallsBucket     = "CDRGEN_CALLS"
	DefaultFinishedBucket  = "CDRGEN_FINISHED"
	DefaultFinishedTTL     = 48 * time.Hour
	DefaultMaxCallDuration = 4 * time.Hour
	DefaultSweepInterval   = time.Minute
	DefaultSweepLag        = time.Minute
)

var (
	// ErrInvalidConfig: New was given a configuration it cannot run.
	ErrInvalidConfig = errors.New("invalid cdrgen config")
	// ErrRunning: Run was called while the correlator was already running.
	ErrRunning = errors.New("cdrgen correlator already running")
	// ErrCorruptState: a record in the state buckets cannot be read. The
	// correlator stops rather than forget a call.
	ErrCorruptState = errors.New("corrupt cdrgen state")
)

// Config configures a Correlator. The zero value, apart from what New
// fills in, correlates every partition under the durable "cdrgen".
type Config struct {
	// Durable names the consumer on the SIP stream (default "cdrgen").
	// Correlators on different partitions need different names; one
	// correlator at a time may run under a name.
	Durable string
	// Partitions are the Call-ID partitions to correlate (nil: all). Each
	// call's events, and its state in the buckets, belong to one partition.
	Partitions []int
	// Node names this correlator in the events it publishes (default: the
	// host name). The CDR's own Node is the proxy that carried the call.
	Node string

	// CallsBucket keeps open calls, without a TTL (default CDRGEN_CALLS);
	// FinishedBucket keeps tombstones of finished calls for FinishedTTL
	// (default CDRGEN_FINISHED, 48h), which is how long after a call's end
	// a redelivery or spool replay of its events is still recognised. It
	// costs one small record per call made in that time. A rebuild uses
	// its own pair of buckets.
	CallsBucket    string
	FinishedBucket string
	FinishedTTL    time.Duration
	// Replicas of the state buckets (default 1).
	Replicas int

	// MaxCallDuration is the longest an answered call is taken to last
	// (default 4h; negative: no limit). A call whose BYE never comes (its
	// proxy died or lost it) is ended at answer + MaxCallDuration, hangup
	// by "proxy" for "no_bye", once the log's time is SweepLag past that;
	// a BYE later than answer + MaxCallDuration gives the same CDR, so it
	// does not matter which comes first. A rebuild must use the same value
	// to give the same CDRs.
	MaxCallDuration time.Duration
	// SweepInterval is how often the wall clock is asked for the time when
	// the log is quiet (default 1m). The log's time is the latest event
	// time the correlator has seen; only when no event has come for a whole
	// SweepInterval and the consumer has nothing pending does now minus
	// SweepInterval stand in for it, so that a call on an idle system
	// still gets its CDR.
	SweepInterval time.Duration
	// SweepLag is how far out of time order the events of different calls
	// may reach the log (several proxies, in-flight publishes; default 1m):
	// a call is swept only once the log's time is past its maximum by that
	// much, so that a BYE only that late still ends it. It changes when a
	// call without a BYE is ended, never its CDR.
	SweepLag time.Duration

	// MaxBatch and MaxWait are passed to the consumer (eventlog defaults
	// when zero): the state is written once per call per batch.
	MaxBatch int
	MaxWait  time.Duration

	Logger *slog.Logger
	// Registerer receives the carrier_cdrgen_* metrics; nil: not registered.
	Registerer prometheus.Registerer
}

// Correlator turns the SIP transactions of the log into calls and publishes
// their lifecycle events (call.started, call.ended, call.failed) on the CDR
// stream.
type Correlator struct {
	js      jetstream.JetStream
	cfg     Config
	log     *slog.Logger
	consLog *slog.Logger // for eventlog, which adds the consumer itself
	metrics *metrics
	rules   rules
	running atomic.Bool
}

// New checks cfg and fills in its defaults. It does not talk to JetStream;
// Run does.
func New(js jetstream.JetStream, cfg Config) (*Correlator, error) {
	if js == nil {
		return nil, fmt.Errorf("cdrgen: no jetstream: %w", ErrInvalidConfig)
	}
	if cfg.Durable == "" {
		cfg.Durable = DefaultDurable
	}
	if cfg.CallsBucket == "" {
		cfg.CallsBucket = DefaultCallsBucket
	}
	if cfg.FinishedBucket == "" {
		cfg.FinishedBucket = DefaultFinishedBucket
	}
	for _, name := range []string{cfg.Durable, cfg.CallsBucket, cfg.FinishedBucket} {
		if !validName(name) {
			return nil, fmt.Errorf("cdrgen: name %q: use letters, digits, '-' and '_': %w", name, ErrInvalidConfig)
		}
	}
	if cfg.CallsBucket == cfg.FinishedBucket {
		return nil, fmt.Errorf("cdrgen: calls and finished bucket are both %s: %w", cfg.CallsBucket, ErrInvalidConfig)
	}
	if cfg.FinishedTTL == 0 {
		cfg.FinishedTTL = DefaultFinishedTTL
	}
	if cfg.FinishedTTL < time.Minute {
		return nil, fmt.Errorf("cdrgen: finished TTL %s is shorter than a redelivery takes: %w", cfg.FinishedTTL, ErrInvalidConfig)
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxCallDuration == 0 {
		cfg.MaxCallDuration = DefaultMaxCallDuration
	}
	if cfg.MaxCallDuration > 0 && cfg.MaxCallDuration < time.Second {
		return nil, fmt.Errorf("cdrgen: max call duration %s is under a second: %w", cfg.MaxCallDuration, ErrInvalidConfig)
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = DefaultSweepInterval
	}
	if cfg.SweepLag == 0 {
		cfg.SweepLag = DefaultSweepLag
	}
	if cfg.SweepInterval < 0 || cfg.SweepLag < 0 {
		return nil, fmt.Errorf("cdrgen: negative sweep interval %s or lag %s: %w", cfg.SweepInterval, cfg.SweepLag, ErrInvalidConfig)
	}
	if cfg.Partitions != nil {
		if len(cfg.Partitions) == 0 {
			return nil, fmt.Errorf("cdrgen: empty partition list (nil means all): %w", ErrInvalidConfig)
		}
		cfg.Partitions = slices.Clone(cfg.Partitions)
		slices.Sort(cfg.Partitions)
		for i, p := range cfg.Partitions {
			if p < 0 || p >= schema.Partitions {
				return nil, fmt.Errorf("cdrgen: partition %d not in 0..%d: %w", p, schema.Partitions-1, ErrInvalidConfig)
			}
			if i > 0 && cfg.Partitions[i-1] == p {
				return nil, fmt.Errorf("cdrgen: partition %d listed twice: %w", p, ErrInvalidConfig)
			}
		}
	}
	if cfg.Node == "" {
		cfg.Node = "cdrgen"
		if h, err := os.Hostname(); err == nil && h != "" {
			cfg.Node = h
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer, cfg.Durable)
	if err != nil {
		return nil, err
	}
	r := rules{lagMs: cfg.SweepLag.Milliseconds()}
	if cfg.MaxCallDuration > 0 {
		r.maxCallMs = cfg.MaxCallDuration.Milliseconds()
	}
	return &Correlator{
		js:      js,
		cfg:     cfg,
		rules:   r,
		log:     cfg.Logger.With("component", "cdrgen", "consumer", cfg.Durable),
		consLog: cfg.Logger.With("component", "cdrgen"),
		metrics: m,
	}, nil
}

// Run correlates until ctx is done, then returns ctx.Err(). It creates the
// state buckets if needed, loads the open calls of its partitions, and
// consumes the SIP stream; each batch's events are published and its state
// stored before the batch is acked, so a stop at any point loses nothing
// and a restart repeats nothing.
func (c *Correlator) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)

	st, err := c.openState(ctx)
	if err != nil {
		return err
	}
	c.metrics.open.Set(float64(len(st.open)))
	c.log.Info("correlating", "partitions", c.partitionsForLog(), "open_calls", len(st.open))

	cc := eventlog.ConsumerConfig{
		Stream:   schema.StreamSIP,
		Durable:  c.cfg.Durable,
		MaxBatch: c.cfg.MaxBatch,
		MaxWait:  c.cfg.MaxWait,
		Logger:   c.consLog,
	}
	for _, p := range c.cfg.Partitions {
		cc.FilterSubjects = append(cc.FilterSubjects, schema.TransactionPartitionSubject(p))
	}
	h := newHandler(c, st)
	// The sweep stops (cancel) before Run waits for it (wg.Wait), however
	// Consume returns.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.rules.maxCallMs > 0 {
		wg.Go(func() { h.sweepIdle(ctx, c.cfg.SweepInterval) })
	}
	return eventlog.Consume(ctx, c.js, cc, h.handle)
}

// openState opens the buckets and loads the open calls, waiting for
// JetStream as long as ctx allows, like the consumer does.
func (c *Correlator) openState(ctx context.Context) (*store, error) {
	buckets := stateBuckets{
		calls:       c.cfg.CallsBucket,
		finished:    c.cfg.FinishedBucket,
		finishedTTL: c.cfg.FinishedTTL,
		replicas:    c.cfg.Replicas,
	}
	backoff := 200 * time.Millisecond
	for {
		st, err := openStore(ctx, c.js, buckets)
		if err == nil {
			err = st.load(ctx, c.cfg.Partitions)
		}
		if err == nil {
			return st, nil
		}
		if errors.Is(err, ErrCorruptState) || errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) || ctx.Err() != nil {
			return nil, fmt.Errorf("cdrgen: %w", err)
		}
		c.log.Warn("opening correlator state failed, retrying", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("cdrgen: %w", err)
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// validName reports whether s is usable as a consumer and KV bucket name.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func (c *Correlator) partitionsForLog() any {
	if c.cfg.Partitions == nil {
		return "all"
	}
	return c.cfg.Partitions
}

// handler is the batch handler of one Run, and its sweep of calls whose
// BYE never came.
type handler struct {
	c  *Correlator
	st *store

	// mu keeps a batch and the idle sweep apart: both change the store.
	mu sync.Mutex
	// watermark is the log's time as far as this correlator knows: the
	// latest event time it has seen (ms), or the idle sweep's stand-in.
	watermark int64
	// quietSince is the wall-clock time of the last batch.
	quietSince time.Time
	// finished counts the finished CDRs published (for a rebuild's progress).
	finished uint64
	// firstExpiry: no open call expires before the watermark passes it.
	// It may be too early (a call it stood for has ended since), never
	// too late.
	firstExpiry int64
}

func newHandler(c *Correlator, st *store) *handler {
	h := &handler{c: c, st: st, quietSince: time.Now(), firstExpiry: math.MaxInt64}
	for _, s := range st.open {
		h.noteOpen(s)
	}
	return h
}

// noteOpen lowers firstExpiry for a call that is open now.
func (h *handler) noteOpen(s *callState) {
	if h.c.rules.maxCallMs > 0 && s.Phase == phaseOpen && s.CDR != nil {
		h.firstExpiry = min(h.firstExpiry, s.CDR.AnswerAt+h.c.rules.maxCallMs)
	}
}

// change is one call's part of a batch: the events to publish, then the
// state to store.
type change struct {
	key        string
	prev, next *callState
	out        []emission
}

func (h *handler) handle(ctx context.Context, batch []eventlog.Msg) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	events := make([]event, 0, len(batch))
	outcomes := map[outcome]int{}
	var keys []string
	watermark := h.watermark
	for _, m := range batch {
		// Every event, whatever it is, says how far the log has got.
		watermark = max(watermark, m.Envelope.Time)
		var tx schema.Transaction
		err := m.Envelope.Decode(schema.TypeTransaction, schema.TransactionVersion, &tx)
		switch {
		case errors.Is(err, schema.ErrWrongType):
			outcomes[outcomeIgnored]++
			continue
		case errors.Is(err, schema.ErrUnknownVersion):
			// Skipping would lose calls; the batch waits for an upgrade.
			return fmt.Errorf("cdrgen: seq %d: %w (upgrade the correlator)", m.Seq, err)
		case err != nil:
			h.c.log.Error("skipping unreadable transaction", "seq", m.Seq, "subject", m.Subject, "err", err)
			outcomes[outcomeMalformed]++
			continue
		}
		ev := newEvent(tx, m.Envelope.Node)
		keys = append(keys, ev.keys...)
		events = append(events, ev)
	}

	base, err := h.st.fetch(ctx, keys)
	if err != nil {
		return fmt.Errorf("cdrgen: %w", err)
	}
	b := newBatchBook(base)
	byKey := map[string][]emission{}
	for i := range events {
		out, o := h.c.rules.correlate(b, &events[i])
		outcomes[o]++
		if o == outcomeConflict {
			tx := &events[i].tx
			h.c.log.Warn("INVITE for a call that is already decided; keeping the first outcome",
				"call_id", tx.CallID, "from_tag", tx.FromTag, "cseq", tx.CSeq, "status", tx.Status)
		}
		for _, e := range out {
			byKey[e.key] = append(byKey[e.key], e)
		}
	}
	if err := h.commitBook(ctx, base, b, byKey); err != nil {
		return err
	}
	for o, n := range outcomes {
		h.c.metrics.events.WithLabelValues(string(o)).Add(float64(n))
	}
	// Only now: a batch that failed is retried from the same watermark.
	h.watermark = watermark
	h.quietSince = time.Now()
	return h.sweep(ctx)
}

// commitBook makes the calls a batch book changed durable: their events
// published, then their states stored; then it updates memory.
func (h *handler) commitBook(ctx context.Context, base map[string]*callState, b *batchBook, byKey map[string][]emission) error {
	changes := make([]change, len(b.dirty))
	for i, key := range b.dirty {
		changes[i] = change{key: key, prev: base[key], next: b.next[key], out: byKey[key]}
	}
	// Calls are independent, so they are made durable concurrently; within
	// a call its events go out in order, and before its state.
	err := forEach(ctx, len(changes), func(ctx context.Context, i int) error {
		return h.commit(ctx, &changes[i])
	})
	if err != nil {
		return fmt.Errorf("cdrgen: %w", err)
	}
	for i := range changes {
		h.st.remember(changes[i].key, changes[i].next)
		h.noteOpen(changes[i].next)
		for _, e := range changes[i].out {
			if e.Type != schema.TypeCallStarted {
				h.c.metrics.cdrs.WithLabelValues(string(e.CDR.Disposition)).Inc()
				h.finished++
			}
		}
	}
	h.c.metrics.open.Set(float64(len(h.st.open)))
	return nil
}

// sweep ends the open calls that have outlived the maximum call duration
// by the watermark. The caller holds mu.
func (h *handler) sweep(ctx context.Context) error {
	r := h.c.rules
	if r.maxCallMs <= 0 || h.watermark-r.lagMs <= h.firstExpiry {
		return nil
	}
	var keys []string
	next := int64(math.MaxInt64)
	for key, s := range h.st.open {
		if r.expired(s, h.watermark) {
			keys = append(keys, key)
		} else if s.CDR != nil {
			next = min(next, s.CDR.AnswerAt+r.maxCallMs)
		}
	}
	slices.Sort(keys)
	base := make(map[string]*callState, len(keys))
	b := newBatchBook(base)
	byKey := make(map[string][]emission, len(keys))
	for _, key := range keys {
		s := h.st.open[key]
		base[key] = s
		e := r.closeExpired(b, key, s)
		byKey[key] = []emission{e}
		h.c.log.Info("ending call without a BYE at the maximum call duration",
			"call_id", s.CDR.CallID, "answer_at", s.CDR.AnswerAt, "end_at", e.CDR.EndAt)
	}
	if err := h.commitBook(ctx, base, b, byKey); err != nil {
		return err
	}
	h.c.metrics.expired.Add(float64(len(keys)))
	h.firstExpiry = next
	return nil
}

// sweepIdle stands the wall clock in for the log's time while no event
// comes, every interval until ctx is done. Quiet is not enough: the
// consumer must also have nothing pending, or a JetStream outage (no
// batches, BYEs waiting in the stream) would look like an idle log. A
// sweep that fails is tried again at the next tick.
func (h *handler) sweepIdle(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			h.mu.Lock()
			quiet := now.Sub(h.quietSince) >= interval
			h.mu.Unlock()
			if !quiet || !h.caughtUp(ctx) {
				continue
			}
			h.mu.Lock()
			if now.Sub(h.quietSince) >= interval {
				h.watermark = max(h.watermark, now.Add(-interval).UnixMilli())
				if err := h.sweep(ctx); err != nil && ctx.Err() == nil {
					h.c.log.Warn("sweeping calls without a BYE failed, retrying", "err", err, "retry_in", interval)
				}
			}
			h.mu.Unlock()
		}
	}
}

// caughtUp reports whether the consumer has handled everything on its
// partitions of the stream; false when JetStream cannot say.
func (h *handler) caughtUp(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cons, err := h.c.js.Consumer(ctx, schema.StreamSIP, h.c.cfg.Durable)
	if err != nil {
		return false
	}
	info, err := cons.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

// commit publishes a call's events, then stores its state. A crash between
// the two only means the events are published again on redelivery, with
// the same ids.
func (h *handler) commit(ctx context.Context, ch *change) error {
	for _, e := range ch.out {
		env, err := schema.NewEnvelopeWithID(e.ID, e.Type, schema.CDRVersion, schema.FromMillis(e.At), h.c.cfg.Node, e.CDR)
		if err != nil {
			return err
		}
		if err := eventlog.Publish(ctx, h.c.js, schema.CDRSubject(e.Type, e.CDR.CallID), env); err != nil {
			return err
		}
	}
	return h.st.persist(ctx, ch.key, ch.prev, ch.next)
}
