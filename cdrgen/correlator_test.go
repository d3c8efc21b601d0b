package cdrgen

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// testConfig fetches small batches without waiting long, so that tests see
// many batches and do not sit in fetch waits.
// The fixture calls are dated March 2026; a long SweepInterval keeps the
// wall clock from ending the calls a test leaves open.
func testConfig(reg prometheus.Registerer) Config {
	return Config{Node: "cdrgen-test", MaxBatch: 50, MaxWait: 100 * time.Millisecond, SweepInterval: time.Hour, Registerer: reg}
}

// running is a correlator running in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, js jetstream.JetStream, cfg Config) *running {
	t.Helper()
	c, err := New(js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the correlator and waits until Run has returned.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.done == nil {
		return
	}
	r.cancel()
	select {
	case err := <-r.done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("correlator did not stop within 30s of its context ending")
	}
	r.done = nil
}

func publishTx(t testing.TB, js jetstream.JetStream, txs ...schema.Transaction) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tx := range txs {
		env, err := schema.NewEnvelope(schema.TypeTransaction, schema.TransactionVersion, schema.FromMillis(tx.RequestAt), proxyNode, tx)
		if err != nil {
			t.Fatal(err)
		}
		if err := eventlog.Publish(ctx, js, schema.TransactionSubject(tx.CallID), env); err != nil {
			t.Fatal(err)
		}
	}
}

// waitCaughtUp waits until the durable has acked everything on the stream,
// which the correlator does only after its events and state are stored.
func waitCaughtUp(t testing.TB, js jetstream.JetStream, durable string) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cons, err := js.Consumer(ctx, schema.StreamSIP, durable)
		var info *jetstream.ConsumerInfo
		if err == nil {
			info, err = cons.Info(ctx)
		}
		var last uint64
		if err == nil {
			last, err = lastSeqOf(ctx, js, info.Config)
		}
		cancel()
		// The counters lag a message published a moment ago; the last
		// message of the consumer's subjects does not.
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0 && info.AckFloor.Stream >= last {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s has not caught up: info %+v, err %v", durable, info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastSeqOf is the sequence of the SIP stream's last message on the
// subjects of a consumer (all of them without a filter).
func lastSeqOf(ctx context.Context, js jetstream.JetStream, cfg jetstream.ConsumerConfig) (uint64, error) {
	stream, err := js.Stream(ctx, schema.StreamSIP)
	if err != nil {
		return 0, err
	}
	subjects := cfg.FilterSubjects
	if cfg.FilterSubject != "" {
		subjects = append(subjects, cfg.FilterSubject)
	}
	if len(subjects) == 0 {
		info, err := stream.Info(ctx)
		if err != nil {
			return 0, err
		}
		return info.State.LastSeq, nil
	}
	var last uint64
	for _, subj := range subjects {
		m, err := stream.GetLastMsgForSubject(ctx, subj)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return 0, err
		default:
			last = max(last, m.Sequence)
		}
	}
	return last, nil
}

// cdrMsg is one message of the CDR stream.
type cdrMsg struct {
	Subject string
	Env     schema.Envelope
	CDR     schema.CDR
}

func readCDRStream(t testing.TB, js jetstream.JetStream) []cdrMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, schema.StreamCDR)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []cdrMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get CDR seq %d: %v", seq, err)
		}
		env, err := schema.ParseEnvelope(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		var cdr schema.CDR
		if err := env.Decode(env.Type, schema.CDRVersion, &cdr); err != nil {
			t.Fatal(err)
		}
		out = append(out, cdrMsg{Subject: m.Subject, Env: env, CDR: cdr})
	}
	return out
}

// byType indexes CDR messages by type and CDR id, failing on an id seen
// twice in the stream.
func byType(t *testing.T, msgs []cdrMsg) map[string]map[string]cdrMsg {
	t.Helper()
	out := map[string]map[string]cdrMsg{}
	ids := map[string]bool{}
	for _, m := range msgs {
		if ids[m.Env.ID] {
			t.Errorf("event id %s (%s of call %s) is twice in the CDR stream", m.Env.ID, m.Env.Type, m.CDR.CallID)
		}
		ids[m.Env.ID] = true
		if out[m.Env.Type] == nil {
			out[m.Env.Type] = map[string]cdrMsg{}
		}
		out[m.Env.Type][m.CDR.ID] = m
	}
	return out
}

// assertCDR compares a CDR with its golden one field by field.
func assertCDR(t *testing.T, what string, got, want schema.CDR) {
	t.Helper()
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range g.NumField() {
		if !reflect.DeepEqual(g.Field(i).Interface(), w.Field(i).Interface()) {
			t.Errorf("%s: %s = %+v, want %+v", what, g.Type().Field(i).Name, g.Field(i).Interface(), w.Field(i).Interface())
		}
	}
}

