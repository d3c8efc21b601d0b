package proxy

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/rating"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

const deckHeader = "prefix,destination,rate,connect_fee,first_increment,next_increment,min_duration,band,tier_after,tier_rate,effective_from,effective_to\n"

// buyBook imports a deck per plan (plan -> "prefix:rate ...") into a
// rate store on a fresh NATS server and follows it into a Book.
func buyBook(t testing.TB, decks map[string]string) *rating.Book {
	t.Helper()
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	store, err := rating.NewStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	for plan, rates := range decks {
		var b strings.Builder
		b.WriteString(deckHeader)
		for r := range strings.FieldsSeq(rates) {
			prefix, rate, _ := strings.Cut(r, ":")
			fmt.Fprintf(&b, "%s,dest %s,%s,,1,1,,,,,,\n", prefix, prefix, rate)
		}
		if _, _, err := store.Import(ctx, plan, strings.NewReader(b.String()), rating.PlanSpec{}); err != nil {
			t.Fatalf("import %s: %v", plan, err)
		}
	}
	book, err := store.Follow(ctx, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	return book
}

// TestLCR: an lcr route tries the cheapest gateway first (priced by its
// supplier's plan, or its own), then the next cheapest, and gateways
// without a rate last; the attempts name the supplier the rater prices.
func TestLCR(t *testing.T) {
	t.Parallel()
	book := buyBook(t, map[string]string{
		"buy-g1":     "1:0.020 1555:0.030",
		"buy-cheapo": "1:0.010 1555:0.005", // g2's supplier
		"buy-g2":     "1:0.001",            // not used: g2's supplier has a plan
		"buy-g3":     "44:0.001",           // no rate for 1...
	})
	gws := []*testkit.SIPPhone{testkit.NewSIPPhone(t, "gw1"), testkit.NewSIPPhone(t, "gw2"), testkit.NewSIPPhone(t, "gw3")}
	pv := localProvisioning()
	for i, g := range gws {
		id := "g" + strconv.Itoa(i+1)
		pv.Gateways[id] = schema.Gateway{ID: id, Address: g.Addr}
	}
	g2 := pv.Gateways["g2"]
	g2.Supplier = "cheapo"
	pv.Gateways["g2"] = g2
	pv.Suppliers["cheapo"] = schema.Supplier{ID: "cheapo", Currency: "USD"}
	pv.Routes["lcr"] = schema.Route{ID: "lcr", Gateways: []string{"g3", "g1", "g2"}, Mode: schema.RouteLCR}
	if err := pv.Check(); err != nil {
		t.Fatal(err)
	}
	h := startProxy(t, gws[0].Addr, "udp", func(c *Config) {
		c.Provisioning = FixedProvisioning(pv)
		c.BuyRates = BookBuyRates(book, nil)
		c.Health.HoldDown = -1
	})
	alice := testkit.NewSIPPhone(t, "alice")

	// The cheapest, g2, fails with 503: the next cheapest, g1, answers.
	gws[1].SetUAS(gws[1].Reject(503, "Service Unavailable"))
	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("INVITE answered %d", res.StatusCode)
	}
	c.Ack()
	ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
	wantAttempts(t, ev, "g2:503", "g1:200")
	if ev.Attempts[0].Supplier != "cheapo" || ev.Attempts[1].Supplier != "" {
		t.Errorf("attempt suppliers %q %q", ev.Attempts[0].Supplier, ev.Attempts[1].Supplier)
	}

	// Both priced gateways fail: the one without a rate comes last.
	gws[0].SetUAS(gws[0].Reject(500, "Server Internal Error"))
	c = alice.Invite(t, h.addr, "UDP", func(r *sip.Request) { r.Recipient.User = "+12125550100" })
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("INVITE answered %d", res.StatusCode)
	}
	c.Ack()
	wantAttempts(t, h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx, "g2:503", "g1:500", "g3:200")
}

// TestLCROrder checks the order without the network: rates per number,
// equal rates and unpriced gateways in their listed order.
func TestLCROrder(t *testing.T) {
	t.Parallel()
	book := buyBook(t, map[string]string{
		"buy-a": "49:0.02 4930:0.01",
		"buy-b": "49:0.01",
		"buy-c": "49:0.01",
	})
	ts := []*target{}
	for _, id := range []string{"d", "a", "b", "c", "e"} {
		ts = append(ts, &target{gatewayHop: gatewayHop{id: id}, gw: schema.Gateway{ID: id}})
	}
	rates := BookBuyRates(book, nil)
	order := func(number string) string {
		var ids []string
		for _, x := range lcrOrder(nil, ts, number, time.Now(), rates) {
			ids = append(ids, x.id)
		}
		return strings.Join(ids, " ")
	}
	for number, want := range map[string]string{
		"4930123":  "a b c d e",
		"+4989123": "b c a d e",
		"1212":     "d a b c e",
		"not-a-no": "d a b c e",
	} {
		if got := order(number); got != want {
			t.Errorf("%s: %s, want %s", number, got, want)
		}
	}
}

