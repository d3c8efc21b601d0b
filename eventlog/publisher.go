package eventlog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/schema"
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// SpoolDir holds the spool: events JetStream did not take wait there,
	// across restarts, until they are replayed. Required; one Publisher
	// per directory.
	SpoolDir string
	// MaxInFlight bounds the events sent and not yet acknowledged
	// (default 4096). When the window is full JetStream is too slow and
	// new events go to the spool.
	MaxInFlight int
	// AckTimeout is how long an event may wait for its acknowledgement
	// before it is treated as lost in transit and spooled (default 5s).
	AckTimeout time.Duration
	// SyncInterval is how often the spool is fsynced (default 100ms): the
	// events a power cut can cost during an outage.
	SyncInterval time.Duration
	Logger       *slog.Logger
	// Registerer takes the publisher's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
}

const (
	defaultMaxInFlight  = 4096
	defaultAckTimeout   = 5 * time.Second
	defaultSyncInterval = 100 * time.Millisecond
	probeTimeout        = 2 * time.Second
	minReplayBackoff    = 100 * time.Millisecond
	maxReplayBackoff    = 2 * time.Second
	// stallWait bounds how long nats.go may hold a publish when its own
	// pending limit is reached; our window keeps below that limit.
	stallWait = 10 * time.Millisecond
	// maxWriteWait bounds a write to the publisher's socket.
	maxWriteWait = 2 * time.Second
)

var (
	// ErrPublisherClosed: Publish after Close, or Close called twice.
	ErrPublisherClosed = errors.New("publisher closed")

	errWindowFull   = errors.New("in-flight window full")
	errNotConnected = errors.New("not connected to nats")
)

