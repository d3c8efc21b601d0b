package proxy

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// germany is a dial plan of a German PBX trunk: international with 00,
// national with 0, mobile classified, premium barred, short numbers
// incomplete; callers in national format get +49.
var germany = schema.DialPlan{ID: "de", Rules: []schema.DialRule{
	{Name: "intl", Prefix: "00", Strip: 2, Add: "+", Continue: true},
	{Name: "national", Regexp: `^0([1-9][0-9]{5,})$`, Replace: "+49$1", Continue: true},
	{Name: "premium", Prefix: "+49900", Reject: 403, Reason: "Premium Barred"},
	{Name: "mobile", Regexp: `^\+491[5-7]`, Class: "mobile"},
	{Name: "short", Regexp: `^[0-9]{1,5}$`, Reject: 484},
	{Name: "caller", Number: schema.DialCaller, Prefix: "0", Strip: 1, Add: "+49"},
}}

func TestDialPlanRules(t *testing.T) {
	t.Parallel()
	dp, err := compileDialPlan(germany)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in, want, class string
		reject          int
	}{
		{"0030123456", "+30123456", "", 0},
		{"030123456", "+4930123456", "", 0},
		{"01701234567", "+491701234567", "mobile", 0},
		{"0049170123", "+49170123", "mobile", 0},
		{"09001234567", "+499001234567", "", 403},
		{"112", "112", "", 484},
		{"+12125550100", "+12125550100", "", 0},
		{"abc", "abc", "", 0},
	} {
		got := run(dp.callee, tc.in)
		code := 0
		if got.reject != nil {
			code = got.reject.reject
		}
		if code != tc.reject || (code == 0 && got.number != tc.want) || got.class != tc.class {
			t.Errorf("callee %q: number %q class %q reject %d, want %q %q %d", tc.in, got.number, got.class, code, tc.want, tc.class, tc.reject)
		}
	}
	if got := run(dp.caller, "0301111"); got.number != "+49301111" {
		t.Errorf("caller: %q", got.number)
	}
	if got := run(dp.caller, "+4930"); got.number != "+4930" {
		t.Errorf("caller without a match: %q", got.number)
	}
	// A named group; a replacement of part of the number.
	dp, err = compileDialPlan(schema.DialPlan{ID: "x", Rules: []schema.DialRule{
		{Regexp: `^\*31#(?P<rest>\d+)$`, Replace: "${rest}"},
		{Regexp: `^(\d{2})-`, Replace: "${1}0"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := run(dp.callee, "*31#4930"); got.number != "4930" {
		t.Errorf("named group: %q", got.number)
	}
	if got := run(dp.callee, "49-301"); got.number != "490301" {
		t.Errorf("part of the number: %q", got.number)
	}
}

// dialPlanned starts a proxy whose local trunk has dial plan dp, with
// one gateway, gw, that every call goes to.
func dialPlanned(t *testing.T, dp schema.DialPlan, gw *testkit.SIPPhone) *harness {
	t.Helper()
	pv := localProvisioning()
	pv.DialPlans[dp.ID] = dp
	tr := pv.Trunks["local"]
	tr.DialPlan = dp.ID
	pv.Trunks["local"] = tr
	pv.Gateways["g1"] = schema.Gateway{ID: "g1", Address: gw.Addr}
	if err := pv.Check(); err != nil {
		t.Fatal(err)
	}
	return startProxy(t, gw.Addr, "udp", func(c *Config) { c.Provisioning = FixedProvisioning(pv) })
}

// TestDialPlanSIP: the gateway gets the normalised callee in the
// Request-URI and the normalised caller in From; the event keeps both
// as received and as normalised; a short number gets 484 and goes
// nowhere.
func TestDialPlanSIP(t *testing.T) {
	t.Parallel()
	gw := testkit.NewSIPPhone(t, "gw")
	h := dialPlanned(t, germany, gw)
	alice := testkit.NewSIPPhone(t, "alice")

	for dialled, want := range map[string]string{"030123456": "+4930123456", "0044201234": "+44201234", "01701234567": "+491701234567"} {
		c := alice.Invite(t, h.addr, "UDP", func(r *sip.Request) {
			r.Recipient.User = dialled
			r.From().Address.User = "0309999"
		})
		if res := c.WaitFinal(); res.StatusCode != 200 {
			t.Fatalf("%s: INVITE answered %d", dialled, res.StatusCode)
		}
		c.Ack()
		got := gw.WaitRequest(t, sip.INVITE, c.CallID, 1)
		if got.Recipient.User != want || got.From().Address.User != "+49309999" {
			t.Errorf("%s: gateway got R-URI user %q From user %q, want %q +49309999", dialled, got.Recipient.User, got.From().Address.User, want)
		}
		if to := got.To().Address.User; to != "15551234567" {
			t.Errorf("%s: To user %q changed", dialled, to)
		}
		ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
		if ev.CalleeE164 != want || ev.CallerE164 != "+49309999" || !strings.Contains(ev.RequestURI, "sip:"+dialled+"@") || !strings.Contains(ev.FromURI, "0309999@") {
			t.Errorf("%s: event ruri %q from %q callee %q caller %q", dialled, ev.RequestURI, ev.FromURI, ev.CalleeE164, ev.CallerE164)
		}
		if wantClass := map[bool]string{true: "mobile"}[strings.HasPrefix(want, "+4917")]; ev.Class != wantClass {
			t.Errorf("%s: class %q, want %q", dialled, ev.Class, wantClass)
		}
	}

	for dialled, code := range map[string]int{"112": 484, "09001234567": 403} {
		c := alice.Invite(t, h.addr, "UDP", func(r *sip.Request) { r.Recipient.User = dialled })
		res := c.WaitFinal()
		if res.StatusCode != code {
			t.Fatalf("%s: INVITE answered %d, want %d", dialled, res.StatusCode, code)
		}
		if code == 403 && res.Reason != "Premium Barred" {
			t.Errorf("%s: reason %q", dialled, res.Reason)
		}
		ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
		if ev.Status != code || ev.Note != noteDialPlanReject || len(ev.Attempts) != 0 {
			t.Errorf("%s: event %+v", dialled, ev)
		}
		if got := gw.Received(c.CallID); len(got) != 0 {
			t.Errorf("%s: the gateway got a refused call", dialled)
		}
	}
}

// TestDialPlanLive: a dial plan changed while the proxy runs applies to
// the next calls, without a restart.
func TestDialPlanLive(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	ctx := context.Background()
	store, err := eventlog.OpenProvisionStore(ctx, js, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	gw := testkit.NewSIPPhone(t, "gw")
	plan := func(add string) schema.DialPlan {
		return schema.DialPlan{ID: "p", Rules: []schema.DialRule{{Prefix: "0", Strip: 1, Add: add}}}
	}
	set := schema.ProvisionSet{
		Accounts:  []schema.Account{{ID: "local", Currency: "EUR"}},
		DialPlans: []schema.DialPlan{plan("+49")},
		Trunks:    []schema.Trunk{{ID: "local", Account: "local", DialPlan: "p", Sources: []schema.Source{{CIDR: "127.0.0.1"}}}},
		Gateways:  []schema.Gateway{{ID: "g1", Address: gw.Addr}},
	}
	if _, err := store.Apply(ctx, set); err != nil {
		t.Fatal(err)
	}
	w, err := store.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	<-w.Ready()
	h := startProxy(t, gw.Addr, "udp", func(c *Config) { c.Provisioning = w })
	alice := testkit.NewSIPPhone(t, "alice")
	call := func() string {
		c := alice.Invite(t, h.addr, "UDP", func(r *sip.Request) { r.Recipient.User = "0201234" })
		if res := c.WaitFinal(); res.StatusCode != 200 {
			t.Fatalf("INVITE answered %d", res.StatusCode)
		}
		c.Ack()
		return gw.WaitRequest(t, sip.INVITE, c.CallID, 1).Recipient.User
	}
	if got := call(); got != "+49201234" {
		t.Fatalf("before the change: %q", got)
	}
	if _, err := store.DialPlans().Put(ctx, plan("+44")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, patience, func() error {
		if got := call(); got != "+44201234" {
			return fmt.Errorf("after the change: %q", got)
		}
		return nil
	})
}
