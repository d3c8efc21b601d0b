package analytics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

// Durable consumer names of the Sink; they are a contract (a renamed
// durable starts again from the beginning of its stream).
const (
	DurableCDR = "analytics-cdr"
	DurableSIP = "analytics-sip"
	// DurableRated reads the rated CDRs. It is a consumer of its own,
	// not a subject more for DurableCDR, so that a sink upgraded to read
	// ratings starts them from the beginning of the stream.
	DurableRated  = "analytics-rated"
	DurableLedger = "analytics-ledger"
)

// insertTimeout bounds one batch insert; a healthy one takes well under a
// second.
const insertTimeout = time.Minute

// SinkConfig configures a Sink. Zero fields take defaults.
type SinkConfig struct {
	// Database holds the tables (DefaultDatabase).
	Database string
	// MaxBatch is the most events inserted in one batch (5000), MaxWait
	// how long a batch waits to fill (1s): ClickHouse wants few large
	// inserts.
	MaxBatch int
	MaxWait  time.Duration
	Logger   *slog.Logger
	// Registerer receives the sink's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
}

// Sink loads finished CDRs (call.ended, call.failed), rated CDRs
// (call.rated), SIP transactions and ledger events from JetStream into
// ClickHouse.
type Sink struct {
	js   jetstream.JetStream
	conn driver.Conn
	cfg  SinkConfig
	log  *slog.Logger
	m    *metrics
	// cdrs serialises the writes of the two consumers that write CDRs
	// (finished and rated): the hourly aggregates compare a CDR with what
	// it was counted as, and two writers counting one call at once would
	// both count it.
	cdrs sync.Mutex
}