// Publisher publishes events to JetStream without making the caller wait
// for acknowledgements, and keeps them in a local spool while JetStream
// is unreachable or slow.
//
// Events are sent asynchronously with their id as Nats-Msg-Id, at most
// MaxInFlight unacknowledged. The first sign of trouble (a full window, a
// failed send, an error or missing acknowledgement, a lost connection)
// switches the Publisher to spooling: the events still in flight and
// every new event are appended to the spool, in publish order. A replayer
// probes JetStream, sends the spool in order when it answers, deletes
// what was acknowledged and, once it has caught up, switches back to
// sending directly. Replaying an event that had reached JetStream after
// all is harmless: JetStream drops it inside its duplicate window and
// consumers are idempotent beyond it.
//
// Per-call order holds across an outage: the Publisher has a connection
// of its own (with the options of the one js uses) that does not buffer
// while reconnecting, so everything sent after the first failure goes
// through the spool. A stream that rejects one event and takes the next
// one sent right behind it (a leader change in a cluster) can still store
// those two out of order.
//
// An event is lost only when it can be neither sent nor spooled, or when
// JetStream rejects it for good (too big, bad subject); each loss is
// counted in carrier_eventlog_publish_errors_total and logged.
type Publisher struct {
	nc      *nats.Conn
	live    jetstream.JetStream // reports acks to liveBox
	replay  jetstream.JetStream // reports acks to replayBox
	pubOpts []jetstream.PublishOpt
	spool   *spool
	log     *slog.Logger
	m       *publisherMetrics
	// handoffs has when the events waiting in the spool were handed
	// over, for the publish lag and the spool's oldest age.
	handoffs *handoffs

	maxInFlight  int
	syncInterval time.Duration

	liveBox, replayBox *mailbox

	mu       sync.Mutex
	spooling bool // new events go to the spool; inflight is empty
	closed   bool
	inflight map[*nats.Msg]liveFlight // live events awaiting an ack
	seq      uint64
	// Switches between sending and spooling, logged sparingly: a
	// JetStream just slower than the event rate makes them frequent.
	toSpool, toLive switchLog

	wake       chan struct{} // something was spooled
	settled    chan struct{} // inflight became empty
	closing    chan struct{} // Close is waiting for the replayer to finish
	replayDone chan struct{}
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// NewPublisher opens the spool in cfg.SpoolDir and starts the
// publisher's background work: acknowledgement tracking, the replayer and
// the periodic spool fsync. Events a previous run left in the spool are
// replayed before new ones.
func NewPublisher(js jetstream.JetStream, cfg PublisherConfig) (*Publisher, error) {
	return newPublisher(js, cfg, defaultSegmentSize)
}

func newPublisher(js jetstream.JetStream, cfg PublisherConfig, segmentSize int64) (*Publisher, error) {
	if js == nil {
		return nil, errors.New("eventlog: publisher needs a jetstream context")
	}
	if cfg.SpoolDir == "" {
		return nil, errors.New("eventlog: publisher needs a spool dir")
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = defaultMaxInFlight
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = defaultAckTimeout
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = defaultSyncInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "eventlog.publisher", "spool", cfg.SpoolDir)
	ho := newHandoffs()
	m, err := newPublisherMetrics(cfg.Registerer, ho)
	if err != nil {
		return nil, err
	}
	sp, st, err := openSpool(cfg.SpoolDir, log, segmentSize)
	if err != nil {
		return nil, fmt.Errorf("eventlog: open spool: %w", err)
	}
	ho.recovered(st.records, oldestSpooled(sp, log))
	nc, err := dialLike(js.Conn(), log)
	if err != nil {
		sp.close()
		return nil, fmt.Errorf("eventlog: publisher connection: %w", err)
	}
	p := &Publisher{
		nc:           nc,
		pubOpts:      []jetstream.PublishOpt{jetstream.WithRetryAttempts(0), jetstream.WithStallWait(stallWait)},
		spool:        sp,
		log:          log,
		m:            m,
		handoffs:     ho,
		maxInFlight:  cfg.MaxInFlight,
		syncInterval: cfg.SyncInterval,
		liveBox:      newMailbox(),
		replayBox:    newMailbox(),
		inflight:     make(map[*nats.Msg]liveFlight),
		wake:         make(chan struct{}, 1),
		settled:      make(chan struct{}, 1),
		closing:      make(chan struct{}),
		replayDone:   make(chan struct{}),
	}
	// Contexts of our own, so that acks and errors come to us through
	// callbacks, with our ack timeout.
	if p.live, err = asyncContext(nc, js.Options(), p.liveBox, cfg.MaxInFlight, cfg.AckTimeout); err == nil {
		p.replay, err = asyncContext(nc, js.Options(), p.replayBox, cfg.MaxInFlight, cfg.AckTimeout)
	}
	if err != nil {
		nc.Close()
		sp.close()
		return nil, fmt.Errorf("eventlog: publisher: %w", err)
	}
	if st.torn > 0 {
		// The record being written when the process died may be lost.
		m.errors.Add(float64(st.torn))
	}
	if st.records > 0 {
		p.spooling = true
		m.spoolEvents.Add(float64(st.records))
		log.Info("spool holds events from an earlier run, replaying them first", "events", st.records, "segments", st.segments)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(3)
	go p.runAcker(ctx)
	go p.runReplayer(ctx)
	go p.runSyncer(ctx)
	return p, nil
}

// dialLike opens the publisher's own connection to the servers of src,
// with its options except these: it never gives up reconnecting, a write
// waits at most maxWriteWait, and it does not buffer publishes while
// reconnecting. Such a buffer would send
// events after the reconnect ahead of those spooled meanwhile and so
// reorder a call's events; without it a publish fails at once and the
// event is spooled. A connection of its own also keeps the proxy's event
// stream from queueing behind (or ahead of) other traffic.
func dialLike(src *nats.Conn, log *slog.Logger) (*nats.Conn, error) {
	o := src.Opts
	o.Name = cmp.Or(o.Name, "carrier") + " event publisher"
	o.AllowReconnect = true
	o.MaxReconnect = -1
	o.RetryOnFailedConnect = true
	o.ReconnectBufSize = -1
	// A server that stops reading (frozen, partitioned) must not hold a
	// Publish caller for nats.go's default minute: the write fails, the
	// events in flight miss their acks and are spooled.
	if o.FlusherTimeout <= 0 || o.FlusherTimeout > maxWriteWait {
		o.FlusherTimeout = maxWriteWait
	}
	o.DisconnectedCB = nil
	o.DisconnectedErrCB = func(_ *nats.Conn, err error) { log.Debug("publisher connection lost", "err", err) }
	o.ReconnectedCB = func(c *nats.Conn) { log.Debug("publisher connection back", "url", c.ConnectedUrl()) }
	o.ClosedCB = nil
	o.AsyncErrorCB = func(_ *nats.Conn, _ *nats.Subscription, err error) {
		log.Warn("publisher connection error", "err", err)
	}
	if len(o.Servers) == 0 && o.Url == "" {
		o.Url = src.ConnectedUrl()
	}
	return o.Connect()
}

func asyncContext(nc *nats.Conn, o jetstream.JetStreamOptions, box *mailbox, window int, ackTimeout time.Duration) (jetstream.JetStream, error) {
	opts := []jetstream.JetStreamOpt{
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
			box.put(ackResult{msg: m})
		}),
		// Called with nats.go's publisher lock held on an ack timeout:
		// it must not take any lock that is held while publishing.
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			box.put(ackResult{msg: m, err: err})
		}),
		// Above our own window so that nats.go never stalls a caller.
		jetstream.WithPublishAsyncMaxPending(2 * window),
		jetstream.WithPublishAsyncTimeout(ackTimeout),
	}
	if o.DefaultTimeout > 0 {
		opts = append(opts, jetstream.WithDefaultTimeout(o.DefaultTimeout))
	}
	if o.ClientTrace != nil {
		opts = append(opts, jetstream.WithClientTrace(o.ClientTrace))
	}
	switch {
	case o.Domain != "":
		return jetstream.NewWithDomain(nc, o.Domain, opts...)
	case o.APIPrefix != "":
		return jetstream.NewWithAPIPrefix(nc, o.APIPrefix, opts...)
	default:
		return jetstream.New(nc, opts...)
	}
}

