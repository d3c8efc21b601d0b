package radius

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

// Names in JetStream; they are a contract (a renamed durable starts again
// from the beginning of the CDR stream, a renamed bucket forgets the open
// calls).
const (
	DefaultDurable = "radius"
	DefaultBucket  = "radius-open-calls"
)

// Sender sends an accounting request and returns the server's response;
// *Client is one.
type Sender interface {
	Send(ctx context.Context, p *Packet) (*Response, error)
}

// Config configures an Accounter. Zero fields take defaults.
type Config struct {
	// Profile selects the call attributes (ProfileOpenSIPS).
	Profile Profile
	NAS     NAS
	// InterimInterval is the period of Interim-Updates of an answered
	// call, counted from its answer; 0 sends none.
	InterimInterval time.Duration
	// SkipFailed leaves calls that never connected unaccounted; by
	// default they are sent as Acct-Status-Type Failed.
	SkipFailed bool
	// Durable is the consumer name on the CDR stream (DefaultDurable),
	// Bucket the KV bucket of open calls (DefaultBucket).
	Durable string
	Bucket  string
	// MaxBatch is the most events taken from the log at once (100) and
	// Concurrency the most requests in flight (16). Events of one call
	// are sent in order, one at a time.
	MaxBatch    int
	Concurrency int
	Logger      *slog.Logger
	// Registerer receives the accounter's metrics; nil leaves them
	// unregistered.
	Registerer prometheus.Registerer
}

// Accounter turns the call lifecycle events of the CDR stream into
// RADIUS accounting: call.started is a Start, call.ended a Stop,
// call.failed a Failed record, and open calls get Interim-Updates. An
// event is acked only after a server acknowledged its record, so a server
// outage delays records and loses none.
//
// Delivery is at least once: a crash after a response and before the
// ack sends that record again on restart (with the same Acct-Session-Id,
// Acct-Multi-Session-Id and Event-Timestamp, so a server can tell). A
// batch retried after an outage resends only what no server took.
//
// Open calls (Start sent, no Stop yet) are kept in a JetStream KV bucket
// as well as in memory, so a restarted Accounter goes on sending their
// Interim-Updates (from the next period boundary on; the acked Starts are
// not delivered again). Run one Accounter per durable: each would send
// the Interim-Updates of every open call.
type Accounter struct {
	js     jetstream.JetStream
	sender Sender
	cfg    Config
	log    *slog.Logger
	m      *accounterMetrics

	mu   sync.Mutex
	open map[string]*openCall // by CDR id
	sent *seenSet
}

// openCall is an answered call whose Stop has not been sent.
type openCall struct {
	mu  sync.Mutex // held while a record of the call is being sent
	cdr schema.CDR
	// next is when its next Interim-Update is due.
	next  time.Time
	ended bool
}

// New prepares an Accounter; Run starts it.
func New(js jetstream.JetStream, sender Sender, cfg Config) (*Accounter, error) {
	if cfg.Profile == "" {
		cfg.Profile = ProfileOpenSIPS
	}
	if _, err := ParseProfile(string(cfg.Profile)); err != nil {
		return nil, err
	}
	if cfg.Durable == "" {
		cfg.Durable = DefaultDurable
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 100
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 16
	}
	if cfg.InterimInterval < 0 {
		return nil, fmt.Errorf("radius: negative interim interval %s", cfg.InterimInterval)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newAccounterMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Accounter{
		js:     js,
		sender: sender,
		cfg:    cfg,
		log:    cfg.Logger.With("component", "radius"),
		m:      m,
		open:   make(map[string]*openCall),
		sent:   newSeenSet(1 << 16),
	}, nil
}

// Run accounts the CDR stream until ctx is done, then returns ctx's
// error; it returns earlier only if the log cannot be consumed at all.
func (a *Accounter) Run(ctx context.Context) error {
	kv, err := a.openBucket(ctx)
	if err != nil {
		return err
	}
	if err := a.loadOpenCalls(ctx, kv); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if a.cfg.InterimInterval > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.interimLoop(ctx)
		}()
	}
	err = eventlog.Consume(ctx, a.js, eventlog.ConsumerConfig{
		Stream:         schema.StreamCDR,
		Durable:        a.cfg.Durable,
		FilterSubjects: []string{schema.AllCallEvents},
		MaxBatch:       a.cfg.MaxBatch,
		Logger:         a.log,
	}, func(ctx context.Context, batch []eventlog.Msg) error { return a.handle(ctx, kv, batch) })
	cancel()
	wg.Wait()
	return err
}

