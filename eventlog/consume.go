package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/schema"
)

// Msg is one event delivered to a consumer.
type Msg struct {
	Subject  string
	Envelope schema.Envelope
	// Seq is the message's sequence in its stream.
	Seq uint64
	// Delivered counts deliveries of this message (1 the first time).
	Delivered uint64
}

// BatchHandler handles a batch of events in stream order. Returning nil
// acks every message of the batch; an error means the effect is not
// durable and the same batch is handed back after a backoff.
type BatchHandler func(ctx context.Context, batch []Msg) error

// ConsumerConfig names a durable pull consumer and how it batches.
type ConsumerConfig struct {
	Stream  string
	Durable string
	// FilterSubjects restricts the consumer to some subjects (partitions).
	FilterSubjects []string
	// MaxBatch is the most messages handed over at once (default 500).
	MaxBatch int
	// MaxWait is how long to wait to fill a batch (default 1s).
	MaxWait time.Duration
	// AckWait is how long the server waits for an ack before it
	// redelivers (default 30s); a batch the handler is working on or
	// retrying is kept in progress, however long that takes.
	AckWait time.Duration
	// DeliverPolicy and OptStartTime apply when the consumer is created.
	DeliverPolicy jetstream.DeliverPolicy
	OptStartTime  *time.Time
	Logger        *slog.Logger
}

func (c *ConsumerConfig) defaults() {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 500
	}
	if c.MaxWait <= 0 {
		c.MaxWait = time.Second
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Consume creates (or updates) the durable consumer and hands its messages
// to h in batches until ctx is done, then returns ctx.Err(). A batch the
// handler fails is retried in place with exponential backoff, so the
// backlog waits in JetStream while a database or server is down and order
// is kept; meanwhile the batch is kept in progress so that the server does
// not redeliver it. Messages that are not event envelopes are terminated
// with a log line: they can never be handled and must not block the
// stream. A fetch that is under way when ctx is done finishes first, so
// Consume may take up to MaxWait to return.
func Consume(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig, h BatchHandler) error {
	cfg.defaults()
	cc := jetstream.ConsumerConfig{
		Durable:       cfg.Durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxAckPending: cfg.MaxBatch * 4,
		DeliverPolicy: cfg.DeliverPolicy,
		OptStartTime:  cfg.OptStartTime,
	}
	if len(cfg.FilterSubjects) == 1 {
		cc.FilterSubject = cfg.FilterSubjects[0]
	} else {
		cc.FilterSubjects = cfg.FilterSubjects
	}
	log := cfg.Logger.With("stream", cfg.Stream, "consumer", cfg.Durable)
	cons, err := createConsumer(ctx, js, cfg.Stream, cc, log)
	if err != nil {
		return err
	}
	backoff := minFetchBackoff
	for ctx.Err() == nil {
		raw, batch, fetchErr := fetchBatch(cons, cfg, log)
		if len(batch) > 0 {
			if ctx.Err() != nil {
				// Hand the batch back at once rather than after AckWait.
				nakAll(raw)
				break
			}
			if err := handleWithRetry(ctx, h, batch, raw, cfg.AckWait, log); err != nil {
				nakAll(raw)
				break
			}
			for _, m := range raw {
				if err := m.Ack(); err != nil {
					// The effect is durable; a lost ack only means a
					// redelivery, which handlers are idempotent against.
					log.Warn("ack failed", "seq", seqOf(m), "err", err)
				}
			}
		}
		if fetchErr == nil {
			backoff = minFetchBackoff
			continue
		}
		switch {
		case errors.Is(fetchErr, nats.ErrConnectionClosed):
			return fmt.Errorf("consume %s on %s: %w", cfg.Durable, cfg.Stream, fetchErr)
		case consumerGone(fetchErr):
			// Deleted, or lost with a server's store: create it again
			// rather than pulling from nothing for ever.
			log.Warn("consumer not answering, creating it again", "err", fetchErr)
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
			if cons, err = createConsumer(ctx, js, cfg.Stream, cc, log); err != nil {
				return err
			}
		default:
			log.Warn("fetch failed, retrying", "err", fetchErr, "backoff", backoff)
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
		}
		backoff = min(backoff*2, maxFetchBackoff)
	}
	return ctx.Err()
}

const (
	minFetchBackoff = 200 * time.Millisecond
	maxFetchBackoff = 5 * time.Second
)

// fetchBatch pulls up to MaxBatch messages, waiting up to MaxWait. It
// returns the decodable ones and an error that ended the fetch, if any
// other than finding nothing.
func fetchBatch(cons jetstream.Consumer, cfg ConsumerConfig, log *slog.Logger) ([]jetstream.Msg, []Msg, error) {
	fetched, err := cons.Fetch(cfg.MaxBatch, jetstream.FetchMaxWait(cfg.MaxWait))
	if err != nil {
		return nil, nil, err
	}
	var raw []jetstream.Msg
	var batch []Msg
	for m := range fetched.Messages() {
		msg, ok := decode(m, log)
		if !ok {
			continue
		}
		raw = append(raw, m)
		batch = append(batch, msg)
	}
	err = fetched.Error()
	if err == nil || errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
		return raw, batch, nil
	}
	return raw, batch, err
}

