package proxy

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// burst places n calls at once from phone through the proxy and returns
// them once each has its final response; answered ones are hung up.
func burst(t *testing.T, phone *testkit.SIPPhone, proxy string, n int) []*testkit.SIPCall {
	t.Helper()
	calls := make([]*testkit.SIPCall, n)
	for i := range calls {
		calls[i] = phone.Invite(t, proxy, "UDP", nil)
	}
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Go(func() { c.WaitFinal() })
	}
	wg.Wait()
	for _, c := range calls {
		if c.Final.StatusCode == 200 {
			c.Ack()
			if res := c.Bye(); res.StatusCode != 200 {
				t.Errorf("BYE answered %d", res.StatusCode)
			}
		}
	}
	return calls
}

// TestAccountCPS: calls over the account's calls per second are refused
// with the configured code and the reason in the event; the others go
// through.
func TestAccountCPS(t *testing.T) {
	t.Parallel()
	gw := testkit.NewSIPPhone(t, "gw")
	pv := localProvisioning()
	acc := pv.Accounts["local"]
	acc.CPS = 1
	pv.Accounts["local"] = acc
	h := startProxy(t, gw.Addr, "udp", func(c *Config) {
		c.Provisioning = FixedProvisioning(pv)
		c.Limits.AccountReply = 486
	})
	alice := testkit.NewSIPPhone(t, "alice")
	// One call a second: of three placed at once, at least one is over
	// (all three passing would take two seconds between them).
	answered, refused := 0, 0
	for _, c := range burst(t, alice, h.addr, 3) {
		ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
		switch c.Final.StatusCode {
		case 200:
			answered++
		case 486:
			refused++
			if ev.Status != 486 || ev.Note != noteAccountCPS || ev.Account != "local" || ev.Destination != "" || len(ev.Attempts) != 0 {
				t.Errorf("refused call's event %+v", ev)
			}
			if len(gw.Received(c.CallID)) != 0 {
				t.Errorf("refused call %s reached the gateway", c.CallID)
			}
		default:
			t.Errorf("call answered %d, want 200 or 486", c.Final.StatusCode)
		}
	}
	if answered == 0 || refused == 0 {
		t.Fatalf("%d answered, %d refused; want some of each", answered, refused)
	}
	if got := metricValue(t, h, "carrier_sip_limited_total", "scope", "account"); got != float64(refused) {
		t.Errorf("limited account %v, want %d", got, refused)
	}
}

