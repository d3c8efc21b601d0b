package analytics_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/synth"
)

var synthStart = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// loadSynth loads n synthetic CDRs over three days, after writing an
// earlier version of every third one that differs in each filtered
// non-key column: queries must see only the latest. It returns the CDRs
// as their latest versions.
func loadSynth(t *testing.T, conn driver.Conn, n int) []schema.CDR {
	t.Helper()
	ctx := testContext(t)
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	g := synth.New(synth.Config{Seed: 7, Start: synthStart, Span: 72 * time.Hour, Accounts: 5})
	all := make([]schema.CDR, n)
	var old, latest []analytics.CDRRecord
	for i := range all {
		all[i] = g.Next()
		callKind(&all[i], i)
		latest = append(latest, analytics.CDRRecord{CDR: all[i], Version: 2})
		if i%3 == 0 {
			o := all[i]
			o.Trunk, o.Gateway, o.Supplier = "trunk-old", "gw-old", "sup-old"
			o.Caller, o.CallerE164, o.Callee, o.CalleeE164 = "999", "999", "999", "999"
			o.Disposition, o.DurationMs = schema.Failed, 86400000
			o.Class, o.DID, o.Direction = "class-old", "999", schema.OnNet
			old = append(old, analytics.CDRRecord{CDR: o, Version: 1})
		}
	}
	// The old versions go in a part of their own, which must not be
	// merged away before the queries run.
	if err := conn.Exec(ctx, "SYSTEM STOP MERGES "+db+".cdrs"); err != nil {
		t.Fatal(err)
	}
	for _, batch := range [][]analytics.CDRRecord{old, latest} {
		if err := analytics.InsertCDRs(ctx, conn, db, batch); err != nil {
			t.Fatal(err)
		}
	}
	var rows uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".cdrs").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != uint64(len(old)+len(latest)) {
		t.Fatalf("cdrs holds %d rows, want both versions (%d)", rows, len(old)+len(latest))
	}
	return all
}

// classes are the dial plan classes callKind gives calls ("": none).
var classes = []string{"mobile", "fixed", "", "premium", "mobile"}

// callKind gives synthetic CDR c, the i-th, a class, and makes every
// fourth an inbound call to a DID (its callee) and every seventh a call
// from one subscriber to another.
func callKind(c *schema.CDR, i int) {
	c.Class, c.Direction = classes[i%len(classes)], schema.Outbound
	switch {
	case i%4 == 2:
		c.DID, c.Direction = c.CalleeE164, schema.Inbound
	case i%7 == 3:
		c.Subscriber, c.Direction = "sub-"+c.Account, schema.OnNet
	}
}

// matches is CDRFilter in Go.
func matches(c schema.CDR, f analytics.CDRFilter) bool {
	at := schema.FromMillis(c.InviteAt)
	prefixed := func(p string, nums ...string) bool {
		if p == "" {
			return true
		}
		for _, n := range nums {
			if strings.HasPrefix(n, p) {
				return true
			}
		}
		return false
	}
	return (f.From.IsZero() || !at.Before(f.From)) && (f.To.IsZero() || at.Before(f.To)) &&
		(f.Account == "" || c.Account == f.Account) && (f.Trunk == "" || c.Trunk == f.Trunk) &&
		prefixed(f.CallerPrefix, c.Caller, c.CallerE164) && prefixed(f.CalleePrefix, c.Callee, c.CalleeE164) &&
		(len(f.Dispositions) == 0 || slices.Contains(f.Dispositions, c.Disposition)) &&
		(f.Gateway == "" || c.Gateway == f.Gateway) && (f.Supplier == "" || c.Supplier == f.Supplier) &&
		(f.Class == "" || c.Class == f.Class) && (f.DID == "" || c.DID == strings.TrimPrefix(f.DID, "+")) &&
		(len(f.Directions) == 0 || slices.Contains(f.Directions, c.Direction)) &&
		c.DurationMs >= f.MinDuration.Milliseconds()
}

