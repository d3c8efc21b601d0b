package proxy

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// routedProxy starts a proxy whose provisioning has the local trunk, one
// gateway per address (g1, g2, ... in order) and the routes.
func routedProxy(t *testing.T, addrs []string, routes []schema.Route, tune func(*Config)) *harness {
	t.Helper()
	pv := localProvisioning()
	for i, a := range addrs {
		id := "g" + strconv.Itoa(i+1)
		pv.Gateways[id] = schema.Gateway{ID: id, Address: a}
	}
	for _, r := range routes {
		pv.Routes[r.ID] = r
	}
	if err := pv.Check(); err != nil {
		t.Fatal(err)
	}
	return startProxy(t, addrs[0], "udp", func(c *Config) {
		c.Provisioning = FixedProvisioning(pv)
		if tune != nil {
			tune(c)
		}
	})
}

// silentGateway is a UDP socket that never answers.
func silentGateway(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return pc.LocalAddr().String()
}

func attemptsOf(ev schema.Transaction) []string {
	var out []string
	for _, a := range ev.Attempts {
		out = append(out, a.Gateway+":"+strconv.Itoa(a.Status))
	}
	return out
}

func wantAttempts(t *testing.T, ev schema.Transaction, want ...string) {
	t.Helper()
	got := attemptsOf(ev)
	if len(got) != len(want) {
		t.Fatalf("attempts %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("attempts %v, want %v", got, want)
		}
	}
	for i, a := range ev.Attempts {
		if a.StartAt == 0 || a.FinalAt < a.StartAt || (i > 0 && a.StartAt < ev.Attempts[i-1].FinalAt) {
			t.Errorf("attempt %d times %+v", i, a)
		}
	}
}

// TestFailover: the first gateway answers 503, the second does not answer
// at all, the third answers 408, the fourth answers the call.
func TestFailover(t *testing.T) {
	busy := testkit.NewSIPPhone(t, "gw1")
	busy.SetUAS(busy.Reject(503, "Service Unavailable"))
	silent := silentGateway(t)
	slow := testkit.NewSIPPhone(t, "gw3")
	slow.SetUAS(slow.Reject(408, "Request Timeout"))
	good := testkit.NewSIPPhone(t, "gw4")
	route := schema.Route{ID: "all", Gateways: []string{"g1", "g2", "g3", "g4"}}
	h := routedProxy(t, []string{busy.Addr, silent, slow.Addr, good.Addr}, []schema.Route{route},
		func(c *Config) { c.Timers.Response = 500 * time.Millisecond })
	alice := testkit.NewSIPPhone(t, "alice")

	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("INVITE answered %d, want 200 from the fourth gateway", res.StatusCode)
	}
	c.Ack()
	good.WaitRequest(t, sip.ACK, c.CallID, 1)
	if res := c.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE answered %d", res.StatusCode)
	}
	busy.WaitRequest(t, sip.ACK, c.CallID, 1) // the 503 was acknowledged
	ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
	if ev.Status != 200 || ev.Destination != good.Addr {
		t.Errorf("event %+v", ev)
	}
	wantAttempts(t, ev, "g1:503", "g2:408", "g3:408", "g4:200")
	if got := metricValue(t, h, "carrier_sip_gateway_attempts_total", "gateway", "g1", "code", "503"); got != 1 {
		t.Errorf("g1 503 attempts %v, want 1", got)
	}
	if got := metricValue(t, h, "carrier_sip_gateway_attempts_total", "gateway", "g4", "code", "200"); got != 1 {
		t.Errorf("g4 200 attempts %v, want 1", got)
	}
	// 503 and the silence hold their gateways down; 408 from a gateway
	// that answered does not.
	if metricValue(t, h, "carrier_sip_gateway_up", "gateway", "g1") != 0 ||
		metricValue(t, h, "carrier_sip_gateway_up", "gateway", "g2") != 0 ||
		metricValue(t, h, "carrier_sip_gateway_up", "gateway", "g3") != 1 {
		t.Errorf("gateway_up g1 %v g2 %v g3 %v, want 0 0 1",
			metricValue(t, h, "carrier_sip_gateway_up", "gateway", "g1"),
			metricValue(t, h, "carrier_sip_gateway_up", "gateway", "g2"),
			metricValue(t, h, "carrier_sip_gateway_up", "gateway", "g3"))
	}
}