// TestGatewayCPS: a call that finds the route's first gateway at its
// calls per second goes to the next; with no gateway left it gets 503.
func TestGatewayCPS(t *testing.T) {
	t.Parallel()
	g1 := testkit.NewSIPPhone(t, "gw1")
	g2 := testkit.NewSIPPhone(t, "gw2")
	pv := localProvisioning()
	pv.Gateways["g1"] = schema.Gateway{ID: "g1", Address: g1.Addr, CPS: 1}
	pv.Gateways["g2"] = schema.Gateway{ID: "g2", Address: g2.Addr}
	pv.Routes["both"] = schema.Route{ID: "both", Prefix: "1555", Gateways: []string{"g1", "g2"}}
	pv.Routes["only"] = schema.Route{ID: "only", Prefix: "1666", Gateways: []string{"g1"}}
	if err := pv.Check(); err != nil {
		t.Fatal(err)
	}
	h := startProxy(t, g1.Addr, "udp", func(c *Config) { c.Provisioning = FixedProvisioning(pv) })
	alice := testkit.NewSIPPhone(t, "alice")

	// Every call is answered, and at least one by g2 without trying g1.
	skipped := 0
	for _, c := range burst(t, alice, h.addr, 3) {
		if c.Final.StatusCode != 200 {
			t.Fatalf("call answered %d, want 200 from one gateway or the other", c.Final.StatusCode)
		}
		ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
		switch got := attemptsOf(ev); {
		case len(got) == 1 && got[0] == "g2:200":
			skipped++
			if len(ev.Skipped) != 1 || ev.Skipped[0] != (schema.SkippedGateway{Gateway: "g1", Reason: schema.SkipCPS}) {
				t.Errorf("call %s skipped %+v, want g1 for its cps", c.CallID, ev.Skipped)
			}
			if len(g1.Received(c.CallID)) != 0 {
				t.Errorf("call %s skipped g1 but reached it", c.CallID)
			}
		case len(got) == 1 && got[0] == "g1:200":
		default:
			t.Errorf("attempts %v", got)
		}
	}
	if skipped == 0 {
		t.Fatal("no call skipped the gateway at its limit")
	}

	// The route with g1 alone: over its limit nothing is left.
	refused := 0
	for range 3 {
		c := alice.Invite(t, h.addr, "UDP", func(req *sip.Request) {
			req.Recipient.User = "16660000"
		})
		switch c.WaitFinal().StatusCode {
		case 200:
			c.Ack()
			c.Bye()
		case 503:
			refused++
			ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
			if ev.Note != noteGatewaysBusy || len(ev.Attempts) != 0 || len(ev.Skipped) != 1 || ev.Skipped[0].Reason != schema.SkipCPS {
				t.Errorf("503 event %+v", ev)
			}
		default:
			t.Fatalf("call answered %d", c.Final.StatusCode)
		}
	}
	if refused == 0 {
		t.Fatal("no call refused with g1 at its limit and no other gateway")
	}
	if got := metricValue(t, h, "carrier_sip_limited_total", "scope", "gateway"); got < float64(skipped+refused) {
		t.Errorf("limited gateway %v, want at least %d", got, skipped+refused)
	}
}

func TestCPSBucket(t *testing.T) {
	var b cpsBucket
	now := time.Unix(1000, 0).UnixNano()
	if !b.take(now) {
		t.Fatal("a bucket without a rate refused")
	}
	b.setRate(2)
	for i := range 2 {
		if !b.take(now) {
			t.Fatalf("call %d of the first second refused", i+1)
		}
	}
	if b.take(now) {
		t.Fatal("third call of the second passed at 2 cps")
	}
	if b.take(now + int64(400*time.Millisecond)) {
		t.Fatal("call after 0.4s passed: 0.8 calls refilled")
	}
	if !b.take(now + int64(500*time.Millisecond)) {
		t.Fatal("call after 0.5s refused: one call refilled")
	}
	// A long quiet spell refills the bucket only to one second's worth.
	later := now + int64(time.Hour)
	for i := range 2 {
		if !b.take(later) {
			t.Fatalf("call %d after an hour refused", i+1)
		}
	}
	if b.take(later) {
		t.Fatal("burst over one second's worth passed")
	}
}

func TestCallCounter(t *testing.T) {
	c := callCounter{n: map[string]int{}}
	keys, max := []string{"acme", "gw:g1"}, []int{2, 0}
	r1, ok1 := c.acquire(keys, max)
	r2, ok2 := c.acquire(keys, max)
	if !ok1 || !ok2 {
		t.Fatal("calls under the limit refused")
	}
	if _, ok := c.acquire(keys, max); ok {
		t.Fatal("third call of an account limited to two passed")
	}
	if got := c.inProgress("gw:g1"); got != 2 {
		t.Fatalf("gateway count %d, want 2 (a refused call takes no slot)", got)
	}
	r1()
	r1() // a second release is a no-op
	if got := c.inProgress("acme"); got != 1 {
		t.Fatalf("account count %d after one release, want 1", got)
	}
	if _, ok := c.acquire(keys, max); !ok {
		t.Fatal("call refused after a slot was released")
	}
	r2()
}