// Publish sends ev on subject, or spools it when JetStream is unreachable
// or slow, or while earlier events wait in the spool. It does not wait
// for JetStream. It returns an error only when the event is lost: it
// could be neither sent nor spooled, or the publisher is closed.
func (p *Publisher) Publish(subject string, ev schema.Envelope) error {
	handed := p.handoffs.now()
	msg, err := newMsg(subject, ev)
	if err != nil {
		return p.lose(subject, ev.ID, err)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return p.lose(subject, ev.ID, ErrPublisherClosed)
	}
	if !p.spooling {
		err := p.sendLocked(msg, handed)
		if err == nil {
			p.mu.Unlock()
			return nil
		}
		if rejected(err) {
			p.mu.Unlock()
			return p.lose(subject, ev.ID, err)
		}
		p.startSpoolingLocked(err)
	}
	err = p.spoolLocked(msg, handed)
	p.mu.Unlock()
	if err != nil {
		return p.lose(subject, ev.ID, err)
	}
	nudge(p.wake)
	return nil
}

// liveFlight is a live event awaiting its ack: its publish order and
// when it was handed to Publish.
type liveFlight struct {
	seq    uint64
	handed time.Duration
}

// sendLocked publishes msg asynchronously and tracks it. p.mu held, so
// that events go on the wire in publish order.
func (p *Publisher) sendLocked(msg *nats.Msg, handed time.Duration) error {
	if len(p.inflight) >= p.maxInFlight {
		return errWindowFull
	}
	if p.nc.Status() != nats.CONNECTED {
		return errNotConnected
	}
	if _, err := p.live.PublishMsgAsync(msg, p.pubOpts...); err != nil {
		return err
	}
	p.seq++
	p.inflight[msg] = liveFlight{seq: p.seq, handed: handed}
	p.m.inflight.Inc()
	return nil
}

