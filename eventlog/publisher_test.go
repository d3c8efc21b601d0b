package eventlog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// Generous: waiting only, never a measure of success.
const waitLimit = 60 * time.Second

type testPayload struct {
	Call string `json:"call"`
	I    int    `json:"i"`
}

const testType = "test.event"

// testEvent is the i-th event of a run; events are spread over calls
// (and so over subject partitions) round robin.
func testEvent(t testing.TB, i, calls int) (string, schema.Envelope) {
	t.Helper()
	subj, ev, err := newTestEvent(i, calls)
	if err != nil {
		t.Fatal(err)
	}
	return subj, ev
}

func newTestEvent(i, calls int) (string, schema.Envelope, error) {
	call := fmt.Sprintf("call-%d@test", i%calls)
	ev, err := schema.NewEnvelope(testType, 1, time.Now(), "test-node", testPayload{Call: call, I: i})
	return schema.TransactionSubject(call), ev, err
}

func publishRange(t testing.TB, p *eventlog.Publisher, from, to, calls int) {
	t.Helper()
	for i := from; i < to; i++ {
		subj, ev := testEvent(t, i, calls)
		if err := p.Publish(subj, ev); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// syncBuffer is a log destination a test can read while goroutines write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func metric(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testkit.Eventually(t, waitLimit, func() error {
		if cond() {
			return nil
		}
		return fmt.Errorf("waiting for %s", what)
	})
}

func streamMsgs(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

type storedEvent struct {
	subject string
	env     schema.Envelope
	payload testPayload
}

// readStream returns the stream's messages in stream order.
func readStream(t testing.TB, js jetstream.JetStream, stream string) []storedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	want := streamMsgs(t, js, stream)
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	oc, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []storedEvent
	for uint64(len(out)) < want {
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d messages of %s", len(out), want, stream)
		}
		batch, err := oc.Fetch(int(min(1000, want-uint64(len(out)))), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			env, err := schema.ParseEnvelope(m.Data())
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Headers().Get(jetstream.MsgIDHeader); got != env.ID {
				t.Fatalf("Nats-Msg-Id %q, event id %q", got, env.ID)
			}
			var p testPayload
			if err := env.Decode(testType, 1, &p); err != nil {
				t.Fatal(err)
			}
			out = append(out, storedEvent{subject: m.Subject(), env: env, payload: p})
		}
	}
	return out
}

// checkStream checks that the stream holds events 0..total-1 exactly
// once each and that on every subject they are in publish order.
func checkStream(t testing.TB, got []storedEvent, total int) {
	t.Helper()
	ids := make(map[string]bool, len(got))
	seen := make([]bool, total)
	last := make(map[string]int)
	for _, e := range got {
		if ids[e.env.ID] {
			t.Fatalf("event %s (#%d) stored twice", e.env.ID, e.payload.I)
		}
		ids[e.env.ID] = true
		if e.payload.I < 0 || e.payload.I >= total || seen[e.payload.I] {
			t.Fatalf("event #%d unexpected or repeated", e.payload.I)
		}
		seen[e.payload.I] = true
		if prev, ok := last[e.subject]; ok && e.payload.I <= prev {
			t.Fatalf("on %s event #%d stored after #%d", e.subject, e.payload.I, prev)
		}
		last[e.subject] = e.payload.I
	}
	if len(got) != total {
		missing := 0
		for _, s := range seen {
			if !s {
				missing++
			}
		}
		t.Fatalf("stream holds %d events, want %d (%d missing)", len(got), total, missing)
	}
}