// TestHuntStops: 486, 404 (any 4xx but 408) and 6xx end the hunt and go
// to the caller as they are.
func TestHuntStops(t *testing.T) {
	for _, code := range []int{486, 404, 603} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			first := testkit.NewSIPPhone(t, "gw1")
			first.SetUAS(first.Reject(code, "No"))
			second := testkit.NewSIPPhone(t, "gw2")
			h := routedProxy(t, []string{first.Addr, second.Addr},
				[]schema.Route{{ID: "r", Gateways: []string{"g1", "g2"}}}, nil)
			alice := testkit.NewSIPPhone(t, "alice")
			c := alice.Invite(t, h.addr, "UDP", nil)
			if res := c.WaitFinal(); res.StatusCode != code {
				t.Fatalf("INVITE answered %d, want %d", res.StatusCode, code)
			}
			ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
			wantAttempts(t, ev, "g1:"+strconv.Itoa(code))
			if got := second.Received(c.CallID); len(got) != 0 {
				t.Errorf("second gateway got %d requests after a %d", len(got), code)
			}
		})
	}
}

// TestCancelDuringHunt: the caller cancels while the second gateway
// rings: it gets 487, the second gateway the CANCEL, the third nothing.
func TestCancelDuringHunt(t *testing.T) {
	first := testkit.NewSIPPhone(t, "gw1")
	first.SetUAS(first.Reject(500, "Server Internal Error"))
	second := testkit.NewSIPPhone(t, "gw2")
	second.SetUAS(second.RingForever())
	third := testkit.NewSIPPhone(t, "gw3")
	h := routedProxy(t, []string{first.Addr, second.Addr, third.Addr},
		[]schema.Route{{ID: "r", Gateways: []string{"g1", "g2", "g3"}}}, nil)
	alice := testkit.NewSIPPhone(t, "alice")

	c := alice.Invite(t, h.addr, "UDP", nil)
	c.WaitFor(180)
	if res := c.Cancel(); res.StatusCode != 200 {
		t.Fatalf("CANCEL answered %d", res.StatusCode)
	}
	if res := c.WaitFinal(); res.StatusCode != 487 {
		t.Fatalf("INVITE answered %d after CANCEL, want 487", res.StatusCode)
	}
	second.WaitRequest(t, sip.CANCEL, c.CallID, 1)
	ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
	if ev.Status != 487 {
		t.Errorf("event %+v", ev)
	}
	wantAttempts(t, ev, "g1:500", "g2:487")
	if got := third.Received(c.CallID); len(got) != 0 {
		t.Errorf("third gateway got %d requests after the CANCEL", len(got))
	}
}

// TestNoGatewayLeft: every gateway fails, or MaxAttempts is reached: 503
// with the note no_gateway_left, whatever the last gateway said.
func TestNoGatewayLeft(t *testing.T) {
	first := testkit.NewSIPPhone(t, "gw1")
	first.SetUAS(first.Reject(502, "Bad Gateway"))
	second := testkit.NewSIPPhone(t, "gw2")
	second.SetUAS(second.Reject(500, "Server Internal Error"))
	third := testkit.NewSIPPhone(t, "gw3")
	routes := []schema.Route{{ID: "r", Gateways: []string{"g1", "g2", "g3"}, MaxAttempts: 2}}
	h := routedProxy(t, []string{first.Addr, second.Addr, third.Addr}, routes, nil)
	alice := testkit.NewSIPPhone(t, "alice")

	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 503 {
		t.Fatalf("INVITE answered %d, want 503", res.StatusCode)
	}
	ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
	if ev.Status != 503 || ev.Note != noteNoGatewayLeft {
		t.Errorf("event %+v", ev)
	}
	wantAttempts(t, ev, "g1:502", "g2:500")
	if got := third.Received(c.CallID); len(got) != 0 {
		t.Errorf("third gateway tried beyond MaxAttempts")
	}
}