func TestClickHouseCDRFiltersMatchGo(t *testing.T) {
	_, conn := startClickHouse(t)
	ctx := testContext(t)
	all := loadSynth(t, conn, 3000)
	day2 := synthStart.Add(24 * time.Hour)

	cases := []analytics.CDRFilter{
		{},
		{From: day2, To: day2.Add(24 * time.Hour), Account: "acct-002"},
		{Trunk: "trunk-acct-003"},
		{CallerPrefix: "4930001"},
		{CalleePrefix: "44"},
		{CalleePrefix: "0049"},
		{CalleePrefix: "234", Dispositions: []schema.Disposition{schema.Busy, schema.NoAnswer}},
		{Dispositions: []schema.Disposition{schema.Failed}},
		{Gateway: "gw-b1"},
		{Supplier: "sup-charlie", From: day2},
		{MinDuration: 5 * time.Minute},
		{Account: "acct-001", CalleePrefix: "1", Dispositions: []schema.Disposition{schema.Answered}, MinDuration: time.Minute, Supplier: "sup-alpha"},
		// Only the outdated versions match these.
		{Gateway: "gw-old"},
		{Trunk: "trunk-old"},
		{CalleePrefix: "999"},
		// LIKE metacharacters are plain characters in a prefix.
		{CalleePrefix: "%"},
		{Account: "acct-001", Limit: 7},
		{Class: "mobile"},
		{Class: "premium", Dispositions: []schema.Disposition{schema.Answered}},
		{Directions: []schema.Direction{schema.Inbound}},
		{Directions: []schema.Direction{schema.OnNet, schema.Inbound}, Account: "acct-002"},
		{Directions: []schema.Direction{schema.Outbound}, Class: "fixed", CalleePrefix: "44"},
		{DID: all[2].DID},
		{DID: "+" + all[6].DID},
		// Only the outdated versions match these.
		{Class: "class-old"},
		{DID: "999"},
	}
	for _, f := range cases {
		var want []schema.CDR
		for _, c := range all {
			if matches(c, f) {
				want = append(want, c)
			}
		}
		slices.SortFunc(want, func(a, b schema.CDR) int {
			if a.InviteAt != b.InviteAt {
				return int(a.InviteAt - b.InviteAt)
			}
			return strings.Compare(a.ID, b.ID)
		})
		if f.Limit > 0 && len(want) > f.Limit {
			want = want[:f.Limit]
		}
		got, err := analytics.ListCDRs(ctx, conn, db, f)
		if err != nil {
			t.Fatalf("filter %+v: %v", f, err)
		}
		if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
			t.Errorf("filter %+v: got %d CDRs, want %d", f, len(got), len(want))
		}
		if f.Limit == 0 {
			n, err := analytics.CountCDRs(ctx, conn, db, f)
			if err != nil || n != uint64(len(want)) {
				t.Errorf("filter %+v: count %d (%v), want %d", f, n, err, len(want))
			}
		}
	}
}