func TestAnsweredCallGolden(t *testing.T) {
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	reg := prometheus.NewRegistry()
	r := start(t, js, testConfig(reg))

	c := newTestCall(7)
	publishTx(t, js, c.invite(200, "OK"), c.ack(),
		c.inDialog("INVITE", true, 30000, 200), c.inDialog("OPTIONS", false, 31000, 200),
		c.bye(false))
	waitCaughtUp(t, js, DefaultDurable)
	r.stop(t)

	msgs := readCDRStream(t, js)
	if len(msgs) != 2 {
		t.Fatalf("%d events on the CDR stream, want call.started and call.ended: %+v", len(msgs), msgs)
	}
	started, ended := msgs[0], msgs[1]
	id := schema.CDRID(c.id, c.from)
	wantStarted := schema.Envelope{ID: schema.StartedID(id), Type: schema.TypeCallStarted, Version: schema.CDRVersion, Time: c.at + answerAfter, Node: "cdrgen-test"}
	wantEnded := schema.Envelope{ID: id, Type: schema.TypeCallEnded, Version: schema.CDRVersion, Time: c.at + byeAfter, Node: "cdrgen-test"}
	for _, x := range []struct {
		got     cdrMsg
		want    schema.Envelope
		subject string
		cdr     schema.CDR
		what    string
	}{
		{started, wantStarted, schema.CDRSubject(schema.TypeCallStarted, c.id), c.startedCDR(), "call.started"},
		{ended, wantEnded, schema.CDRSubject(schema.TypeCallEnded, c.id), c.answeredCDR(schema.HangupCaller), "call.ended"},
	} {
		env := x.got.Env
		env.Data = nil
		if !reflect.DeepEqual(env, x.want) {
			t.Errorf("%s envelope %+v, want %+v", x.what, env, x.want)
		}
		if x.got.Subject != x.subject {
			t.Errorf("%s on subject %s, want %s", x.what, x.got.Subject, x.subject)
		}
		assertCDR(t, x.what, x.got.CDR, x.cdr)
	}

	if got := metricOf(t, reg, "carrier_cdrgen_cdrs_total", "answered"); got != 1 {
		t.Errorf("cdrs_total{answered} = %v, want 1", got)
	}
	if got := metricOf(t, reg, "carrier_cdrgen_open_calls", ""); got != 0 {
		t.Errorf("open_calls = %v, want 0", got)
	}
	if got := metricOf(t, reg, "carrier_cdrgen_events_total", "ignored"); got != 3 {
		t.Errorf("events_total{ignored} = %v, want 3 (ACK, re-INVITE, OPTIONS)", got)
	}
}

