package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/schema"
)

func TestTimeRange(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	from, to, err := timeRange("", "", time.Hour, now)
	if err != nil || !from.Equal(now.Add(-time.Hour)) || !to.Equal(now) {
		t.Fatalf("since: %v %v %v", from, to, err)
	}
	from, to, err = timeRange("2026-11-01", "2026-11-02T06:00:00Z", time.Hour, now)
	if err != nil || from != time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC) || to != time.Date(2026, 11, 2, 6, 0, 0, 0, time.UTC) {
		t.Fatalf("from/to: %v %v %v", from, to, err)
	}
	if _, _, err := timeRange("2026-11-02", "2026-11-01", 0, now); err == nil || !strings.Contains(err.Error(), "empty time range") {
		t.Fatalf("reversed range: %v", err)
	}
	if _, _, err := timeRange("yesterday", "", 0, now); err == nil || !strings.Contains(err.Error(), "--from") {
		t.Fatalf("bad time: %v", err)
	}
}

func TestCDRTableFormats(t *testing.T) {
	cdrs := []analytics.CDRRecord{{CDR: schema.CDR{
		ID: "id-1", CallID: "c1@h", Account: "acme", Caller: "1001", Callee: "15551234567",
		Disposition: schema.Answered, Status: 200, InviteAt: 1795428000123, DurationMs: 61500, BillableSec: 62, HangupBy: schema.HangupCaller,
	}, Version: 2, Rating: analytics.Rating{
		Status: schema.StatusRated, Currency: "EUR", Sell: schema.MustParseMoney("0.0124"), Buy: schema.MustParseMoney("0.01"),
		Margin: schema.MustParseMoney("0.0024"), Destination: "USA", Prefix: "1",
	}}, {CDR: schema.CDR{ID: "id-2", CallID: "c2@h", Account: "acme", Disposition: schema.Busy, Status: 486, InviteAt: 1795428000124}, Version: 1}}
	var b bytes.Buffer
	if err := writeTable(&b, "table", cdrTable(cdrs)); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "2026-11-23 10:00:00.123") || !strings.Contains(lines[1], "1m1.5s") ||
		!strings.HasSuffix(lines[0], "CURRENCY  SELL    BUY   MARGIN") || !strings.HasSuffix(lines[1], "EUR       0.0124  0.01  0.0024") ||
		!strings.HasSuffix(lines[2], "-         -       -     -") {
		t.Fatalf("table:\n%s", b.String())
	}
	b.Reset()
	if err := writeTable(&b, "csv", cdrTable(cdrs)); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(b.String(), "INVITE (UTC),CALL-ID,") || !strings.Contains(b.String(), ",answered,200,") ||
		!strings.Contains(b.String(), ",EUR,0.0124,0.01,0.0024\n") {
		t.Fatalf("csv:\n%s", b.String())
	}
	b.Reset()
	if err := writeTable(&b, "json", cdrTable(cdrs)); err != nil {
		t.Fatal(err)
	}
	var back []cdrListJSON
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || len(back) != 2 || back[0].BillableSec != 62 ||
		back[0].Rating == nil || back[0].Rating.Margin != schema.MustParseMoney("0.0024") || back[1].Rating != nil {
		t.Fatalf("json: %v %s", err, b.String())
	}
	b.Reset()
	if err := writeTable(&b, "json", cdrTable(nil)); err != nil || strings.TrimSpace(b.String()) != "[]" {
		t.Fatalf("empty json = %q, %v", b.String(), err)
	}
	if err := writeTable(&b, "xml", cdrTable(nil)); err == nil {
		t.Fatal("xml accepted")
	}
}