// TestRouteLimits: a route for one account wins for that account only;
// a route with a time window only at those times.
func TestRouteLimits(t *testing.T) {
	t.Parallel()
	gws := []*testkit.SIPPhone{testkit.NewSIPPhone(t, "gw1"), testkit.NewSIPPhone(t, "gw2"), testkit.NewSIPPhone(t, "gw3"), testkit.NewSIPPhone(t, "gw4")}
	alice, bob := testkit.NewSIPPhone(t, "alice"), testkit.NewSIPPhone(t, "bob")
	pv := localProvisioning()
	// Alice's port is trunk acme's; every other port of 127.0.0.1 local's.
	pv.Accounts["acme"] = schema.Account{ID: "acme", Currency: "EUR"}
	pv.Trunks["acme"] = schema.Trunk{ID: "acme", Account: "acme", Sources: []schema.Source{{CIDR: "127.0.0.1", Port: alice.Port}}}
	for i, g := range gws {
		id := "g" + strconv.Itoa(i+1)
		pv.Gateways[id] = schema.Gateway{ID: id, Address: g.Addr}
	}
	now := time.Now().UTC()
	clock := func(d time.Duration) string { return now.Add(d).Format("15:04") }
	inWindow := schema.TimeWindow{From: clock(-2 * time.Hour), To: clock(2 * time.Hour)}
	outWindow := schema.TimeWindow{From: clock(3 * time.Hour), To: clock(5 * time.Hour)}
	for _, r := range []schema.Route{
		{ID: "any", Prefix: "1", Gateways: []string{"g1"}},
		{ID: "acme", Prefix: "1", Accounts: []string{"acme"}, Gateways: []string{"g2"}},
		{ID: "night", Prefix: "1555", Windows: []schema.TimeWindow{outWindow}, Gateways: []string{"g4"}},
		{ID: "acme-now", Prefix: "1555", Accounts: []string{"acme"}, Windows: []schema.TimeWindow{inWindow}, Gateways: []string{"g3"}},
	} {
		pv.Routes[r.ID] = r
	}
	if err := pv.Check(); err != nil {
		t.Fatal(err)
	}
	h := startProxy(t, gws[0].Addr, "udp", func(c *Config) { c.Provisioning = FixedProvisioning(pv) })
	for _, tc := range []struct {
		caller *testkit.SIPPhone
		number string
		want   string
	}{
		{bob, "15551234567", "g1"},   // night is out of its window, acme-now not bob's
		{alice, "15551234567", "g3"}, // acme's, and in its window
		{alice, "16661234567", "g2"}, // the longest prefix for acme
		{bob, "16661234567", "g1"},
	} {
		c := tc.caller.Invite(t, h.addr, "UDP", func(r *sip.Request) { r.Recipient.User = tc.number })
		if res := c.WaitFinal(); res.StatusCode != 200 {
			t.Fatalf("%s to %s: INVITE answered %d", tc.caller.Name, tc.number, res.StatusCode)
		}
		c.Ack()
		ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
		if len(ev.Attempts) != 1 || ev.Attempts[0].Gateway != tc.want {
			t.Errorf("%s (account %s) to %s: attempts %v, want %s", tc.caller.Name, ev.Account, tc.number, attemptsOf(ev), tc.want)
		}
	}
}

// TestRouteWindows checks windows at set times: days, wrapping past
// midnight, and the route's time zone.
func TestRouteWindows(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	l := newRouteLimits(schema.Route{TimeZone: "Europe/Berlin", Windows: []schema.TimeWindow{
		{Days: "mon-fri", From: "08:00", To: "18:00"},
		{Days: "sat", From: "22:00", To: "02:00"},
	}})
	at := func(s string) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, berlin)
		if err != nil {
			t.Fatal(err)
		}
		return v.UTC()
	}
	for when, want := range map[string]bool{
		"2026-03-02 08:00": true, // Monday
		"2026-03-02 07:59": false,
		"2026-03-06 17:59": true, // Friday
		"2026-03-06 18:00": false,
		"2026-03-07 12:00": false, // Saturday
		"2026-03-07 23:30": true,
		"2026-03-07 01:30": true, // Saturday early: the days are the instant's
		"2026-03-08 01:30": false,
	} {
		if got := l.admit("", at(when)); got != want {
			t.Errorf("%s Berlin: %v, want %v", when, got, want)
		}
	}
	acme := newRouteLimits(schema.Route{Accounts: []string{"acme"}})
	if !acme.admit("acme", time.Now()) || acme.admit("other", time.Now()) || acme.admit("", time.Now()) {
		t.Error("account limits")
	}
}

// BenchmarkLCRPlan is what an lcr route adds to an initial INVITE: the
// buy rates of its three gateways from the Book and their order.
func BenchmarkLCRPlan(b *testing.B) {
	decks := map[string]string{}
	for _, id := range []string{"a", "b", "c"} {
		var rates []string
		for i := range 2000 {
			rates = append(rates, fmt.Sprintf("%d:0.0%d", 1000+i, 10+len(id)+i%7))
		}
		decks["buy-"+id] = strings.Join(rates, " ")
	}
	rates := BookBuyRates(buyBook(b, decks), nil)
	book := &healthBook{m: map[string]*gwHealth{}, up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "up"}, []string{"gateway"})}
	r := &routeEntry{id: "r", lcr: true}
	for _, id := range []string{"a", "b", "c"} {
		r.targets = append(r.targets, &target{gatewayHop: gatewayHop{id: id}, health: book.get(id), gw: schema.Gateway{ID: id}})
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if r.planFor("+15551234567", now, rates).take(nil) == nil {
			b.Fatal("no gateway")
		}
	}
}
