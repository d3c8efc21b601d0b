package schema

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParseSource(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Source
	}{
		{"203.0.113.0/24", Source{CIDR: "203.0.113.0/24"}},
		{"198.51.100.7", Source{CIDR: "198.51.100.7"}},
		{"udp:198.51.100.7:5060", Source{CIDR: "198.51.100.7", Port: 5060, Transport: "udp"}},
		{"10.0.0.0/8:5060", Source{CIDR: "10.0.0.0/8", Port: 5060}},
		{"tcp:2001:db8::/32", Source{CIDR: "2001:db8::/32", Transport: "tcp"}},
		{"tls:[2001:db8::/32]:5061", Source{CIDR: "2001:db8::/32", Port: 5061, Transport: "tls"}},
		{"[2001:db8::1]", Source{CIDR: "2001:db8::1"}},
	} {
		got, err := ParseSource(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSource(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			continue
		}
		back, err := ParseSource(got.String())
		if err != nil || back != got {
			t.Errorf("%q: String %q reads back as %+v, %v", tc.in, got.String(), back, err)
		}
	}
	for _, bad := range []string{"", "10.0.0.0/33", "udp:", "example.com", "10.0.0.1:x", "10.0.0.1:70000", "sctp:10.0.0.1", "[2001:db8::1", "[2001:db8::1]5060", "fe80::1%eth0"} {
		if s, err := ParseSource(bad); !errors.Is(err, ErrInvalidObject) {
			t.Errorf("ParseSource(%q) = %+v, %v; want ErrInvalidObject", bad, s, err)
		}
	}
}

func TestSourcePrefixIsCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3/8":          "10.0.0.0/8",
		"10.1.2.3":            "10.1.2.3/32",
		"::ffff:10.1.2.3":     "10.1.2.3/32",
		"::ffff:10.0.0.0/104": "10.0.0.0/8",
		"2001:db8::1/32":      "2001:db8::/32",
	} {
		p, err := Source{CIDR: in}.Prefix()
		if err != nil || p.String() != want {
			t.Errorf("Prefix(%s) = %s, %v; want %s", in, p, err, want)
		}
	}
}

func TestObjectValidation(t *testing.T) {
	good := Trunk{ID: "acme-pbx", Account: "acme", Sources: []Source{{CIDR: "203.0.113.0/24"}}}
	for name, bad := range map[string]interface{ Validate() error }{
		"account id with a dot":   Account{ID: "a.b", Currency: "EUR"},
		"account currency":        Account{ID: "acme", Currency: "euro"},
		"account sell plan":       Account{ID: "acme", Currency: "EUR", SellPlan: "a b"},
		"trunk without sources":   Trunk{ID: "t", Account: "acme"},
		"trunk without account":   Trunk{ID: "t", Sources: good.Sources},
		"trunk source twice":      Trunk{ID: "t", Account: "acme", Sources: []Source{{CIDR: "10.0.0.1"}, {CIDR: "10.0.0.1/32"}}},
		"trunk source transport":  Trunk{ID: "t", Account: "acme", Sources: []Source{{CIDR: "10.0.0.1", Transport: "sctp"}}},
		"gateway without address": Gateway{ID: "g"},
		"gateway bad port":        Gateway{ID: "g", Address: "192.0.2.1:0"},
		"gateway transport":       Gateway{ID: "g", Address: "192.0.2.1", Transport: "tls"},
		"gateway id":              Gateway{ID: "-g", Address: "192.0.2.1"},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidObject) {
			t.Errorf("%s: Validate = %v, want ErrInvalidObject", name, err)
		}
	}
	for _, ok := range []interface{ Validate() error }{
		good,
		Account{ID: "acme", Name: "ACME", Currency: "EUR", SellPlan: "retail-eu"},
		Gateway{ID: "g", Address: "gw.example.net"},
		Gateway{ID: "g", Address: "[2001:db8::1]:5080", Transport: "tcp"},
		Gateway{ID: "g", Address: "2001:db8::1"},
	} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
	if host, port, _ := (Gateway{Address: "gw.example.net"}).HostPort(); host != "gw.example.net" || port != 5060 {
		t.Errorf("default port: %s %d", host, port)
	}
}

