package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// The rater command prices a CDR from the log with a deck imported by
// `carrier rates import` and the account's provisioned sell plan.
func TestRaterRunPricesCDRs(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	deck := filepath.Join(t.TempDir(), "retail.csv")
	if err := os.WriteFile(deck, []byte("prefix,destination,rate,connect_fee,first_increment,next_increment\n4930,Germany Berlin,0.0123,0.05,30,6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runRates(t, "rates", "import", deck, "--plan", "retail", "--nats-url", n.URL); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	ps, err := eventlog.OpenProvisionStore(ctx, js, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Accounts().Put(ctx, schema.Account{ID: "acme", Currency: "EUR", SellPlan: "retail"}); err != nil {
		t.Fatal(err)
	}
	startCommand(t, "rater", "run", "--nats-url", n.URL, "--metrics-listen", "")

	// Rated CDRs are found by a rerate from the stream's time on, so the
	// call is in the past.
	answer := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	c := schema.CDR{
		ID: schema.CDRID("call-1", "tag"), CallID: "call-1", FromTag: "tag", Account: "acme",
		Callee: "004930123456", CalleeE164: "4930123456", Disposition: schema.Answered, Status: 200,
		InviteAt: schema.Millis(answer) - 2000, AnswerAt: schema.Millis(answer), EndAt: schema.Millis(answer) + 90_001, DurationMs: 90_001,
	}
	ev, err := schema.NewEnvelopeWithID(c.ID, schema.TypeCallEnded, schema.CDRVersion, schema.FromMillis(c.EndAt), "test", c)
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.Publish(ctx, js, schema.CDRSubject(schema.TypeCallEnded, c.CallID), ev); err != nil {
		t.Fatal(err)
	}

	var rc schema.RatedCDR
	eventually(t, 30*time.Second, func() error {
		stream, err := js.Stream(ctx, schema.StreamCDR)
		if err != nil {
			return err
		}
		m, err := stream.GetLastMsgForSubject(ctx, schema.RatedSubject(c.CallID))
		if err != nil {
			return fmt.Errorf("no rated CDR yet: %w", err)
		}
		env, err := schema.ParseEnvelope(m.Data)
		if err != nil {
			return err
		}
		if env.ID != schema.RatedID(c.ID, 0) {
			return fmt.Errorf("rated event id %s, want %s", env.ID, schema.RatedID(c.ID, 0))
		}
		return env.Decode(schema.TypeCallRated, schema.RatedVersion, &rc)
	})
	// 91 s on 30/6 → 96 s: 0.0123×96/60 + 0.05 = 0.06968 → 0.0697.
	if rc.Status != schema.StatusRated || rc.SellCost != "0.0697" || rc.Margin != "0.0697" || rc.Sell == nil || rc.Sell.Destination != "Germany Berlin" {
		t.Errorf("rated CDR: %+v %+v", rc, rc.Sell)
	}

	// Berlin's price doubles; a rerate of the hour publishes the difference.
	if err := os.WriteFile(deck, []byte("prefix,destination,rate,connect_fee,first_increment,next_increment\n4930,Germany Berlin,0.0246,0.05,30,6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runRates(t, "rates", "import", deck, "--plan", "retail", "--nats-url", n.URL); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	window := []string{"rates", "rerate", "--from", answer.Add(-time.Hour).Format(time.RFC3339), "--to", answer.Add(time.Hour).Format(time.RFC3339), "--nats-url", n.URL, "-o", "json", "--log-level", "error"}
	out, err := runRates(t, window...)
	var sum struct {
		Run       uint64 `json:"run"`
		Corrected int    `json:"corrected"`
		SellDelta string `json:"sell_delta"`
	}
	// 0.0246×96/60 + 0.05 = 0.08936 → 0.0894: 0.0197 more.
	if err != nil || json.Unmarshal([]byte(out), &sum) != nil || sum.Corrected != 1 || sum.SellDelta != "0.0197" || sum.Run == 0 {
		t.Fatalf("rerate: %v\n%s", err, out)
	}
	stream, err := js.Stream(ctx, schema.StreamCDR)
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, schema.RatedSubject(c.CallID))
	if err != nil {
		t.Fatal(err)
	}
	env, err := schema.ParseEnvelope(m.Data)
	if err != nil || env.ID != schema.RatedID(c.ID, sum.Run) || env.Decode(schema.TypeCallRated, schema.RatedVersion, &rc) != nil ||
		rc.SellCost != "0.0894" || rc.SellDelta != "0.0197" || rc.Replaces != schema.RatedID(c.ID, 0) {
		t.Errorf("correction %s: %+v (%v)", env.ID, rc, err)
	}
	// Nothing is left to correct.
	if out, err := runRates(t, window...); err != nil || json.Unmarshal([]byte(out), &sum) != nil || sum.Corrected != 0 {
		t.Errorf("second rerate: %v\n%s", err, out)
	}
}