func spoolFiles(t testing.TB, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.spool"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func closePublisher(t testing.TB, p *eventlog.Publisher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestPublisherSteady(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	goroutines := runtime.NumGoroutine()
	p, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: dir, Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	const total = 5000
	publishRange(t, p, 0, total, 100)
	waitFor(t, "all events acknowledged", func() bool { return metric(t, reg, "carrier_eventlog_published_total") == total })
	closePublisher(t, p)
	waitFor(t, "the publisher's goroutines to end", func() bool { return runtime.NumGoroutine() <= goroutines })

	checkStream(t, readStream(t, js, schema.StreamSIP), total)
	for name, want := range map[string]float64{
		"carrier_eventlog_published_total":      total,
		"carrier_eventlog_publish_errors_total": 0,
		"carrier_eventlog_spool_events":         0,
		"carrier_eventlog_inflight":             0,
	} {
		if got := metric(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if files := spoolFiles(t, dir); len(files) != 0 {
		t.Errorf("spool files left: %v", files)
	}
}

// TestPublisherOutage stops JetStream while events keep coming: they are
// spooled, and replayed when it is back, once each and in order.
func TestPublisherOutage(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	p, err := eventlog.NewPublisherWithSegmentSize(js, eventlog.PublisherConfig{SpoolDir: dir, Logger: testLogger(t), Registerer: reg}, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	const total, calls = 30000, 500
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		for i := range total {
			subj, ev, err := newTestEvent(i, calls)
			if err == nil {
				err = p.Publish(subj, ev)
			}
			if err != nil {
				done <- fmt.Errorf("publish %d: %w", i, err)
				return
			}
			sent.Store(int64(i + 1))
			if i%50 == 49 {
				// Paced like a proxy, so that the outage falls in the
				// middle of the run.
				time.Sleep(time.Millisecond)
			}
		}
		done <- nil
	}()

	waitFor(t, "a fifth of the events sent", func() bool { return sent.Load() >= total/5 })
	n.Stop()
	atStop := sent.Load()
	waitFor(t, "events published during the outage", func() bool { return sent.Load() >= atStop+2000 })
	n.Start()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every event in the stream", func() bool { return streamMsgs(t, js, schema.StreamSIP) >= total })
	closePublisher(t, p)

	checkStream(t, readStream(t, js, schema.StreamSIP), total)
	if got := metric(t, reg, "carrier_eventlog_spooled_total"); got < 2000 {
		t.Errorf("spooled_total %v, want the outage's events", got)
	}
	if got := metric(t, reg, "carrier_eventlog_publish_errors_total"); got != 0 {
		t.Errorf("publish_errors_total %v", got)
	}
	if got := metric(t, reg, "carrier_eventlog_spool_events"); got != 0 {
		t.Errorf("spool_events %v after the replay", got)
	}
	if files := spoolFiles(t, dir); len(files) != 0 {
		t.Errorf("spool files left: %v", files)
	}
}

// spoolWhileDown publishes events 0..total-1 while JetStream is down and
// closes the publisher, leaving them in dir.
func spoolWhileDown(t *testing.T, n *testkit.NATS, js jetstream.JetStream, dir string, total int) {
	t.Helper()
	n.Stop()
	reg := prometheus.NewRegistry()
	p, err := eventlog.NewPublisherWithSegmentSize(js, eventlog.PublisherConfig{SpoolDir: dir, Logger: testLogger(t), Registerer: reg}, 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	publishRange(t, p, 0, total, 10)
	closePublisher(t, p)
	if got := metric(t, reg, "carrier_eventlog_spooled_total"); got != float64(total) {
		t.Fatalf("spooled %v of %d events", got, total)
	}
	if len(spoolFiles(t, dir)) == 0 {
		t.Fatal("close left no spool behind")
	}
	n.Start()
}

func TestPublisherReplaysSpoolOfEarlierRun(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	dir := t.TempDir()
	const total = 1000
	spoolWhileDown(t, n, js, dir, total)

	reg := prometheus.NewRegistry()
	p, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: dir, Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	// New events queue behind the spooled ones.
	publishRange(t, p, total, total+100, 10)
	waitFor(t, "the spool replayed", func() bool { return streamMsgs(t, js, schema.StreamSIP) == total+100 })
	closePublisher(t, p)
	checkStream(t, readStream(t, js, schema.StreamSIP), total+100)
	if files := spoolFiles(t, dir); len(files) != 0 {
		t.Errorf("spool files left: %v", files)
	}
}

func TestPublisherSkipsTornTail(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	dir := t.TempDir()
	const total = 300
	spoolWhileDown(t, n, js, dir, total)
	// A crash in the middle of writing the last record.
	files := spoolFiles(t, dir)
	last := files[len(files)-1]
	fi, err := os.Stat(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(last, fi.Size()-5); err != nil {
		t.Fatal(err)
	}

	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	p, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: dir, Logger: slog.New(slog.NewTextHandler(logs, nil)), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, p)
	got := readStream(t, js, schema.StreamSIP)
	checkStream(t, got, total-1)
	if !strings.Contains(logs.String(), "torn or corrupt record") {
		t.Errorf("no log line for the torn record:\n%s", logs)
	}
	if v := metric(t, reg, "carrier_eventlog_publish_errors_total"); v != 1 {
		t.Errorf("publish_errors_total %v, want 1 for the torn record", v)
	}
}

func TestPublisherCloseFlushes(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	dir := t.TempDir()
	p, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: dir, MaxInFlight: 256, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	const total = 20000
	publishRange(t, p, 0, total, 1000)
	closePublisher(t, p)
	// No waiting: Close returned only once everything was acknowledged.
	if got := streamMsgs(t, js, schema.StreamSIP); got != total {
		t.Fatalf("stream holds %d events after Close, want %d", got, total)
	}
	if files := spoolFiles(t, dir); len(files) != 0 {
		t.Errorf("spool files left: %v", files)
	}
}

// TestPublisherSpoolsUntilStreamExists covers failures other than a lost
// connection: no stream takes the subject, so every send fails with no
// responders until one is created.
func TestPublisherSpoolsUntilStreamExists(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	reg := prometheus.NewRegistry()
	p, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: t.TempDir(), Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	const total = 500
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			ev, err := schema.NewEnvelope(testType, 1, time.Now(), "test-node", testPayload{Call: "c", I: i})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Publish(fmt.Sprintf("late.%d", i%3), ev); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(0, total/2)
	waitFor(t, "events spooled", func() bool { return metric(t, reg, "carrier_eventlog_spool_events") > 0 })
	publish(total/2, total)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LATE", Subjects: []string{"late.>"}, Duplicates: time.Minute}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the spool replayed", func() bool { return streamMsgs(t, js, "LATE") == total })
	closePublisher(t, p)
	checkStream(t, readStream(t, js, "LATE"), total)
}

func TestPublisherCountsLostEvents(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	reg := prometheus.NewRegistry()
	p, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: t.TempDir(), Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	// Bigger than the server takes: spooling it would block the spool
	// for ever, so it is refused, counted and reported.
	huge, err := schema.NewEnvelope(testType, 1, time.Now(), "test-node", testPayload{Call: strings.Repeat("x", 9<<20)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(schema.TransactionSubject("c"), huge); !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("oversized event: %v, want ErrMaxPayload", err)
	}
	publishRange(t, p, 0, 10, 2)
	closePublisher(t, p)
	subj, ev := testEvent(t, 10, 2)
	if err := p.Publish(subj, ev); !errors.Is(err, eventlog.ErrPublisherClosed) {
		t.Fatalf("publish after close: %v", err)
	}
	if err := p.Close(context.Background()); !errors.Is(err, eventlog.ErrPublisherClosed) {
		t.Fatalf("second close: %v", err)
	}
	if got := metric(t, reg, "carrier_eventlog_publish_errors_total"); got != 2 {
		t.Errorf("publish_errors_total %v, want 2", got)
	}
	checkStream(t, readStream(t, js, schema.StreamSIP), 10)
}

func TestNewPublisherSpoolDirInUse(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	dir := t.TempDir()
	p, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer closePublisher(t, p)
	if _, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: dir, Logger: testLogger(t)}); !errors.Is(err, eventlog.ErrSpoolLocked) {
		t.Fatalf("second publisher on one spool dir: %v, want ErrSpoolLocked", err)
	}
	if _, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{}); err == nil {
		t.Fatal("a publisher without a spool dir")
	}
}

