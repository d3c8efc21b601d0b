package analytics_test

import (
	"cmp"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/synth"
)

// publishRatings publishes the synthetic deck's rating of each CDR in run
// run, as the rater (run 0) or a rerate would.
func publishRatings(t testing.TB, js jetstream.JetStream, cdrs []schema.CDR, run uint64) {
	t.Helper()
	ctx := testContext(t)
	for _, c := range cdrs {
		rc := synth.Rate(c, run)
		env, err := schema.NewEnvelopeWithID(schema.RatedID(c.ID, run), schema.TypeCallRated, schema.RatedVersion, schema.FromMillis(rc.RatedAt), "rater-1", rc)
		if err != nil {
			t.Fatal(err)
		}
		if err := eventlog.Publish(ctx, js, schema.RatedSubject(c.CallID), env); err != nil {
			t.Fatal(err)
		}
	}
}

// ratingOf is what the sink stores for the synthetic deck's rating of c
// in run run.
func ratingOf(t testing.TB, c schema.CDR, run uint64) analytics.CDRRecord {
	t.Helper()
	rec, err := analytics.RatedRecord(synth.Rate(c, run))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// expectMargin computes the margin report of q in Go over the CDRs as
// they should be stored (q.Filter's time range only).
func expectMargin(recs []analytics.CDRRecord, q analytics.ReportQuery) []analytics.MarginRow {
	type group struct{ key, currency string }
	sums := map[group]*analytics.MarginRow{}
	digits := cmp.Or(q.Digits, analytics.DefaultDestinationDigits)
	for _, rec := range recs {
		c, r := rec.CDR, rec.Rating
		at := schema.FromMillis(c.InviteAt)
		if (!q.Filter.From.IsZero() && at.Before(q.Filter.From)) || (!q.Filter.To.IsZero() && !at.Before(q.Filter.To)) {
			continue
		}
		var key string
		switch q.By {
		case analytics.ByAccount:
			key = c.Account
		case analytics.BySupplier:
			key = c.Supplier
		case analytics.ByGateway:
			key = c.Gateway
		default:
			key = c.CalleeE164[:min(digits, len(c.CalleeE164))]
			if r.Rated() {
				key = cmp.Or(r.Destination, r.Prefix, key)
			}
		}
		g := group{key, r.Currency}
		row := sums[g]
		if row == nil {
			row = &analytics.MarginRow{Key: key, Currency: r.Currency}
			sums[g] = row
		}
		row.Calls++
		if c.Disposition == schema.Answered {
			row.Answered++
		}
		if r.Rated() {
			row.Rated++
		}
		row.DurationMs += c.DurationMs
		row.BillableSec += c.BillableSec
		row.Revenue += r.Sell
		row.Cost += r.Buy
		row.Margin += r.Margin
	}
	var out []analytics.MarginRow
	for _, row := range sums {
		out = append(out, *row)
	}
	slices.SortFunc(out, func(a, b analytics.MarginRow) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Currency, b.Currency))
	})
	return out
}

// checkRated checks that ClickHouse holds want, each CDR once with its
// latest price, and that the margin reports, over the CDRs and over the
// hourly aggregates, agree exactly with a computation in Go.
func checkRated(t *testing.T, conn driver.Conn, want []analytics.CDRRecord, from, to time.Time) {
	t.Helper()
	ctx := testContext(t)
	got, err := analytics.ListCDRRecords(ctx, conn, db, analytics.CDRFilter{})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]analytics.CDRRecord{}
	for _, r := range got {
		if _, dup := byID[r.ID]; dup {
			t.Fatalf("CDR %s listed twice", r.ID)
		}
		byID[r.ID] = r
	}
	if len(got) != len(want) {
		t.Fatalf("%d CDRs listed, want %d", len(got), len(want))
	}
	for _, w := range want {
		if g := byID[w.ID]; !reflect.DeepEqual(g, w) {
			t.Fatalf("CDR %s:\n got version %d %+v\nwant version %d %+v", w.ID, g.Version, g.Rating, w.Version, w.Rating)
		}
	}
	for _, q := range []analytics.ReportQuery{
		{By: analytics.ByDestination},
		{By: analytics.ByDestination, Digits: 3, Filter: analytics.CDRFilter{From: from.Add(time.Hour), To: to.Add(-time.Hour)}},
		{By: analytics.ByAccount},
		{By: analytics.BySupplier},
		{By: analytics.ByGateway, Filter: analytics.CDRFilter{From: from, To: to}},
	} {
		exp := expectMargin(want, q)
		plain, err := analytics.MarginReport(ctx, conn, db, q)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(plain, exp) {
			t.Fatalf("margin report %+v:\n got %+v\nwant %+v", q, plain, exp)
		}
		hourly, err := analytics.HourlyMarginReport(ctx, conn, db, q)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(hourly, exp) {
			t.Fatalf("hourly margin report %+v:\n got %+v\nwant %+v", q, hourly, exp)
		}
	}
}