// openBucket creates the open-calls bucket, waiting while JetStream is
// not reachable.
func (a *Accounter) openBucket(ctx context.Context) (jetstream.KeyValue, error) {
	backoff := 200 * time.Millisecond
	for {
		kv, err := a.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      a.cfg.Bucket,
			Description: "answered calls the RADIUS accounter has sent a Start and no Stop for",
			Storage:     jetstream.FileStorage,
		})
		if err == nil {
			return kv, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		a.log.Warn("open-calls bucket not available, retrying", "bucket", a.cfg.Bucket, "err", err, "backoff", backoff)
		if !sleepUntil(ctx, time.Now().Add(backoff)) {
			return nil, ctx.Err()
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (a *Accounter) loadOpenCalls(ctx context.Context, kv jetstream.KeyValue) error {
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("radius: list open calls: %w", err)
	}
	now := time.Now()
	for key := range keys.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			return fmt.Errorf("radius: read open call %s: %w", key, err)
		}
		var c schema.CDR
		if err := json.Unmarshal(e.Value(), &c); err != nil {
			a.log.Error("dropping unreadable open call", "key", key, "err", err)
			_ = kv.Delete(ctx, key)
			continue
		}
		a.open[c.ID] = &openCall{cdr: c, next: a.nextInterim(c, now)}
	}
	a.m.openCalls.Set(float64(len(a.open)))
	if len(a.open) > 0 {
		a.log.Info("open calls restored", "calls", len(a.open))
	}
	return nil
}

// nextInterim is the first interim boundary (answer + k*interval) after
// now. After a restart, boundaries that passed while we were down are
// skipped rather than sent in a burst.
func (a *Accounter) nextInterim(c schema.CDR, now time.Time) time.Time {
	iv := a.cfg.InterimInterval
	if iv <= 0 {
		return time.Time{}
	}
	answer := schema.FromMillis(c.AnswerAt)
	if answer.IsZero() {
		answer = now
	}
	k := now.Sub(answer)/iv + 1
	if k < 1 {
		k = 1
	}
	return answer.Add(k * iv)
}

// pending is one event's record.
type pending struct {
	eventID string
	rec     Record
}

// handle sends the records of a batch, the events of one call in order
// and calls in parallel. Every record is tried even when another fails,
// so that a retry of the batch resends only what no server took: records
// already acknowledged are remembered by event id and skipped.
func (a *Accounter) handle(ctx context.Context, kv jetstream.KeyValue, batch []eventlog.Msg) error {
	var order []string
	calls := make(map[string][]pending)
	for _, msg := range batch {
		if a.sent.has(msg.Envelope.ID) {
			continue
		}
		rec, ok := a.record(msg)
		if !ok {
			a.sent.add(msg.Envelope.ID)
			continue
		}
		if _, ok := calls[rec.CDR.ID]; !ok {
			order = append(order, rec.CDR.ID)
		}
		calls[rec.CDR.ID] = append(calls[rec.CDR.ID], pending{eventID: msg.Envelope.ID, rec: rec})
	}
	var g errgroup.Group
	g.SetLimit(a.cfg.Concurrency)
	var mu sync.Mutex
	var errs []error
	for _, id := range order {
		g.Go(func() error {
			for _, p := range calls[id] {
				err := a.account(ctx, kv, p.rec)
				if errors.Is(err, ErrInvalidPacket) {
					// Retrying cannot help, and it would hold up the stream.
					a.m.skipped.Inc()
					a.log.Error("skipping call event whose record cannot be sent", "call_id", p.rec.CDR.CallID, "status", p.rec.Status, "err", err)
					err = nil
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s of call %s: %w", p.rec.Status, p.rec.CDR.CallID, err))
					mu.Unlock()
					return nil
				}
				a.sent.add(p.eventID)
			}
			return nil
		})
	}
	_ = g.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("radius: %d of %d calls not accounted: %w", len(errs), len(order), errs[0])
	}
	return nil
}

// record reads an event; ok is false for events that are not accounted
// (failed calls with SkipFailed) or cannot be read by this build.
func (a *Accounter) record(msg eventlog.Msg) (Record, bool) {
	env := msg.Envelope
	var status StatusType
	switch env.Type {
	case schema.TypeCallStarted:
		status = StatusStart
	case schema.TypeCallEnded:
		status = StatusStop
	case schema.TypeCallFailed:
		if a.cfg.SkipFailed {
			return Record{}, false
		}
		status = StatusFailed
	default:
		return Record{}, false
	}
	var c schema.CDR
	if err := env.Decode(env.Type, schema.CDRVersion, &c); err != nil {
		a.m.skipped.Inc()
		a.log.Error("skipping call event this build cannot read", "seq", msg.Seq, "err", err)
		return Record{}, false
	}
	at := schema.FromMillis(c.EndAt)
	if status == StatusStart {
		at = schema.FromMillis(c.AnswerAt)
	}
	if at.IsZero() {
		at = schema.FromMillis(env.Time)
	}
	return Record{Status: status, CDR: c, At: at}, true
}