// startSpoolingLocked switches to spooling because of cause. The events
// in flight go to the spool first, in publish order: any of them may be
// lost, and nothing sent after them may overtake them. p.mu held.
func (p *Publisher) startSpoolingLocked(cause error) {
	if p.spooling {
		return
	}
	p.spooling = true
	n := p.spoolInflightLocked()
	p.toSpool.log(p.log, slog.LevelWarn, "jetstream is not taking events, spooling them", "cause", cause, "in_flight_spooled", n)
}

func (p *Publisher) spoolInflightLocked() int {
	msgs := make([]*nats.Msg, 0, len(p.inflight))
	for m := range p.inflight {
		msgs = append(msgs, m)
	}
	slices.SortFunc(msgs, func(a, b *nats.Msg) int { return cmp.Compare(p.inflight[a].seq, p.inflight[b].seq) })
	for _, m := range msgs {
		if err := p.spoolLocked(m, p.inflight[m].handed); err != nil {
			_ = p.lose(m.Subject, msgID(m), err)
		}
	}
	clear(p.inflight)
	p.m.inflight.Sub(float64(len(msgs)))
	return len(msgs)
}

func (p *Publisher) spoolLocked(msg *nats.Msg, handed time.Duration) error {
	// Booked first: the replayer may read the record as soon as it is
	// appended.
	p.handoffs.push(handed)
	if err := p.spool.append(msg.Subject, msgID(msg), msg.Data); err != nil {
		p.handoffs.pop()
		return err
	}
	p.m.spooled.Inc()
	p.m.spoolEvents.Inc()
	return nil
}

// lose counts and logs an event that is gone, and returns the error for it.
func (p *Publisher) lose(subject, id string, err error) error {
	p.m.errors.Inc()
	p.log.Error("event lost", "subject", subject, "id", id, "err", err)
	return fmt.Errorf("publish event %s to %s: %w", id, subject, err)
}

// rejected reports whether JetStream will never take the event, so that
// spooling it would only block the spool.
func rejected(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum
}

// runAcker settles live events as their acks or errors arrive.
func (p *Publisher) runAcker(ctx context.Context) {
	defer p.wg.Done()
	var batch []ackResult
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.liveBox.wake:
		}
		batch = p.liveBox.take(batch)
		now := p.handoffs.now()
		p.mu.Lock()
		wasSpooling := p.spooling
		for _, r := range batch {
			f, ok := p.inflight[r.msg]
			if !ok {
				continue // spooled meanwhile: the replay settles it
			}
			switch {
			case r.err == nil:
				delete(p.inflight, r.msg)
				p.m.inflight.Dec()
				p.m.published.Inc()
				p.m.observeLag(now - f.handed)
			case rejected(r.err):
				delete(p.inflight, r.msg)
				p.m.inflight.Dec()
				_ = p.lose(r.msg.Subject, msgID(r.msg), r.err)
			default:
				p.startSpoolingLocked(r.err)
			}
		}
		idle := len(p.inflight) == 0
		spooled := p.spooling && !wasSpooling
		p.mu.Unlock()
		clear(batch)
		if spooled {
			nudge(p.wake)
		}
		if idle {
			nudge(p.settled)
		}
	}
}