func consumerGone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrConsumerNotFound) ||
		errors.Is(err, jetstream.ErrConsumerDoesNotExist) ||
		errors.Is(err, nats.ErrNoResponders)
}

// createConsumer retries while JetStream is not reachable yet, so that a
// consumer process may start before the server. Errors that retrying
// cannot cure (no such stream, a configuration the server refuses) are
// returned at once.
func createConsumer(ctx context.Context, js jetstream.JetStream, stream string, cc jetstream.ConsumerConfig, log *slog.Logger) (jetstream.Consumer, error) {
	backoff := 200 * time.Millisecond
	for {
		cons, err := js.CreateOrUpdateConsumer(ctx, stream, cc)
		if err == nil {
			return cons, nil
		}
		var apiErr *jetstream.APIError
		if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNameAlreadyInUse) ||
			(errors.As(err, &apiErr) && apiErr.Code == 400) {
			return nil, fmt.Errorf("create consumer %s on %s: %w", cc.Durable, stream, err)
		}
		log.Warn("create consumer failed, retrying", "err", err, "backoff", backoff)
		if !sleep(ctx, backoff) {
			return nil, fmt.Errorf("create consumer %s on %s: %w", cc.Durable, stream, ctx.Err())
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func handleWithRetry(ctx context.Context, h BatchHandler, batch []Msg, raw []jetstream.Msg, ackWait time.Duration, log *slog.Logger) error {
	// A slow handler or a long backoff must not let AckWait expire: the
	// server would redeliver messages we still hold.
	stop := keepInProgress(raw, ackWait/3)
	defer stop()
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := h(ctx, batch)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("handler failed, retrying batch", "size", len(batch), "attempt", attempt, "backoff", backoff, "err", err)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// keepInProgress tells the server every interval that the messages are
// still being worked on, until stop is called.
func keepInProgress(raw []jetstream.Msg, every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range raw {
					_ = m.InProgress()
				}
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

func nakAll(raw []jetstream.Msg) {
	for _, m := range raw {
		_ = m.Nak()
	}
}

func decode(m jetstream.Msg, log *slog.Logger) (Msg, bool) {
	env, err := schema.ParseEnvelope(m.Data())
	if err != nil {
		log.Error("terminating message that is not an event", "subject", m.Subject(), "seq", seqOf(m), "err", err)
		_ = m.Term()
		return Msg{}, false
	}
	msg := Msg{Subject: m.Subject(), Envelope: env}
	if md, err := m.Metadata(); err == nil {
		msg.Seq = md.Sequence.Stream
		msg.Delivered = md.NumDelivered
	}
	return msg, true
}

func seqOf(m jetstream.Msg) uint64 {
	if md, err := m.Metadata(); err == nil {
		return md.Sequence.Stream
	}
	return 0
}

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
