package rating

import (
	"strings"
	"testing"
	"time"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

// TestRaterPricesSupplierBuyPlan: a provisioned supplier's calls are
// priced on the buy plan it names, not on "buy-<supplier>"; one that
// names none keeps "buy-<supplier>".
func TestRaterPricesSupplierBuyPlan(t *testing.T) {
	f := newRaterFixture(t)
	if got := (schema.Supplier{ID: "x"}).BuyPlanName(); got != BuyPlan("x") {
		t.Fatalf("a supplier without a plan is priced on %q, the rater's convention is %q", got, BuyPlan("x"))
	}
	for plan, deck := range map[string]string{
		"wholesale-x": header + "49,Germany,0.004,,1,1,,,,,,\n",
		BuyPlan("x"):  header + "49,Germany,0.500,,1,1,,,,,,\n", // x's plan by convention: not used
	} {
		if _, _, err := f.store.Import(f.ctx, plan, strings.NewReader(deck), PlanSpec{}); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := eventlog.OpenProvisionStore(f.ctx, f.js, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []schema.Supplier{
		{ID: "x", Currency: "EUR", BuyPlan: "wholesale-x"},
		{ID: "carrierA", Currency: "EUR"},
	} {
		if _, err := ps.Suppliers().Put(f.ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		p := f.watch.Snapshot()
		if _, ok := p.Suppliers["carrierA"]; ok && p.Suppliers["x"].BuyPlan == "wholesale-x" && f.book.known("wholesale-x") && f.book.known(BuyPlan("x")) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the suppliers or the decks did not arrive")
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := f.newRater(f.book, nil)

	// 90.001 s → 91 s per second: 0.004×91/60 = 0.00606… → 0.0061;
	// sell 0.0697 (see TestRaterPricesSellBuyAndUnrated).
	rc, err := r.Rate(f.ctx, call("x1", "acme", "4930123456", 90_001, "x"))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Status != schema.StatusRated || rc.Buy == nil || rc.Buy.Plan != "wholesale-x" || rc.BuyCost != "0.0061" || rc.Margin != "0.0636" {
		t.Errorf("supplier x: %+v buy %+v", rc, rc.Buy)
	}
	// A provisioned supplier that names no plan: "buy-<supplier>".
	rc, err = r.Rate(f.ctx, call("a1", "acme", "4930123456", 90_001, "carrierA"))
	if err != nil {
		t.Fatal(err)
	}
	if rc.Buy == nil || rc.Buy.Plan != BuyPlan("carrierA") || rc.BuyCost != "0.0122" {
		t.Errorf("supplier carrierA: %+v buy %+v", rc, rc.Buy)
	}
}