// TestLongestPrefix: the route with the longest prefix of the
// Request-URI user wins; "" is the default; no route at all falls back
// to the first gateway.
func TestLongestPrefix(t *testing.T) {
	gws := []*testkit.SIPPhone{testkit.NewSIPPhone(t, "gw1"), testkit.NewSIPPhone(t, "gw2"), testkit.NewSIPPhone(t, "gw3")}
	routes := []schema.Route{
		{ID: "default", Gateways: []string{"g3"}},
		{ID: "nanp", Prefix: "1", Gateways: []string{"g2"}},
		{ID: "nyc", Prefix: "+1212", Gateways: []string{"g1"}},
	}
	h := routedProxy(t, []string{gws[0].Addr, gws[1].Addr, gws[2].Addr}, routes, nil)
	alice := testkit.NewSIPPhone(t, "alice")
	for user, want := range map[string]string{"12125550100": "g1", "+12125550100": "g1", "15551234567": "g2", "4420": "g3", "": "g3"} {
		c := alice.Invite(t, h.addr, "UDP", func(r *sip.Request) { r.Recipient.User = user })
		if res := c.WaitFinal(); res.StatusCode != 200 {
			t.Fatalf("%q: INVITE answered %d", user, res.StatusCode)
		}
		c.Ack()
		ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
		wantAttempts(t, ev, want+":200")
	}
}

// TestWeighted: a 3:1 weighted route sends most first attempts to the
// heavier gateway, and some to the lighter one.
func TestWeighted(t *testing.T) {
	heavy, light := testkit.NewSIPPhone(t, "gw1"), testkit.NewSIPPhone(t, "gw2")
	heavy.SetUAS(heavy.Reject(486, "Busy Here"))
	light.SetUAS(light.Reject(486, "Busy Here"))
	routes := []schema.Route{{ID: "w", Gateways: []string{"g1", "g2"}, Mode: schema.RouteWeighted, Weights: []int{3, 1}}}
	h := routedProxy(t, []string{heavy.Addr, light.Addr}, routes, nil)
	alice := testkit.NewSIPPhone(t, "alice")
	const calls = 120
	first := map[string]int{}
	for range calls {
		c := alice.Invite(t, h.addr, "UDP", nil)
		c.WaitFinal()
		ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
		first[ev.Attempts[0].Gateway]++
	}
	// Binomial(120, 0.75): mean 90, sd 4.7; these bounds are 6 sd out.
	if first["g1"] < 62 || first["g1"] > 118 || first["g2"] < 2 {
		t.Errorf("first attempts %v over %d calls, want about 3:1", first, calls)
	}
}

// TestWeightedOrder checks the draw without the network: every gateway
// appears once per call, each first in proportion to its weight.
func TestWeightedOrder(t *testing.T) {
	ts := []*target{{gatewayHop: gatewayHop{id: "a"}}, {gatewayHop: gatewayHop{id: "b"}}, {gatewayHop: gatewayHop{id: "c"}}}
	firsts := map[string]int{}
	const n = 30000
	for range n {
		order := weightedOrder(nil, ts, []int{6, 3, 1})
		seen := map[string]bool{}
		for _, x := range order {
			seen[x.id] = true
		}
		if len(order) != 3 || len(seen) != 3 {
			t.Fatalf("order %v", order)
		}
		firsts[order[0].id]++
	}
	// Expected 18000, 9000, 3000; sd at most 85, bounds 8 sd out.
	for id, want := range map[string]int{"a": 18000, "b": 9000, "c": 3000} {
		if d := firsts[id] - want; d < -700 || d > 700 {
			t.Errorf("%s first %d times of %d, want about %d", id, firsts[id], n, want)
		}
	}
}

// TestHoldDown: a gateway that answered 503 is tried last until its
// hold-down is over.
func TestHoldDown(t *testing.T) {
	first := testkit.NewSIPPhone(t, "gw1")
	first.SetUAS(first.Reject(503, "Service Unavailable"))
	second := testkit.NewSIPPhone(t, "gw2")
	h := routedProxy(t, []string{first.Addr, second.Addr},
		[]schema.Route{{ID: "r", Gateways: []string{"g1", "g2"}}},
		func(c *Config) { c.Health.HoldDown = time.Hour })
	alice := testkit.NewSIPPhone(t, "alice")

	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("first call answered %d", res.StatusCode)
	}
	c.Ack()
	wantAttempts(t, h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx, "g1:503", "g2:200")

	c = alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("second call answered %d", res.StatusCode)
	}
	c.Ack()
	wantAttempts(t, h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx, "g2:200")
	if got := first.Received(c.CallID); len(got) != 0 {
		t.Errorf("held-down gateway got the second call")
	}

	// Held down is not out: when the others fail it is still tried.
	second.SetUAS(second.Reject(500, "Server Internal Error"))
	c = alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 503 {
		t.Fatalf("third call answered %d", res.StatusCode)
	}
	wantAttempts(t, h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx, "g2:500", "g1:503")
}

