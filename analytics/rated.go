package analytics

import (
	"errors"
	"fmt"
	"math"

	"github.com/carrier-core/carrier/schema"
)

// ErrBadRating: a rated CDR this package cannot store (an amount that is
// not a decimal, a run out of range). The sink leaves such an event out
// and counts it.
var ErrBadRating = errors.New("invalid rated CDR")

// VersionRated is the version of a CDR priced by rating run run (0 the
// rater's own, a rerate's run otherwise; rerates number their runs by
// their start time, so a later rerate has a higher run). It is above
// VersionUnrated, so that a rating replaces the CDR as the correlator
// finished it whichever of the two the sink sees first, and it grows with
// the run, so that a rerate replaces the rating it corrects and an older
// rating delivered late does not come back. A redelivered rating has the
// same version and the same values, and changes nothing.
func VersionRated(run uint64) (uint64, error) {
	if run > math.MaxUint64-2 {
		return 0, fmt.Errorf("rating run %d too large: %w", run, ErrBadRating)
	}
	return run + 2, nil
}

// Rating is the price of a CDR, from its latest rating. The zero Rating
// is a CDR not rated yet.
type Rating struct {
	// Status is schema.StatusRated or schema.StatusUnrated; "" until the
	// CDR is rated. Reason says why an unrated CDR was not priced,
	// BuyReason why an existing buy plan did not price the call.
	Status    schema.RatingStatus `json:"status,omitempty"`
	Reason    string              `json:"reason,omitempty"`
	BuyReason string              `json:"buy_reason,omitempty"`
	// Run is the rating's run (0 the rater's own); RatedAt when it was
	// priced, in epoch ms.
	Run     uint64 `json:"run,omitempty"`
	RatedAt int64  `json:"rated_at,omitempty"`
	// Currency is the account's; Sell, Buy and Margin are in it. An
	// amount the rating did not know (no buy price) is 0.
	Currency string       `json:"currency,omitempty"`
	Sell     schema.Money `json:"sell"`
	Buy      schema.Money `json:"buy"`
	Margin   schema.Money `json:"margin"`
	// Destination and Prefix are what the sell plan matched; SellPlan and
	// BuyPlan the plans that priced the call.
	Destination string `json:"destination,omitempty"`
	Prefix      string `json:"prefix,omitempty"`
	SellPlan    string `json:"sell_plan,omitempty"`
	BuyPlan     string `json:"buy_plan,omitempty"`
}

// Rated reports whether the CDR was priced.
func (r Rating) Rated() bool { return r.Status == schema.StatusRated }

// RatedRecord is the cdrs row of a rated CDR (call.rated): the CDR with
// its price, at VersionRated of its run.
func RatedRecord(rc schema.RatedCDR) (CDRRecord, error) {
	c := rc.CDR
	if c.ID == "" {
		c.ID = schema.CDRID(c.CallID, c.FromTag)
	}
	v, err := VersionRated(rc.Run)
	if err != nil {
		return CDRRecord{}, fmt.Errorf("cdr %s: %w", c.ID, err)
	}
	r := Rating{
		Status: rc.Status, Reason: rc.Reason, BuyReason: rc.BuyReason,
		Run: rc.Run, RatedAt: rc.RatedAt, Currency: rc.Currency,
	}
	for _, a := range []struct {
		name string
		text string
		to   *schema.Money
	}{{"sell_cost", rc.SellCost, &r.Sell}, {"buy_cost", rc.BuyCost, &r.Buy}, {"margin", rc.Margin, &r.Margin}} {
		if a.text == "" {
			continue
		}
		m, err := schema.ParseMoney(a.text)
		if err != nil {
			return CDRRecord{}, fmt.Errorf("cdr %s: %s: %w: %w", c.ID, a.name, err, ErrBadRating)
		}
		*a.to = m
	}
	if rc.Sell != nil {
		r.Destination, r.Prefix, r.SellPlan = rc.Sell.Destination, rc.Sell.Prefix, rc.Sell.Plan
	}
	if rc.Buy != nil {
		r.BuyPlan = rc.Buy.Plan
	}
	return CDRRecord{CDR: c, Version: v, Rating: r}, nil
}

// ratingColumns are a Rating in the column types of the cdrs table.
type ratingColumns struct {
	status, reason, buyReason string
	run, ratedAt              uint64
	currency                  string
	sell, buy, margin         int64
	destination, prefix       string
	sellPlan, buyPlan         string
}

func (r *ratingColumns) fields() []field {
	return []field{
		{"rating_status", &r.status},
		{"rating_reason", &r.reason},
		{"buy_reason", &r.buyReason},
		{"rating_run", &r.run},
		{"rated_at", &r.ratedAt},
		{"currency", &r.currency},
		{"sell_nano", &r.sell},
		{"buy_nano", &r.buy},
		{"margin_nano", &r.margin},
		{"rated_destination", &r.destination},
		{"rated_prefix", &r.prefix},
		{"sell_plan", &r.sellPlan},
		{"buy_plan", &r.buyPlan},
	}
}

func fromRating(r Rating) ratingColumns {
	return ratingColumns{
		status: string(r.Status), reason: r.Reason, buyReason: r.BuyReason,
		run: r.Run, ratedAt: ms(r.RatedAt), currency: r.Currency,
		sell: int64(r.Sell), buy: int64(r.Buy), margin: int64(r.Margin),
		destination: r.Destination, prefix: r.Prefix, sellPlan: r.SellPlan, buyPlan: r.BuyPlan,
	}
}

func (r *ratingColumns) rating() Rating {
	return Rating{
		Status: schema.RatingStatus(r.status), Reason: r.reason, BuyReason: r.buyReason,
		Run: r.run, RatedAt: int64(r.ratedAt), Currency: r.currency,
		Sell: schema.Money(r.sell), Buy: schema.Money(r.buy), Margin: schema.Money(r.margin),
		Destination: r.destination, Prefix: r.prefix, SellPlan: r.sellPlan, BuyPlan: r.buyPlan,
	}
}

// destination is what reports group a rated call by: the sell leg's
// destination name, or its prefix when the deck names none.
func (r Rating) destination() string {
	if r.Destination != "" {
		return r.Destination
	}
	return r.Prefix
}