// account sends one record and keeps the open calls in step. The bucket
// is changed before the record is sent, so that a failure there never
// makes a record go out twice: a Start is stored first (Put is
// idempotent), a Stop forgets its call first (the call.ended event stays
// unacked until the Stop is sent, so it is sent after a crash anyway).
func (a *Accounter) account(ctx context.Context, kv jetstream.KeyValue, rec Record) error {
	switch rec.Status {
	case StatusStart:
		b, err := json.Marshal(rec.CDR)
		if err != nil {
			return err
		}
		if _, err := kv.Put(ctx, rec.CDR.ID, b); err != nil {
			return fmt.Errorf("store open call: %w", err)
		}
		if err := a.send(ctx, rec); err != nil {
			if errors.Is(err, ErrInvalidPacket) {
				_ = kv.Delete(ctx, rec.CDR.ID)
			}
			return err
		}
		a.mu.Lock()
		if _, ok := a.open[rec.CDR.ID]; !ok {
			a.open[rec.CDR.ID] = &openCall{cdr: rec.CDR, next: a.nextInterim(rec.CDR, time.Now())}
		}
		a.m.openCalls.Set(float64(len(a.open)))
		a.mu.Unlock()
		return nil
	case StatusStop:
		// A Stop waits for an Interim-Update of the call under way, so
		// that the server sees them in order, and ends the interims.
		a.mu.Lock()
		oc := a.open[rec.CDR.ID]
		a.mu.Unlock()
		if oc != nil {
			oc.mu.Lock()
			defer oc.mu.Unlock()
		}
		if err := kv.Delete(ctx, rec.CDR.ID); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("forget open call: %w", err)
		}
		if err := a.send(ctx, rec); err != nil {
			return err
		}
		if oc != nil {
			oc.ended = true
		}
		a.mu.Lock()
		delete(a.open, rec.CDR.ID)
		a.m.openCalls.Set(float64(len(a.open)))
		a.mu.Unlock()
		return nil
	}
	return a.send(ctx, rec)
}

func (a *Accounter) send(ctx context.Context, rec Record) error {
	p := rec.Packet(a.cfg.Profile, a.cfg.NAS, time.Now())
	if _, err := a.sender.Send(ctx, p); err != nil {
		return err
	}
	a.m.records.WithLabelValues(rec.Status.String()).Inc()
	return nil
}

// interimLoop sends the Interim-Updates that are due until ctx is done.
func (a *Accounter) interimLoop(ctx context.Context) {
	tick := min(max(a.cfg.InterimInterval/10, 100*time.Millisecond), 5*time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.sendInterims(ctx, time.Now())
	}
}

// sendInterims sends the updates due at now. While the consumer is behind
// the log it sends none: the Stop of a call may be in the backlog, and
// an update for an ended call would be wrong. An update no server takes
// is not retried; the next one follows a period later.
func (a *Accounter) sendInterims(ctx context.Context, now time.Time) {
	a.mu.Lock()
	var due []*openCall
	for _, oc := range a.open {
		if !oc.next.IsZero() && !now.Before(oc.next) {
			due = append(due, oc)
		}
	}
	a.mu.Unlock()
	if len(due) == 0 || !a.caughtUp(ctx) {
		return
	}
	var g errgroup.Group
	g.SetLimit(a.cfg.Concurrency)
	for _, oc := range due {
		g.Go(func() error {
			oc.mu.Lock()
			defer oc.mu.Unlock()
			if oc.ended {
				return nil
			}
			at := time.Now()
			oc.next = a.nextInterim(oc.cdr, at)
			if err := a.send(ctx, Record{Status: StatusInterim, CDR: oc.cdr, At: at}); err != nil && ctx.Err() == nil {
				a.log.Warn("interim update not accounted", "call_id", oc.cdr.CallID, "err", err)
			}
			return nil
		})
	}
	_ = g.Wait()
}

// caughtUp reports whether the consumer has no events waiting.
func (a *Accounter) caughtUp(ctx context.Context) bool {
	cons, err := a.js.Consumer(ctx, schema.StreamCDR, a.cfg.Durable)
	if err != nil {
		return false
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return false
	}
	return info.NumPending == 0
}

// seenSet remembers the most recent event ids, up to a bound, oldest out
// first.
type seenSet struct {
	mu    sync.Mutex
	ids   map[string]struct{}
	ring  []string
	next  int
	limit int
}

func newSeenSet(limit int) *seenSet {
	return &seenSet{ids: make(map[string]struct{}, limit), ring: make([]string, limit), limit: limit}
}

func (s *seenSet) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok
}

func (s *seenSet) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[id]; ok {
		return
	}
	if old := s.ring[s.next]; old != "" {
		delete(s.ids, old)
	}
	s.ring[s.next] = id
	s.ids[id] = struct{}{}
	s.next = (s.next + 1) % s.limit
}