// runReplayer sends the spool to JetStream whenever it holds events and
// JetStream answers, backing off while it does not.
func (p *Publisher) runReplayer(ctx context.Context) {
	defer p.wg.Done()
	defer close(p.replayDone)
	backoff := minReplayBackoff
	down := false
	for {
		if p.spool.waiting() == 0 {
			select {
			case <-ctx.Done():
				return
			case <-p.closing:
				return
			case <-p.wake:
				continue
			}
		}
		err := p.probe(ctx)
		if err == nil {
			if down {
				p.log.Info("jetstream answers again, replaying the spool", "events", p.spool.waiting())
				down = false
			}
			if err = p.replayOnce(ctx); err == nil {
				backoff = minReplayBackoff
				continue
			}
		}
		if ctx.Err() != nil || isClosed(p.closing) {
			// Shutting down: what is left waits in the spool.
			return
		}
		if !down {
			p.log.Warn("cannot replay the spool yet, events wait in it", "events", p.spool.waiting(), "err", err)
			down = true
		} else {
			p.log.Debug("still cannot replay the spool", "events", p.spool.waiting(), "err", err)
		}
		if !sleepOrClose(ctx, p.closing, backoff) && ctx.Err() != nil {
			return
		}
		// Close cut the wait short: one last try, so that Close still
		// flushes the spool when JetStream is back.
		backoff = min(backoff*2, maxReplayBackoff)
	}
}

func (p *Publisher) probe(ctx context.Context) error {
	if p.nc.Status() != nats.CONNECTED {
		return errNotConnected
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if _, err := p.replay.AccountInfo(ctx); err != nil {
		return fmt.Errorf("probe jetstream: %w", err)
	}
	return nil
}

// replayFlight is a spooled event sent again; next is the spool position
// after it, confirmed once it and all before it are acknowledged.
type replayFlight struct {
	next   spoolPos
	done   bool
	handed time.Duration // when the event was handed to Publish
}

// replayOnce sends the spool from its first unconfirmed event, in order,
// with the same window as live publishing once the first event is
// acknowledged, and confirms the acknowledged prefix as it goes. When it has read everything it hands over to live
// publishing. It returns nil when all it sent is confirmed, or the first
// error; what was not confirmed stays in the spool and is sent again.
func (p *Publisher) replayOnce(ctx context.Context) error {
	r := p.spool.reader(p.spool.headPos())
	defer r.close()
	sent := make(map[*nats.Msg]*replayFlight)
	defer func() { p.m.inflight.Sub(float64(len(sent))) }()
	var (
		queue   []*replayFlight // in spool order
		results []ackResult
		failed  error
		reading = true
		// The first event goes alone: it is the real probe of the
		// stream. Were the window open while the stream came up (or
		// its leader was elected), an early event could fail and a
		// later one be stored, and the retry would put them out of order.
		window = 1
	)
	for {
		for reading && failed == nil && len(sent) < window {
			rec, at, ok, err := r.next()
			if err != nil {
				failed = err
				break
			}
			if !ok {
				if p.caughtUp(r.pos) {
					reading = false
					break
				}
				continue // spooled meanwhile
			}
			f := &replayFlight{next: r.pos, handed: p.handoffs.handedAt(at.idx, rec.data)}
			queue = append(queue, f)
			msg := rec.msg()
			if _, err := p.replay.PublishMsgAsync(msg, p.pubOpts...); err != nil {
				if rejected(err) {
					_ = p.lose(rec.subject, rec.id, err)
					f.done = true
					continue
				}
				failed = err
				break
			}
			sent[msg] = f
			p.m.inflight.Inc()
		}
		n := 0
		for n < len(queue) && queue[n].done {
			n++
		}
		if n > 0 {
			p.spool.confirm(queue[n-1].next)
			p.handoffs.confirm(queue[n-1].next.idx, queue[n-1].handed)
			p.m.spoolEvents.Sub(float64(n))
			queue = slices.Delete(queue, 0, n)
		}
		if failed != nil {
			// Live publishing may have resumed: stop it, so that nothing
			// overtakes the unconfirmed events.
			p.mu.Lock()
			p.startSpoolingLocked(failed)
			p.mu.Unlock()
			return failed
		}
		if len(queue) == 0 {
			if !reading {
				return nil
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.replayBox.wake:
		}
		results = p.replayBox.take(results)
		now := p.handoffs.now()
		for _, res := range results {
			f, ok := sent[res.msg]
			if !ok {
				continue // from an earlier, abandoned attempt
			}
			delete(sent, res.msg)
			p.m.inflight.Dec()
			switch {
			case res.err == nil:
				f.done = true
				p.m.published.Inc()
				p.m.observeLag(now - f.handed)
				window = p.maxInFlight
			case rejected(res.err):
				f.done = true
				_ = p.lose(res.msg.Subject, msgID(res.msg), res.err)
			case failed == nil:
				failed = fmt.Errorf("replay: %w", res.err)
			}
		}
		clear(results)
	}
}

// caughtUp reports whether the replay has read everything spooled, and
// if so switches back to live publishing. Holding p.mu, no event can be
// spooled between the check and the switch.
func (p *Publisher) caughtUp(pos spoolPos) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.spool.atEnd(pos) {
		return false
	}
	if p.spooling && !p.closed {
		p.spooling = false
		p.toLive.log(p.log, slog.LevelInfo, "spool replayed, publishing directly again")
	}
	return true
}

func (p *Publisher) runSyncer(ctx context.Context) {
	defer p.wg.Done()
	t := time.NewTicker(p.syncInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.spool.sync(); err != nil {
			if !failing {
				p.log.Error("spool fsync failing: spooled events may not survive a power cut", "err", err)
			}
			failing = true
		} else if failing {
			p.log.Info("spool fsync works again")
			failing = false
		}
	}
}

// Close stops taking events, waits (until ctx is done) for the
// acknowledgements of events in flight and for the replay of the spool
// while JetStream answers, then stops the background work. Whatever is
// not acknowledged by then stays in the spool for the next Publisher on
// the same directory. It returns an error only if the spool could not be
// made durable.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrPublisherClosed
	}
	p.closed = true
	p.mu.Unlock()

	p.waitSettled(ctx)
	close(p.closing)
	select {
	case <-p.replayDone:
	case <-ctx.Done():
	}
	p.cancel()
	p.wg.Wait()

	p.mu.Lock()
	if n := p.spoolInflightLocked(); n > 0 {
		p.log.Info("spooled events whose acknowledgement did not come before close", "events", n)
	}
	p.mu.Unlock()
	p.nc.Close()
	left := p.spool.waiting()
	// The registry may outlive this publisher: take back its share.
	p.m.spoolEvents.Sub(float64(left))
	p.handoffs.close()
	err := p.spool.close()
	if left > 0 {
		p.log.Info("events left in the spool for the next start", "events", left)
	}
	if err != nil {
		return fmt.Errorf("eventlog: close publisher: %w", err)
	}
	return nil
}