// TestClickHouseRatingsConverge runs the sink over finished and rated
// CDRs in every order they can come in: a rating before its CDR, a
// rerate before the older rating it replaces, redeliveries of all of it,
// and a rerate while the sink runs. Each CDR must end up once, with its
// latest rating's price, in the CDRs and in both margin reports.
func TestClickHouseRatingsConverge(t *testing.T) {
	t.Parallel()
	_, conn := startClickHouse(t)
	js := startJetStream(t)
	ctx := testContext(t)

	from := time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	to := from.Add(6 * time.Hour)
	g := synth.New(synth.Config{Seed: 11, Start: from, Span: to.Sub(from), Accounts: 8})
	const n = 400
	cdrs := make([]schema.CDR, n)
	want := make([]analytics.CDRRecord, n)
	// Who gets which rating, and in which order it is published.
	var early, late []schema.CDR // rated before / after the CDR is in
	var run5, run9First, run9 []schema.CDR
	for i := range cdrs {
		c := g.Next()
		cdrs[i] = c
		want[i] = analytics.CDRRecord{CDR: c, Version: analytics.VersionUnrated}
		if i%10 == 9 {
			continue // never rated
		}
		want[i] = ratingOf(t, c, 0)
		if i%4 == 0 {
			early = append(early, c)
		} else {
			late = append(late, c)
		}
		if i%3 == 0 {
			run5 = append(run5, c)
			want[i] = ratingOf(t, c, 5)
		}
		switch {
		case i%12 == 0:
			run9First = append(run9First, c) // before run 5 and run 0
			want[i] = ratingOf(t, c, 9)
		case i%6 == 0:
			run9 = append(run9, c)
			want[i] = ratingOf(t, c, 9)
		}
	}

	// Ratings with no CDR in ClickHouse yet, a rerate among them.
	publishRatings(t, js, early, 0)
	publishRatings(t, js, run9First, 9)
	sink := runSink(t, js, conn, analytics.SinkConfig{MaxBatch: 100})
	waitCDRs(t, conn, uint64(len(early)))
	// Then the CDRs, the other ratings and the rerates, the older run 5
	// after run 9 for some.
	publishCDRs(t, js, cdrs)
	publishRatings(t, js, late, 0)
	publishRatings(t, js, run5, 5)
	publishRatings(t, js, run9, 9)
	events := float64(n + len(early) + len(late) + len(run5) + len(run9First) + len(run9))
	waitFor(t, "every CDR and rating to be inserted", func() (bool, error) {
		return sink.metric(t, "carrier_analytics_rows_total", analytics.TableCDRs) >= events, nil
	})
	checkRated(t, conn, want, from, to)
	if err := sink.stop(); err != nil {
		t.Fatal(err)
	}

	// Everything again: consumers that forgot their positions.
	for _, durable := range []string{analytics.DurableCDR, analytics.DurableRated} {
		if err := js.DeleteConsumer(ctx, schema.StreamCDR, durable); err != nil {
			t.Fatalf("reset %s: %v", durable, err)
		}
	}
	again := runSink(t, js, conn, analytics.SinkConfig{MaxBatch: 64})
	waitFor(t, "the redelivered CDRs and ratings to be inserted again", func() (bool, error) {
		return again.metric(t, "carrier_analytics_rows_total", analytics.TableCDRs) >= events, nil
	})
	checkRated(t, conn, want, from, to)

	// A rerate while the sink runs replaces the prices it corrects.
	var run20 []schema.CDR
	for i, c := range cdrs {
		if i%5 == 0 && i%10 != 9 {
			run20 = append(run20, c)
			want[i] = ratingOf(t, c, 20)
		}
	}
	before := again.metric(t, "carrier_analytics_rows_total", analytics.TableCDRs)
	publishRatings(t, js, run20, 20)
	waitFor(t, "the rerate to be inserted", func() (bool, error) {
		return again.metric(t, "carrier_analytics_rows_total", analytics.TableCDRs) >= before+float64(len(run20)), nil
	})
	checkRated(t, conn, want, from, to)
	if err := again.stop(); err != nil {
		t.Fatal(err)
	}

	// The traffic reports still agree, and count each call once.
	for _, by := range []analytics.ReportBy{analytics.ByDestination, analytics.ByAccount} {
		plain, err := analytics.Report(ctx, conn, db, analytics.ReportQuery{By: by})
		if err != nil {
			t.Fatal(err)
		}
		hourly, err := analytics.HourlyReport(ctx, conn, db, analytics.ReportQuery{By: by})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(plain, hourly) {
			t.Fatalf("traffic by %s: hourly %+v, want %+v", by, hourly, plain)
		}
	}
	if calls := hourlyCalls(t, conn); calls != n {
		t.Fatalf("hourly aggregates count %d calls, want %d", calls, n)
	}
}

