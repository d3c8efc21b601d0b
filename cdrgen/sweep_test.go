package cdrgen

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// expiredCDR is the golden CDR of a fixture call answered with 200 whose
// BYE never came, ended by the maximum-duration rule.
func (c testCall) expiredCDR(maxCall time.Duration) schema.CDR {
	cdr := c.startedCDR()
	cdr.EndAt = cdr.AnswerAt + maxCall.Milliseconds()
	cdr.DurationMs = maxCall.Milliseconds()
	cdr.BillableSec = schema.BillableSeconds(cdr.DurationMs)
	cdr.HangupBy, cdr.HangupReason = schema.HangupProxy, schema.EndNoBye
	return cdr
}

// TestSweepByLogTime: a call whose BYE never comes is ended once the log's
// time (the events of other calls) passes answer + MaxCallDuration; the
// wall clock plays no part. A call ended by the proxy's own no_bye BYE is
// ended by that.
func TestSweepByLogTime(t *testing.T) {
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	reg := prometheus.NewRegistry()
	cfg := testConfig(reg)
	cfg.MaxCallDuration = time.Hour
	r := start(t, js, cfg)

	lost, closed, normal := newTestCall(1), newTestCall(2), newTestCall(3)
	noBye := closed.bye(false)
	noBye.Note = schema.EndNoBye
	publishTx(t, js, lost.invite(200, "OK"), lost.ack(),
		closed.invite(200, "OK"), closed.ack(), noBye,
		normal.invite(200, "OK"), normal.ack(), normal.bye(true))
	waitCaughtUp(t, js, DefaultDurable)
	if got := metricOf(t, reg, "carrier_cdrgen_open_calls", ""); got != 1 {
		t.Fatalf("open_calls = %v before the log moves on, want 1", got)
	}

	// An unrelated transaction an hour and two minutes later: the log's
	// time is past the lost call's maximum by more than the sweep's lag.
	later := lost.at + answerAfter + time.Hour.Milliseconds() + 2*time.Minute.Milliseconds()
	publishTx(t, js, schema.Transaction{Method: "OPTIONS", CallID: "keepalive@192.0.2.99", FromTag: "k", Status: 200, RequestAt: later, FinalAt: later})
	waitCaughtUp(t, js, DefaultDurable)
	r.stop(t)

	got := byType(t, readCDRStream(t, js))
	closedCDR := closed.answeredCDR(schema.HangupProxy)
	closedCDR.HangupReason = schema.EndNoBye
	for _, w := range []schema.CDR{lost.expiredCDR(time.Hour), closedCDR, normal.answeredCDR(schema.HangupCallee)} {
		m, ok := got[schema.TypeCallEnded][w.ID]
		if !ok {
			t.Errorf("no call.ended for %s", w.CallID)
			continue
		}
		assertCDR(t, "call.ended "+w.CallID, m.CDR, w)
		if m.Env.Time != w.EndAt {
			t.Errorf("call.ended %s at %d, want %d", w.CallID, m.Env.Time, w.EndAt)
		}
	}
	if got := metricOf(t, reg, "carrier_cdrgen_expired_calls_total", ""); got != 1 {
		t.Errorf("expired_calls_total = %v, want 1", got)
	}
	if got := metricOf(t, reg, "carrier_cdrgen_open_calls", ""); got != 0 {
		t.Errorf("open_calls = %v, want 0", got)
	}
}

// TestSweepWhenIdle: with nothing else on the log, the wall clock stands
// in for its time, and a call open across a restart is ended too, with
// the same CDR.
func TestSweepWhenIdle(t *testing.T) {
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	a, b := newTestCall(1), newTestCall(2)
	publishTx(t, js, a.invite(200, "OK"), a.ack())

	cfg := testConfig(nil)
	cfg.MaxCallDuration = time.Hour
	first := start(t, js, cfg)
	waitCaughtUp(t, js, DefaultDurable)
	first.stop(t)
	publishTx(t, js, b.invite(200, "OK"), b.ack())

	// The fixture calls are months old by the wall clock.
	cfg.SweepInterval = 50 * time.Millisecond
	second := start(t, js, cfg)
	waitCDRs(t, js, 4)
	second.stop(t)

	got := byType(t, readCDRStream(t, js))
	for _, c := range []testCall{a, b} {
		w := c.expiredCDR(time.Hour)
		m, ok := got[schema.TypeCallEnded][w.ID]
		if !ok {
			t.Errorf("no call.ended for %s", c.id)
			continue
		}
		assertCDR(t, "call.ended "+c.id, m.CDR, w)
	}
}

// TestExpiredRule: the sweep's rule and the CDR it gives, and that a BYE
// after the sweep is a duplicate.
func TestExpiredRule(t *testing.T) {
	r := rules{maxCallMs: time.Hour.Milliseconds(), lagMs: time.Minute.Milliseconds()}
	c := newTestCall(1)
	b := jsonBook{}
	apply(b, []schema.Transaction{c.invite(200, "OK"), c.ack()})
	key := callKey(c.id, c.from)
	s := b.get(key)
	edge := c.at + answerAfter + r.maxCallMs + r.lagMs
	if r.expired(s, edge) || !r.expired(s, edge+1) {
		t.Errorf("expired at the edge %d: %v, a millisecond after: %v; want false, true", edge, r.expired(s, edge), r.expired(s, edge+1))
	}
	if (rules{lagMs: r.lagMs}).expired(s, edge+1) {
		t.Error("a call expired without a maximum call duration")
	}
	e := r.closeExpired(b, key, s)
	assertEmissions(t, []emission{e}, []emission{endedEv(c, c.expiredCDR(time.Hour))})
	bye := c.bye(false)
	ev := newEvent(bye, proxyNode)
	if out, o := r.correlate(b, &ev); len(out) != 0 || o != outcomeDuplicate {
		t.Errorf("BYE after the sweep: %d events, outcome %s", len(out), o)
	}
}
