package analytics_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/schema"
)

// TestClickHouseUpgradeKeepsCallKind: a database of the release before
// the CDR's subscriber, class, DID and direction (migrations up to 0015,
// with a CDR in it) is upgraded by the sink as it starts; the new CDRs
// keep the four fields, the old one reads them empty, and lists and
// reports filter and group by them.
func TestClickHouseUpgradeKeepsCallKind(t *testing.T) {
	_, conn := startClickHouse(t)
	js := startJetStream(t)
	ctx := testContext(t)

	const before = 15
	if _, err := analytics.MigrateTo(ctx, conn, db, before); err != nil {
		t.Fatal(err)
	}
	var cols uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = 'cdrs' AND name IN ('subscriber', 'class', 'did', 'direction')", db).Scan(&cols); err != nil {
		t.Fatal(err)
	}
	if cols != 0 {
		t.Fatalf("%d of the new columns exist before the upgrade", cols)
	}
	// A CDR of the old release, in the old release's columns.
	old := testCDR(10, "acme", base)
	old.Subscriber, old.Class, old.DID, old.Direction = "", "", "", ""
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".cdrs (id, version, call_id, from_tag, account, trunk, src, transport, caller, callee, "+
		"caller_e164, callee_e164, disposition, status, reason, q850, invite_at, end_at, node)")
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Append(old.ID, analytics.VersionUnrated, old.CallID, old.FromTag, old.Account, old.Trunk, old.Source, old.Transport,
		old.Caller, old.Callee, old.CallerE164, old.CalleeE164, string(old.Disposition), uint16(old.Status), old.Reason, uint16(old.Q850),
		uint64(old.InviteAt), uint64(old.EndAt), old.Node); err != nil {
		t.Fatal(err)
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}

	outbound := testCDR(2, "acme", base.Add(time.Second))
	inbound := testCDR(4, "acme", base.Add(2*time.Second))
	onnet := testCDR(6, "globex", base.Add(3*time.Second))
	onnet.Class, onnet.Direction = "", schema.OnNet
	premium := testCDR(8, "globex", base.Add(4*time.Second))
	premium.Class = "premium"
	if outbound.Direction != schema.Outbound || inbound.Direction != schema.Inbound || inbound.DID == "" {
		t.Fatalf("fixtures: %s, %s %q", outbound.Direction, inbound.Direction, inbound.DID)
	}
	publishCDRs(t, js, []schema.CDR{outbound, inbound, onnet, premium})

	sink := runSink(t, js, conn, analytics.SinkConfig{MaxBatch: 100})
	waitCDRs(t, conn, 5)
	if err := sink.stop(); err != nil {
		t.Fatalf("sink stopped with %v", err)
	}
	versions, err := analytics.AppliedMigrations(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(versions, before+1) {
		t.Fatalf("applied migrations %v: the sink did not upgrade past %d", versions, before)
	}

	got, err := analytics.ListCDRs(ctx, conn, db, analytics.CDRFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 || got[0].ID != old.ID {
		t.Fatalf("listed %d CDRs, want the old one first and the 4 new", len(got))
	}
	if o := got[0]; o.Subscriber != "" || o.Class != "" || o.DID != "" || o.Direction != "" || o.CalleeE164 != old.CalleeE164 {
		t.Errorf("old CDR reads subscriber %q, class %q, did %q, direction %q, callee %q", o.Subscriber, o.Class, o.DID, o.Direction, o.CalleeE164)
	}
	if want := []schema.CDR{outbound, inbound, onnet, premium}; !reflect.DeepEqual(got[1:], want) {
		t.Fatalf("CDRs changed on the way:\n got %+v\nwant %+v", got[1:], want)
	}

	for _, tc := range []struct {
		name string
		f    analytics.CDRFilter
		want []schema.CDR
	}{
		{"class", analytics.CDRFilter{Class: "mobile"}, []schema.CDR{outbound}},
		{"class of another account", analytics.CDRFilter{Class: "premium", Account: "globex"}, []schema.CDR{premium}},
		{"did", analytics.CDRFilter{DID: inbound.DID}, []schema.CDR{inbound}},
		{"did with +", analytics.CDRFilter{DID: "+" + inbound.DID}, []schema.CDR{inbound}},
		{"inbound", analytics.CDRFilter{Directions: []schema.Direction{schema.Inbound}}, []schema.CDR{inbound}},
		{"onnet or inbound", analytics.CDRFilter{Directions: []schema.Direction{schema.OnNet, schema.Inbound}}, []schema.CDR{inbound, onnet}},
		{"outbound", analytics.CDRFilter{Directions: []schema.Direction{schema.Outbound}}, []schema.CDR{outbound, premium}},
		{"nothing", analytics.CDRFilter{Class: "mobile", Directions: []schema.Direction{schema.Inbound}}, nil},
	} {
		got, err := analytics.ListCDRs(ctx, conn, db, tc.f)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %d CDRs %+v, want %d", tc.name, len(got), got, len(tc.want))
		}
	}

	keys := func(rows []analytics.ReportRow) map[string]uint64 {
		m := map[string]uint64{}
		for _, r := range rows {
			m[r.Key] = r.Calls
		}
		return m
	}
	byClass, err := analytics.Report(ctx, conn, db, analytics.ReportQuery{By: analytics.ByClass})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(byClass), map[string]uint64{"": 3, "mobile": 1, "premium": 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("traffic by class %v, want %v", got, want)
	}
	byDir, err := analytics.Report(ctx, conn, db, analytics.ReportQuery{By: analytics.ByDirection})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(byDir), map[string]uint64{"": 1, "outbound": 2, "inbound": 1, "onnet": 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("traffic by direction %v, want %v", got, want)
	}
	margin, err := analytics.MarginReport(ctx, conn, db, analytics.ReportQuery{By: analytics.ByClass, Filter: analytics.CDRFilter{Account: "globex"}})
	if err != nil || len(margin) != 2 || margin[0].Key != "" || margin[1].Key != "premium" {
		t.Errorf("margin by class of globex: %+v, %v", margin, err)
	}
	// The hourly aggregates are not kept by class or direction.
	hour := analytics.CDRFilter{From: base.Truncate(time.Hour), To: base.Truncate(time.Hour).Add(time.Hour)}
	for _, q := range []analytics.ReportQuery{{By: analytics.ByClass, Filter: hour}, {By: analytics.ByDirection, Filter: hour},
		{By: analytics.ByAccount, Filter: analytics.CDRFilter{From: hour.From, To: hour.To, Class: "mobile"}}} {
		if _, err := analytics.HourlyReport(ctx, conn, db, q); !errors.Is(err, analytics.ErrBadReport) {
			t.Errorf("hourly report %+v: %v, want ErrBadReport", q, err)
		}
	}
}
