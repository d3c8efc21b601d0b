package eventlog_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// publishSync stores events from..to-1 with the synchronous Publish.
func publishSync(t *testing.T, js jetstream.JetStream, from, to int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for i := from; i < to; i++ {
		subj, ev := testEvent(t, i, 7)
		if err := eventlog.Publish(ctx, js, subj, ev); err != nil {
			t.Fatal(err)
		}
	}
}

func consumerInfo(t *testing.T, js jetstream.JetStream, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.Consumer(ctx, schema.StreamSIP, durable)
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// waitAllAcked waits until the consumer has acknowledged every one of the
// stream's total messages and holds none pending.
func waitAllAcked(t *testing.T, js jetstream.JetStream, durable string, total uint64) {
	t.Helper()
	waitFor(t, "every message acknowledged", func() bool {
		info := consumerInfo(t, js, durable)
		return info.NumAckPending == 0 && info.NumPending == 0 && info.AckFloor.Stream == total
	})
}

// handled records what a handler took, in order.
type handled struct {
	mu    sync.Mutex
	items []eventlog.Msg
}

func (h *handled) add(batch []eventlog.Msg) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.items = append(h.items, batch...)
}

func (h *handled) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.items)
}

// check verifies the handler took events from..to-1 once each, in order,
// each on its first delivery.
func (h *handled) check(t *testing.T, from, to int) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.items) != to-from {
		t.Fatalf("handled %d events, want %d", len(h.items), to-from)
	}
	for k, m := range h.items {
		var p testPayload
		if err := m.Envelope.Decode(testType, 1, &p); err != nil {
			t.Fatal(err)
		}
		if p.I != from+k {
			t.Fatalf("handled #%d at position %d, want #%d", p.I, k, from+k)
		}
		if m.Delivered != 1 {
			t.Fatalf("#%d handled on delivery %d", p.I, m.Delivered)
		}
	}
}

type consumer struct {
	cancel context.CancelFunc
	errc   chan error
}

func startConsume(t *testing.T, js jetstream.JetStream, cfg eventlog.ConsumerConfig, h eventlog.BatchHandler) *consumer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{cancel: cancel, errc: make(chan error, 1)}
	go func() { c.errc <- eventlog.Consume(ctx, js, cfg, h) }()
	t.Cleanup(func() { c.stop(t) })
	return c
}

// stop cancels Consume and waits for it to return.
func (c *consumer) stop(t *testing.T) {
	t.Helper()
	if c.errc == nil {
		return
	}
	c.cancel()
	select {
	case err := <-c.errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Consume returned %v, want context.Canceled", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Consume did not return after cancel")
	}
	c.errc = nil
}

func TestConsumeAcksAfterHandlerSuccess(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	const total = 300
	publishSync(t, js, 0, total)

	var got handled
	held := make(chan int, 1)
	release := make(chan struct{})
	first := true
	c := startConsume(t, js, eventlog.ConsumerConfig{
		Stream: schema.StreamSIP, Durable: "acks", MaxBatch: 100, MaxWait: 200 * time.Millisecond, Logger: testLogger(t),
	}, func(ctx context.Context, batch []eventlog.Msg) error {
		if first {
			first = false
			held <- len(batch)
			<-release
		}
		got.add(batch)
		return nil
	})

	size := <-held
	// The handler holds its batch: none of it is acknowledged.
	info := consumerInfo(t, js, "acks")
	if info.NumAckPending != size || info.AckFloor.Stream != 0 {
		t.Fatalf("while the handler runs: %d ack pending, ack floor %d; want %d and 0", info.NumAckPending, info.AckFloor.Stream, size)
	}
	close(release)
	waitFor(t, "all events handled", func() bool { return got.len() >= total })
	waitAllAcked(t, js, "acks", total)
	c.stop(t)
	got.check(t, 0, total)
}

// TestConsumeRetriesFailedBatch: a handler that fails for longer than
// AckWait, then succeeds, sees every event once on success and causes no
// redelivery.
func TestConsumeRetriesFailedBatch(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	const total, failures = 200, 5
	publishSync(t, js, 0, total)

	var got handled
	calls := 0
	c := startConsume(t, js, eventlog.ConsumerConfig{
		Stream: schema.StreamSIP, Durable: "retry", MaxBatch: 50, MaxWait: 200 * time.Millisecond,
		// Shorter than the last backoff (1.6 s) and the retries in all.
		AckWait: 1500 * time.Millisecond, Logger: testLogger(t),
	}, func(ctx context.Context, batch []eventlog.Msg) error {
		calls++
		if calls <= failures {
			return errors.New("database down")
		}
		got.add(batch)
		return nil
	})
	waitFor(t, "all events handled", func() bool { return got.len() >= total })
	waitAllAcked(t, js, "retry", total)
	c.stop(t)
	got.check(t, 0, total)
	if info := consumerInfo(t, js, "retry"); info.NumRedelivered != 0 {
		t.Errorf("%d messages redelivered", info.NumRedelivered)
	}
}

