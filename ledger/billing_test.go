package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

var quiet = slog.New(slog.DiscardHandler)

var answered = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func cdrOf(callID, account string, disposition schema.Disposition) schema.CDR {
	c := schema.CDR{
		ID: schema.CDRID(callID, "tag"), CallID: callID, FromTag: "tag", Account: account,
		Callee: "4930123456", Disposition: disposition, InviteAt: schema.Millis(answered.Add(-2 * time.Second)),
	}
	if disposition == schema.Answered {
		c.Status, c.AnswerAt, c.DurationMs = 200, schema.Millis(answered), 61_000
		c.EndAt = c.AnswerAt + c.DurationMs
	} else {
		c.Status, c.EndAt = 486, c.InviteAt+2000
	}
	return c
}

// publishRated publishes a rating of c: run 0 the rater's, run > 0 a
// rerate's correction carrying delta. It returns the event id.
func publishRated(t *testing.T, ctx context.Context, js jetstream.JetStream, c schema.CDR, run uint64, status schema.RatingStatus, sell, delta string) string {
	t.Helper()
	rc := schema.RatedCDR{CDR: c, Run: run, RatedAt: schema.Millis(answered.Add(time.Hour)), Status: status, SellCost: sell}
	if status == schema.StatusUnrated {
		rc.Reason = schema.UnratedNoRate
	}
	if run > 0 {
		rc.Replaces, rc.SellDelta = schema.RatedID(c.ID, 0), delta
	}
	id := schema.RatedID(c.ID, run)
	ev, err := schema.NewEnvelopeWithID(id, schema.TypeCallRated, schema.RatedVersion, schema.FromMillis(rc.RatedAt), "test", rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.Publish(ctx, js, schema.RatedSubject(c.CallID), ev); err != nil {
		t.Fatal(err)
	}
	return id
}

func publishFailed(t *testing.T, ctx context.Context, js jetstream.JetStream, c schema.CDR) {
	t.Helper()
	ev, err := schema.NewEnvelopeWithID(c.ID, schema.TypeCallFailed, schema.CDRVersion, schema.FromMillis(c.EndAt), "test", c)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.Publish(ctx, js, schema.CDRSubject(schema.TypeCallFailed, c.CallID), ev); err != nil {
		t.Fatal(err)
	}
}

// runBilling runs a billing consumer until the test ends and returns a
// wait that returns once it has acked everything in the CDR stream.
func runBilling(t *testing.T, ctx context.Context, js jetstream.JetStream, l *ledger.Ledger, durable string, reg prometheus.Registerer) (caughtUp func()) {
	t.Helper()
	b, err := ledger.NewBilling(js, l, ledger.BillingConfig{Durable: durable, MaxWait: 50 * time.Millisecond, Logger: quiet, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("billing %s: %v", durable, err)
		}
	})
	return func() {
		t.Helper()
		testkit.Eventually(t, 20*time.Second, func() error {
			cons, err := js.Consumer(ctx, schema.StreamCDR, durable)
			if err != nil {
				return err
			}
			info, err := cons.Info(ctx)
			if err != nil {
				return err
			}
			if info.NumPending > 0 || info.NumAckPending > 0 {
				return fmt.Errorf("%s: %d pending, %d unacked", durable, info.NumPending, info.NumAckPending)
			}
			return nil
		})
	}
}