func (p *Publisher) waitSettled(ctx context.Context) {
	for {
		p.mu.Lock()
		n := len(p.inflight)
		p.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-p.settled:
		case <-ctx.Done():
			return
		}
	}
}

// switchLog logs a recurring switch at its level at most once per
// switchLogEvery, and at Debug in between, counting the switches.
type switchLog struct {
	last  time.Time
	count int
}

const switchLogEvery = 10 * time.Second

func (l *switchLog) log(log *slog.Logger, level slog.Level, msg string, args ...any) {
	l.count++
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < switchLogEvery {
		log.Debug(msg, args...)
		return
	}
	log.Log(context.Background(), level, msg, append(args, "switches_since_last_logged", l.count)...)
	l.last, l.count = now, 0
}

// ackResult is an acknowledgement (err nil) or failure of a message.
type ackResult struct {
	msg *nats.Msg
	err error
}

// mailbox carries ack results from nats.go's callbacks without blocking
// them: a blocked callback could hold nats.go's publisher lock.
type mailbox struct {
	mu    sync.Mutex
	items []ackResult
	wake  chan struct{}
}

func newMailbox() *mailbox { return &mailbox{wake: make(chan struct{}, 1)} }

func (b *mailbox) put(r ackResult) {
	b.mu.Lock()
	b.items = append(b.items, r)
	b.mu.Unlock()
	nudge(b.wake)
}

