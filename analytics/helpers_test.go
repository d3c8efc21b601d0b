package analytics_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

const db = analytics.DefaultDatabase

// waitTimeout only keeps a broken test from hanging; nothing passes or
// fails on how long a wait took.
const waitTimeout = 3 * time.Minute

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// logRecorder is a slog handler that keeps the messages logged.
type logRecorder struct {
	mu   *sync.Mutex
	msgs *[]string
}

func newLogRecorder() logRecorder { return logRecorder{mu: &sync.Mutex{}, msgs: new([]string)} }

func (r logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r logRecorder) WithGroup(string) slog.Handler            { return r }
func (r logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.msgs = append(*r.msgs, rec.Message)
	return nil
}

// logged reports whether msg was logged.
func (r logRecorder) logged(msg string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(*r.msgs, msg)
}

// startClickHouse starts a private server and opens a connection to it.
func startClickHouse(t testing.TB) (*testkit.ClickHouse, driver.Conn) {
	t.Helper()
	ch := testkit.StartClickHouse(t)
	conn, err := analytics.Open(testContext(t), ch.Addr(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return ch, conn
}

func startJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	_, js := testkit.StartNATS(t).Connect()
	return js
}

// runningSink is a Sink running in the background with its own registry.
type runningSink struct {
	reg  *prometheus.Registry
	stop func() error
}

// runSink runs a sink on db with a short MaxWait, a quiet logger unless
// cfg has one, and a registry of its own.
func runSink(t testing.TB, js jetstream.JetStream, conn driver.Conn, cfg analytics.SinkConfig) *runningSink {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Database, cfg.Registerer = db, reg
	if cfg.MaxWait == 0 {
		cfg.MaxWait = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	sink, err := analytics.NewSink(js, conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sink.Run(ctx) }()
	var stopped bool
	var result error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			result = <-done
		}
		return result
	}
	t.Cleanup(func() { _ = stop() })
	return &runningSink{reg: reg, stop: func() error {
		err := stop()
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}}
}

// metric sums the series of a metric family with the given table label.
func (s *runningSink) metric(t testing.TB, name, table string) float64 {
	t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "table" && l.GetValue() == table {
					sum += m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount()) + m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}

// waitFor polls cond until it holds.
func waitFor(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	testkit.Eventually(t, waitTimeout, func() error {
		ok, err := cond()
		if ok {
			return nil
		}
		return fmt.Errorf("waiting for %s (last error: %v)", what, err)
	})
}

func waitCDRs(t testing.TB, conn driver.Conn, want uint64) {
	t.Helper()
	var got uint64
	waitFor(t, fmt.Sprintf("%d CDRs in ClickHouse", want), func() (bool, error) {
		n, err := analytics.CountCDRs(testContext(t), conn, db, analytics.CDRFilter{})
		got = n
		return err == nil && n >= want, err
	})
	if got != want {
		t.Fatalf("%d CDRs in ClickHouse, want %d", got, want)
	}
}

func waitTransactions(t testing.TB, conn driver.Conn, want uint64) {
	t.Helper()
	var got uint64
	waitFor(t, fmt.Sprintf("%d transactions in ClickHouse", want), func() (bool, error) {
		n, err := analytics.CountTransactions(testContext(t), conn, db, time.Time{}, time.Time{})
		got = n
		return err == nil && n >= want, err
	})
	if got != want {
		t.Fatalf("%d transactions in ClickHouse, want %d", got, want)
	}
}

var base = time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