func TestConsumeTerminatesUndecodable(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	publishSync(t, js, 0, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, schema.TransactionPartitionSubject(3), []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	publishSync(t, js, 10, 20)

	var got handled
	c := startConsume(t, js, eventlog.ConsumerConfig{
		Stream: schema.StreamSIP, Durable: "term", MaxBatch: 4, MaxWait: 200 * time.Millisecond, Logger: testLogger(t),
	}, func(ctx context.Context, batch []eventlog.Msg) error {
		got.add(batch)
		return nil
	})
	waitFor(t, "all events handled", func() bool { return got.len() >= 20 })
	// The bad message counts as done: nothing waits for it, nothing
	// redelivers it.
	waitAllAcked(t, js, "term", 21)
	c.stop(t)
	got.check(t, 0, 20)
	if info := consumerInfo(t, js, "term"); info.NumRedelivered != 0 {
		t.Errorf("%d messages redelivered", info.NumRedelivered)
	}
}

// TestConsumeResumesFromDurablePosition stops a consumer process (its
// connection closes) and starts another on the same durable: it goes on
// where the first stopped.
func TestConsumeResumesFromDurablePosition(t *testing.T) {
	n := testkit.StartNATS(t)
	nc1, js1 := n.Connect()
	publishSync(t, js1, 0, 100)
	cfg := eventlog.ConsumerConfig{Stream: schema.StreamSIP, Durable: "resume", MaxBatch: 30, MaxWait: 200 * time.Millisecond, Logger: testLogger(t)}

	var first handled
	c1 := startConsume(t, js1, cfg, func(ctx context.Context, batch []eventlog.Msg) error {
		first.add(batch)
		return nil
	})
	waitFor(t, "the first run to handle 100", func() bool { return first.len() >= 100 })
	c1.stop(t)
	nc1.Close()
	first.check(t, 0, 100)

	_, js2 := n.Connect()
	publishSync(t, js2, 100, 150)
	var second handled
	c2 := startConsume(t, js2, cfg, func(ctx context.Context, batch []eventlog.Msg) error {
		second.add(batch)
		return nil
	})
	waitFor(t, "the second run to handle 50", func() bool { return second.len() >= 50 })
	waitAllAcked(t, js2, "resume", 150)
	c2.stop(t)
	second.check(t, 100, 150)
}

// TestConsumeRecreatesDeletedConsumer: a consumer deleted under a running
// Consume is created again instead of being pulled from for ever.
func TestConsumeRecreatesDeletedConsumer(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	publishSync(t, js, 0, 10)
	var got handled
	startConsume(t, js, eventlog.ConsumerConfig{
		Stream: schema.StreamSIP, Durable: "gone", MaxWait: 200 * time.Millisecond, Logger: testLogger(t),
	}, func(ctx context.Context, batch []eventlog.Msg) error {
		got.add(batch)
		return nil
	})
	waitFor(t, "the first events handled", func() bool { return got.len() >= 10 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := js.DeleteConsumer(ctx, schema.StreamSIP, "gone"); err != nil {
		t.Fatal(err)
	}
	publishSync(t, js, 10, 20)
	// The new consumer starts from the stream's beginning: events 0-9
	// come again (handlers are idempotent), then 10-19.
	waitFor(t, "events after the deletion handled", func() bool {
		got.mu.Lock()
		defer got.mu.Unlock()
		for _, m := range got.items {
			var p testPayload
			if m.Envelope.Decode(testType, 1, &p) == nil && p.I == 19 {
				return true
			}
		}
		return false
	})
}

func TestConsumeStreamNotFound(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err := eventlog.Consume(ctx, js, eventlog.ConsumerConfig{Stream: "NOPE", Durable: "x", Logger: testLogger(t)},
		func(context.Context, []eventlog.Msg) error { return nil })
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("Consume on a missing stream: %v, want ErrStreamNotFound", err)
	}
}
