package analytics_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/tools/synth"
)

// BenchmarkClickHouseQueries loads synthetic CDRs for a month (20
// accounts; CARRIER_BENCH_CDRS of them, default one million) into a private
// server (through InsertCDRs, so the hourly aggregates too), then times
// the queries an operator runs most: one account's CDRs for one day (cdr
// list), a month's export, one call (cdr show) and the month's ASR by
// destination (report asr) from the CDRs and from the aggregates.
//
//	CARRIER_BENCH_CDRS=10000000 go test -run '^$' -bench ClickHouseQueries -benchtime 5x ./analytics/
func BenchmarkClickHouseQueries(b *testing.B) {
	n := 1000000
	if s := os.Getenv("CARRIER_BENCH_CDRS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("CARRIER_BENCH_CDRS=%q: want a positive count", s)
		}
		n = v
	}
	_, conn := startClickHouse(b)
	ctx := testContext(b)
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		b.Fatal(err)
	}
	month := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	g := synth.New(synth.Config{Seed: 1, Start: month, Span: 30 * 24 * time.Hour, Accounts: 20})
	began := time.Now()
	if err := synth.Load(ctx, conn, db, g, n, 100000, nil); err != nil {
		b.Fatal(err)
	}
	b.Logf("loaded %d CDRs in %s (%.0f CDRs/s)", n, time.Since(began).Round(time.Millisecond), float64(n)/time.Since(began).Seconds())

	// acct-003 is a mid-sized account: about 8% of the traffic.
	day := analytics.CDRFilter{From: month.AddDate(0, 0, 14), To: month.AddDate(0, 0, 15), Account: "acct-003"}
	b.Run("ListOneAccountOneDay", func(b *testing.B) {
		var got int
		for b.Loop() {
			cdrs, err := analytics.ListCDRs(ctx, conn, db, day)
			if err != nil {
				b.Fatal(err)
			}
			got = len(cdrs)
		}
		b.ReportMetric(float64(got), "cdrs")
	})
	b.Run("ExportMonth", func(b *testing.B) {
		var got int
		for b.Loop() {
			got = 0
			err := analytics.EachCDR(ctx, conn, db, analytics.CDRFilter{From: month, To: month.AddDate(0, 1, 0)}, func(analytics.CDRRecord) error {
				got++
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(got), "cdrs")
	})
	b.Run("ShowOneCall", func(b *testing.B) {
		callID := synth.New(synth.Config{Seed: 1, Start: month, Span: 30 * 24 * time.Hour, Accounts: 20}).Next().CallID
		for b.Loop() {
			recs, err := analytics.CDRsOfCall(ctx, conn, db, callID)
			if err != nil || len(recs) != 1 {
				b.Fatalf("%d CDRs of %s: %v", len(recs), callID, err)
			}
		}
	})
	b.Run("ReportASRMonthByDestination", func(b *testing.B) {
		q := analytics.ReportQuery{By: analytics.ByDestination, Filter: analytics.CDRFilter{From: month, To: month.AddDate(0, 1, 0)}}
		var groups int
		for b.Loop() {
			rows, err := analytics.Report(ctx, conn, db, q)
			if err != nil {
				b.Fatal(err)
			}
			groups = len(rows)
		}
		b.ReportMetric(float64(groups), "groups")
	})
	b.Run("HourlyReportASRMonthByDestination", func(b *testing.B) {
		q := analytics.ReportQuery{By: analytics.ByDestination, Filter: analytics.CDRFilter{From: month, To: month.AddDate(0, 1, 0)}}
		var groups int
		for b.Loop() {
			rows, err := analytics.HourlyReport(ctx, conn, db, q)
			if err != nil {
				b.Fatal(err)
			}
			groups = len(rows)
		}
		b.ReportMetric(float64(groups), "groups")
	})
}