func TestClickHouseReportsMatchGo(t *testing.T) {
	_, conn := startClickHouse(t)
	ctx := testContext(t)
	all := loadSynth(t, conn, 3000)
	day2 := synthStart.Add(24 * time.Hour)

	keyOf := map[analytics.ReportBy]func(c schema.CDR, digits int) string{
		analytics.ByDestination: func(c schema.CDR, d int) string { return c.CalleeE164[:min(d, len(c.CalleeE164))] },
		analytics.ByAccount:     func(c schema.CDR, _ int) string { return c.Account },
		analytics.BySupplier:    func(c schema.CDR, _ int) string { return c.Supplier },
		analytics.ByGateway:     func(c schema.CDR, _ int) string { return c.Gateway },
		analytics.ByClass:       func(c schema.CDR, _ int) string { return c.Class },
		analytics.ByDirection:   func(c schema.CDR, _ int) string { return string(c.Direction) },
	}
	queries := []analytics.ReportQuery{
		{By: analytics.ByDestination},
		{By: analytics.ByDestination, Digits: 3, Filter: analytics.CDRFilter{From: day2, To: day2.Add(24 * time.Hour)}},
		{By: analytics.ByAccount},
		{By: analytics.BySupplier, Filter: analytics.CDRFilter{Account: "acct-001"}},
		{By: analytics.ByGateway, Filter: analytics.CDRFilter{CalleePrefix: "44"}},
		{By: analytics.ByClass},
		{By: analytics.ByClass, Filter: analytics.CDRFilter{Account: "acct-003", Directions: []schema.Direction{schema.Outbound}}},
		{By: analytics.ByDirection, Filter: analytics.CDRFilter{From: day2}},
	}
	for _, q := range queries {
		digits := q.Digits
		if digits == 0 {
			digits = analytics.DefaultDestinationDigits
		}
		groups := map[string]*analytics.ReportRow{}
		for _, c := range all {
			if !matches(c, q.Filter) {
				continue
			}
			k := keyOf[q.By](c, digits)
			r := groups[k]
			if r == nil {
				r = &analytics.ReportRow{Key: k}
				groups[k] = r
			}
			r.Calls++
			if c.Disposition == schema.Answered {
				r.Answered++
			}
			r.DurationMs += c.DurationMs
			r.BillableSec += c.BillableSec
			if c.PDDMs > 0 {
				r.PDDMs += c.PDDMs
				r.PDDCalls++
			}
		}
		var want []analytics.ReportRow
		for _, r := range groups {
			want = append(want, *r)
		}
		slices.SortFunc(want, func(a, b analytics.ReportRow) int { return strings.Compare(a.Key, b.Key) })

		got, err := analytics.Report(ctx, conn, db, q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("report %+v:\n got %+v\nwant %+v", q, got, want)
		}
	}
	for _, bad := range []analytics.ReportQuery{{By: "colour"}, {By: analytics.ByDestination, Digits: 16}} {
		if _, err := analytics.Report(ctx, conn, db, bad); !errors.Is(err, analytics.ErrBadReport) {
			t.Errorf("report %+v: %v, want ErrBadReport", bad, err)
		}
	}
}

func TestClickHouseEachCDRAndCallLookup(t *testing.T) {
	_, conn := startClickHouse(t)
	ctx := testContext(t)
	all := loadSynth(t, conn, 500)

	// fn's error ends the query and comes back as it is.
	stop := errors.New("enough")
	var seen int
	err := analytics.EachCDR(ctx, conn, db, analytics.CDRFilter{}, func(analytics.CDRRecord) error {
		seen++
		if seen == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || seen != 10 {
		t.Fatalf("EachCDR stopped after %d with %v", seen, err)
	}
	// The connection is usable after a query ended early.
	if _, err := analytics.CountCDRs(ctx, conn, db, analytics.CDRFilter{}); err != nil {
		t.Fatal(err)
	}

	got, err := analytics.CDRsOfCall(ctx, conn, db, all[42].CallID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Version != 2 || !reflect.DeepEqual(got[0].CDR, all[42]) {
		t.Fatalf("CDRsOfCall = %+v, want the latest version of %s", got, all[42].CallID)
	}
	// A call forked upstream: the same Call-ID with another From tag,
	// another account and time.
	fork := all[7]
	fork.CallID, fork.FromTag, fork.Account = all[42].CallID, "fork-tag", "acct-fork"
	fork.ID = schema.CDRID(fork.CallID, fork.FromTag)
	if err := analytics.InsertCDRs(ctx, conn, db, []analytics.CDRRecord{{CDR: fork, Version: 2}}); err != nil {
		t.Fatal(err)
	}
	got, err = analytics.CDRsOfCall(ctx, conn, db, all[42].CallID)
	if err != nil || len(got) != 2 || !slices.ContainsFunc(got, func(r analytics.CDRRecord) bool { return reflect.DeepEqual(r.CDR, fork) }) {
		t.Fatalf("CDRsOfCall of a forked call = %d CDRs (%v), want 2 with the fork", len(got), err)
	}
	if got, err := analytics.CDRsOfCall(context.Background(), conn, db, "no-such-call"); err != nil || len(got) != 0 {
		t.Fatalf("unknown call: %v %v", got, err)
	}
}
