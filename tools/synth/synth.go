// Package synth generates synthetic CDRs that look like a wholesale
// carrier's traffic, for load and query tests of package analytics.
//
// The traffic is a mix of destinations (country codes weighted by share,
// each with its own answer-seizure ratio), accounts of very different
// sizes, gateways of three suppliers with some failover, dispositions in
// realistic proportions and call durations that are mostly short with a
// long tail (exponential). A Generator with the same Config yields the
// same CDRs, so a test or a benchmark can be repeated exactly. Rate prices
// them with a deterministic deck, as the rater would, so that loads carry
// revenue, cost and margin too.
package synth

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/schema"
)

// Config shapes the traffic. Zero fields take the defaults noted.
type Config struct {
	// Seed makes the sequence; the same seed gives the same CDRs.
	Seed uint64
	// Start and Span bound the INVITE times, [Start, Start+Span);
	// default one day from 2026-11-01 UTC.
	Start time.Time
	Span  time.Duration
	// Accounts is how many customer accounts carry the traffic (default
	// 20); account i has a share proportional to 1/i (a few big
	// customers, many small ones).
	Accounts int
	// MeanDuration is the mean of an answered call's duration (default
	// three minutes).
	MeanDuration time.Duration
}

// destination is a country code, its share of the traffic, how many of
// its calls are answered, and its name and sell price in the synthetic
// deck (see Rate).
type destination struct {
	prefix string
	weight float64
	asr    float64
	digits int // national number length after the prefix
	name   string
	// sellPerSec is the deck's sell price of a second in nano-units, a
	// multiple of 100 so that every price derived from it is exact; 0
	// means the deck has no rate for it.
	sellPerSec schema.Money
}

var destinations = []destination{
	{"1", 24, 0.55, 10, "USA/Canada", 200_000}, // 0.012/min
	{"44", 14, 0.50, 10, "United Kingdom", 300_000},
	{"49", 12, 0.52, 10, "Germany", 350_000},
	{"33", 8, 0.48, 9, "France", 400_000},
	{"91", 10, 0.38, 10, "India", 500_000},
	{"234", 5, 0.30, 10, "Nigeria", 0}, // not in the deck: unrated
	{"52", 5, 0.42, 10, "Mexico", 600_000},
	{"86", 5, 0.40, 11, "China", 250_000},
	{"7", 5, 0.45, 10, "Russia", 700_000},
	{"55", 6, 0.44, 11, "Brazil", 450_000},
	{"61", 6, 0.53, 9, "Australia", 550_000},
}

// gateway is a supplier's gateway; calls fail over from one to the next.
type gateway struct{ name, supplier, addr string }

// buyPercent is what each supplier charges, in percent of the sell price.
var buyPercent = map[string]int64{"sup-alpha": 70, "sup-bravo": 80, "sup-charlie": 90}

var gateways = []gateway{
	{"gw-a1", "sup-alpha", "192.0.2.11:5060"},
	{"gw-a2", "sup-alpha", "192.0.2.12:5060"},
	{"gw-b1", "sup-bravo", "198.51.100.21:5060"},
	{"gw-b2", "sup-bravo", "198.51.100.22:5060"},
	{"gw-c1", "sup-charlie", "203.0.113.31:5060"},
	{"gw-c2", "sup-charlie", "203.0.113.32:5060"},
}

// unanswered is how calls that are not answered end, with weights.
var unanswered = []struct {
	d      schema.Disposition
	status int
	reason string
	q850   int
	weight float64
}{
	{schema.Busy, 486, "Busy Here", 17, 30},
	{schema.NoAnswer, 480, "Temporarily Unavailable", 19, 30},
	{schema.Cancelled, 487, "Request Terminated", 0, 22},
	{schema.Failed, 404, "Not Found", 1, 10},
	{schema.Congestion, 503, "Service Unavailable", 34, 8},
}

// Generator yields synthetic CDRs; it is not safe for concurrent use.
type Generator struct {
	cfg      Config
	rng      *rand.Rand
	destCum  []float64
	acctCum  []float64
	dispCum  []float64
	accounts []string
	n        int
}

