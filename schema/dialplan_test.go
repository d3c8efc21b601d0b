package schema

import (
	"errors"
	"strings"
	"testing"
)

func TestDialPlanValidate(t *testing.T) {
	ok := DialPlan{ID: "de", Rules: []DialRule{
		{Prefix: "00", Strip: 2, Add: "+"},
		{Regexp: `^0(\d+)$`, Replace: "+49$1", Class: "national"},
		{Number: DialCaller, Prefix: "0", Strip: 1, Add: "+49"},
		{Regexp: `^\d{1,4}$`, Reject: 484},
	}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for want, rule := range map[string]DialRule{
		`rule 2 (bad-re): regexp "^0(": error parsing regexp`: {Name: "bad-re", Regexp: "^0("},
		"rule 2: both prefix and regexp":                      {Prefix: "0", Regexp: "^0"},
		"rule 2: replace without regexp":                      {Prefix: "0", Replace: "+49"},
		"rule 2: replace with strip or add":                   {Regexp: "^0", Replace: "+49", Strip: 1},
		"rule 2: reject 486: want 484, 404, 420 or 403":       {Reject: 486},
		"rule 2: reject with a rewrite":                       {Reject: 404, Add: "1"},
		"rule 2: reason without reject":                       {Reason: "No"},
		`rule 2: number "both": want callee or caller`:        {Number: "both"},
		`rule 2: add "sip:1@x"`:                               {Add: "sip:1@x"},
		"rule 2: strip 40":                                    {Strip: 40},
		`rule 2: class "a b"`:                                 {Class: "a b"},
	} {
		d := DialPlan{ID: "de", Rules: []DialRule{ok.Rules[0], rule}}
		err := d.Validate()
		if err == nil || !strings.Contains(err.Error(), "dial plan de: "+want) || !errors.Is(err, ErrInvalidObject) {
			t.Errorf("%+v: %v, want %q", rule, err, want)
		}
	}
	if err := (DialPlan{ID: "empty"}).Validate(); err == nil {
		t.Error("a plan without rules passed")
	}
}

func TestDIDValidate(t *testing.T) {
	p := NewProvisioning()
	p.Accounts["acme"] = Account{ID: "acme", Currency: "EUR"}
	p.Trunks["pbx"] = Trunk{ID: "pbx", Account: "acme", Sources: []Source{{CIDR: "192.0.2.1"}}}
	good := DID{Number: "493012345678", OwnerKind: DIDOwnerTrunk, Owner: "pbx", DeliverTo: "192.0.2.1:5060"}
	if err := p.CheckDID(good); err != nil {
		t.Fatal(err)
	}
	for want, d := range map[string]DID{
		"want 1 to 15 digits":             {Number: "+4930", OwnerKind: DIDOwnerTrunk, Owner: "pbx", DeliverTo: "192.0.2.1"},
		`deliver to ""`:                   {Number: "4930", OwnerKind: DIDOwnerTrunk, Owner: "pbx"},
		`trunk "ghost" does not exist`:    {Number: "4930", OwnerKind: DIDOwnerTrunk, Owner: "ghost", DeliverTo: "192.0.2.1"},
		`owner kind "user"`:               {Number: "4930", OwnerKind: "user", Owner: "pbx"},
		"goes to its registered contacts": {Number: "4930", OwnerKind: DIDOwnerSubscriber, Owner: "bob", DeliverTo: "192.0.2.1"},
		`transport "tls"`:                 {Number: "4930", OwnerKind: DIDOwnerTrunk, Owner: "pbx", DeliverTo: "192.0.2.1", Transport: "tls"},
	} {
		if err := p.CheckDID(d); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want %q", d, err, want)
		}
	}
	p.DIDs[good.Number] = good
	if got := p.DIDsOf(DIDOwnerTrunk, "pbx"); len(got) != 1 || got[0] != good.Number {
		t.Errorf("DIDsOf: %v", got)
	}
}

func TestRouteLimitsValidate(t *testing.T) {
	p := NewProvisioning()
	p.Gateways["a"] = Gateway{ID: "a", Address: "192.0.2.1"}
	p.Accounts["acme"] = Account{ID: "acme", Currency: "EUR"}
	base := Route{ID: "r1", Prefix: "49", Gateways: []string{"a"}}
	p.Routes["r1"] = base
	for _, r := range []Route{
		{ID: "r2", Prefix: "49", Gateways: []string{"a"}, Accounts: []string{"acme"}},
		{ID: "r3", Prefix: "49", Gateways: []string{"a"}, Windows: []TimeWindow{{Days: "mon-fri", From: "08:00", To: "18:00"}}, TimeZone: "UTC"},
	} {
		if err := p.CheckRoute(r); err != nil {
			t.Errorf("%s: %v", r.ID, err)
		}
	}
	if err := p.CheckRoute(Route{ID: "r4", Prefix: "+49", Gateways: []string{"a"}, Mode: RouteLCR}); err == nil || !strings.Contains(err.Error(), "for the same accounts and times") {
		t.Errorf("same prefix and limits: %v", err)
	}
	for want, r := range map[string]Route{
		"weights given in lcr mode":       {ID: "x", Gateways: []string{"a"}, Mode: RouteLCR, Weights: []int{1}},
		`account "a.b"`:                   {ID: "x", Gateways: []string{"a"}, Accounts: []string{"a.b"}},
		"account acme listed twice":       {ID: "x", Gateways: []string{"a"}, Accounts: []string{"acme", "acme"}},
		`time of day "8:00-"`:             {ID: "x", Gateways: []string{"a"}, Windows: []TimeWindow{{From: "8:00-", To: "09:00"}}},
		`days "weekdays"`:                 {ID: "x", Gateways: []string{"a"}, Windows: []TimeWindow{{Days: "weekdays", From: "08:00", To: "09:00"}}},
		`time zone "Mars/Olympus"`:        {ID: "x", Gateways: []string{"a"}, Windows: []TimeWindow{{From: "08:00", To: "09:00"}}, TimeZone: "Mars/Olympus"},
		`time zone "UTC" without windows`: {ID: "x", Gateways: []string{"a"}, TimeZone: "UTC"},
	} {
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want %q", r, err, want)
		}
	}
	w, err := ParseTimeWindow("sat+sun 22:00-06:00")
	if err != nil || w != (TimeWindow{Days: "sat+sun", From: "22:00", To: "06:00"}) || w.String() != "sat+sun 22:00-06:00" {
		t.Errorf("parse: %+v %v", w, err)
	}
	if _, err := ParseTimeWindow("08:00"); err == nil {
		t.Error("a window without an end passed")
	}
}
