package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/synth"
	"github.com/carrier-core/carrier/tools/testkit"
)

// TestCDRQueryCommands runs cdr list, show, export and report against a
// private ClickHouse loaded with synthetic CDRs, and checks each against
// the same selection made in Go.
func TestCDRQueryCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	chs := testkit.StartClickHouse(t)
	const database = "carrier"
	conn, err := analytics.Open(ctx, chs.Addr(), database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := analytics.Migrate(ctx, conn, database); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	g := synth.New(synth.Config{Seed: 3, Start: start, Span: 48 * time.Hour, Accounts: 4})
	var all []schema.CDR
	var recs []analytics.CDRRecord
	for range 1500 {
		c := g.Next()
		all = append(all, c)
		recs = append(recs, analytics.CDRRecord{CDR: c, Version: analytics.VersionUnrated})
	}
	if err := analytics.InsertCDRs(ctx, conn, database, recs); err != nil {
		t.Fatal(err)
	}
	// The SIP transactions of one call, for cdr show.
	call := all[0]
	for _, a := range all {
		if a.Disposition == schema.Answered && len(a.Attempts) == 2 {
			call = a
			break
		}
	}
	txs := []analytics.TransactionRecord{
		{EventID: "ev-invite", EventAt: call.AnswerAt, Node: "proxy-1", Transaction: schema.Transaction{
			Method: "INVITE", CallID: call.CallID, FromTag: call.FromTag, ToTag: call.ToTag, CSeq: 1, Source: call.Source, Transport: "udp",
			Destination: call.Attempts[1].Destination, Status: 200, Reason: "OK", RequestAt: call.InviteAt,
			ProvisionalAt: call.ProvisionalAt, ProvisionalStatus: 180, FinalAt: call.AnswerAt, Attempts: call.Attempts}},
		{EventID: "ev-bye", EventAt: call.EndAt, Node: "proxy-1", Transaction: schema.Transaction{
			Method: "BYE", CallID: call.CallID, FromTag: call.FromTag, ToTag: call.ToTag, CSeq: 2, InDialog: true, Source: call.Source,
			Transport: "udp", Status: 200, Reason: "OK", RequestAt: call.EndAt, FinalAt: call.EndAt + 10}},
	}
	if err := analytics.InsertTransactions(ctx, conn, database, txs); err != nil {
		t.Fatal(err)
	}

	carrier := func(args ...string) (string, error) {
		var out bytes.Buffer
		root := newRootCmd(&out, &out, nil)
		root.SetArgs(append(args, "--clickhouse", chs.Addr()))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
	span := []string{"--from", "2026-11-01", "--to", "2026-11-03"}
	want := func(keep func(schema.CDR) bool) int {
		n := 0
		for _, c := range all {
			if keep(c) {
				n++
			}
		}
		return n
	}

	t.Run("list", func(t *testing.T) {
		out, err := carrier(append([]string{"cdr", "list", "--callee", "0044", "--disposition", "busy,no-answer", "--limit", "0", "-o", "json"}, span...)...)
		if err != nil {
			t.Fatal(err, out)
		}
		var got []schema.CDR
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err, out)
		}
		n := want(func(c schema.CDR) bool {
			return strings.HasPrefix(c.Callee, "0044") && (c.Disposition == schema.Busy || c.Disposition == schema.NoAnswer)
		})
		if n == 0 || len(got) != n {
			t.Fatalf("listed %d CDRs, want %d", len(got), n)
		}
		out, err = carrier(append([]string{"cdr", "list", "--account", "acct-002", "--supplier", "sup-bravo", "--min-duration", "2m", "--limit", "0", "-o", "csv"}, span...)...)
		if err != nil {
			t.Fatal(err, out)
		}
		rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
		n = want(func(c schema.CDR) bool {
			return c.Account == "acct-002" && c.Supplier == "sup-bravo" && c.DurationMs >= 120000
		})
		if err != nil || n == 0 || len(rows) != n+1 {
			t.Fatalf("csv: %d lines (%v), want %d and a header", len(rows), err, n)
		}
		if _, err := carrier("cdr", "list", "--disposition", "hung"); err == nil || !strings.Contains(err.Error(), "want one of answered") {
			t.Fatalf("bad disposition: %v", err)
		}
	})

	t.Run("show", func(t *testing.T) {
		out, err := carrier("cdr", "show", call.CallID)
		if err != nil {
			t.Fatal(err, out)
		}
		for _, s := range []string{"Call-ID:", call.CallID, "ATTEMPT", call.Attempts[0].Gateway, call.Attempts[1].Gateway,
			"Service Unavailable (Q.850 41)", "METHOD", "INVITE", "BYE", "(180)"} {
			if !strings.Contains(out, s) {
				t.Errorf("cdr show lacks %q:\n%s", s, out)
			}
		}
		out, err = carrier("cdr", "show", call.CallID, "-o", "json")
		if err != nil {
			t.Fatal(err, out)
		}
		var got struct {
			CDRs []struct {
				schema.CDR
				Version uint64
			}
			Transactions []analytics.TransactionRecord
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.CDRs) != 1 || got.CDRs[0].ID != call.ID ||
			len(got.CDRs[0].Attempts) != 2 || len(got.Transactions) != 2 || got.Transactions[1].Method != "BYE" {
			t.Fatalf("json (%v):\n%s", err, out)
		}
		if _, err := carrier("cdr", "show", "no-such-call"); err == nil || !strings.Contains(err.Error(), "no CDR and no SIP transaction") {
			t.Fatalf("unknown call: %v", err)
		}
	})

	t.Run("export", func(t *testing.T) {
		out, err := carrier(append([]string{"cdr", "export", "--gateway", "gw-c1"}, span...)...)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		n := want(func(c schema.CDR) bool { return c.Gateway == "gw-c1" })
		if n == 0 || len(rows) != n+1 || strings.Join(rows[0], ",") != strings.Join(exportHeader, ",") {
			t.Fatalf("export: %d lines, want %d and the header", len(rows), n)
		}
		for _, r := range rows[1:] {
			if r[24] != "gw-c1" || len(r) != len(exportHeader) {
				t.Fatalf("row %v", r)
			}
		}
		file := t.TempDir() + "/all.csv"
		if out, err := carrier(append([]string{"cdr", "export", "--file", file}, span...)...); err != nil {
			t.Fatal(err, out)
		}
	})

	t.Run("report", func(t *testing.T) {
		out, err := carrier(append([]string{"report", "asr", "--by", "supplier", "-o", "json"}, span...)...)
		if err != nil {
			t.Fatal(err, out)
		}
		out0 := out
		var got []reportJSON
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err, out)
		}
		var calls, answered uint64
		for _, r := range got {
			calls += r.Calls
			answered += r.Answered
			if r.ASR != float64(r.Answered)/float64(r.Calls) {
				t.Errorf("%s: ASR %v of %d/%d", r.Key, r.ASR, r.Answered, r.Calls)
			}
		}
		if len(got) != 3 || calls != uint64(len(all)) || answered != uint64(want(func(c schema.CDR) bool { return c.Disposition == schema.Answered })) {
			t.Fatalf("report: %d suppliers, %d calls, %d answered", len(got), calls, answered)
		}
		out, err = carrier(append([]string{"report", "traffic", "--by", "destination", "--digits", "1"}, span...)...)
		if err != nil || !strings.Contains(out, "DESTINATION") || !strings.Contains(out, "TOTAL") {
			t.Fatalf("traffic table (%v):\n%s", err, out)
		}
		hourly, err := carrier(append([]string{"report", "asr", "--by", "supplier", "-o", "json", "--hourly"}, span...)...)
		if err != nil {
			t.Fatal(err, hourly)
		}
		if hourly != out0 {
			t.Fatalf("--hourly:\n%s\nwant\n%s", hourly, out0)
		}
		if _, err := carrier("report", "asr", "--hourly", "--account", "acct-001"); err == nil || !strings.Contains(err.Error(), "--hourly=true") {
			t.Fatalf("--hourly with a filter: %v", err)
		}
		if _, err := carrier("report", "asr", "--by", "colour"); err == nil || !strings.Contains(err.Error(), "destination, account, supplier or gateway") {
			t.Fatalf("bad --by: %v", err)
		}
	})
}