// take returns what arrived, handing the mailbox spare (emptied) to fill next.
func (b *mailbox) take(spare []ackResult) []ackResult {
	b.mu.Lock()
	defer b.mu.Unlock()
	items := b.items
	b.items = spare[:0]
	return items
}

func (r spoolRecord) msg() *nats.Msg {
	m := nats.NewMsg(r.subject)
	m.Data = r.data
	m.Header[jetstream.MsgIDHeader] = []string{r.id}
	return m
}

func msgID(m *nats.Msg) string { return m.Header.Get(jetstream.MsgIDHeader) }

func nudge(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// sleepOrClose waits d; it reports false when ctx is done or c is closed first.
func sleepOrClose(ctx context.Context, c chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-c:
		return false
	case <-t.C:
		return true
	}
}

// SpoolStatus is what waits in a publisher's spool.
type SpoolStatus struct {
	// Events is the number of events waiting to be replayed.
	Events uint64
	// Oldest is how long the oldest of them has waited; 0 when none.
	Oldest time.Duration
}

// Spool tells what waits in the spool, for health checks. After Close
// it tells what is left for the next start, with Oldest 0.
func (p *Publisher) Spool() SpoolStatus {
	return SpoolStatus{Events: p.spool.waiting(), Oldest: p.handoffs.oldest()}
}

// handoffs keeps when each event waiting in the spool was handed to
// Publish, in spool order, so that a replayed event's publish lag counts
// its time in the spool, and the age of the oldest is known. Times are
// offsets from start, on the monotonic clock.
//
// The events an earlier run left are known only by the time in their
// envelope (see handedAt). While they wait, the oldest age is taken from
// the last of them confirmed (the first at start): an upper bound, as
// the one after it was created no earlier.
type handoffs struct {
	start time.Time

	mu      sync.Mutex
	head    uint64          // spool index of the first event not confirmed
	base    uint64          // spool index of at[0]
	at      []time.Duration // events this run spooled, from base on
	earlier uint64          // an earlier run's events: indexes below this
	// earliest bounds when the oldest of the earlier run's events
	// still waiting was handed over.
	earliest time.Duration
	closed   bool
}

func newHandoffs() *handoffs { return &handoffs{start: time.Now()} }

func (h *handoffs) now() time.Duration { return time.Since(h.start) }

// wall is the wall-clock time t as an offset. The zero time, and a time
// ahead of now (a clock stepped back since), count as now.
func (h *handoffs) wall(t time.Time) time.Duration {
	now := h.now()
	if t.IsZero() {
		return now
	}
	return min(t.Sub(h.start), now)
}

// recovered books the n events an earlier run left in the spool, the
// first of them created at oldest (zero: unknown).
func (h *handoffs) recovered(n uint64, oldest time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.earlier, h.base = n, n
	h.earliest = h.wall(oldest)
}

// push books the hand-off of the event about to be appended to the
// spool; pop takes it back when the append failed. Both under the
// publisher's lock, so that they follow the spool's order.
func (h *handoffs) push(handed time.Duration) {
	h.mu.Lock()
	h.at = append(h.at, handed)
	h.mu.Unlock()
}

func (h *handoffs) pop() {
	h.mu.Lock()
	h.at = h.at[:len(h.at)-1]
	h.mu.Unlock()
}