func TestProvisioningCheck(t *testing.T) {
	p := NewProvisioning()
	p.Accounts["acme"] = Account{ID: "acme", Currency: "EUR"}
	p.Trunks["a"] = Trunk{ID: "a", Account: "acme", Sources: []Source{{CIDR: "10.0.0.0/8"}}}
	p.Trunks["b"] = Trunk{ID: "b", Account: "acme", Sources: []Source{{CIDR: "10.1.2.3/8"}, {CIDR: "10.0.0.0/8", Port: 5060}}}
	p.Trunks["c"] = Trunk{ID: "c", Account: "nobody", Sources: []Source{{CIDR: "192.0.2.1"}}}
	err := p.Check()
	if !errors.Is(err, ErrInvalidObject) {
		t.Fatalf("Check = %v", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "trunk b: source 10.0.0.0/8 is trunk a's already") || !strings.Contains(msg, `trunk c: account "nobody" does not exist`) || strings.Contains(msg, "5060") {
		t.Errorf("Check = %v", err)
	}
	delete(p.Trunks, "c")
	p.Trunks["b"] = Trunk{ID: "b", Account: "acme", Sources: []Source{{CIDR: "10.0.0.0/8", Port: 5060}}}
	if err := p.Check(); err != nil {
		t.Errorf("a port makes another source: %v", err)
	}
}

func TestProvisionSetMerge(t *testing.T) {
	current := NewProvisioning()
	current.Accounts["acme"] = Account{ID: "acme", Currency: "EUR"}
	current.Trunks["old"] = Trunk{ID: "old", Account: "acme", Sources: []Source{{CIDR: "192.0.2.0/24"}}}
	set := ProvisionSet{
		Accounts: []Account{{ID: "beta", Currency: "USD"}},
		Trunks: []Trunk{
			{ID: "beta-pbx", Account: "beta", Sources: []Source{{CIDR: "198.51.100.0/24"}}},
			{ID: "acme-2", Account: "acme", Sources: []Source{{CIDR: "203.0.113.1"}}},
		},
		Gateways: []Gateway{{ID: "gw", Address: "192.0.2.200"}},
	}
	next, err := set.Merge(current)
	if err != nil {
		t.Fatal(err)
	}
	if len(next.Trunks) != 3 || len(next.Accounts) != 2 || len(next.Gateways) != 1 || len(current.Trunks) != 1 {
		t.Errorf("merged %+v (current %+v)", next, current)
	}

	bad := ProvisionSet{
		Accounts: []Account{{ID: "beta", Currency: "usd"}},
		Trunks: []Trunk{
			{ID: "x", Account: "acme", Sources: []Source{{CIDR: "192.0.2.0/24"}}},
			{ID: "x", Account: "acme", Sources: []Source{{CIDR: "10.0.0.1"}}},
			{ID: "y", Account: "ghost", Sources: []Source{{CIDR: "10.0.0.2"}}},
		},
	}
	_, err = bad.Merge(current)
	if !errors.Is(err, ErrInvalidObject) {
		t.Fatalf("Merge = %v", err)
	}
	for _, want := range []string{
		"accounts[0] (beta): account beta: currency",
		"trunks[1] (x): trunk x is also trunks[0]",
		"trunks[0] (x): trunk x: source 192.0.2.0/24 is trunk old's already",
		`trunks[2] (y): trunk y: account "ghost" does not exist`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Merge error lacks %q:\n%v", want, err)
		}
	}
}

