package schema

import (
	"errors"
	"strings"
	"testing"
)

func TestSupplierValidate(t *testing.T) {
	good := Supplier{ID: "telco-x", Name: "Telco X", Currency: "USD", BuyPlan: "wholesale-x", MaxCalls: 500, CPS: 20}
	if err := good.Validate(); err != nil {
		t.Fatalf("good supplier: %v", err)
	}
	for want, bad := range map[string]Supplier{
		`supplier id "a.b"`:                  {ID: "a.b", Currency: "EUR"},
		`currency "usd"`:                     {ID: "x", Currency: "usd"},
		`currency ""`:                        {ID: "x"},
		`buy plan "a b"`:                     {ID: "x", Currency: "EUR", BuyPlan: "a b"},
		"max calls -1":                       {ID: "x", Currency: "EUR", MaxCalls: -1},
		"cps -2":                             {ID: "x", Currency: "EUR", CPS: -2},
		"cps 100001":                         {ID: "x", Currency: "EUR", CPS: MaxCPS + 1},
		"max calls 100001: want 0 (no limit": {ID: "x", Currency: "EUR", MaxCalls: MaxCPS + 1},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidObject) || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want %q", bad, err, want)
		}
	}
	if got := good.BuyPlanName(); got != "wholesale-x" {
		t.Errorf("BuyPlanName = %q", got)
	}
	if got := (Supplier{ID: "telco-y"}).BuyPlanName(); got != "buy-telco-y" {
		t.Errorf("default BuyPlanName = %q", got)
	}
	p := NewProvisioning()
	p.Suppliers[good.ID] = good
	for id, want := range map[string]string{"telco-x": "wholesale-x", "other": "buy-other", "": ""} {
		if got := p.SupplierBuyPlan(id); got != want {
			t.Errorf("SupplierBuyPlan(%q) = %q, want %q", id, got, want)
		}
	}
	var none *Provisioning
	if got := none.SupplierBuyPlan("telco-x"); got != "buy-telco-x" {
		t.Errorf("nil provisioning: %q", got)
	}
	if kind, id, ok := ParseKey("supplier.telco-x"); !ok || kind != KindSupplier || id != "telco-x" {
		t.Errorf("ParseKey = %s %s %v", kind, id, ok)
	}
}

// TestGatewaySupplierMustExist: a gateway naming a supplier needs it
// provisioned, in Check, in Merge and in CheckGateway, as a trunk needs
// its account.
func TestGatewaySupplierMustExist(t *testing.T) {
	p := NewProvisioning()
	p.Gateways["g"] = Gateway{ID: "g", Address: "192.0.2.1", Supplier: "x"}
	if err := p.Check(); !errors.Is(err, ErrInvalidObject) || !strings.Contains(err.Error(), `gateway g: supplier "x" does not exist`) {
		t.Errorf("Check = %v", err)
	}
	p.Suppliers["x"] = Supplier{ID: "x", Currency: "EUR"}
	if err := p.Check(); err != nil {
		t.Errorf("Check with the supplier = %v", err)
	}

	set := ProvisionSet{Gateways: []Gateway{{ID: "g2", Address: "192.0.2.2", Supplier: "y"}}}
	if _, err := set.Merge(NewProvisioning()); err == nil || !strings.Contains(err.Error(), `gateways[0] (g2): gateway g2: supplier "y" does not exist`) {
		t.Errorf("Merge without the supplier = %v", err)
	}
	set.Suppliers = []Supplier{{ID: "y", Currency: "USD", BuyPlan: "wholesale-y"}}
	next, err := set.Merge(NewProvisioning())
	if err != nil {
		t.Fatalf("Merge with the supplier = %v", err)
	}
	if next.Suppliers["y"].BuyPlan != "wholesale-y" || next.Gateways["g2"].Supplier != "y" || set.Len() != 2 {
		t.Errorf("merged %+v", next)
	}
	bad := ProvisionSet{Suppliers: []Supplier{{ID: "y", Currency: "USD"}, {ID: "y", Currency: "EUR"}}}
	if _, err := bad.Merge(NewProvisioning()); err == nil || !strings.Contains(err.Error(), "suppliers[1] (y): supplier y is also suppliers[0]") {
		t.Errorf("Merge of a supplier given twice = %v", err)
	}
}

