package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"reflect"
	"strconv"
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
	// Every CDR as the correlator finished it, then its rating, then a
	// rerate of every seventh: each is listed and reported at its latest
	// price.
	var all []schema.CDR
	var recs, rated, rerated []analytics.CDRRecord
	latest := map[string]analytics.CDRRecord{}
	for i := range 1500 {
		c := g.Next()
		// A class from the dial plan; every fourth call inbound to a DID
		// (its callee), every seventh one a subscriber's to another.
		c.Class, c.Direction = []string{"mobile", "fixed", "", "premium", "mobile"}[i%5], schema.Outbound
		switch {
		case i%4 == 2:
			c.DID, c.Direction = c.CalleeE164, schema.Inbound
		case i%7 == 3:
			c.Subscriber, c.Direction = "sub-"+c.Account, schema.OnNet
		}
		all = append(all, c)
		recs = append(recs, analytics.CDRRecord{CDR: c, Version: analytics.VersionUnrated})
		for _, run := range []uint64{0, 7} {
			if run == 7 && i%7 != 0 {
				continue
			}
			r, err := analytics.RatedRecord(synth.Rate(c, run))
			if err != nil {
				t.Fatal(err)
			}
			if run == 0 {
				rated = append(rated, r)
			} else {
				rerated = append(rerated, r)
			}
			latest[c.ID] = r
		}
	}
	for _, batch := range [][]analytics.CDRRecord{recs, rated, rerated} {
		if err := analytics.InsertCDRs(ctx, conn, database, batch); err != nil {
			t.Fatal(err)
		}
	}
	// The SIP transactions of one call, for cdr show: an inbound one, so
	// that it shows its DID.
	call := all[0]
	for _, a := range all {
		if a.Disposition == schema.Answered && len(a.Attempts) == 2 && a.Direction == schema.Inbound {
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
		var got []cdrListJSON
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err, out)
		}
		for _, c := range got {
			if w := latest[c.ID].Rating; c.Rating == nil || *c.Rating != w {
				t.Fatalf("CDR %s listed with rating %+v, want %+v", c.ID, c.Rating, w)
			}
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
		if h := rows[0]; strings.Join(h[len(h)-4:], ",") != "CURRENCY,SELL,BUY,MARGIN" {
			t.Fatalf("csv header %v", h)
		}
		if _, err := carrier("cdr", "list", "--disposition", "hung"); err == nil || !strings.Contains(err.Error(), "want one of answered") {
			t.Fatalf("bad disposition: %v", err)
		}
	})

	t.Run("list by call kind", func(t *testing.T) {
		var inbound schema.CDR
		for _, c := range all {
			if c.Direction == schema.Inbound {
				inbound = c
				break
			}
		}
		for _, tc := range []struct {
			args []string
			keep func(schema.CDR) bool
		}{
			{[]string{"--class", "premium"}, func(c schema.CDR) bool { return c.Class == "premium" }},
			{[]string{"--direction", "inbound"}, func(c schema.CDR) bool { return c.Direction == schema.Inbound }},
			{[]string{"--direction", "onnet,inbound", "--account", "acct-001"}, func(c schema.CDR) bool {
				return c.Account == "acct-001" && (c.Direction == schema.OnNet || c.Direction == schema.Inbound)
			}},
			{[]string{"--class", "mobile", "--direction", "outbound"}, func(c schema.CDR) bool { return c.Class == "mobile" && c.Direction == schema.Outbound }},
			{[]string{"--did", "+" + inbound.DID}, func(c schema.CDR) bool { return c.DID == inbound.DID }},
		} {
			out, err := carrier(append(append([]string{"cdr", "list", "--limit", "0", "-o", "json"}, tc.args...), span...)...)
			if err != nil {
				t.Fatal(tc.args, err, out)
			}
			var got []cdrListJSON
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatal(err, out)
			}
			for _, c := range got {
				if !tc.keep(c.CDR) {
					t.Fatalf("%v listed CDR %s: subscriber %q, class %q, did %q, direction %q", tc.args, c.ID, c.Subscriber, c.Class, c.DID, c.Direction)
				}
			}
			if n := want(tc.keep); n == 0 || len(got) != n {
				t.Fatalf("%v: listed %d CDRs, want %d", tc.args, len(got), n)
			}
		}
		if _, err := carrier("cdr", "list", "--direction", "sideways"); err == nil || !strings.Contains(err.Error(), "want one of outbound, inbound, onnet") {
			t.Fatalf("bad direction: %v", err)
		}
	})

	t.Run("show", func(t *testing.T) {
		out, err := carrier("cdr", "show", call.CallID)
		if err != nil {
			t.Fatal(err, out)
		}
		price := latest[call.ID].Rating
		for _, s := range []string{"Call-ID:", call.CallID, "ATTEMPT", call.Attempts[0].Gateway, call.Attempts[1].Gateway,
			"Service Unavailable (Q.850 41)", "METHOD", "INVITE", "BYE", "(180)",
			"Sell:", price.Sell.String() + " " + price.Currency, "Margin:", price.Margin.String(), "Destination:", price.Destination} {
			if !strings.Contains(out, s) {
				t.Errorf("cdr show lacks %q:\n%s", s, out)
			}
		}
		shown := map[string]string{}
		for _, line := range strings.Split(out, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				shown[k] = strings.TrimSpace(v)
			}
		}
		for k, v := range map[string]string{"Direction": string(call.Direction) + did(call.DID), "Class": orDash(call.Class), "Subscriber": orDash(call.Subscriber)} {
			if shown[k] != v {
				t.Errorf("cdr show: %s %q, want %q:\n%s", k, shown[k], v, out)
			}
		}
		out, err = carrier("cdr", "show", call.CallID, "-o", "json")
		if err != nil {
			t.Fatal(err, out)
		}
		var got struct {
			CDRs         []cdrJSON
			Transactions []analytics.TransactionRecord
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil || len(got.CDRs) != 1 || got.CDRs[0].ID != call.ID ||
			len(got.CDRs[0].Attempts) != 2 || len(got.Transactions) != 2 || got.Transactions[1].Method != "BYE" ||
			got.CDRs[0].Rating == nil || *got.CDRs[0].Rating != price || got.CDRs[0].Version != latest[call.ID].Version ||
			got.CDRs[0].Direction != call.Direction || got.CDRs[0].Class != call.Class || got.CDRs[0].DID != call.DID {
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
		if strings.Count(out, ",rated,") == 0 || strings.Count(out, ",unrated,no_rate,") == 0 {
			t.Fatalf("export has no rated or no unrated CDR:\n%.2000s", out)
		}
		if n == 0 || len(rows) != n+1 || strings.Join(rows[0], ",") != strings.Join(exportHeader, ",") {
			t.Fatalf("export: %d lines, want %d and the header", len(rows), n)
		}
		col := map[string]int{}
		for i, h := range rows[0] {
			col[h] = i
		}
		byID := map[string]schema.CDR{}
		for _, c := range all {
			byID[c.ID] = c
		}
		kinds := map[string]int{}
		for _, r := range rows[1:] {
			if r[24] != "gw-c1" || len(r) != len(exportHeader) {
				t.Fatalf("row %v", r)
			}
			c := byID[r[0]]
			if r[col["subscriber"]] != c.Subscriber || r[col["class"]] != c.Class || r[col["did"]] != c.DID || r[col["direction"]] != string(c.Direction) {
				t.Fatalf("row %v: want subscriber %q, class %q, did %q, direction %q", r, c.Subscriber, c.Class, c.DID, c.Direction)
			}
			kinds[r[col["direction"]]]++
			w := latest[r[0]].Rating
			if r[col["margin"]] != exportMoney(w, w.Margin) || r[col["sell"]] != exportMoney(w, w.Sell) || r[col["rated_destination"]] != w.Destination ||
				r[col["rating_run"]] != strconv.FormatUint(w.Run, 10) {
				t.Fatalf("row %v: want rating %+v", r, w)
			}
		}
		if len(kinds) != 3 {
			t.Fatalf("export has directions %v, want all three", kinds)
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
		if _, err := carrier("report", "asr", "--by", "colour"); err == nil || !strings.Contains(err.Error(), "destination, account, supplier, gateway, class or direction") {
			t.Fatalf("bad --by: %v", err)
		}
	})

	t.Run("report by class", func(t *testing.T) {
		out, err := carrier(append([]string{"report", "traffic", "--by", "class", "--direction", "outbound", "-o", "json"}, span...)...)
		if err != nil {
			t.Fatal(err, out)
		}
		var got []reportJSON
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err, out)
		}
		calls := map[string]uint64{}
		for _, r := range got {
			calls[r.Key] = r.Calls
		}
		wantCalls := map[string]uint64{}
		for _, c := range all {
			if c.Direction == schema.Outbound {
				wantCalls[c.Class]++
			}
		}
		if !reflect.DeepEqual(calls, wantCalls) || len(calls) != 4 {
			t.Fatalf("traffic by class: %v, want %v", calls, wantCalls)
		}
		out, err = carrier(append([]string{"report", "traffic", "--by", "class"}, span...)...)
		if err != nil || !strings.HasPrefix(out, "CLASS ") || !strings.Contains(out, "premium") || !strings.Contains(out, "(none)") {
			t.Fatalf("traffic table by class (%v):\n%s", err, out)
		}
		out, err = carrier(append([]string{"report", "asr", "--by", "direction", "-o", "csv"}, span...)...)
		if err != nil || !strings.HasPrefix(out, "DIRECTION,") || !strings.Contains(out, "\ninbound,") || !strings.Contains(out, "\nonnet,") {
			t.Fatalf("asr csv by direction (%v):\n%s", err, out)
		}
		if _, err := carrier(append([]string{"report", "traffic", "--by", "class", "--hourly"}, span...)...); err == nil ||
			!strings.Contains(err.Error(), "not kept by class") {
			t.Fatalf("--by class --hourly: %v", err)
		}
	})

	t.Run("margin", func(t *testing.T) {
		// The money of each currency, worked out in Go over the latest
		// ratings.
		type money struct{ revenue, cost, margin schema.Money }
		want := map[string]money{}
		for _, r := range latest {
			m := want[r.Rating.Currency]
			m.revenue += r.Rating.Sell
			m.cost += r.Rating.Buy
			m.margin += r.Rating.Margin
			want[r.Rating.Currency] = m
		}
		for _, by := range []string{"destination", "account", "supplier", "gateway"} {
			out, err := carrier(append([]string{"report", "margin", "--by", by, "-o", "json"}, span...)...)
			if err != nil {
				t.Fatal(err, out)
			}
			var rows []marginJSON
			if err := json.Unmarshal([]byte(out), &rows); err != nil {
				t.Fatal(err, out)
			}
			got := map[string]money{}
			var calls uint64
			for _, r := range rows {
				m := got[r.Currency]
				m.revenue += r.Revenue
				m.cost += r.Cost
				m.margin += r.Margin
				got[r.Currency] = m
				calls += r.Calls
				if by == "destination" && r.Rated > 0 && !strings.ContainsAny(r.Key, "abcdefghijklmnopqrstuvwxyz") {
					t.Errorf("rated calls under destination %q, want the deck's name", r.Key)
				}
			}
			if !reflect.DeepEqual(got, want) || calls != uint64(len(all)) {
				t.Fatalf("margin by %s: %d calls, money %+v, want %d calls, %+v", by, calls, got, len(all), want)
			}
			hourly, err := carrier(append([]string{"report", "margin", "--by", by, "-o", "json", "--hourly"}, span...)...)
			if err != nil || hourly != out {
				t.Fatalf("margin by %s --hourly (%v):\n%s\nwant\n%s", by, err, hourly, out)
			}
		}
		out, err := carrier(append([]string{"report", "margin", "--by", "supplier"}, span...)...)
		if err != nil || !strings.Contains(out, "MARGIN %") || strings.Count(out, "TOTAL") != len(want) {
			t.Fatalf("margin table (%v):\n%s", err, out)
		}
		out, err = carrier(append([]string{"report", "margin", "--by", "account", "-o", "csv"}, span...)...)
		if err != nil || !strings.HasPrefix(out, "ACCOUNT,CURRENCY,CALLS,ANSWERED,RATED,MINUTES,REVENUE,COST,MARGIN,MARGIN %\n") {
			t.Fatalf("margin csv (%v):\n%s", err, out)
		}
	})
}
