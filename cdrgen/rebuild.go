package cdrgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

// RebuildLookahead is how far past the end of a rebuild's range the SIP
// stream is read, by the time the events were stored: a transaction that
// happened before the end can reach the log a little after it.
const RebuildLookahead = time.Minute

// RebuildConfig says what a rebuild replays.
type RebuildConfig struct {
	// From and To bound the replayed transactions by event time, To
	// excluded. A call is rebuilt when all its transactions are in the
	// range: one that began before From or ended after To is not.
	From, To time.Time
	// MaxCallDuration must be the live correlator's (default 4h, negative:
	// none) for the rebuilt CDRs to equal the live ones.
	MaxCallDuration time.Duration
	// Node names the rebuild in the envelopes it publishes (default: the
	// host name); the CDRs themselves are the same as the live run's.
	Node string
	// MaxBatch is the most events correlated at once (default 500).
	MaxBatch int
	// Replicas of the temporary state buckets (default 1).
	Replicas int
	Logger   *slog.Logger
	// Progress, when set, is told after every batch how far the rebuild is.
	Progress func(RebuildProgress)
}

// RebuildProgress is how far a rebuild has got.
type RebuildProgress struct {
	// Read counts the SIP events read, Replayed those in the range.
	Read, Replayed uint64
	// Seq is the stream sequence of the last event read; LastSeq the last
	// one when the rebuild began, where it stops at the latest.
	Seq, LastSeq uint64
	// CDRs counts the finished CDRs published (call.ended, call.failed).
	CDRs uint64
}

// Rebuild replays the SIP stream's transactions of a time range through
// the correlation logic into CDRs again and publishes them on the CDR
// stream, with the ids the live correlator gave them: JetStream's dedupe
// window drops those published again within it, and downstream consumers
// recognise the others by id. It reads with its own ephemeral consumer
// from the range's start and keeps its calls in its own state buckets,
// deleted at the end; the live correlator and its state are not touched.
// It stops at the stream's tail as of its start, or once it reads events
// stored RebuildLookahead after To.
//
// Calls whose BYE never came are ended by the maximum-duration rule as the
// replayed events' time passes it, like the live correlator does; the
// live correlator's wall-clock stand-in for an idle log is not replayed,
// so such a call that only the idle sweep ended is not rebuilt.
func Rebuild(ctx context.Context, js jetstream.JetStream, cfg RebuildConfig) (RebuildProgress, error) {
	var p RebuildProgress
	if cfg.From.IsZero() || cfg.To.IsZero() || !cfg.From.Before(cfg.To) {
		return p, fmt.Errorf("cdrgen: rebuild range %s to %s is empty: %w", cfg.From.Format(time.RFC3339), cfg.To.Format(time.RFC3339), ErrInvalidConfig)
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 500
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Unique per run, so that two rebuilds never share state.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	c, err := New(js, Config{
		Durable:         "cdrgen-rebuild-" + run,
		CallsBucket:     "CDRGEN_REBUILD_" + strings.ToUpper(run) + "_CALLS",
		FinishedBucket:  "CDRGEN_REBUILD_" + strings.ToUpper(run) + "_FINISHED",
		MaxCallDuration: cfg.MaxCallDuration,
		Node:            cfg.Node,
		Replicas:        cfg.Replicas,
		Logger:          cfg.Logger,
	})
	if err != nil {
		return p, err
	}
	log := c.log.With("from", cfg.From, "to", cfg.To)

	s, err := js.Stream(ctx, schema.StreamSIP)
	if err != nil {
		return p, fmt.Errorf("cdrgen: rebuild: stream %s: %w", schema.StreamSIP, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return p, fmt.Errorf("cdrgen: rebuild: stream %s: %w", schema.StreamSIP, err)
	}
	p.LastSeq = info.State.LastSeq
	if info.State.Msgs == 0 {
		return p, nil
	}

	st, err := c.openState(ctx)
	if err != nil {
		return p, err
	}
	defer c.deleteState(ctx, log)
	from := cfg.From
	cons, err := js.OrderedConsumer(ctx, schema.StreamSIP, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schema.AllTransactions},
		DeliverPolicy:  jetstream.DeliverByStartTimePolicy,
		OptStartTime:   &from,
	})
	if err != nil {
		return p, fmt.Errorf("cdrgen: rebuild: consumer on %s: %w", schema.StreamSIP, err)
	}
	h := newHandler(c, st)
	storedUntil := cfg.To.Add(RebuildLookahead)
	log.Info("rebuilding CDRs", "last_seq", p.LastSeq)
	for done := false; !done; {
		if err := ctx.Err(); err != nil {
			return p, err
		}
		fetched, err := cons.Fetch(cfg.MaxBatch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return p, fmt.Errorf("cdrgen: rebuild: fetch: %w", err)
		}
		var batch []eventlog.Msg
		n := 0
		for m := range fetched.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				return p, fmt.Errorf("cdrgen: rebuild: %w", err)
			}
			if md.Sequence.Stream > p.LastSeq || !md.Timestamp.Before(storedUntil) {
				done = true
				break
			}
			p.Read++
			p.Seq = md.Sequence.Stream
			env, err := schema.ParseEnvelope(m.Data())
			if err != nil {
				log.Warn("skipping a message that is not an event", "seq", p.Seq, "err", err)
				continue
			}
			if env.Time < cfg.From.UnixMilli() || env.Time >= cfg.To.UnixMilli() {
				continue
			}
			batch = append(batch, eventlog.Msg{Subject: m.Subject(), Envelope: env, Seq: p.Seq, Delivered: 1})
		}
		if err := fetched.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
			return p, fmt.Errorf("cdrgen: rebuild: fetch: %w", err)
		}
		if len(batch) > 0 {
			if err := h.handle(ctx, batch); err != nil {
				return p, err
			}
			p.Replayed += uint64(len(batch))
			p.CDRs = h.finished
		}
		if p.Seq >= p.LastSeq {
			done = true
		}
		if n == 0 && !done {
			// Nothing came: either everything from the start time is
			// read, or the server is slow to answer.
			ci, err := cons.Info(ctx)
			if err != nil {
				return p, fmt.Errorf("cdrgen: rebuild: consumer info: %w", err)
			}
			done = ci.NumPending == 0
		}
		if cfg.Progress != nil {
			cfg.Progress(p)
		}
	}
	log.Info("rebuilt CDRs", "read", p.Read, "replayed", p.Replayed, "cdrs", p.CDRs, "still_open", len(st.open))
	return p, nil
}

// deleteState removes the state buckets of a rebuild, even when ctx has
// ended: they are of no use to anyone afterwards.
func (c *Correlator) deleteState(ctx context.Context, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	for _, b := range []string{c.cfg.CallsBucket, c.cfg.FinishedBucket} {
		if err := c.js.DeleteKeyValue(ctx, b); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
			log.Warn("deleting a rebuild's state bucket failed; delete it by hand", "bucket", b, "err", err)
		}
	}
}