// testCDR is an answered call with two attempts (the first gateway busy),
// or a failed one; every field is set so a round trip shows any loss.
func testCDR(i int, account string, invite time.Time) schema.CDR {
	callID := fmt.Sprintf("call-%d@10.0.0.1", i)
	fromTag := fmt.Sprintf("ft%d", i)
	at := schema.Millis(invite)
	c := schema.CDR{
		ID: schema.CDRID(callID, fromTag), CallID: callID, FromTag: fromTag, ToTag: fmt.Sprintf("tt%d", i),
		Account: account, Trunk: "trunk-" + account, Source: "10.0.0.1:5060", Transport: "udp",
		Caller: "0301234567", Callee: fmt.Sprintf("00441632%06d", i), CallerE164: "49301234567", CalleeE164: fmt.Sprintf("441632%06d", i),
		Attempts: []schema.Attempt{
			{Gateway: "gw-a", Supplier: "sup-a", Destination: "192.0.2.1:5060", Status: 486, Reason: "Busy Here", Q850: 17, StartAt: at + 1, FinalAt: at + 300},
			{Gateway: "gw-b", Supplier: "sup-b", Destination: "192.0.2.2:5060", Status: 200, Reason: "OK", StartAt: at + 301, ProvisionalAt: at + 900, FinalAt: at + 2500},
		},
		Gateway: "gw-b", Supplier: "sup-b", EarlyMedia: true,
		Disposition: schema.Answered, Status: 200, Reason: "OK",
		InviteAt: at, ProvisionalAt: at + 900, AnswerAt: at + 2500, EndAt: at + 2500 + 61001,
		SetupMs: 2500, PDDMs: 900, DurationMs: 61001, BillableSec: 62,
		HangupBy: schema.HangupCallee, HangupReason: schema.EndNormal, Node: "node-1",
	}
	// A subscriber's call out, or every third one an inbound call to a
	// DID (whose callee is the DID).
	c.Subscriber, c.Class, c.Direction = "sub-"+account, "mobile", schema.Outbound
	if i%3 == 1 {
		c.Subscriber, c.Class, c.DID, c.Direction = "", "", c.CalleeE164, schema.Inbound
	}
	if i%5 == 0 {
		c.Attempts = c.Attempts[:1]
		c.Gateway, c.Supplier, c.EarlyMedia = "gw-a", "sup-a", false
		c.Disposition, c.Status, c.Reason, c.Q850 = schema.Busy, 486, "Busy Here", 17
		c.ToTag, c.ProvisionalAt, c.AnswerAt, c.EndAt = "", 0, 0, at+300
		c.SetupMs, c.PDDMs, c.DurationMs, c.BillableSec, c.HangupBy, c.HangupReason = 0, 0, 0, 0, "", ""
	}
	return c
}

func cdrEventType(c schema.CDR) string {
	if c.Disposition == schema.Answered {
		return schema.TypeCallEnded
	}
	return schema.TypeCallFailed
}

func publishCDRs(t testing.TB, js jetstream.JetStream, cdrs []schema.CDR) {
	t.Helper()
	ctx := testContext(t)
	for _, c := range cdrs {
		typ := cdrEventType(c)
		env, err := schema.NewEnvelopeWithID(c.ID, typ, schema.CDRVersion, schema.FromMillis(c.EndAt), c.Node, c)
		if err != nil {
			t.Fatal(err)
		}
		if err := eventlog.Publish(ctx, js, schema.CDRSubject(typ, c.CallID), env); err != nil {
			t.Fatal(err)
		}
	}
}

func testTransaction(i int, at time.Time) schema.Transaction {
	ms := schema.Millis(at)
	return schema.Transaction{
		Method: "INVITE", CallID: fmt.Sprintf("call-%d@10.0.0.1", i), FromURI: "sip:0301234567@10.0.0.1", FromTag: fmt.Sprintf("ft%d", i),
		ToURI: "sip:00441632000001@carrier", ToTag: fmt.Sprintf("tt%d", i), CSeq: uint32(i + 1), RequestURI: "sip:00441632000001@carrier:5060",
		InDialog: i%2 == 1, Source: "10.0.0.1:5060", Local: "127.0.0.1:5060", Transport: "udp", Destination: "192.0.2.2:5060",
		Status: 200, Reason: "OK", Q850: 16, RequestAt: ms, ProvisionalAt: ms + 900, ProvisionalStatus: 180, FinalAt: ms + 2500,
		Attempts: []schema.Attempt{
			{Gateway: "gw-a", Supplier: "sup-a", Destination: "192.0.2.1:5060", Status: 503, Reason: "Service Unavailable", Q850: 41, StartAt: ms + 1, FinalAt: ms + 50},
			{Gateway: "gw-b", Supplier: "sup-b", Destination: "192.0.2.2:5060", Status: 200, Reason: "OK", StartAt: ms + 51, ProvisionalAt: ms + 900, FinalAt: ms + 2500},
		},
		Account: "acme", Trunk: "trunk-acme", Note: "",
	}
}

func publishTransactions(t testing.TB, js jetstream.JetStream, txs []schema.Transaction) []schema.Envelope {
	t.Helper()
	ctx := testContext(t)
	envs := make([]schema.Envelope, len(txs))
	for i, tx := range txs {
		env, err := schema.NewEnvelope(schema.TypeTransaction, schema.TransactionVersion, schema.FromMillis(tx.FinalAt), "node-1", tx)
		if err != nil {
			t.Fatal(err)
		}
		if err := eventlog.Publish(ctx, js, schema.TransactionSubject(tx.CallID), env); err != nil {
			t.Fatal(err)
		}
		envs[i] = env
	}
	return envs
}
