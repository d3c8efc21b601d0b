package cdrgen

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// BenchmarkCorrelator measures the whole correlator on an in-process
// JetStream: each iteration is one answered call (INVITE, ACK, BYE) already
// on the SIP stream, and the clock runs until the consumer has acked all of
// them, i.e. until their call.started and call.ended are published and the
// state is stored. "short": each call's events are adjacent, so a call
// starts and ends in one batch; "long": all INVITEs come before all BYEs,
// so every call is stored open and then finished. Run with a fixed count,
// e.g. -benchtime=20000x.
func BenchmarkCorrelator(b *testing.B) {
	b.Run("short", func(b *testing.B) { benchCorrelator(b, false) })
	b.Run("long", func(b *testing.B) { benchCorrelator(b, true) })
}

func benchCorrelator(b *testing.B, long bool) {
	srv := testkit.StartNATS(b)
	_, js := srv.Connect()
	publishAsync(b, js, b.N, long)

	c, err := New(js, Config{Node: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	began := time.Now()
	go func() { done <- c.Run(ctx) }()
	waitCaughtUp(b, js, DefaultDurable)
	elapsed := time.Since(began)
	b.StopTimer()
	cancel()
	<-done
	b.ReportMetric(float64(3*b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
}

// BenchmarkCorrelate measures the correlation logic alone, one answered
// call (three events) per iteration.
func BenchmarkCorrelate(b *testing.B) {
	calls := make([][]event, 1000)
	for i := range calls {
		c := newTestCall(i)
		calls[i] = []event{newEvent(c.invite(200, "OK"), proxyNode), newEvent(c.ack(), proxyNode), newEvent(c.bye(i%2 == 0), proxyNode)}
	}
	bk := mapBook{}
	b.ResetTimer()
	for i := range b.N {
		for j := range calls[i%len(calls)] {
			ev := calls[i%len(calls)][j]
			rules{}.correlate(bk, &ev)
		}
		if i%len(calls) == len(calls)-1 {
			clear(bk)
		}
	}
	b.ReportMetric(float64(3*b.N)/b.Elapsed().Seconds(), "events/s")
}

type mapBook map[string]*callState

func (m mapBook) get(key string) *callState    { return m[key] }
func (m mapBook) put(key string, s *callState) { m[key] = s }

// publishAsync puts n answered calls on the SIP stream, all BYEs last when
// long is set.
func publishAsync(b *testing.B, js jetstream.JetStream, n int, long bool) {
	b.Helper()
	var txs, byes []schema.Transaction
	for i := range n {
		c := newTestCall(i)
		txs = append(txs, c.invite(200, "OK"), c.ack())
		if long {
			byes = append(byes, c.bye(i%2 == 0))
		} else {
			txs = append(txs, c.bye(i%2 == 0))
		}
	}
	for _, tx := range append(txs, byes...) {
		env, err := schema.NewEnvelope(schema.TypeTransaction, schema.TransactionVersion, schema.FromMillis(tx.RequestAt), proxyNode, tx)
		if err != nil {
			b.Fatal(err)
		}
		data, err := env.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		msg := nats.NewMsg(schema.TransactionSubject(tx.CallID))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, env.ID)
		if _, err := js.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("publishing the benchmark calls took over 2 minutes")
	}
}
