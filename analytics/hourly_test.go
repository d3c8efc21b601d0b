package analytics_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/schema"
)

// TestClickHouseHourlyAggregatesCountOnce checks that the hourly
// aggregates agree with reports over cdrs FINAL after everything that
// writes a CDR more than once: earlier versions, redeliveries, a late
// older version and the same version with other values.
func TestClickHouseHourlyAggregatesCountOnce(t *testing.T) {
	_, conn := startClickHouse(t)
	ctx := testContext(t)
	// Every third CDR was first written as an older version (version 1)
	// that differs in supplier, gateway, callee and disposition.
	all := loadSynth(t, conn, 3000)

	write := func(recs []analytics.CDRRecord) {
		t.Helper()
		if err := analytics.InsertCDRs(ctx, conn, db, recs); err != nil {
			t.Fatal(err)
		}
	}
	var again, late []analytics.CDRRecord
	for i, c := range all[:600] {
		// A redelivery, twice in one batch.
		again = append(again, analytics.CDRRecord{CDR: c, Version: 2}, analytics.CDRRecord{CDR: c, Version: 2})
		if i%2 == 0 {
			old := c
			old.Disposition, old.DurationMs = schema.Congestion, 0
			late = append(late, analytics.CDRRecord{CDR: old, Version: 1})
		}
	}
	write(again)
	write(late)
	// The same version again with another gateway: cdrs keeps the last
	// written, and so must the aggregates.
	moved := all[10]
	moved.Gateway, moved.Supplier = "gw-moved", "sup-moved"
	write([]analytics.CDRRecord{{CDR: moved, Version: 2}})
	all[10] = moved

	// A newer version in the same batch as a repeat of the current one.
	rated := all[20]
	rated.BillableSec += 60
	write([]analytics.CDRRecord{{CDR: all[20], Version: 2}, {CDR: rated, Version: 3}, {CDR: all[20], Version: 2}})
	all[20] = rated

	for _, q := range []analytics.ReportQuery{
		{By: analytics.ByDestination},
		{By: analytics.ByDestination, Digits: 4, Filter: analytics.CDRFilter{From: synthStart.Add(5 * time.Hour), To: synthStart.Add(30 * time.Hour)}},
		{By: analytics.ByAccount},
		{By: analytics.BySupplier},
		{By: analytics.ByGateway},
	} {
		want, err := analytics.Report(ctx, conn, db, q)
		if err != nil {
			t.Fatal(err)
		}
		got, err := analytics.HourlyReport(ctx, conn, db, q)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%+v: hourly\n%+v\nwant (from cdrs)\n%+v", q, got, want)
		}
	}
	if calls := hourlyCalls(t, conn); calls != int64(len(all)) {
		t.Fatalf("cdr_hourly counts %d calls, want %d", calls, len(all))
	}

	for _, bad := range []analytics.ReportQuery{
		{By: analytics.ByAccount, Filter: analytics.CDRFilter{Account: "acct-001"}},
		{By: analytics.ByAccount, Filter: analytics.CDRFilter{From: synthStart.Add(time.Minute)}},
		{By: analytics.ByDestination, Digits: 5},
	} {
		if _, err := analytics.HourlyReport(ctx, conn, db, bad); !errors.Is(err, analytics.ErrBadReport) {
			t.Errorf("%+v: %v, want ErrBadReport", bad, err)
		}
	}
}

// hourlyCalls is the number of calls the hourly aggregates count.
func hourlyCalls(t testing.TB, conn driver.Conn) int64 {
	t.Helper()
	var calls int64
	if err := conn.QueryRow(testContext(t), "SELECT sum(calls) FROM "+db+"."+analytics.TableHourly).Scan(&calls); err != nil {
		t.Fatal(err)
	}
	return calls
}

// waitHourlyCalls waits until the aggregates count at least want calls:
// the sink counts a batch right after inserting its CDRs.
func waitHourlyCalls(t testing.TB, conn driver.Conn, want int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d calls in the hourly aggregates", want), func() (bool, error) {
		var calls int64
		err := conn.QueryRow(testContext(t), "SELECT sum(calls) FROM "+db+"."+analytics.TableHourly).Scan(&calls)
		return err == nil && calls >= want, err
	})
}