// BenchmarkPublish measures events/s into an embedded server on this
// machine, with transaction-sized events: "up" from Publish until
// JetStream acknowledged them, "down" into the spool while JetStream is
// unreachable.
func BenchmarkPublish(b *testing.B) {
	b.Run("up", func(b *testing.B) { benchmarkPublish(b, true) })
	b.Run("down", func(b *testing.B) { benchmarkPublish(b, false) })
}

func benchmarkPublish(b *testing.B, up bool) {
	n := testkit.StartNATS(b)
	_, js := n.Connect()
	if !up {
		n.Stop()
	}
	reg := prometheus.NewRegistry()
	p, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{
		SpoolDir:   b.TempDir(),
		Logger:     slog.New(slog.DiscardHandler),
		Registerer: reg,
	})
	if err != nil {
		b.Fatal(err)
	}
	tx := schema.Transaction{
		Method: "INVITE", FromURI: "sip:+4930123456@198.51.100.7", FromTag: "a73kszlfl", ToURI: "sip:+4989987654@carrier.example",
		CSeq: 1, RequestURI: "sip:+4989987654@carrier.example", Source: "198.51.100.7:5060", Transport: "udp",
		Destination: "203.0.113.20:5060", Status: 200, Reason: "OK", RequestAt: 1767225600000, ProvisionalAt: 1767225600850,
		ProvisionalStatus: 180, FinalAt: 1767225604100, Account: "acme", Trunk: "acme-berlin",
		Attempts: []schema.Attempt{{Gateway: "gw1", Supplier: "tel1", Destination: "203.0.113.20:5060", Status: 200, StartAt: 1767225600010, FinalAt: 1767225604100}},
	}
	b.ReportAllocs()
	start := time.Now()
	i := 0
	for b.Loop() {
		tx.CallID = fmt.Sprintf("%d-bench@198.51.100.7", i/4)
		ev, err := schema.NewEnvelope(schema.TypeTransaction, schema.TransactionVersion, time.Now(), "bench", tx)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Publish(schema.TransactionSubject(tx.CallID), ev); err != nil {
			b.Fatal(err)
		}
		i++
	}
	publishDone := time.Since(start)
	b.ReportMetric(float64(i)/publishDone.Seconds(), "published/s")
	if up {
		waitFor(b, "all events acknowledged", func() bool { return metric(b, reg, "carrier_eventlog_published_total") >= float64(i) })
		b.ReportMetric(float64(i)/time.Since(start).Seconds(), "acked/s")
	}
	b.ReportMetric(metric(b, reg, "carrier_eventlog_spooled_total")/float64(i), "spooled/event")
	closePublisher(b, p)
}
