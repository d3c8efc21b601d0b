package proxy

import (
	"time"

	"github.com/carrier-core/carrier/rating"
	"github.com/carrier-core/carrier/schema"
)

// BuyRates prices a gateway for least-cost routing: what a minute to
// number costs at that gateway at at. ok is false when the gateway has no
// rate for it. It is called on the request path, once per gateway of an
// lcr route per call, and must not block.
type BuyRates interface {
	BuyRate(gateway schema.Gateway, number string, at time.Time) (perMinute schema.Money, ok bool)
}

// BookBuyRates prices gateways from the rating Book as the rater prices
// the supplier's side of a call: on the buy plan of the gateway's
// supplier as provisioned in p (schema.Supplier.BuyPlanName, read from
// p's snapshot of the moment, so a changed plan takes effect with the
// next call; "buy-<supplier>" when p is nil or does not have it), else
// on "buy-<gateway id>" (rating.BuyPlan).
func BookBuyRates(b *rating.Book, p Provisioning) BuyRates { return bookRates{b: b, p: p} }

type bookRates struct {
	b *rating.Book
	p Provisioning // nil: suppliers' plans are "buy-<supplier>"
}

func (r bookRates) BuyRate(g schema.Gateway, number string, at time.Time) (schema.Money, bool) {
	var snap *schema.Provisioning
	if r.p != nil {
		snap = r.p.Snapshot()
	}
	plans := [2]string{snap.SupplierBuyPlan(g.Supplier)}
	if g.ID != "" {
		plans[1] = rating.BuyPlan(g.ID)
	}
	return r.planRate(plans, number, at)
}

// planRate is the rate for number at at on the first of plans that
// exists ("" is none).
func (r bookRates) planRate(plans [2]string, number string, at time.Time) (schema.Money, bool) {
	for _, plan := range plans {
		if plan == "" {
			continue
		}
		d, _, ok := r.b.DeckAt(plan, at)
		if !ok {
			continue
		}
		// The first plan that exists decides, as for the rater: a
		// supplier's deck without the destination is no rate, rather
		// than the gateway's.
		_, rate, err := d.LookupPrefix(number, at)
		return rate, err == nil
	}
	return 0, false
}

// lcrOrder appends to dst the targets cheapest first for number at now;
// equal rates keep their listed order, and targets without a rate follow
// the priced ones in their listed order.
func lcrOrder(dst, ts []*target, number string, now time.Time, rates BuyRates) []*target {
	type priced struct {
		t    *target
		rate schema.Money
		ok   bool
	}
	var buf [schema.MaxRouteGateways]priced
	ps := buf[:0]
	for _, t := range ts {
		rate, ok := rates.BuyRate(t.gw, number, now)
		ps = append(ps, priced{t, rate, ok})
	}
	// Insertion sort: stable, in place, and a route has at most 16.
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && cheaper(ps[j].rate, ps[j].ok, ps[j-1].rate, ps[j-1].ok); j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
	for _, p := range ps {
		dst = append(dst, p.t)
	}
	return dst
}

// cheaper reports whether rate a (known when aok) goes before rate b.
func cheaper(a schema.Money, aok bool, b schema.Money, bok bool) bool {
	if aok != bok {
		return aok
	}
	return aok && a < b
}