// TestCallOutcomes runs every outcome through JetStream at once, the
// failures field by field against golden CDRs.
func TestCallOutcomes(t *testing.T) {
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	reg := prometheus.NewRegistry()
	r := start(t, js, testConfig(reg))

	type want struct {
		typ string
		cdr schema.CDR
	}
	var wants []want
	for i, f := range []struct {
		status int
		reason string
		q850   int
		d      schema.Disposition
	}{
		{486, "Busy Here", 17, schema.Busy},
		{600, "Busy Everywhere", 0, schema.Busy},
		{408, "Request Timeout", 0, schema.NoAnswer},
		{480, "Temporarily Unavailable", 19, schema.NoAnswer},
		{487, "Request Terminated", 0, schema.NoAnswer},
		{503, "Service Unavailable", 34, schema.Congestion},
		{404, "Not Found", 1, schema.Failed},
		{403, "Forbidden", 21, schema.Failed},
	} {
		c := newTestCall(100 + i)
		tx := c.invite(f.status, f.reason)
		tx.Q850 = f.q850
		if f.status == 487 {
			publishTx(t, js, schema.Transaction{Method: "CANCEL", CallID: c.id, FromTag: c.from, CSeq: 1, Status: 200, RequestAt: c.at + 4000, FinalAt: c.at + 4001})
		}
		publishTx(t, js, tx, c.inDialog("ACK", false, answerAfter+1, 0))
		wants = append(wants, want{schema.TypeCallFailed, c.failedCDR(f.status, f.reason, f.q850, f.d)})
	}

	callee := newTestCall(200)
	publishTx(t, js, callee.invite(200, "OK"), callee.ack(), callee.bye(true))
	wants = append(wants, want{schema.TypeCallEnded, callee.answeredCDR(schema.HangupCallee)})

	proxy := newTestCall(201)
	bye := proxy.bye(false)
	bye.Note = schema.EndMaxDuration
	publishTx(t, js, proxy.invite(200, "OK"), proxy.ack(), bye)
	ended := proxy.answeredCDR(schema.HangupProxy)
	ended.HangupReason = schema.EndMaxDuration
	wants = append(wants, want{schema.TypeCallEnded, ended})

	challenged := newTestCall(202)
	retry := challenged.invite(200, "OK")
	retry.CSeq = 2
	publishTx(t, js, challenged.invite(407, "Proxy Authentication Required"), retry, challenged.ack(), challenged.bye(false))
	wants = append(wants, want{schema.TypeCallEnded, challenged.answeredCDR(schema.HangupCaller)})

	waitCaughtUp(t, js, DefaultDurable)
	r.stop(t)

	got := byType(t, readCDRStream(t, js))
	for _, w := range wants {
		m, ok := got[w.typ][w.cdr.ID]
		if !ok {
			t.Errorf("no %s for call %s (%d)", w.typ, w.cdr.CallID, w.cdr.Status)
			continue
		}
		assertCDR(t, w.typ+" "+w.cdr.CallID, m.CDR, w.cdr)
		if m.Env.ID != w.cdr.ID || m.Env.Time != w.cdr.EndAt {
			t.Errorf("%s %s: envelope id %s time %d, want %s %d", w.typ, w.cdr.CallID, m.Env.ID, m.Env.Time, w.cdr.ID, w.cdr.EndAt)
		}
	}
	if n := len(got[schema.TypeCallFailed]); n != 8 {
		t.Errorf("%d call.failed, want 8", n)
	}
	if n := len(got[schema.TypeCallStarted]); n != 3 {
		t.Errorf("%d call.started, want 3", n)
	}
	for d, n := range map[string]float64{"busy": 2, "no-answer": 3, "cancelled": 0, "congestion": 1, "failed": 2, "answered": 3} {
		if got := metricOf(t, reg, "carrier_cdrgen_cdrs_total", d); got != n {
			t.Errorf("cdrs_total{%s} = %v, want %v", d, got, n)
		}
	}
}