// network is a provisioning in which every kind of object names another.
func network() *Provisioning {
	p := NewProvisioning()
	p.Accounts["acme"] = Account{ID: "acme", Currency: "EUR"}
	p.Suppliers["x"] = Supplier{ID: "x", Currency: "USD"}
	p.Gateways["g"] = Gateway{ID: "g", Address: "192.0.2.1", Supplier: "x"}
	p.Gateways["lone"] = Gateway{ID: "lone", Address: "192.0.2.2"}
	p.DialPlans["dp"] = DialPlan{ID: "dp", Rules: []DialRule{{Prefix: "00", Strip: 2, Add: "+"}}}
	p.Trunks["t"] = Trunk{ID: "t", Account: "acme", DialPlan: "dp", Sources: []Source{{CIDR: "203.0.113.0/24"}}}
	p.Subscribers["s"] = Subscriber{ID: "s", User: "alice", Domain: "sip.example.com", Account: "acme", HA1MD5: HA1MD5("alice", "sip.example.com", "pw")}
	p.Routes["r"] = Route{ID: "r", Prefix: "49", Gateways: []string{"g"}}
	p.Routes["r-acme"] = Route{ID: "r-acme", Prefix: "44", Gateways: []string{"lone"}, Accounts: []string{"acme"}}
	p.DIDs["4930123"] = DID{Number: "4930123", OwnerKind: DIDOwnerTrunk, Owner: "t", DeliverTo: "203.0.113.5"}
	p.DIDs["4930456"] = DID{Number: "4930456", OwnerKind: DIDOwnerSubscriber, Owner: "s"}
	return p
}

func TestCheckRemove(t *testing.T) {
	p := network()
	if err := p.Check(); err != nil {
		t.Fatalf("the network fails its check: %v", err)
	}
	for _, tc := range []struct {
		kind Kind
		id   string
		want string // "" may be removed
	}{
		{KindAccount, "acme", "account acme is used by trunk t; route r-acme; subscriber s:"},
		{KindSupplier, "x", "supplier x is used by gateway g:"},
		{KindGateway, "g", "gateway g is used by route r:"},
		{KindGateway, "lone", "gateway lone is used by route r-acme:"},
		{KindDialPlan, "dp", "dialplan dp is used by trunk t:"},
		{KindTrunk, "t", "trunk t is used by did 4930123:"},
		{KindSubscriber, "s", "subscriber s is used by did 4930456:"},
		{KindRoute, "r", ""},
		{KindRoute, "r-acme", ""},
		{KindDID, "4930123", ""},
		{KindDID, "4930456", ""},
		{KindAccount, "ghost", ""},
		{KindSupplier, "ghost", ""},
	} {
		err := p.CheckRemove(tc.kind, tc.id)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("rm %s %s: %v", tc.kind, tc.id, err)
		case tc.want != "" && (!errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("rm %s %s: %v, want %q", tc.kind, tc.id, err, tc.want)
		}
	}
	// Each rule is the one add checks: the route that names the account
	// could not be added without it.
	without := network()
	delete(without.Accounts, "acme")
	if err := without.CheckRoute(p.Routes["r-acme"]); err == nil || !strings.Contains(err.Error(), `route r-acme: account "acme" does not exist`) {
		t.Errorf("route for a missing account: %v", err)
	}

	// Once its users are gone, an object may go; and a problem the
	// provisioning already had does not block a removal it has nothing
	// to do with, nor is it blamed on one.
	delete(p.Routes, "r")
	if err := p.CheckRemove(KindGateway, "g"); err != nil {
		t.Errorf("rm of a gateway no route names: %v", err)
	}
	p.Trunks["broken"] = Trunk{ID: "broken", Account: "nobody", Sources: []Source{{CIDR: "198.51.100.1"}}}
	if err := p.CheckRemove(KindSupplier, "x"); err == nil || strings.Contains(err.Error(), "broken") {
		t.Errorf("rm of a used supplier with a broken trunk about: %v", err)
	}
	if err := p.CheckRemove(KindGateway, "g"); err != nil {
		t.Errorf("rm blocked by a broken trunk: %v", err)
	}
	if err := p.CheckRemove(KindAccount, "acme"); err == nil || strings.Contains(err.Error(), "broken") {
		t.Errorf("rm of acme blames the broken trunk: %v", err)
	}
}