func TestClickHouseBadRatingIsLeftOut(t *testing.T) {
	t.Parallel()
	_, conn := startClickHouse(t)
	js := startJetStream(t)
	ctx := testContext(t)

	good, bad := testCDR(1, "acme", base), testCDR(2, "acme", base)
	publishRatings(t, js, []schema.CDR{good}, 0)
	rc := synth.Rate(bad, 0)
	rc.SellCost = "1,50"
	env, err := schema.NewEnvelopeWithID(schema.RatedID(bad.ID, 0), schema.TypeCallRated, schema.RatedVersion, base, "rater-1", rc)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.Publish(ctx, js, schema.RatedSubject(bad.CallID), env); err != nil {
		t.Fatal(err)
	}
	sink := runSink(t, js, conn, analytics.SinkConfig{})
	waitCDRs(t, conn, 1)
	waitFor(t, "the bad rating to be counted", func() (bool, error) {
		return sink.metric(t, "carrier_analytics_skipped_total", analytics.TableCDRs) == 1, nil
	})
	if err := sink.stop(); err != nil {
		t.Fatal(err)
	}
	got, err := analytics.ListCDRRecords(ctx, conn, db, analytics.CDRFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0], ratingOf(t, good, 0)) {
		t.Fatalf("got %+v, want only the good rating", got)
	}
	if _, err := analytics.VersionRated(1<<64 - 1); err == nil {
		t.Fatal("run 2^64-1 accepted")
	}
}