// TestDuplicatesOnTheLog: every transaction is on the log twice with the
// same event id, as a spool replay after the dedupe window leaves it.
func TestDuplicatesOnTheLog(t *testing.T) {
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	shortenCDRDedupe(t, js)
	reg := prometheus.NewRegistry()
	r := start(t, js, testConfig(reg))

	var txs []schema.Transaction
	const calls = 20
	for i := range calls {
		c := newTestCall(i)
		if i%4 == 3 {
			txs = append(txs, c.invite(486, "Busy Here"))
			continue
		}
		txs = append(txs, c.invite(200, "OK"), c.ack(), c.bye(i%2 == 0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tx := range txs {
		env, err := schema.NewEnvelope(schema.TypeTransaction, schema.TransactionVersion, schema.FromMillis(tx.RequestAt), proxyNode, tx)
		if err != nil {
			t.Fatal(err)
		}
		data, err := env.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		// No Nats-Msg-Id: both copies are stored, as after the window.
		for range 2 {
			if _, err := js.Publish(ctx, schema.TransactionSubject(tx.CallID), data); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitCaughtUp(t, js, DefaultDurable)
	r.stop(t)

	got := byType(t, readCDRStream(t, js))
	if len(got[schema.TypeCallStarted]) != 15 || len(got[schema.TypeCallEnded]) != 15 || len(got[schema.TypeCallFailed]) != 5 {
		t.Errorf("CDR stream: %d started, %d ended, %d failed; want 15, 15, 5",
			len(got[schema.TypeCallStarted]), len(got[schema.TypeCallEnded]), len(got[schema.TypeCallFailed]))
	}
	if got := metricOf(t, reg, "carrier_cdrgen_events_total", "duplicate"); got != 5+15*2 {
		t.Errorf("events_total{duplicate} = %v, want %d (second INVITE and BYE of each call)", got, 5+15*2)
	}
}

// TestRedeliveryAfterCommit: a batch whose events and state were stored but
// whose ack was lost (the correlator died in between) is delivered again to
// a new instance, which must add nothing. Open calls stay open and still
// end once.
func TestRedeliveryAfterCommit(t *testing.T) {
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	shortenCDRDedupe(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var txs []schema.Transaction
	var late []testCall
	for i := range 12 {
		c := newTestCall(i)
		switch i % 3 {
		case 0:
			txs = append(txs, c.invite(200, "OK"), c.ack(), c.bye(false))
		case 1:
			txs = append(txs, c.invite(480, "Temporarily Unavailable"))
		case 2:
			// Still talking when the correlator dies.
			txs = append(txs, c.invite(200, "OK"), c.ack())
			late = append(late, c)
		}
	}
	publishTx(t, js, txs...)

	// Handle the whole stream as one batch, without the consumer, so that
	// nothing is acked.
	first, err := New(js, testConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	st, err := first.openState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := newHandler(first, st)
	if err := h.handle(ctx, sipBatch(t, js)); err != nil {
		t.Fatal(err)
	}
	before := readCDRStream(t, js)
	if len(before) != 4+4+4+4 {
		t.Fatalf("first pass published %d events, want 16", len(before))
	}

	reg := prometheus.NewRegistry()
	r := start(t, js, testConfig(reg))
	waitCaughtUp(t, js, DefaultDurable)
	if after := readCDRStream(t, js); len(after) != len(before) {
		t.Fatalf("redelivery added %d events to the CDR stream", len(after)-len(before))
	}
	if got := metricOf(t, reg, "carrier_cdrgen_open_calls", ""); got != 4 {
		t.Errorf("open_calls = %v after restart, want 4", got)
	}

	for _, c := range late {
		publishTx(t, js, c.bye(true))
	}
	waitCaughtUp(t, js, DefaultDurable)
	r.stop(t)
	got := byType(t, readCDRStream(t, js))
	for _, c := range late {
		m, ok := got[schema.TypeCallEnded][schema.CDRID(c.id, c.from)]
		if !ok {
			t.Errorf("call %s open across the restart has no call.ended", c.id)
			continue
		}
		assertCDR(t, "call.ended "+c.id, m.CDR, c.answeredCDR(schema.HangupCallee))
	}
	if len(got[schema.TypeCallEnded]) != 8 || len(got[schema.TypeCallStarted]) != 8 || len(got[schema.TypeCallFailed]) != 4 {
		t.Errorf("CDR stream: %d started, %d ended, %d failed; want 8, 8, 4",
			len(got[schema.TypeCallStarted]), len(got[schema.TypeCallEnded]), len(got[schema.TypeCallFailed]))
	}
	if got := metricOf(t, reg, "carrier_cdrgen_open_calls", ""); got != 0 {
		t.Errorf("open_calls = %v at the end, want 0", got)
	}
}

// TestRestart: the correlator is stopped in the middle of a backlog and
// started again, twice; calls answered before a restart end after it.
// Every call has exactly one call.started and one call.ended.
func TestRestart(t *testing.T) {
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	const calls = 200
	var first, second []schema.Transaction
	for i := range calls {
		c := newTestCall(i)
		first = append(first, c.invite(200, "OK"), c.ack())
		if i < calls/2 {
			first = append(first, c.bye(i%2 == 0))
		} else {
			second = append(second, c.bye(i%2 == 0))
		}
	}
	publishTx(t, js, first...)

	cfg := testConfig(nil)
	cfg.MaxBatch = 10
	a := start(t, js, cfg)
	waitCDRs(t, js, 40)
	a.stop(t) // mid-run: most of the backlog is still to do
	t.Logf("first instance stopped with %d of %d events published", len(readCDRStream(t, js)), calls+calls/2)

	b := start(t, js, cfg)
	waitCaughtUp(t, js, DefaultDurable)
	b.stop(t) // half the calls are open now

	publishTx(t, js, second...)
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	c := start(t, js, cfg)
	waitCaughtUp(t, js, DefaultDurable)
	c.stop(t)

	msgs := readCDRStream(t, js)
	got := byType(t, msgs)
	if len(msgs) != 2*calls || len(got[schema.TypeCallStarted]) != calls || len(got[schema.TypeCallEnded]) != calls {
		t.Fatalf("CDR stream has %d events: %d started, %d ended; want %d of each",
			len(msgs), len(got[schema.TypeCallStarted]), len(got[schema.TypeCallEnded]), calls)
	}
	for i := range calls {
		tc := newTestCall(i)
		by := schema.HangupCaller
		if i%2 == 0 {
			by = schema.HangupCallee
		}
		assertCDR(t, "call.ended "+tc.id, got[schema.TypeCallEnded][schema.CDRID(tc.id, tc.from)].CDR, tc.answeredCDR(by))
	}
	if n := metricOf(t, reg, "carrier_cdrgen_cdrs_total", "answered"); n != calls/2 {
		t.Errorf("last instance ended %v calls, want the %d that were open when it started", n, calls/2)
	}
}

// TestPartitions: two correlators, each on its own partitions, produce the
// CDRs of their calls and only those.
func TestPartitions(t *testing.T) {
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	var even, odd []int
	for p := range schema.Partitions {
		if p%2 == 0 {
			even = append(even, p)
		} else {
			odd = append(odd, p)
		}
	}
	reg := prometheus.NewRegistry()
	cfgA, cfgB := testConfig(reg), testConfig(reg)
	cfgA.Durable, cfgA.Partitions = "cdrgen-even", even
	cfgB.Durable, cfgB.Partitions = "cdrgen-odd", odd
	a, b := start(t, js, cfgA), start(t, js, cfgB)

	const calls = 40
	for i := range calls {
		c := newTestCall(i)
		publishTx(t, js, c.invite(200, "OK"), c.ack(), c.bye(false))
	}
	waitCaughtUp(t, js, cfgA.Durable)
	waitCaughtUp(t, js, cfgB.Durable)
	a.stop(t)
	b.stop(t)

	got := byType(t, readCDRStream(t, js))
	if len(got[schema.TypeCallEnded]) != calls {
		t.Fatalf("%d call.ended, want %d", len(got[schema.TypeCallEnded]), calls)
	}
	var wantEven float64
	for i := range calls {
		if schema.Partition(newTestCall(i).id)%2 == 0 {
			wantEven++
		}
	}
	if wantEven == 0 || wantEven == calls {
		t.Fatalf("fixture calls all in one kind of partition")
	}
	gotEven := metricValue(t, reg, "carrier_cdrgen_cdrs_total", "cdrgen-even", "answered")
	gotOdd := metricValue(t, reg, "carrier_cdrgen_cdrs_total", "cdrgen-odd", "answered")
	if gotEven != wantEven || gotOdd != calls-wantEven {
		t.Errorf("even partitions ended %v calls, odd %v; want %v and %v", gotEven, gotOdd, wantEven, calls-wantEven)
	}
}

func TestNewValidates(t *testing.T) {
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	for _, cfg := range []Config{
		{Partitions: []int{}},
		{Partitions: []int{schema.Partitions}},
		{Partitions: []int{-1}},
		{Partitions: []int{3, 3}},
		{CallsBucket: "X", FinishedBucket: "X"},
		{FinishedTTL: time.Second},
		{Durable: "cdrgen.a"},
		{CallsBucket: "calls bucket"},
		{MaxCallDuration: time.Millisecond},
		{SweepInterval: -time.Second},
		{SweepLag: -time.Second},
	} {
		if _, err := New(js, cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("New(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
	if _, err := New(nil, Config{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New without jetstream = %v", err)
	}
	reg := prometheus.NewRegistry()
	if _, err := New(js, Config{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(js, Config{Registerer: reg}); err == nil {
		t.Error("second correlator with the same durable registered its metrics twice")
	}

	c, err := New(js, testConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitConsumer(t, js, DefaultDurable)
	if err := c.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run = %v, want ErrRunning", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
}

// shortenCDRDedupe makes the CDR stream's dedupe window tiny, so that an
// event the correlator published twice shows in the stream instead of
// being dropped by JetStream.
func shortenCDRDedupe(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, schema.StreamCDR)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	cfg.Duplicates = 100 * time.Millisecond
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// sipBatch is the whole SIP stream as one batch.
func sipBatch(t *testing.T, js jetstream.JetStream) []eventlog.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, schema.StreamSIP)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var batch []eventlog.Msg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		env, err := schema.ParseEnvelope(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, eventlog.Msg{Subject: m.Subject, Envelope: env, Seq: seq, Delivered: 1})
	}
	return batch
}

func waitCDRs(t *testing.T, js jetstream.JetStream, n uint64) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var msgs uint64
		s, err := js.Stream(ctx, schema.StreamCDR)
		if err == nil {
			var info *jetstream.StreamInfo
			if info, err = s.Info(ctx); err == nil {
				msgs = info.State.Msgs
			}
		}
		cancel()
		if msgs >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("CDR stream has %d events, waited for %d (err %v)", msgs, n, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitConsumer(t *testing.T, js jetstream.JetStream, durable string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := js.Consumer(ctx, schema.StreamSIP, durable)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s not created: %v", durable, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricOf reads a correlator metric of the default durable with the given
// label value (none for the gauge).
func metricOf(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	return metricValue(t, reg, name, DefaultDurable, label)
}

// metricValue reads one sample of a consumer's metric from reg.
func metricValue(t *testing.T, reg *prometheus.Registry, name, consumer, label string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	samples:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				want := label
				if lp.GetName() == "consumer" {
					want = consumer
				}
				if lp.GetValue() != want {
					continue samples
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s{consumer=%q, %q} not registered", name, consumer, label)
	return 0
}
