package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/carrier-core/carrier/schema"
)

// TestLCRSupplierBuyPlan: with the provisioning, a gateway of a
// provisioned supplier is priced on the supplier's buy plan, not on
// "buy-<supplier>"; without it, or for a supplier that names no plan, on
// "buy-<supplier>"; a gateway without a supplier on its own plan.
func TestLCRSupplierBuyPlan(t *testing.T) {
	t.Parallel()
	book := buyBook(t, map[string]string{
		"wholesale-x": "49:0.001",
		"buy-x":       "49:0.050", // x's conventional plan: not x's once x names wholesale-x
		"buy-a":       "49:0.010",
	})
	ts := []*target{
		{gatewayHop: gatewayHop{id: "a"}, gw: schema.Gateway{ID: "a"}},
		{gatewayHop: gatewayHop{id: "gx"}, gw: schema.Gateway{ID: "gx", Supplier: "x"}},
	}
	order := func(rates BuyRates) string {
		var ids []string
		for _, x := range lcrOrder(nil, ts, "4930123", time.Now(), rates) {
			ids = append(ids, x.id)
		}
		return strings.Join(ids, " ")
	}
	withPlan := schema.NewProvisioning()
	withPlan.Suppliers["x"] = schema.Supplier{ID: "x", Currency: "EUR", BuyPlan: "wholesale-x"}
	withoutPlan := schema.NewProvisioning()
	withoutPlan.Suppliers["x"] = schema.Supplier{ID: "x", Currency: "EUR"}
	for name, tc := range map[string]struct {
		rates BuyRates
		want  string
	}{
		"supplier's buy plan":      {BookBuyRates(book, FixedProvisioning(withPlan)), "gx a"},
		"supplier without a plan":  {BookBuyRates(book, FixedProvisioning(withoutPlan)), "a gx"},
		"no provisioning loaded":   {BookBuyRates(book, FixedProvisioning(nil)), "a gx"},
		"book only, by convention": {BookBuyRates(book, nil), "a gx"},
	} {
		if got := order(tc.rates); got != tc.want {
			t.Errorf("%s: %s, want %s", name, got, tc.want)
		}
	}
	rate, ok := BookBuyRates(book, FixedProvisioning(withPlan)).BuyRate(ts[1].gw, "4930123", time.Now())
	if want, _ := schema.ParseMoney("0.001"); !ok || rate != want {
		t.Errorf("gx on wholesale-x: %s %v, want 0.001", rate, ok)
	}
}