func TestProvisioningKeysAndJSON(t *testing.T) {
	if k := KindTrunk.Key("acme-pbx"); k != "trunk.acme-pbx" {
		t.Errorf("key %s", k)
	}
	if kind, id, ok := ParseKey("gateway.carrier-a"); !ok || kind != KindGateway || id != "carrier-a" {
		t.Errorf("ParseKey = %s %s %v", kind, id, ok)
	}
	for _, bad := range []string{"registration.x", "trunk", "trunk.a.b", "trunk."} {
		if _, _, ok := ParseKey(bad); ok {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
	b, err := json.Marshal(Trunk{ID: "t", Account: "acme", Sources: []Source{{CIDR: "10.0.0.1", Port: 5060, Transport: "udp"}}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"id":"t","account":"acme","sources":[{"cidr":"10.0.0.1","port":5060,"transport":"udp"}]}`; string(b) != want {
		t.Errorf("trunk JSON %s, want %s", b, want)
	}
}

func TestRouteValidation(t *testing.T) {
	for name, bad := range map[string]Route{
		"no gateways":          {ID: "r"},
		"prefix not digits":    {ID: "r", Prefix: "44x", Gateways: []string{"g"}},
		"prefix plus inside":   {ID: "r", Prefix: "4+4", Gateways: []string{"g"}},
		"gateway twice":        {ID: "r", Gateways: []string{"g", "g"}},
		"gateway id":           {ID: "r", Gateways: []string{"g.1"}},
		"mode":                 {ID: "r", Gateways: []string{"g"}, Mode: "random"},
		"weights when ordered": {ID: "r", Gateways: []string{"g"}, Weights: []int{1}},
		"weights count":        {ID: "r", Gateways: []string{"g", "h"}, Mode: RouteWeighted, Weights: []int{1}},
		"weight zero":          {ID: "r", Gateways: []string{"g", "h"}, Mode: RouteWeighted, Weights: []int{1, 0}},
		"max attempts":         {ID: "r", Gateways: []string{"g"}, MaxAttempts: -1},
		"id":                   {ID: "", Gateways: []string{"g"}},
	} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalidObject) {
			t.Errorf("%s: Validate = %v, want ErrInvalidObject", name, err)
		}
	}
	for _, ok := range []Route{
		{ID: "default", Gateways: []string{"g"}},
		{ID: "uk", Prefix: "+44", Gateways: []string{"g", "h"}, MaxAttempts: 2},
		{ID: "w", Prefix: "1", Gateways: []string{"g", "h"}, Mode: RouteWeighted, Weights: []int{3, 1}},
		{ID: "w2", Gateways: []string{"g", "h"}, Mode: RouteWeighted},
	} {
		if err := ok.Validate(); err != nil {
			t.Errorf("%+v: %v", ok, err)
		}
	}
}

func TestRouteCheckAndMerge(t *testing.T) {
	current := NewProvisioning()
	current.Gateways["a"] = Gateway{ID: "a", Address: "192.0.2.1"}
	current.Routes["uk"] = Route{ID: "uk", Prefix: "44", Gateways: []string{"a"}}
	set := ProvisionSet{
		Gateways: []Gateway{{ID: "b", Address: "192.0.2.2"}},
		Routes: []Route{
			{ID: "uk2", Prefix: "+44", Gateways: []string{"b"}},
			{ID: "us", Prefix: "1", Gateways: []string{"a", "ghost"}},
			{ID: "default", Gateways: []string{"a", "b"}},
		},
	}
	_, err := set.Merge(current)
	if !errors.Is(err, ErrInvalidObject) {
		t.Fatalf("Merge = %v", err)
	}
	for _, want := range []string{
		`routes[0] (uk2): route uk2: prefix "+44" is route uk's already`,
		`routes[1] (us): route us: gateway "ghost" does not exist`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Merge error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "default") {
		t.Errorf("the good route is reported: %v", err)
	}
	set.Routes = set.Routes[2:]
	next, err := set.Merge(current)
	if err != nil {
		t.Fatal(err)
	}
	if len(next.Routes) != 2 || len(current.Routes) != 1 || set.Len() != 2 {
		t.Errorf("merged routes %v", next.Routes)
	}
	if got := next.RoutesUsing("b"); len(got) != 1 || got[0] != "default" {
		t.Errorf("RoutesUsing(b) = %v", got)
	}
	if err := next.Check(); err != nil {
		t.Errorf("Check = %v", err)
	}
	if k, id, ok := ParseKey(KindRoute.Key("uk")); !ok || k != KindRoute || id != "uk" {
		t.Errorf("ParseKey route: %v %v %v", k, id, ok)
	}
}