// New returns a Generator for cfg.
func New(cfg Config) *Generator {
	if cfg.Start.IsZero() {
		cfg.Start = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	}
	if cfg.Span <= 0 {
		cfg.Span = 24 * time.Hour
	}
	if cfg.Accounts <= 0 {
		cfg.Accounts = 20
	}
	if cfg.MeanDuration <= 0 {
		cfg.MeanDuration = 3 * time.Minute
	}
	g := &Generator{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))}
	for _, d := range destinations {
		g.destCum = cumulate(g.destCum, d.weight)
	}
	for i := 1; i <= cfg.Accounts; i++ {
		g.accounts = append(g.accounts, fmt.Sprintf("acct-%03d", i))
		g.acctCum = cumulate(g.acctCum, 1/float64(i))
	}
	for _, u := range unanswered {
		g.dispCum = cumulate(g.dispCum, u.weight)
	}
	return g
}

func cumulate(cum []float64, w float64) []float64 {
	if len(cum) > 0 {
		w += cum[len(cum)-1]
	}
	return append(cum, w)
}

// pick draws an index with the weights whose running sums are cum.
func (g *Generator) pick(cum []float64) int {
	x := g.rng.Float64() * cum[len(cum)-1]
	for i, c := range cum {
		if x < c {
			return i
		}
	}
	return len(cum) - 1
}

// Accounts lists the account names the Generator uses.
func (g *Generator) Accounts() []string { return append([]string(nil), g.accounts...) }

// Next returns the next CDR.
func (g *Generator) Next() schema.CDR {
	g.n++
	r := g.rng
	dest := destinations[g.pick(g.destCum)]
	acctIdx := g.pick(g.acctCum)
	account := g.accounts[acctIdx]

	callee := dest.prefix
	for range dest.digits {
		callee += string(rune('0' + r.IntN(10)))
	}
	received := callee
	if r.IntN(2) == 0 {
		received = "00" + callee
	}
	caller := fmt.Sprintf("4930%03d%04d", acctIdx+1, r.IntN(10000))

	callID := fmt.Sprintf("synth-%d-%d@%s", g.cfg.Seed, g.n, account)
	fromTag := fmt.Sprintf("%x", r.Uint64())
	invite := schema.Millis(g.cfg.Start) + r.Int64N(g.cfg.Span.Milliseconds())

	c := schema.CDR{
		ID: schema.CDRID(callID, fromTag), CallID: callID, FromTag: fromTag,
		Account: account, Trunk: "trunk-" + account, Source: fmt.Sprintf("10.%d.0.1:5060", acctIdx%250), Transport: "udp",
		Caller: caller, Callee: received, CallerE164: caller, CalleeE164: callee,
		InviteAt: invite, Node: "synth",
	}

	// One gateway in five fails at once (503) and the call fails over.
	first := r.IntN(len(gateways))
	at := invite + 1
	if r.IntN(5) == 0 {
		gw := gateways[first]
		end := at + 20 + r.Int64N(200)
		c.Attempts = append(c.Attempts, schema.Attempt{Gateway: gw.name, Supplier: gw.supplier, Destination: gw.addr,
			Status: 503, Reason: "Service Unavailable", Q850: 41, StartAt: at, FinalAt: end})
		first = (first + 1) % len(gateways)
		at = end + 1
	}
	gw := gateways[first]
	c.Gateway, c.Supplier = gw.name, gw.supplier
	att := schema.Attempt{Gateway: gw.name, Supplier: gw.supplier, Destination: gw.addr, StartAt: at}

	// Post-dial delay: most calls ring within 1-4 s, a tail up to ~10 s.
	pdd := 800 + int64(math.Min(r.ExpFloat64()*1500, 9000))
	answered := r.Float64() < dest.asr
	u := unanswered[g.pick(g.dispCum)]
	if !answered && (u.d == schema.Failed || u.d == schema.Congestion) {
		// Fails before anything rings.
		pdd = 0
	}
	if answered || pdd > 0 {
		att.ProvisionalAt = at + pdd
		c.ProvisionalAt, c.PDDMs = att.ProvisionalAt, att.ProvisionalAt-invite
		c.EarlyMedia = r.IntN(4) == 0
	}
	if answered {
		ring := 2000 + r.Int64N(20000)
		dur := int64(r.ExpFloat64() * float64(g.cfg.MeanDuration.Milliseconds()))
		att.Status, att.Reason, att.FinalAt = 200, "OK", att.ProvisionalAt+ring
		c.ToTag = fmt.Sprintf("%x", r.Uint32())
		c.Disposition, c.Status, c.Reason = schema.Answered, 200, "OK"
		c.AnswerAt, c.SetupMs = att.FinalAt, att.FinalAt-invite
		c.DurationMs, c.BillableSec = dur, schema.BillableSeconds(dur)
		c.EndAt = c.AnswerAt + dur
		c.HangupReason = schema.EndNormal
		c.HangupBy = schema.HangupCaller
		if r.IntN(2) == 0 {
			c.HangupBy = schema.HangupCallee
		}
	} else {
		wait := int64(50 + r.IntN(500))
		if pdd > 0 {
			wait = pdd + 3000 + r.Int64N(30000)
		}
		att.Status, att.Reason, att.Q850, att.FinalAt = u.status, u.reason, u.q850, at+wait
		c.Disposition, c.Status, c.Reason, c.Q850 = u.d, u.status, u.reason, u.q850
		c.EndAt = att.FinalAt
	}
	c.Attempts = append(c.Attempts, att)
	return c
}