func ledgerLastSeq(t *testing.T, ctx context.Context, js jetstream.JetStream) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, schema.StreamLedger)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// TestBillingDebitsReleasesCorrectsAndReplays: rated calls are debited
// and release their holds, unrated and failed calls only release,
// corrections debit or credit back, and a replay of the whole stream into
// a new consumer changes nothing.
func TestBillingDebitsReleasesCorrectsAndReplays(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	l, js := newLedger(t, n)
	ctx := testCtx(t)
	must(t)(l.Open(ctx, "pre", schema.Prepaid, "EUR", 0))
	must(t)(l.Credit(ctx, "pre", money("10"), "pay-1"))
	must(t)(l.Open(ctx, "post", schema.Postpaid, "USD", money("20")))

	a1 := cdrOf("a1", "pre", schema.Answered)
	a2 := cdrOf("a2", "pre", schema.Answered)
	a3 := cdrOf("a3", "post", schema.Answered)
	unrated := cdrOf("u1", "pre", schema.Answered)
	failed := cdrOf("f1", "pre", schema.Busy)
	ghost := cdrOf("g1", "ghost", schema.Answered)
	// What credit control held for the calls while they were up.
	for _, h := range []struct {
		c      schema.CDR
		amount string
	}{{a1, "1"}, {a2, "2"}, {a3, "3"}, {unrated, "0.5"}, {failed, "0.25"}} {
		must(t)(l.Reserve(ctx, h.c.Account, h.c.ID, money(h.amount)))
	}

	reg := prometheus.NewRegistry()
	caughtUp := runBilling(t, ctx, js, l, "billing", reg)
	publishRated(t, ctx, js, a1, 0, schema.StatusRated, "0.6123", "")
	publishRated(t, ctx, js, a2, 0, schema.StatusRated, "1.2", "")
	publishRated(t, ctx, js, a3, 0, schema.StatusRated, "2.5", "")
	publishRated(t, ctx, js, unrated, 0, schema.StatusUnrated, "", "")
	publishFailed(t, ctx, js, failed)
	publishRated(t, ctx, js, failed, 0, schema.StatusRated, "0", "")
	publishRated(t, ctx, js, ghost, 0, schema.StatusRated, "1", "")
	caughtUp()

	pre := checkAgree(t, ctx, l, "pre", money("10")-money("0.6123")-money("1.2"))
	post := checkAgree(t, ctx, l, "post", -money("2.5"))
	if pre.Reserved != 0 || post.Reserved != 0 || pre.Available != pre.Balance || post.Available != money("17.5") {
		t.Fatalf("holds left after billing: pre %+v, post %+v", pre, post)
	}

	// A rerate: a1 costs more, a2 less, and the unrated call is priced
	// (its delta is its whole price).
	fix1 := publishRated(t, ctx, js, a1, 7, schema.StatusRated, "0.7", "0.0877")
	publishRated(t, ctx, js, a2, 7, schema.StatusRated, "0.9", "-0.3")
	publishRated(t, ctx, js, unrated, 7, schema.StatusRated, "0.4", "0.4")
	caughtUp()
	want := money("10") - money("0.7") - money("0.9") - money("0.4")
	checkAgree(t, ctx, l, "pre", want)
	hist, err := l.History(ctx, "pre", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var named bool
	for _, e := range hist {
		named = named || (e.Type == schema.TypeDebited && e.Reference == fix1 && e.Amount == -money("0.0877"))
	}
	if !named {
		t.Errorf("no debit names the correction %s: %+v", fix1, hist)
	}
	for kind, n := range map[string]float64{"debit": 3, "correction_debit": 2, "correction_credit": 1} {
		if got := counterValue(t, reg, "carrier_billing_applied_total", "kind", kind); got != n {
			t.Errorf("applied %s: %v, want %v", kind, got, n)
		}
	}
	if got := counterValue(t, reg, "carrier_billing_skipped_total", "reason", "no_ledger"); got != 1 {
		t.Errorf("skipped for want of a ledger: %v, want 1 (the ghost's call)", got)
	}

	// Replay everything into a fresh consumer: not one ledger event more.
	last := ledgerLastSeq(t, ctx, js)
	replayed := prometheus.NewRegistry()
	runBilling(t, ctx, js, l, "billing-replay", replayed)()
	if got := ledgerLastSeq(t, ctx, js); got != last {
		t.Errorf("replay appended %d ledger events", got-last)
	}
	if got := counterValue(t, replayed, "carrier_billing_noops_total", "kind", "debit"); got != 3 {
		t.Errorf("replayed debits found applied: %v, want 3", got)
	}
	checkAgree(t, ctx, l, "pre", want)
	checkAgree(t, ctx, l, "post", -money("2.5"))
	// A fresh ledger (no cache) folding the log agrees too.
	fresh, _ := newLedger(t, n)
	if b, err := fresh.Fold(ctx, "pre"); err != nil || b.Balance != want {
		t.Errorf("fresh fold of pre: %+v, %v; want %s", b, err, want)
	}
}

// counterValue is the value of one series of a counter vector in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}

func TestCorrectOnce(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	l, _ := newLedger(t, n)
	ctx := testCtx(t)
	must(t)(l.Open(ctx, "pre", schema.Prepaid, "EUR", 0))
	must(t)(l.Credit(ctx, "pre", money("5"), "pay-1"))
	must(t)(l.Correct(ctx, "pre", -money("1.5"), "fix-1"))
	if r := must(t)(l.Correct(ctx, "pre", -money("1.5"), "fix-1")); !r.Duplicate {
		t.Errorf("a correction applied twice")
	}
	must(t)(l.Correct(ctx, "pre", money("0.5"), "fix-2"))
	checkAgree(t, ctx, l, "pre", money("6"))
	if _, err := l.Correct(ctx, "pre", 0, "fix-3"); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("a correction of 0: %v", err)
	}
	if _, err := l.Correct(ctx, "pre", money("1"), ""); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("a correction without an id: %v", err)
	}
}