// TestClickHouseLedgerMovementsOnce loads LEDGER events, then all of them
// again, and finds each once with its signed amounts.
func TestClickHouseLedgerMovementsOnce(t *testing.T) {
	t.Parallel()
	_, conn := startClickHouse(t)
	js := startJetStream(t)
	ctx := testContext(t)

	type ev struct {
		account, typ string
		payload      any
		want         analytics.Movement
	}
	m := func(s string) schema.Money { return schema.MustParseMoney(s) }
	var events []ev
	for _, acct := range []string{"acme", "globex"} {
		events = append(events,
			ev{acct, schema.TypeAccountOpened, schema.AccountOpened{Account: acct, Kind: schema.Postpaid, Currency: "EUR", CreditLimit: int64(m("100"))},
				analytics.Movement{Kind: "postpaid", Currency: "EUR", CreditLimit: m("100")}},
			ev{acct, schema.TypeCredited, schema.Credited{Amount: int64(m("50.25")), Reference: "inv-" + acct},
				analytics.Movement{Amount: m("50.25"), Reference: "inv-" + acct}},
			ev{acct, schema.TypeReserved, schema.Reserved{CallID: "call-1@" + acct, Amount: int64(m("0.6"))},
				analytics.Movement{Held: m("0.6"), CallID: "call-1@" + acct}},
			ev{acct, schema.TypeDebited, schema.Debited{Amount: int64(m("0.012345678")), CDR: "cdr-1-" + acct},
				analytics.Movement{Amount: -m("0.012345678"), CDR: "cdr-1-" + acct}},
			ev{acct, schema.TypeReleased, schema.Released{CallID: "call-1@" + acct, Amount: int64(m("0.6"))},
				analytics.Movement{Held: -m("0.6"), CallID: "call-1@" + acct}},
			ev{acct, schema.TypeAdjusted, schema.Adjusted{Amount: int64(m("-1.5")), Reason: "goodwill reversed"},
				analytics.Movement{Amount: -m("1.5"), Reason: "goodwill reversed"}},
			ev{acct, schema.TypeCreditLimitChanged, schema.CreditLimitChanged{CreditLimit: int64(m("250"))},
				analytics.Movement{CreditLimit: m("250")}},
		)
	}
	var want []analytics.Movement
	for i, e := range events {
		at := base.Add(time.Duration(i) * time.Second)
		env, err := schema.NewEnvelope(e.typ, schema.LedgerVersion, at, "ledger-1", e.payload)
		if err != nil {
			t.Fatal(err)
		}
		if err := eventlog.Publish(ctx, js, schema.LedgerSubject(e.account), env); err != nil {
			t.Fatal(err)
		}
		w := e.want
		w.EventID, w.EventAt, w.Node, w.Account, w.Type = env.ID, env.Time, "ledger-1", e.account, e.typ
		want = append(want, w)
	}
	// A type this build does not know is left out and counted.
	unknown, err := schema.NewEnvelope("ledger.frozen", schema.LedgerVersion, base, "ledger-1", struct{}{})
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.Publish(ctx, js, schema.LedgerSubject("acme"), unknown); err != nil {
		t.Fatal(err)
	}

	check := func() {
		t.Helper()
		got, err := analytics.Movements(ctx, conn, db, "", time.Time{}, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i].Seq == 0 {
				t.Fatalf("movement %s without its stream sequence", got[i].EventID)
			}
			got[i].Seq = 0
		}
		slices.SortFunc(got, func(a, b analytics.Movement) int { return cmp.Compare(a.EventAt, b.EventAt) })
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("movements:\n got %+v\nwant %+v", got, want)
		}
		acme, err := analytics.Movements(ctx, conn, db, "acme", base, base.Add(3*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if len(acme) != 3 || acme[2].Type != schema.TypeReserved {
			t.Fatalf("acme's first 3 s: %+v", acme)
		}
		var balance int64
		q := "SELECT sum(amount_nano) FROM " + db + "." + analytics.TableLedger + " FINAL WHERE account = ?"
		if err := conn.QueryRow(ctx, q, "globex").Scan(&balance); err != nil {
			t.Fatal(err)
		}
		if want := m("50.25") - m("0.012345678") - m("1.5"); schema.Money(balance) != want {
			t.Fatalf("globex's balance from its movements: %s, want %s", schema.Money(balance), want)
		}
	}

	sink := runSink(t, js, conn, analytics.SinkConfig{MaxBatch: 5})
	waitFor(t, "the movements to be inserted", func() (bool, error) {
		return sink.metric(t, "carrier_analytics_rows_total", analytics.TableLedger) >= float64(len(want)), nil
	})
	if skipped := sink.metric(t, "carrier_analytics_skipped_total", analytics.TableLedger); skipped != 1 {
		t.Fatalf("%v ledger events skipped, want the unknown one", skipped)
	}
	if err := sink.stop(); err != nil {
		t.Fatal(err)
	}
	check()

	if err := js.DeleteConsumer(ctx, schema.StreamLedger, analytics.DurableLedger); err != nil {
		t.Fatal(err)
	}
	again := runSink(t, js, conn, analytics.SinkConfig{MaxBatch: 5})
	waitFor(t, "the movements to be inserted again", func() (bool, error) {
		return again.metric(t, "carrier_analytics_rows_total", analytics.TableLedger) >= float64(len(want)), nil
	})
	if err := again.stop(); err != nil {
		t.Fatal(err)
	}
	check()
}