// TestLimitsValidation: limits are checked where they are set.
func TestLimitsValidation(t *testing.T) {
	for _, cps := range []int{-1, schema.MaxCPS + 1} {
		a := schema.Account{ID: "acme", Currency: "EUR", CPS: cps}
		if err := a.Validate(); !errors.Is(err, schema.ErrInvalidObject) {
			t.Errorf("account cps %d: %v", cps, err)
		}
		g := schema.Gateway{ID: "g", Address: "192.0.2.1", CPS: cps}
		if err := g.Validate(); !errors.Is(err, schema.ErrInvalidObject) {
			t.Errorf("gateway cps %d: %v", cps, err)
		}
	}
	base := Config{Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}}, Gateway: "127.0.0.1:5070"}
	for name, tune := range map[string]func(*Config){
		"reply 404":       func(c *Config) { c.Limits.AccountReply = 404 },
		"flood threshold": func(c *Config) { c.Flood.Threshold = -1 },
		"flood window":    func(c *Config) { c.Flood = Flood{Threshold: 10, Window: -time.Second} },
	} {
		cfg := base
		tune(&cfg)
		if _, err := New(cfg, newCollector()); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig", name, err)
		}
	}
}

// TestSupplierMaxCalls: a supplier's calls in progress count across all
// its gateways; at its limit the hunt passes over every one of them.
func TestSupplierMaxCalls(t *testing.T) {
	t.Parallel()
	g1, g2, g3 := testkit.NewSIPPhone(t, "gw1"), testkit.NewSIPPhone(t, "gw2"), testkit.NewSIPPhone(t, "gw3")
	for _, g := range []*testkit.SIPPhone{g1, g2, g3} {
		g.SetUAS(g.Answer(false))
	}
	pv := localProvisioning()
	pv.Suppliers["big"] = schema.Supplier{ID: "big", Currency: "USD", MaxCalls: 1}
	pv.Suppliers["small"] = schema.Supplier{ID: "small", Currency: "USD"}
	pv.Gateways["g1"] = schema.Gateway{ID: "g1", Address: g1.Addr, Supplier: "big"}
	pv.Gateways["g2"] = schema.Gateway{ID: "g2", Address: g2.Addr, Supplier: "big"}
	pv.Gateways["g3"] = schema.Gateway{ID: "g3", Address: g3.Addr, Supplier: "small"}
	pv.Routes["all"] = schema.Route{ID: "all", Prefix: "1555", Gateways: []string{"g1", "g2", "g3"}}
	if err := pv.Check(); err != nil {
		t.Fatal(err)
	}
	h := startProxy(t, g1.Addr, "udp", func(c *Config) { c.Provisioning = FixedProvisioning(pv) })
	alice := testkit.NewSIPPhone(t, "alice")
	to := func(req *sip.Request) { req.Recipient.User = "15550001" }

	first := alice.Invite(t, h.addr, "UDP", to)
	if res := first.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("first call: %d", res.StatusCode)
	}
	first.Ack()
	second := alice.Invite(t, h.addr, "UDP", to)
	if res := second.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("second call: %d", res.StatusCode)
	}
	second.Ack()
	ev := h.ev.wait(t, "second INVITE", of(second.CallID, sip.INVITE)).tx
	want := []schema.SkippedGateway{
		{Gateway: "g1", Supplier: "big", Reason: schema.SkipSupplierCalls},
		{Gateway: "g2", Supplier: "big", Reason: schema.SkipSupplierCalls},
	}
	if got := attemptsOf(ev); !slices.Equal(got, []string{"g3:200"}) || !slices.Equal(ev.Skipped, want) {
		t.Fatalf("second call: attempts %v skipped %+v; want g3 after %+v", got, ev.Skipped, want)
	}
	first.Bye()
	second.Bye()
	waitMetric(t, h, "carrier_sip_active_calls", 0)
	if n := h.p.cfg.guards.limits.calls.inProgress("supplier:big"); n != 0 {
		t.Fatalf("supplier big has %d calls in progress after both ended", n)
	}
}