// NewSink prepares a sink; Run starts it.
func NewSink(js jetstream.JetStream, conn driver.Conn, cfg SinkConfig) (*Sink, error) {
	if cfg.Database == "" {
		cfg.Database = DefaultDatabase
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 5000
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Sink{
		js:   js,
		conn: conn,
		cfg:  cfg,
		log:  cfg.Logger.With("component", "analytics"),
		m:    m,
	}, nil
}

// Run migrates the schema, waiting for ClickHouse if it is not reachable
// yet, then consumes the SIP, CDR and LEDGER streams until ctx is done or a consumer cannot
// go on (a missing stream). A batch ClickHouse refuses is retried in
// place, so an outage only delays rows. Run returns ctx's error after a
// clean stop.
func (s *Sink) Run(ctx context.Context) error {
	if err := checkDatabase(s.cfg.Database); err != nil {
		return err
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	consumers := []struct {
		cfg eventlog.ConsumerConfig
		h   eventlog.BatchHandler
	}{
		{eventlog.ConsumerConfig{
			Stream:         schema.StreamCDR,
			Durable:        DurableCDR,
			FilterSubjects: []string{schema.FinishedCallsEnded, schema.FinishedCallsFailed},
		}, s.handleCDRs},
		{eventlog.ConsumerConfig{
			Stream:         schema.StreamCDR,
			Durable:        DurableRated,
			FilterSubjects: []string{schema.AllRatedCalls},
		}, s.handleRated},
		{eventlog.ConsumerConfig{
			Stream:         schema.StreamLedger,
			Durable:        DurableLedger,
			FilterSubjects: []string{schema.AllLedgerEvents},
		}, s.handleLedger},
		{eventlog.ConsumerConfig{
			Stream:         schema.StreamSIP,
			Durable:        DurableSIP,
			FilterSubjects: []string{schema.AllTransactions},
		}, s.handleTransactions},
	}
	errc := make(chan error, len(consumers))
	for _, c := range consumers {
		c.cfg.MaxBatch, c.cfg.MaxWait, c.cfg.Logger = s.cfg.MaxBatch, s.cfg.MaxWait, s.log
		go func() { errc <- eventlog.Consume(ctx, s.js, c.cfg, c.h) }()
	}
	var first error
	for range consumers {
		err := <-errc
		if ctx.Err() == nil {
			// A consumer stopped on its own. It stops the others too: a
			// half-running sink would look healthy.
			if err == nil {
				err = errors.New("consumer stopped")
			}
			first = err
			cancel()
		}
	}
	if first != nil {
		return fmt.Errorf("analytics sink: %w", first)
	}
	return ctx.Err()
}

// migrate applies the schema, retrying while ClickHouse cannot be reached.
// An error ClickHouse itself reports (bad DDL, no permission) is returned.
func (s *Sink) migrate(ctx context.Context) error {
	backoff := 200 * time.Millisecond
	for {
		applied, err := Migrate(ctx, s.conn, s.cfg.Database)
		if err == nil {
			if len(applied) > 0 {
				s.log.Info("clickhouse schema migrated", "database", s.cfg.Database, "applied", applied)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ex *clickhouse.Exception
		if errors.As(err, &ex) {
			return fmt.Errorf("analytics sink: %w", err)
		}
		s.log.Warn("clickhouse not reachable, retrying migration", "backoff", backoff, "err", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (s *Sink) handleCDRs(ctx context.Context, batch []eventlog.Msg) error {
	recs := make([]CDRRecord, 0, len(batch))
	var newest int64
	for _, m := range batch {
		env := m.Envelope
		if env.Type != schema.TypeCallEnded && env.Type != schema.TypeCallFailed {
			continue
		}
		var c schema.CDR
		if err := env.Decode(env.Type, schema.CDRVersion, &c); err != nil {
			s.skip(TableCDRs, m, err)
			continue
		}
		if c.ID == "" {
			c.ID = schema.CDRID(c.CallID, c.FromTag)
		}
		recs = append(recs, CDRRecord{CDR: c, Version: VersionUnrated})
		newest = max(newest, env.Time)
	}
	return s.insertCDRs(ctx, recs, newest)
}

// handleRated writes rated CDRs over the CDRs they price (VersionRated).
func (s *Sink) handleRated(ctx context.Context, batch []eventlog.Msg) error {
	recs := make([]CDRRecord, 0, len(batch))
	var newest int64
	for _, m := range batch {
		env := m.Envelope
		if env.Type != schema.TypeCallRated {
			continue
		}
		var rc schema.RatedCDR
		if err := env.Decode(schema.TypeCallRated, schema.RatedVersion, &rc); err != nil {
			s.skip(TableCDRs, m, err)
			continue
		}
		rec, err := RatedRecord(rc)
		if err != nil {
			s.skip(TableCDRs, m, fmt.Errorf("event %s: %w", env.ID, err))
			continue
		}
		recs = append(recs, rec)
		newest = max(newest, env.Time)
	}
	return s.insertCDRs(ctx, recs, newest)
}

func (s *Sink) insertCDRs(ctx context.Context, recs []CDRRecord, newest int64) error {
	if len(recs) == 0 {
		return nil
	}
	s.cdrs.Lock()
	defer s.cdrs.Unlock()
	return s.insert(ctx, TableCDRs, len(recs), newest, func(ctx context.Context) error {
		return InsertCDRs(ctx, s.conn, s.cfg.Database, recs)
	})
}

// handleLedger writes ledger events as movements, one row per event id.
func (s *Sink) handleLedger(ctx context.Context, batch []eventlog.Msg) error {
	ms := make([]Movement, 0, len(batch))
	var newest int64
	for _, m := range batch {
		mv, err := MovementOf(m.Subject, m.Seq, m.Envelope)
		if err != nil {
			s.skip(TableLedger, m, err)
			continue
		}
		ms = append(ms, mv)
		newest = max(newest, m.Envelope.Time)
	}
	return s.insert(ctx, TableLedger, len(ms), newest, func(ctx context.Context) error {
		return InsertMovements(ctx, s.conn, s.cfg.Database, ms)
	})
}

func (s *Sink) handleTransactions(ctx context.Context, batch []eventlog.Msg) error {
	recs := make([]TransactionRecord, 0, len(batch))
	var newest int64
	for _, m := range batch {
		env := m.Envelope
		if env.Type != schema.TypeTransaction {
			continue
		}
		rec := TransactionRecord{EventID: env.ID, EventAt: env.Time, Node: env.Node}
		if err := env.Decode(schema.TypeTransaction, schema.TransactionVersion, &rec.Transaction); err != nil {
			s.skip(TableTransactions, m, err)
			continue
		}
		recs = append(recs, rec)
		newest = max(newest, env.Time)
	}
	return s.insert(ctx, TableTransactions, len(recs), newest, func(ctx context.Context) error {
		return InsertTransactions(ctx, s.conn, s.cfg.Database, recs)
	})
}

// insert runs one batch insert and accounts for it. Its error goes back to
// eventlog.Consume, which keeps the batch unacked and retries it.
func (s *Sink) insert(ctx context.Context, table string, n int, newest int64, do func(context.Context) error) error {
	if n == 0 {
		return nil
	}
	// A connection that hangs (a server gone without a reset) must not
	// hold the stream for ever; the batch is retried on a fresh one.
	ictx, cancel := context.WithTimeout(ctx, insertTimeout)
	defer cancel()
	start := time.Now()
	err := do(ictx)
	s.m.batchSeconds.WithLabelValues(table).Observe(time.Since(start).Seconds())
	if err != nil {
		// Failing because the sink is stopping is no insert error.
		if ctx.Err() == nil {
			s.m.insertErrors.WithLabelValues(table).Inc()
		}
		return err
	}
	s.m.rows.WithLabelValues(table).Add(float64(n))
	if newest > 0 {
		s.m.lag.WithLabelValues(table).Set(time.Since(schema.FromMillis(newest)).Seconds())
	}
	s.log.Debug("batch inserted", "table", table, "rows", n, "took", time.Since(start))
	return nil
}

// skip leaves out an event this build cannot read (written by a newer
// build, or corrupt). Holding the whole stream back for it would stop
// analytics; the event stays in the log for a replay after an upgrade.
func (s *Sink) skip(table string, m eventlog.Msg, err error) {
	s.m.skipped.WithLabelValues(table).Inc()
	s.log.Error("event left out of clickhouse", "table", table, "subject", m.Subject, "seq", m.Seq, "err", err)
}