// TestProbe: OPTIONS probing marks a gateway that does not answer down
// (and routes around it) and one that answers up.
func TestProbe(t *testing.T) {
	dead := silentGateway(t)
	alive := testkit.NewSIPPhone(t, "gw2")
	h := routedProxy(t, []string{dead, alive.Addr},
		[]schema.Route{{ID: "r", Gateways: []string{"g1", "g2"}}},
		func(c *Config) {
			c.Health.ProbeInterval = 100 * time.Millisecond
			c.Health.ProbeTimeout = 100 * time.Millisecond
			c.Health.HoldDown = -1
		})
	deadline := time.Now().Add(patience)
	for metricValue(t, h, "carrier_sip_gateway_up", "gateway", "g1") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("silent gateway never marked down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := metricValue(t, h, "carrier_sip_gateway_up", "gateway", "g2"); got != 1 {
		t.Errorf("answering gateway up = %v, want 1", got)
	}
	alice := testkit.NewSIPPhone(t, "alice")
	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("INVITE answered %d", res.StatusCode)
	}
	c.Ack()
	wantAttempts(t, h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx, "g2:200")
}

// TestHoldDownEnds: the first look after a hold-down clears it and puts
// the up gauge back.
func TestHoldDownEnds(t *testing.T) {
	g := &gwHealth{up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "up"})}
	reg := prometheus.NewRegistry()
	reg.MustRegister(g.up)
	gauge := func() float64 {
		fs, err := reg.Gather()
		if err != nil || len(fs) != 1 {
			t.Fatalf("gather: %v", err)
		}
		return fs[0].GetMetric()[0].GetGauge().GetValue()
	}
	now := time.Now()
	g.holdUntil.Store(now.Add(time.Second).UnixNano())
	if g.healthy(now.UnixNano()) {
		t.Fatal("healthy while held down")
	}
	if !g.healthy(now.Add(2*time.Second).UnixNano()) || g.holdUntil.Load() != 0 || gauge() != 1 {
		t.Errorf("after the hold-down: hold %d up %v", g.holdUntil.Load(), gauge())
	}
	g.probeDown.Store(true)
	if g.healthy(now.UnixNano()) {
		t.Error("healthy while probed down")
	}
}

