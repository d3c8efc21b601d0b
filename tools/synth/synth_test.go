package synth_test

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/synth"
)

func TestSameSeedSameCDRs(t *testing.T) {
	a, b := synth.New(synth.Config{Seed: 42}), synth.New(synth.Config{Seed: 42})
	other := synth.New(synth.Config{Seed: 43})
	same := true
	for range 100 {
		x, y := a.Next(), b.Next()
		if !reflect.DeepEqual(x, y) {
			t.Fatalf("seed 42 gave %+v and %+v", x, y)
		}
		if reflect.DeepEqual(x, other.Next()) {
			continue
		}
		same = false
	}
	if same {
		t.Fatal("seeds 42 and 43 gave the same CDRs")
	}
}

// TestTrafficIsPlausible checks the properties load and query tests rely
// on: every CDR is consistent, and the mix looks like a carrier's.
func TestTrafficIsPlausible(t *testing.T) {
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	g := synth.New(synth.Config{Seed: 1, Start: start, Span: time.Hour, Accounts: 10})
	const n = 20000
	disp := map[schema.Disposition]int{}
	accounts := map[string]int{}
	ids := map[string]bool{}
	var durationMs int64
	for range n {
		c := g.Next()
		if ids[c.ID] || c.ID != schema.CDRID(c.CallID, c.FromTag) {
			t.Fatalf("id %s repeated or not derived from the Call-ID", c.ID)
		}
		ids[c.ID] = true
		disp[c.Disposition]++
		accounts[c.Account]++
		last := c.Attempts[len(c.Attempts)-1]
		switch {
		case c.InviteAt < schema.Millis(start) || c.InviteAt >= schema.Millis(start.Add(time.Hour)):
			t.Fatalf("INVITE at %d outside the span", c.InviteAt)
		case last.Gateway != c.Gateway || last.Supplier != c.Supplier || last.Status != c.Status:
			t.Fatalf("CDR accounted on %s/%d, last attempt %s/%d", c.Gateway, c.Status, last.Gateway, last.Status)
		case c.Disposition == schema.Answered && (c.AnswerAt <= c.InviteAt || c.EndAt != c.AnswerAt+c.DurationMs || c.BillableSec != schema.BillableSeconds(c.DurationMs)):
			t.Fatalf("answered CDR with inconsistent times: %+v", c)
		case c.Disposition != schema.Answered && (c.DurationMs != 0 || c.AnswerAt != 0):
			t.Fatalf("unanswered CDR with a duration: %+v", c)
		case c.PDDMs != 0 && c.PDDMs != c.ProvisionalAt-c.InviteAt:
			t.Fatalf("PDD %d, provisional after %d", c.PDDMs, c.ProvisionalAt-c.InviteAt)
		case len(c.CalleeE164) < 10:
			t.Fatalf("callee %q too short", c.CalleeE164)
		}
		durationMs += c.DurationMs
	}
	asr := float64(disp[schema.Answered]) / n
	if asr < 0.35 || asr > 0.6 {
		t.Errorf("ASR %.2f, want a carrier's 0.35-0.6", asr)
	}
	for _, d := range []schema.Disposition{schema.Busy, schema.NoAnswer, schema.Cancelled, schema.Failed, schema.Congestion} {
		if disp[d] == 0 {
			t.Errorf("no %s calls", d)
		}
	}
	acd := float64(durationMs) / float64(disp[schema.Answered]) / 1000
	if math.Abs(acd-180) > 15 {
		t.Errorf("ACD %.0f s, want about the 180 s mean", acd)
	}
	if len(accounts) != 10 || accounts["acct-001"] < 3*accounts["acct-010"] {
		t.Errorf("accounts %v: want all 10, the first much bigger than the last", accounts)
	}
}

// TestRateIsConsistent checks the synthetic deck: exact amounts that add
// up, per-second prices, a rerate that changes the sell price only, and
// unrated calls where the deck has no rate.
func TestRateIsConsistent(t *testing.T) {
	g := synth.New(synth.Config{Seed: 5, Accounts: 8})
	var rated, unrated, currencies = 0, 0, map[string]bool{}
	for range 5000 {
		c := g.Next()
		rc := synth.Rate(c, 0)
		currencies[rc.Currency] = true
		if rc.CDR.ID != c.ID || rc.Run != 0 || rc.RatedAt <= c.EndAt {
			t.Fatalf("rating of %s: %+v", c.ID, rc)
		}
		if rc.Status == schema.StatusUnrated {
			unrated++
			if rc.Reason != schema.UnratedNoRate || rc.SellCost != "" || rc.Sell != nil {
				t.Fatalf("unrated %+v", rc)
			}
			continue
		}
		rated++
		sell, buy, margin := schema.MustParseMoney(rc.SellCost), schema.MustParseMoney(rc.BuyCost), schema.MustParseMoney(rc.Margin)
		if margin != sell-buy || buy > sell || sell < 0 || rc.Sell.Cost != rc.SellCost || rc.Buy.Cost != rc.BuyCost {
			t.Fatalf("sell %s, buy %s, margin %s", sell, buy, margin)
		}
		if c.Disposition != schema.Answered && sell != 0 {
			t.Fatalf("unanswered call priced %s", sell)
		}
		if c.Disposition == schema.Answered {
			if rc.Sell.BilledSeconds != c.BillableSec || sell != schema.MustParseMoney(rc.Sell.Rate)/60*schema.Money(c.BillableSec) {
				t.Fatalf("sell %s for %d s at %s/min", sell, c.BillableSec, rc.Sell.Rate)
			}
			re := synth.Rate(c, 10)
			if c.BillableSec > 0 && (schema.MustParseMoney(re.SellCost) != sell*110/100 || re.BuyCost != rc.BuyCost) {
				t.Fatalf("rerate run 10: sell %s buy %s, was %s %s", re.SellCost, re.BuyCost, rc.SellCost, rc.BuyCost)
			}
		}
	}
	if rated == 0 || unrated == 0 || !currencies["EUR"] || !currencies["USD"] {
		t.Fatalf("%d rated, %d unrated, currencies %v: want both kinds and EUR and USD", rated, unrated, currencies)
	}
}