// Load generates n CDRs and inserts them into database in batches of
// batch rows (default 50,000), rated by Rate (run 0) as the sink stores a
// call.rated. progress, when not nil, is told the number loaded after
// each batch.
func Load(ctx context.Context, conn driver.Conn, database string, g *Generator, n, batch int, progress func(int)) error {
	if batch <= 0 {
		batch = 50000
	}
	recs := make([]analytics.CDRRecord, 0, min(batch, n))
	for done := 0; done < n; {
		recs = recs[:0]
		for len(recs) < batch && done+len(recs) < n {
			rec, err := analytics.RatedRecord(Rate(g.Next(), 0))
			if err != nil {
				return fmt.Errorf("synth: %w", err)
			}
			recs = append(recs, rec)
		}
		if err := analytics.InsertCDRs(ctx, conn, database, recs); err != nil {
			return fmt.Errorf("synth: after %d CDRs: %w", done, err)
		}
		done += len(recs)
		if progress != nil {
			progress(done)
		}
	}
	return nil
}

// Rate prices a synthetic CDR with a simple deterministic deck, as the
// rater would publish it (schema.RatedCDR): per-second billing (1/1
// increments, no connection fee), the sell price of the callee's
// destination, the supplier's buy price a fixed percentage of it
// (buyPercent), margin the difference. A call that never connected is
// rated at zero. Rerate run run > 0 sells at (100+run)% of the deck, so
// that each rerate changes the price. Destinations without a sell price
// (Nigeria) come out unrated with reason no_rate. The account's currency
// is EUR, or USD for every fourth account (acct-004, acct-008, ...).
func Rate(c schema.CDR, run uint64) schema.RatedCDR {
	rc := schema.RatedCDR{CDR: c, Run: run, RatedAt: c.EndAt + 1000 + int64(run), Currency: Currency(c.Account)}
	var dest destination
	for _, d := range destinations {
		if len(d.prefix) > len(dest.prefix) && len(c.CalleeE164) >= len(d.prefix) && c.CalleeE164[:len(d.prefix)] == d.prefix {
			dest = d
		}
	}
	if dest.sellPerSec == 0 {
		rc.Status, rc.Reason, rc.Detail = schema.StatusUnrated, schema.UnratedNoRate, "no rate for "+c.CalleeE164
		return rc
	}
	secs := c.BillableSec
	if c.Disposition != schema.Answered {
		secs = 0
	}
	sellPerSec := dest.sellPerSec * schema.Money(100+run) / 100
	buyPerSec := dest.sellPerSec * schema.Money(buyPercent[c.Supplier]) / 100
	sell, buy := sellPerSec*schema.Money(secs), buyPerSec*schema.Money(secs)
	leg := func(plan string, perSec, cost schema.Money) *schema.RatedLeg {
		return &schema.RatedLeg{
			Plan: plan, PlanVersion: 1, Prefix: dest.prefix, Destination: dest.name,
			Rate: (perSec * 60).String(), ConnectFee: "0.00", FirstIncrement: 1, NextIncrement: 1,
			Seconds: secs, BilledSeconds: secs, Exact: cost.String(), Cost: cost.String(),
		}
	}
	rc.Status = schema.StatusRated
	rc.Sell = leg("retail-"+rc.Currency, sellPerSec, sell)
	rc.Buy = leg("buy-"+c.Supplier, buyPerSec, buy)
	rc.SellCost, rc.BuyCost, rc.Margin = sell.String(), buy.String(), (sell - buy).String()
	return rc
}

// Currency is the currency Rate gives an account's calls.
func Currency(account string) string {
	var n int
	if _, err := fmt.Sscanf(account, "acct-%d", &n); err == nil && n%4 == 0 {
		return "USD"
	}
	return "EUR"
}
