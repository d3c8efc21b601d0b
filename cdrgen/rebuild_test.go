package cdrgen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// TestRebuildGivesTheLiveCDRs: a rebuild over a range publishes exactly
// the events the live correlator published for the calls in it: same ids,
// subjects, times and CDRs, field by field; calls outside the range are
// not rebuilt, and the rebuild's state buckets are gone afterwards.
func TestRebuildGivesTheLiveCDRs(t *testing.T) {
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	shortenCDRDedupe(t, js)
	const maxCall = time.Hour

	// Rebuilds find where to start by when events were stored, so these
	// calls happen in the last hours rather than on the fixture's date.
	base := time.Now().Add(-3 * time.Hour).Truncate(time.Second).UnixMilli()
	call := func(n int) testCall {
		c := newTestCall(n)
		c.at = base + int64(n)*10
		return c
	}
	var txs []schema.Transaction
	var inRange []string // CDR ids
	for i := range 40 {
		c := call(i)
		all := shapes(c)
		sc := all[i%len(all)]
		if slices.ContainsFunc(sc.txs, func(tx schema.Transaction) bool { return tx.RequestAt-c.at > maxCall.Milliseconds() }) {
			continue // a BYE hours after the call's start, out of the range
		}
		txs = append(txs, sc.txs...)
		inRange = append(inRange, schema.CDRID(c.id, c.from))
	}
	lost := call(100)
	txs = append(txs, lost.invite(200, "OK"), lost.ack())
	inRange = append(inRange, schema.CDRID(lost.id, lost.from))
	// Moves the log's time past the lost call's maximum duration.
	later := lost.at + answerAfter + maxCall.Milliseconds() + 2*time.Minute.Milliseconds()
	txs = append(txs, schema.Transaction{Method: "OPTIONS", CallID: "keepalive@192.0.2.99", FromTag: "k", Status: 200, RequestAt: later, FinalAt: later})
	// Before the range: live gets a CDR, the rebuild does not.
	before := newTestCall(200)
	before.at = base - 2*time.Hour.Milliseconds()
	txs = append(slices.Clone(before.scenarioTxs()), txs...)
	publishTx(t, js, txs...)

	cfg := testConfig(nil)
	cfg.MaxCallDuration = maxCall
	live := start(t, js, cfg)
	waitCaughtUp(t, js, DefaultDurable)
	live.stop(t)
	liveMsgs := readCDRStream(t, js)

	// Empty the CDR stream and let its dedupe window pass, so that every
	// event the rebuild publishes shows.
	waitDedupeWindow(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, schema.StreamCDR)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx); err != nil {
		t.Fatal(err)
	}

	var progress []RebuildProgress
	p, err := Rebuild(ctx, js, RebuildConfig{
		From: schema.FromMillis(base - time.Minute.Milliseconds()), To: time.Now().Add(time.Minute),
		MaxCallDuration: maxCall, Node: "rebuild", MaxBatch: 7,
		Progress: func(p RebuildProgress) { progress = append(progress, p) },
	})
	if err != nil {
		t.Fatal(err)
	}
	rebuilt := readCDRStream(t, js)

	want := map[string]cdrMsg{}
	for _, m := range liveMsgs {
		if slices.Contains(inRange, m.CDR.ID) {
			want[m.Env.ID] = m
		}
	}
	got := map[string]cdrMsg{}
	for _, m := range rebuilt {
		if _, dup := got[m.Env.ID]; dup {
			t.Errorf("rebuild published %s twice", m.Env.ID)
		}
		got[m.Env.ID] = m
	}
	if len(got) != len(want) || len(want) < 40 {
		t.Errorf("rebuild published %d events, live %d for the calls in the range", len(got), len(want))
	}
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			t.Errorf("rebuild did not publish %s %s of call %s", w.Env.Type, id, w.CDR.CallID)
			continue
		}
		if g.Subject != w.Subject || g.Env.Type != w.Env.Type || g.Env.Time != w.Env.Time || g.Env.Node != "rebuild" {
			t.Errorf("%s: rebuilt %s %s at %d by %s, live %s %s at %d", id, g.Subject, g.Env.Type, g.Env.Time, g.Env.Node, w.Subject, w.Env.Type, w.Env.Time)
		}
		assertCDR(t, "rebuilt "+w.Env.Type+" "+w.CDR.CallID, g.CDR, w.CDR)
	}
	expired, ok := got[schema.CDRID(lost.id, lost.from)]
	if !ok || expired.CDR.HangupReason != schema.EndNoBye {
		t.Errorf("call without BYE rebuilt as %+v", expired.CDR)
	}

	var finished uint64
	for _, m := range rebuilt {
		if m.Env.Type != schema.TypeCallStarted {
			finished++
		}
	}
	if p.CDRs != finished || p.Replayed != uint64(len(txs)-len(before.scenarioTxs())) || p.Seq != p.LastSeq {
		t.Errorf("progress %+v: want %d CDRs, %d replayed, up to seq %d", p, finished, len(txs)-len(before.scenarioTxs()), p.LastSeq)
	}
	if len(progress) == 0 || progress[len(progress)-1] != p {
		t.Errorf("progress reports %+v, result %+v", progress, p)
	}
	assertBuckets(t, js, DefaultCallsBucket, DefaultFinishedBucket)
}

// scenarioTxs is an answered call ended by the caller.
func (c testCall) scenarioTxs() []schema.Transaction {
	return []schema.Transaction{c.invite(200, "OK"), c.ack(), c.bye(false)}
}

func TestRebuildValidates(t *testing.T) {
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	now := time.Now()
	for _, cfg := range []RebuildConfig{{}, {From: now}, {From: now, To: now}, {From: now, To: now.Add(-time.Hour)}} {
		if _, err := Rebuild(context.Background(), js, cfg); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("Rebuild(%+v) = %v, want ErrInvalidConfig", cfg, err)
		}
	}
	// An empty SIP stream: nothing to do, nothing left behind.
	p, err := Rebuild(context.Background(), js, RebuildConfig{From: now.Add(-time.Hour), To: now})
	if err != nil || p != (RebuildProgress{}) {
		t.Errorf("Rebuild of an empty stream = %+v, %v", p, err)
	}
	// A range after every event: stops without waiting for more.
	publishTx(t, js, newTestCall(1).scenarioTxs()...)
	p, err = Rebuild(context.Background(), js, RebuildConfig{From: now.Add(time.Hour), To: now.Add(2 * time.Hour)})
	if err != nil || p.Replayed != 0 || p.CDRs != 0 {
		t.Errorf("Rebuild after the last event = %+v, %v", p, err)
	}
	assertBuckets(t, js)
}

// assertBuckets checks the KV buckets are exactly these.
func assertBuckets(t *testing.T, js jetstream.JetStream, want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []string
	names := js.KeyValueStoreNames(ctx)
	for n := range names.Name() {
		got = append(got, n)
	}
	if err := names.Error(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("KV buckets %v, want %v", got, want)
	}
}

// waitDedupeWindow waits until the CDR stream's dedupe window has passed
// for what was published so far: a probe id published again is stored
// again. It waits on the server's behaviour, not on a clock.
func waitDedupeWindow(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := fmt.Sprintf("probe-%d", time.Now().UnixNano())
	msg := nats.NewMsg(schema.CDRSubject(schema.TypeCallEnded, "probe"))
	msg.Header.Set(jetstream.MsgIDHeader, id)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	for {
		ack, err := js.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if !ack.Duplicate {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
