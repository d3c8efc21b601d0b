package eventlog_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

func lagHistogram(t testing.TB, reg *prometheus.Registry) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "carrier_eventlog_publish_lag_seconds" {
			return mf.GetMetric()[0].GetHistogram()
		}
	}
	t.Fatal("carrier_eventlog_publish_lag_seconds not registered")
	return nil
}

// lagsAtMost is how many lags the histogram has at or below the largest
// bucket bound not above limit.
func lagsAtMost(h *dto.Histogram, limit float64) uint64 {
	var n uint64
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() <= limit {
			n = b.GetCumulativeCount()
		}
	}
	return n
}

// TestPublisherLagAndSpoolAge: every acknowledged event has its publish
// lag, spooled ones their time in the spool included; the oldest spooled
// event's age grows while JetStream is down and is 0 once the spool is
// replayed.
func TestPublisherLagAndSpoolAge(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	reg := prometheus.NewRegistry()
	p, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: t.TempDir(), Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	const live, spooled = 500, 200
	publishRange(t, p, 0, live, 10)
	waitFor(t, "the live events acknowledged", func() bool { return metric(t, reg, "carrier_eventlog_published_total") == live })
	if got := lagHistogram(t, reg).GetSampleCount(); got != live {
		t.Fatalf("lag histogram holds %d events, want %d", got, live)
	}
	if got := metric(t, reg, "carrier_eventlog_spool_oldest_seconds"); got != 0 {
		t.Fatalf("spool_oldest_seconds %v with nothing spooled", got)
	}

	n.Stop()
	publishRange(t, p, live, live+spooled, 10)
	lastHanded := time.Now()
	waitFor(t, "the outage's events spooled", func() bool { return metric(t, reg, "carrier_eventlog_spool_events") == spooled })
	first := metric(t, reg, "carrier_eventlog_spool_oldest_seconds")
	if first <= 0 {
		t.Fatalf("spool_oldest_seconds %v with %d events spooled", first, spooled)
	}
	waitFor(t, "the oldest spooled event to age", func() bool {
		return metric(t, reg, "carrier_eventlog_spool_oldest_seconds") > first+0.2
	})
	if st := p.Spool(); st.Events != spooled || st.Oldest.Seconds() <= first {
		t.Fatalf("Spool() = %+v, want %d events older than %vs", st, spooled, first)
	}

	// Every spooled event waited at least from the last hand-off to now.
	minLag := time.Since(lastHanded).Seconds()
	n.Start()
	waitFor(t, "the spool replayed", func() bool {
		return metric(t, reg, "carrier_eventlog_spool_events") == 0 && metric(t, reg, "carrier_eventlog_published_total") == live+spooled
	})
	if got := metric(t, reg, "carrier_eventlog_spool_oldest_seconds"); got != 0 {
		t.Errorf("spool_oldest_seconds %v after the replay, want 0", got)
	}
	h := lagHistogram(t, reg)
	if got := h.GetSampleCount(); got != live+spooled {
		t.Errorf("lag histogram holds %d events, want %d", got, live+spooled)
	}
	if got := lagsAtMost(h, minLag); got > live {
		t.Errorf("%d lags at most %.3fs, want only the %d live events: spooled events' lag misses their time in the spool", got, minLag, live)
	}
	if h.GetSampleSum() < spooled*minLag {
		t.Errorf("lag sum %.3fs, want at least %d × %.3fs", h.GetSampleSum(), spooled, minLag)
	}
	closePublisher(t, p)
	if st := p.Spool(); st != (eventlog.SpoolStatus{}) {
		t.Errorf("Spool() after close = %+v", st)
	}
}

// TestPublisherSpoolAgeOfEarlierRun: events an earlier run left in the
// spool count their age and lag from their envelope's time.
func TestPublisherSpoolAgeOfEarlierRun(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	dir := t.TempDir()
	const total = 100
	created := time.Now().Add(-10 * time.Minute)

	n.Stop()
	p, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: dir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for i := range total {
		call := "call-old@test"
		ev, err := schema.NewEnvelope(testType, 1, created, "test-node", testPayload{Call: call, I: i})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Publish(schema.TransactionSubject(call), ev); err != nil {
			t.Fatal(err)
		}
	}
	closePublisher(t, p)

	reg := prometheus.NewRegistry()
	p, err = eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: dir, Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if got := metric(t, reg, "carrier_eventlog_spool_oldest_seconds"); got < 600 {
		t.Fatalf("spool_oldest_seconds %v, want the 10 minutes since the events were created", got)
	}
	n.Start()
	waitFor(t, "the spool replayed", func() bool { return metric(t, reg, "carrier_eventlog_spool_events") == 0 })
	if got := metric(t, reg, "carrier_eventlog_spool_oldest_seconds"); got != 0 {
		t.Errorf("spool_oldest_seconds %v after the replay, want 0", got)
	}
	h := lagHistogram(t, reg)
	if h.GetSampleCount() != total || lagsAtMost(h, 600) != 0 {
		t.Errorf("lag histogram: %d events, %d at most 600s; want %d, all older", h.GetSampleCount(), lagsAtMost(h, 600), total)
	}
	closePublisher(t, p)
}