// handedAt is when the spooled event at index idx, whose record data is
// data, was handed to Publish.
func (h *handoffs) handedAt(idx uint64, data []byte) time.Duration {
	h.mu.Lock()
	if idx >= h.base && idx-h.base < uint64(len(h.at)) {
		d := h.at[idx-h.base]
		h.mu.Unlock()
		return d
	}
	h.mu.Unlock()
	// An earlier run's event: its hand-off time went with that run.
	// Its envelope's time is when it was created, which for the proxy's
	// events is when they are handed over.
	var env struct {
		Time int64 `json:"ts"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return h.now()
	}
	return h.wall(schema.FromMillis(env.Time))
}

// confirm drops the events before index idx, JetStream has them; last
// is when the last of them was handed over.
func (h *handoffs) confirm(idx uint64, last time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if idx <= h.head {
		return
	}
	h.head = idx
	if idx <= h.earlier {
		h.earliest = max(h.earliest, last)
		return
	}
	drop := min(idx-h.base, uint64(len(h.at)))
	h.at, h.base = h.at[drop:], h.base+drop
	if len(h.at) == 0 {
		h.at = nil // let an outage's worth of times go
	}
}

// oldest is how long the oldest event in the spool has waited.
func (h *handoffs) oldest() time.Duration {
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return 0
	case h.head < h.earlier:
		return max(0, now-h.earliest)
	case len(h.at) > 0:
		return max(0, now-h.at[0])
	}
	return 0
}

// close stops the tracking: what is left in the spool is the next
// publisher's to report.
func (h *handoffs) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed, h.at = true, nil
}

// oldestSpooled is the creation time of the first event in the spool, as
// its envelope tells; zero when there is none or it cannot be read.
func oldestSpooled(sp *spool, log *slog.Logger) time.Time {
	r := sp.reader(sp.headPos())
	defer r.close()
	rec, _, ok, err := r.next()
	if err != nil {
		log.Warn("cannot read the first spooled event for its age", "err", err)
	}
	if !ok {
		return time.Time{}
	}
	var env struct {
		Time int64 `json:"ts"`
	}
	if err := json.Unmarshal(rec.data, &env); err != nil {
		return time.Time{}
	}
	return schema.FromMillis(env.Time)
}

// lagBuckets span a healthy JetStream's milliseconds to the minutes and
// hours an outage keeps events in the spool.
var lagBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

type publisherMetrics struct {
	published, spooled, errors prometheus.Counter
	spoolEvents, inflight      prometheus.Gauge
	lag                        prometheus.Histogram
	spoolOldest                prometheus.GaugeFunc
}

func (m *publisherMetrics) observeLag(d time.Duration) { m.lag.Observe(max(0, d).Seconds()) }

func newPublisherMetrics(reg prometheus.Registerer, ho *handoffs) (*publisherMetrics, error) {
	m := &publisherMetrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_eventlog_published_total",
			Help: "Events acknowledged by JetStream, sent directly or replayed from the spool.",
		}),
		spooled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_eventlog_spooled_total",
			Help: "Events written to the local spool because JetStream was unreachable or slow.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_eventlog_publish_errors_total",
			Help: "Events lost: neither sent nor spooled, rejected by JetStream, or torn in the spool by a crash.",
		}),
		spoolEvents: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carrier_eventlog_spool_events",
			Help: "Events waiting in the spool.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carrier_eventlog_inflight",
			Help: "Events sent to JetStream and not yet acknowledged.",
		}),
		// From the hand-off rather than the envelope's time: the
		// envelope says when the event happened, which for derived or
		// rebuilt events is long before it reaches the publisher, and
		// in milliseconds. The publisher answers for the rest of the way.
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "carrier_eventlog_publish_lag_seconds",
			Help:    "Time from an event's hand-off to the publisher to JetStream's acknowledgement, time in the spool included (events an earlier run spooled: from their envelope's time).",
			Buckets: lagBuckets,
		}),
		spoolOldest: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "carrier_eventlog_spool_oldest_seconds",
			Help: "How long the oldest event waiting in the spool has waited (0: none); it grows while JetStream does not take events.",
		}, func() float64 { return ho.oldest().Seconds() }),
	}
	if reg == nil {
		return m, nil
	}
	// A second publisher on one registry is a wiring mistake unless the
	// caller tells them apart with prometheus.WrapRegistererWith.
	for _, c := range []prometheus.Collector{m.published, m.spooled, m.errors, m.spoolEvents, m.inflight, m.lag, m.spoolOldest} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("eventlog: register publisher metrics: %w", err)
		}
	}
	return m, nil
}
