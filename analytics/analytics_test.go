package analytics_test

import (
	"errors"
	"log/slog"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

func TestClickHouseMigrateIsIdempotent(t *testing.T) {
	ch, conn := startClickHouse(t)
	ctx := testContext(t)

	all, err := analytics.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 2 || all[0] != "0001_transactions" || all[1] != "0002_cdrs" {
		t.Fatalf("migrations %v", all)
	}
	applied, err := analytics.Migrate(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(applied, all) {
		t.Fatalf("first run applied %v, want %v", applied, all)
	}
	again, err := analytics.Migrate(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 0 {
		t.Fatalf("second run applied %v", again)
	}
	versions, err := analytics.AppliedMigrations(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(versions) != len(all) || versions[0] != 1 || versions[1] != 2 {
		t.Fatalf("recorded versions %v", versions)
	}
	var tables uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name IN ('sip_transactions', 'cdrs', 'schema_migrations')", db).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 3 {
		t.Fatalf("%d of 3 tables exist", tables)
	}

	if _, err := analytics.Migrate(ctx, conn, "carrier; DROP DATABASE carrier"); !errors.Is(err, analytics.ErrBadDatabase) {
		t.Fatalf("bad database name: %v", err)
	}

	// A DSN works as an address too, for users and passwords.
	dsn, err := analytics.Open(ctx, "clickhouse://default:@"+ch.Addr()+"?dial_timeout=2s", db)
	if err != nil {
		t.Fatal(err)
	}
	defer dsn.Close()
	if again, err := analytics.Migrate(ctx, dsn, db); err != nil || len(again) != 0 {
		t.Fatalf("migrate through a DSN: applied %v, %v", again, err)
	}
}

func TestClickHouseSinkRoundTrip(t *testing.T) {
	_, conn := startClickHouse(t)
	js := startJetStream(t)
	ctx := testContext(t)

	// An event from a newer build is left out, and does not hold back
	// the ones after it.
	future, err := schema.NewEnvelopeWithID("future", schema.TypeCallEnded, schema.CDRVersion+1, base, "node-2", testCDR(9, "acme", base))
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.Publish(ctx, js, schema.CDRSubject(schema.TypeCallEnded, "future"), future); err != nil {
		t.Fatal(err)
	}
	answered, busy := testCDR(1, "acme", base), testCDR(5, "acme", base.Add(time.Minute))
	publishCDRs(t, js, []schema.CDR{answered, busy})
	// call.started is on the CDR stream too; it is not a finished CDR.
	started, err := schema.NewEnvelopeWithID(schema.StartedID(answered.ID), schema.TypeCallStarted, schema.CDRVersion, base, "node-1", answered)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.Publish(ctx, js, schema.CDRSubject(schema.TypeCallStarted, answered.CallID), started); err != nil {
		t.Fatal(err)
	}
	txs := []schema.Transaction{testTransaction(1, base), testTransaction(1, base.Add(time.Minute)), testTransaction(2, base)}
	txs[1].Method, txs[1].Attempts, txs[1].Note = "BYE", nil, "no_bye"
	envs := publishTransactions(t, js, txs)

	sink := runSink(t, js, conn, analytics.SinkConfig{MaxBatch: 100})
	waitCDRs(t, conn, 2)
	waitTransactions(t, conn, 3)
	if skipped := sink.metric(t, "carrier_analytics_skipped_total", analytics.TableCDRs); skipped != 1 {
		t.Fatalf("%v CDR events skipped, want the one from a newer build", skipped)
	}
	if err := sink.stop(); err != nil {
		t.Fatalf("sink stopped with %v", err)
	}

	got, err := analytics.ListCDRs(ctx, conn, db, analytics.CDRFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []schema.CDR{answered, busy}; !reflect.DeepEqual(got, want) {
		t.Fatalf("CDRs changed on the way:\n got %+v\nwant %+v", got, want)
	}
	recs, err := analytics.ListCDRRecords(ctx, conn, db, analytics.CDRFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Version != analytics.VersionUnrated {
			t.Fatalf("CDR %s has version %d, want %d", r.ID, r.Version, analytics.VersionUnrated)
		}
	}

	back, err := analytics.TransactionsOfCall(ctx, conn, db, txs[0].CallID)
	if err != nil {
		t.Fatal(err)
	}
	want := []analytics.TransactionRecord{
		{EventID: envs[0].ID, EventAt: envs[0].Time, Node: "node-1", Transaction: txs[0]},
		{EventID: envs[1].ID, EventAt: envs[1].Time, Node: "node-1", Transaction: txs[1]},
	}
	if !reflect.DeepEqual(back, want) {
		t.Fatalf("transactions changed on the way:\n got %+v\nwant %+v", back, want)
	}
}

func TestClickHouseRedeliveryCountsOnce(t *testing.T) {
	_, conn := startClickHouse(t)
	js := startJetStream(t)
	ctx := testContext(t)

	const n = 300
	var cdrs []schema.CDR
	var txs []schema.Transaction
	for i := range n {
		cdrs = append(cdrs, testCDR(i, "acme", base.Add(time.Duration(i)*time.Second)))
		txs = append(txs, testTransaction(i, base.Add(time.Duration(i)*time.Second)))
	}
	publishCDRs(t, js, cdrs)
	publishTransactions(t, js, txs)

	first := runSink(t, js, conn, analytics.SinkConfig{MaxBatch: 64})
	waitCDRs(t, conn, n)
	waitTransactions(t, conn, n)
	waitHourlyCalls(t, conn, n)
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}

	// A consumer that forgot its position: everything is delivered again.
	for stream, durable := range map[string]string{schema.StreamCDR: analytics.DurableCDR, schema.StreamSIP: analytics.DurableSIP} {
		if err := js.DeleteConsumer(ctx, stream, durable); err != nil {
			t.Fatalf("reset %s: %v", durable, err)
		}
	}
	second := runSink(t, js, conn, analytics.SinkConfig{MaxBatch: 64})
	waitFor(t, "the redelivered rows to be inserted again", func() (bool, error) {
		return second.metric(t, "carrier_analytics_rows_total", analytics.TableCDRs) >= n &&
			second.metric(t, "carrier_analytics_rows_total", analytics.TableTransactions) >= n, nil
	})
	if err := second.stop(); err != nil {
		t.Fatal(err)
	}

	count, err := analytics.CountCDRs(ctx, conn, db, analytics.CDRFilter{})
	if err != nil {
		t.Fatal(err)
	}
	txCount, err := analytics.CountTransactions(ctx, conn, db, time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if count != n || txCount != n {
		t.Fatalf("after redelivery: %d CDRs and %d transactions, want %d each", count, txCount, n)
	}
	if calls := hourlyCalls(t, conn); calls != n {
		t.Fatalf("after redelivery the hourly aggregates count %d calls, want %d", calls, n)
	}
	listed, err := analytics.ListCDRs(ctx, conn, db, analytics.CDRFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != n || !reflect.DeepEqual(listed, cdrs) {
		t.Fatalf("listed %d CDRs after redelivery, want the %d published", len(listed), n)
	}
}

func TestClickHouseOutageLosesAndDoublesNothing(t *testing.T) {
	ch, conn := startClickHouse(t)
	js := startJetStream(t)
	ctx := testContext(t)

	var cdrs []schema.CDR
	var txs []schema.Transaction
	wave := func(from, to int) {
		var cs []schema.CDR
		var ts []schema.Transaction
		for i := from; i < to; i++ {
			cs = append(cs, testCDR(i, "acme", base.Add(time.Duration(i)*time.Second)))
			ts = append(ts, testTransaction(i, base.Add(time.Duration(i)*time.Second)))
		}
		publishCDRs(t, js, cs)
		publishRatings(t, js, cs, 0)
		publishTransactions(t, js, ts)
		cdrs, txs = append(cdrs, cs...), append(txs, ts...)
	}

	wave(0, 200)
	sink := runSink(t, js, conn, analytics.SinkConfig{MaxBatch: 50})
	waitCDRs(t, conn, 200)
	waitTransactions(t, conn, 200)

	ch.Stop()
	wave(200, 500)
	// The sink must have tried and failed, so the rows below came through
	// the retry path.
	waitFor(t, "the sink to hit the outage", func() (bool, error) {
		return sink.metric(t, "carrier_analytics_insert_errors_total", analytics.TableCDRs) > 0 &&
			sink.metric(t, "carrier_analytics_insert_errors_total", analytics.TableTransactions) > 0, nil
	})
	wave(500, 600)
	ch.Start()

	waitCDRs(t, conn, uint64(len(cdrs)))
	waitTransactions(t, conn, uint64(len(txs)))
	waitHourlyCalls(t, conn, int64(len(cdrs)))
	waitFor(t, "every CDR to be rated", func() (bool, error) {
		rows, err := analytics.MarginReport(ctx, conn, db, analytics.ReportQuery{By: analytics.ByAccount})
		return err == nil && len(rows) == 1 && rows[0].Rated == uint64(len(cdrs)), err
	})
	if err := sink.stop(); err != nil {
		t.Fatal(err)
	}
	var rated []analytics.CDRRecord
	for _, c := range cdrs {
		rated = append(rated, ratingOf(t, c, 0))
	}
	checkRated(t, conn, rated, base, base.Add(time.Hour))
	listed, err := analytics.ListCDRs(ctx, conn, db, analytics.CDRFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(listed, cdrs) {
		t.Fatalf("after the outage: %d CDRs listed, want the %d published", len(listed), len(cdrs))
	}
	var distinct uint64
	if err := conn.QueryRow(ctx, "SELECT uniqExact(event_id) FROM "+db+".sip_transactions").Scan(&distinct); err != nil {
		t.Fatal(err)
	}
	if distinct != uint64(len(txs)) {
		t.Fatalf("%d distinct transactions, want %d", distinct, len(txs))
	}
}

func TestClickHouseSinkWaitsForClickHouseAtStart(t *testing.T) {
	ch, conn := startClickHouse(t)
	js := startJetStream(t)
	ch.Stop()

	cdrs := []schema.CDR{testCDR(1, "acme", base), testCDR(2, "globex", base.Add(time.Second))}
	publishCDRs(t, js, cdrs)
	logs := newLogRecorder()
	sink := runSink(t, js, conn, analytics.SinkConfig{Logger: slog.New(logs)})
	waitFor(t, "the sink to find ClickHouse down", func() (bool, error) {
		return logs.logged("clickhouse not reachable, retrying migration"), nil
	})
	ch.Start()
	waitCDRs(t, conn, uint64(len(cdrs)))
	if err := sink.stop(); err != nil {
		t.Fatal(err)
	}
}

func TestClickHouseSinkFailsWithoutItsStream(t *testing.T) {
	_, conn := startClickHouse(t)
	js := startJetStream(t)
	ctx := testContext(t)
	if err := js.DeleteStream(ctx, schema.StreamSIP); err != nil {
		t.Fatal(err)
	}
	sink, err := analytics.NewSink(js, conn, analytics.SinkConfig{Database: db, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	// Run returns by itself: the CDR consumer is stopped with the SIP one.
	if err := sink.Run(ctx); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("Run without the SIP stream: %v", err)
	}
}

func TestClickHouseListCDRsFilters(t *testing.T) {
	_, conn := startClickHouse(t)
	ctx := testContext(t)
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}

	// Three accounts over two months, in an order unlike invite order.
	var all []schema.CDR
	accounts := []string{"acme", "globex", "initech"}
	for i := range 90 {
		invite := base.AddDate(0, 0, (i*7)%40).Add(time.Duration(i) * time.Minute)
		all = append(all, testCDR(i, accounts[i%3], invite))
	}
	recs := make([]analytics.CDRRecord, len(all))
	for i, c := range all {
		recs[i] = analytics.CDRRecord{CDR: c, Version: analytics.VersionUnrated}
	}
	if err := analytics.InsertCDRs(ctx, conn, db, recs); err != nil {
		t.Fatal(err)
	}

	cases := []analytics.CDRFilter{
		{},
		{Account: "globex"},
		{From: base.AddDate(0, 0, 8), To: base.AddDate(0, 0, 20)},
		{From: base.AddDate(0, 0, 8), To: base.AddDate(0, 0, 20), Account: "initech"},
		{From: base.AddDate(0, 0, 30)},
		{To: base.AddDate(0, 0, 3)},
		{Account: "acme", Limit: 5},
		{Account: "nobody"},
		// Inclusive From, exclusive To, to the millisecond.
		{From: schema.FromMillis(all[1].InviteAt), To: schema.FromMillis(all[4].InviteAt)},
	}
	for _, f := range cases {
		want := expectCDRs(all, f)
		got, err := analytics.ListCDRs(ctx, conn, db, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
			t.Errorf("filter %+v: got %d CDRs %v, want %d %v", f, len(got), ids(got), len(want), ids(want))
		}
		n, err := analytics.CountCDRs(ctx, conn, db, analytics.CDRFilter{From: f.From, To: f.To, Account: f.Account})
		if err != nil {
			t.Fatal(err)
		}
		if f.Limit == 0 && n != uint64(len(want)) {
			t.Errorf("filter %+v: count %d, want %d", f, n, len(want))
		}
	}
}

func TestClickHouseHigherVersionReplaces(t *testing.T) {
	_, conn := startClickHouse(t)
	ctx := testContext(t)
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	orig := testCDR(1, "acme", base)
	rated := orig
	rated.HangupReason = schema.EndCreditExhausted
	const ratedVersion = 1795430000000

	for _, batch := range [][]analytics.CDRRecord{
		{{CDR: orig, Version: analytics.VersionUnrated}},
		{{CDR: rated, Version: ratedVersion}},
		// A late replay of the unrated CDR must not undo the rating.
		{{CDR: orig, Version: analytics.VersionUnrated}},
	} {
		if err := analytics.InsertCDRs(ctx, conn, db, batch); err != nil {
			t.Fatal(err)
		}
	}
	got, err := analytics.ListCDRRecords(ctx, conn, db, analytics.CDRFilter{Account: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Version != ratedVersion || !reflect.DeepEqual(got[0].CDR, rated) {
		t.Fatalf("got %+v, want only the rated version", got)
	}
	// Merged for good, the table keeps one row.
	if err := conn.Exec(ctx, "OPTIMIZE TABLE "+db+".cdrs FINAL"); err != nil {
		t.Fatal(err)
	}
	var rows uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".cdrs").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != 1 {
		t.Fatalf("%d rows after merging, want 1", rows)
	}
}

func expectCDRs(all []schema.CDR, f analytics.CDRFilter) []schema.CDR {
	var out []schema.CDR
	for _, c := range all {
		at := schema.FromMillis(c.InviteAt)
		if (!f.From.IsZero() && at.Before(f.From)) || (!f.To.IsZero() && !at.Before(f.To)) || (f.Account != "" && c.Account != f.Account) {
			continue
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].InviteAt != out[j].InviteAt {
			return out[i].InviteAt < out[j].InviteAt
		}
		return out[i].ID < out[j].ID
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out
}

func ids(cdrs []schema.CDR) []string {
	out := make([]string, len(cdrs))
	for i, c := range cdrs {
		out[i] = c.CallID
	}
	return out
}
