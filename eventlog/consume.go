package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

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
	// redelivers (default 30s); messages being retried are kept in
	// progress.
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
// to h in batches until ctx is done. A batch the handler fails is retried
// in place with exponential backoff, so the backlog waits in JetStream
// while a database or server is down and order is kept. Messages that are
// not event envelopes are terminated with a log line: they can never be
// handled and must not block the stream.
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
	cons, err := createConsumer(ctx, js, cfg.Stream, cc)
	if err != nil {
		return err
	}
	log := cfg.Logger.With("stream", cfg.Stream, "consumer", cfg.Durable)
	for ctx.Err() == nil {
		fetched, err := cons.Fetch(cfg.MaxBatch, jetstream.FetchMaxWait(cfg.MaxWait))
		if err != nil {
			log.Warn("fetch failed, retrying", "err", err)
			if !sleep(ctx, time.Second) {
				break
			}
			continue
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
		if err := fetched.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.Canceled) {
			log.Debug("fetch ended early", "err", err)
		}
		if len(batch) == 0 {
			continue
		}
		if err := handleWithRetry(ctx, h, batch, raw, log); err != nil {
			for _, m := range raw {
				_ = m.Nak()
			}
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
	return ctx.Err()
}

// createConsumer retries while JetStream is not reachable yet, so that a
// consumer process may start before the server.
func createConsumer(ctx context.Context, js jetstream.JetStream, stream string, cc jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	backoff := 200 * time.Millisecond
	for {
		cons, err := js.CreateOrUpdateConsumer(ctx, stream, cc)
		if err == nil {
			return cons, nil
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNameAlreadyInUse) {
			return nil, fmt.Errorf("create consumer %s on %s: %w", cc.Durable, stream, err)
		}
		slog.Warn("create consumer failed, retrying", "stream", stream, "consumer", cc.Durable, "err", err)
		if !sleep(ctx, backoff) {
			return nil, fmt.Errorf("create consumer %s on %s: %w", cc.Durable, stream, ctx.Err())
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func handleWithRetry(ctx context.Context, h BatchHandler, batch []Msg, raw []jetstream.Msg, log *slog.Logger) error {
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
		// Keep the server from redelivering what we still hold.
		for _, m := range raw {
			_ = m.InProgress()
		}
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(backoff*2, 10*time.Second)
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