// TestStray2xxForwarded: a 2xx to an INVITE that matches no client
// transaction (a retransmission after it ended) goes on statelessly to
// the Via below the proxy's; one whose top Via is not the proxy's is
// dropped.
func TestStray2xxForwarded(t *testing.T) {
	h := startProxy(t, "127.0.0.1:9", "udp", nil)
	caller, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	gw, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	proxyAddr, err := net.ResolveUDPAddr("udp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	callerPort := caller.LocalAddr().(*net.UDPAddr).Port
	ok := func(branch string) string {
		return "SIP/2.0 200 OK\r\n" +
			"Via: SIP/2.0/UDP " + h.addr + ";branch=" + branch + "\r\n" +
			"Via: SIP/2.0/UDP 192.0.2.1:5099;branch=z9hG4bK-caller;received=127.0.0.1;rport=" + strconv.Itoa(callerPort) + "\r\n" +
			"From: <sip:alice@127.0.0.1>;tag=a1\r\nTo: <sip:15551234567@127.0.0.1>;tag=b1\r\n" +
			"Call-ID: stray-2xx@test\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@127.0.0.1:5098>\r\nContent-Length: 0\r\n\r\n"
	}
	// A branch of this proxy's run that no transaction has (any more).
	if _, err := gw.WriteTo([]byte(ok(branchPrefix+h.p.idPrefix+".zzzz")), proxyAddr); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	_ = caller.SetReadDeadline(time.Now().Add(patience))
	n, _, err := caller.ReadFrom(buf)
	if err != nil {
		t.Fatalf("caller got no forwarded 2xx: %v", err)
	}
	res, err := sip.ParseMessage(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	r, isRes := res.(*sip.Response)
	if !isRes || r.StatusCode != 200 || len(r.GetHeaders("Via")) != 1 || r.Via().Host != "192.0.2.1" {
		t.Fatalf("forwarded:\n%s", buf[:n])
	}
	waitMetric(t, h, "carrier_sip_stray_2xx_forwarded_total", 1)

	// Not the proxy's branch: dropped.
	if _, err := gw.WriteTo([]byte(ok("z9hG4bK-someone-else")), proxyAddr); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, h, "carrier_sip_stray_responses_total", 1)
	_ = caller.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, _, err := caller.ReadFrom(buf); err == nil {
		t.Errorf("a 2xx with a foreign branch was forwarded:\n%s", buf)
	}
}

// TestLiveRoute: a route written to the store while the proxy runs
// takes the next calls, without a restart.
func TestLiveRoute(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	ctx := context.Background()
	store, err := eventlog.OpenProvisionStore(ctx, js, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	first, second := testkit.NewSIPPhone(t, "gw1"), testkit.NewSIPPhone(t, "gw2")
	first.SetUAS(first.Reject(503, "Service Unavailable"))
	set := schema.ProvisionSet{
		Accounts: []schema.Account{{ID: "local", Currency: "EUR"}},
		Trunks:   []schema.Trunk{{ID: "local", Account: "local", Sources: []schema.Source{{CIDR: "127.0.0.1"}}}},
		Gateways: []schema.Gateway{{ID: "g1", Address: first.Addr}, {ID: "g2", Address: second.Addr}},
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
	h := startProxy(t, first.Addr, "udp", func(c *Config) { c.Provisioning = w })
	alice := testkit.NewSIPPhone(t, "alice")

	// No route: the first gateway by id, whose 503 goes to the caller.
	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 503 {
		t.Fatalf("without a route: %d", res.StatusCode)
	}
	wantAttempts(t, h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx, "g1:503")

	if _, err := store.Routes().Put(ctx, schema.Route{ID: "default", Gateways: []string{"g1", "g2"}}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, patience, func() error {
		c := alice.Invite(t, h.addr, "UDP", nil)
		if res := c.WaitFinal(); res.StatusCode != 200 {
			return fmt.Errorf("with the route: %d", res.StatusCode)
		}
		c.Ack()
		return nil
	})
}

// TestFailoverFromTCP: a TCP gateway nobody listens on fails over to
// the next gateway.
func TestFailoverFromTCP(t *testing.T) {
	dead := net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreeTCPPort(t)))
	good := testkit.NewSIPPhone(t, "gw2")
	pv := localProvisioning()
	pv.Gateways["g1"] = schema.Gateway{ID: "g1", Address: dead, Transport: "tcp"}
	pv.Gateways["g2"] = schema.Gateway{ID: "g2", Address: good.Addr}
	pv.Routes["r"] = schema.Route{ID: "r", Gateways: []string{"g1", "g2"}}
	h := startProxy(t, good.Addr, "udp", func(c *Config) { c.Provisioning = FixedProvisioning(pv) })
	alice := testkit.NewSIPPhone(t, "alice")
	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("INVITE answered %d", res.StatusCode)
	}
	c.Ack()
	wantAttempts(t, h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx, "g1:503", "g2:200")
}

// BenchmarkRoutePlan is what routing adds to an initial INVITE: the
// longest-prefix lookup among 1,000 routes and the per-call order of a
// weighted route of three gateways.
func BenchmarkRoutePlan(b *testing.B) {
	var rt routeTable
	book := &healthBook{m: map[string]*gwHealth{}, up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "up"}, []string{"gateway"})}
	ts := []*target{}
	for _, id := range []string{"a", "b", "c"} {
		ts = append(ts, &target{gatewayHop: gatewayHop{id: id}, health: book.get(id)})
	}
	for i := range 1000 {
		rt.add(strconv.Itoa(1000+i), &routeEntry{id: "r", targets: ts, weights: []int{5, 3, 2}})
	}
	rt.add("", &routeEntry{id: "default", targets: ts})
	rt.seal()
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		r := rt.lookup("+15551234567")
		if r == nil || r.plan(now).take(nil) == nil {
			b.Fatal("no route")
		}
	}
}
