package proxy

import (
	"context"
	"fmt"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

func provisioning(trunks ...schema.Trunk) *schema.Provisioning {
	p := schema.NewProvisioning()
	for _, t := range trunks {
		p.Accounts[t.Account] = schema.Account{ID: t.Account, Currency: "EUR"}
		p.Trunks[t.ID] = t
	}
	return p
}

func TestAdmissionTable(t *testing.T) {
	p, err := New(Config{
		Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}},
		Gateway:   "127.0.0.1:5070",
		Provisioning: FixedProvisioning(provisioning(
			schema.Trunk{ID: "wide", Account: "a", Sources: []schema.Source{{CIDR: "10.0.0.0/8"}, {CIDR: "2001:db8::/32"}}},
			schema.Trunk{ID: "narrow", Account: "b", Sources: []schema.Source{{CIDR: "10.1.2.0/24"}}},
			schema.Trunk{ID: "pbx-udp", Account: "c", Sources: []schema.Source{{CIDR: "10.1.2.3", Port: 5060, Transport: "udp"}}},
			schema.Trunk{ID: "pbx-tcp", Account: "c", Sources: []schema.Source{{CIDR: "10.1.2.3", Transport: "tcp"}}},
			schema.Trunk{ID: "host6", Account: "d", Sources: []schema.Source{{CIDR: "2001:db8::7"}}},
		)),
	}, newCollector())
	if err != nil {
		t.Fatal(err)
	}
	a := p.table.Load()
	for _, tc := range []struct{ src, transport, want string }{
		{"10.1.2.3:5060", "UDP", "pbx-udp"},
		{"10.1.2.3:5062", "UDP", "narrow"}, // another port: the /32 with a port does not match
		{"10.1.2.3:40000", "TCP", "pbx-tcp"},
		{"10.1.2.3:5060", "TLS", "narrow"},
		{"10.1.2.200:5060", "UDP", "narrow"},
		{"10.200.0.1:5060", "UDP", "wide"},
		{"[::ffff:10.200.0.1]:5060", "UDP", "wide"},
		{"[2001:db8::7]:5060", "UDP", "host6"},
		{"[2001:db8::8]:5060", "TCP", "wide"},
		{"192.0.2.1:5060", "UDP", ""},
		{"[2001:db9::1]:5060", "UDP", ""},
		{"not an address", "UDP", ""},
	} {
		got := ""
		if tr := a.lookup(tc.src, tc.transport); tr != nil {
			got = tr.id
		}
		if got != tc.want {
			t.Errorf("lookup(%s, %s) = %q, want %q", tc.src, tc.transport, got, tc.want)
		}
	}
}

// TestUnknownSourceForbidden: no trunk has the caller's address; the
// proxy answers 403 itself and relays nothing.
func TestUnknownSourceForbidden(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	h := startProxy(t, gw.Addr, "udp", func(c *Config) {
		c.Provisioning = FixedProvisioning(provisioning(schema.Trunk{ID: "elsewhere", Account: "acme", Sources: []schema.Source{{CIDR: "192.0.2.0/24"}}}))
	})
	alice := testkit.NewSIPPhone(t, "alice")
	for _, transport := range []string{"UDP", "TCP"} {
		c := alice.Invite(t, h.addr, transport, nil)
		if res := c.WaitFinal(); res.StatusCode != 403 {
			t.Fatalf("INVITE over %s from an unknown source answered %d, want 403", transport, res.StatusCode)
		}
		ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
		if ev.Status != 403 || ev.Note != "unknown_source" || ev.Account != "" || ev.Trunk != "" || ev.Destination != "" || len(ev.Attempts) != 0 {
			t.Errorf("403 event %+v", ev)
		}
		if n := len(gw.Received(c.CallID)); n != 0 {
			t.Errorf("the gateway got %d requests of a refused call", n)
		}
	}
	if res, _ := alice.Options(t, h.addr, "UDP", nil); res.StatusCode != 403 {
		t.Errorf("OPTIONS from an unknown source answered %d, want 403", res.StatusCode)
	}
	if got := metricValue(t, h, "carrier_sip_refused_total", "reason", "unknown_source"); got != 3 {
		t.Errorf("carrier_sip_refused_total{unknown_source} = %v, want 3", got)
	}
}

// TestInDialogFromUnknownSource: a request inside a dialog is not
// admitted by its source, as the callee's side sends them too; but it
// must follow the proxy's Route set, or the proxy would relay anything
// anywhere for anyone.
func TestInDialogFromUnknownSource(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	h := startProxy(t, gw.Addr, "udp", func(c *Config) { c.Provisioning = nil })
	alice := testkit.NewSIPPhone(t, "alice")
	own := sip.Uri{Scheme: "sip", Host: h.host, Port: h.port, UriParams: sip.HeaderParams{{K: "lr", V: ""}}}
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: "f1"}}}
	to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "gw", Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: "t1"}}}
	target := sip.Uri{Scheme: "sip", User: "gw", Host: "127.0.0.1", Port: gw.Port}

	// Through the proxy's Route set, as a record-routed dialog's requests go.
	bye := alice.DialogRequest(sip.BYE, target, []sip.Uri{own}, from, to, "routed@alice", 2, "UDP")
	if res := alice.Do(t, bye); res.StatusCode != 200 {
		t.Fatalf("BYE along the proxy's Route answered %d, want the callee's 200", res.StatusCode)
	}
	gw.WaitRequest(t, sip.BYE, "routed@alice", 1)

	// Straight at the Request-URI: refused, not relayed.
	bye = alice.DialogRequest(sip.BYE, target, nil, from, to, "unrouted@alice", 2, "UDP")
	bye.SetDestination(h.addr)
	if res := alice.Do(t, bye); res.StatusCode != 403 {
		t.Fatalf("BYE without the proxy's Route answered %d, want 403", res.StatusCode)
	}
	if ev := h.ev.wait(t, "BYE", of("unrouted@alice", sip.BYE)).tx; ev.Status != 403 || ev.Note != "not_record_routed" || ev.Destination != "" {
		t.Errorf("event %+v", ev)
	}
	ack := alice.DialogRequest(sip.ACK, target, nil, from, to, "unrouted@alice", 1, "UDP")
	ack.SetDestination(h.addr)
	if err := alice.Client.WriteRequest(ack, testkit.NoBuild); err != nil {
		t.Fatal(err)
	}
	if ev := h.ev.wait(t, "ACK", of("unrouted@alice", sip.ACK)).tx; ev.Note != "not_record_routed" || ev.Destination != "" {
		t.Errorf("ACK event %+v", ev)
	}
	if n := len(gw.Received("unrouted@alice")); n != 0 {
		t.Errorf("the callee got %d requests the proxy should have refused", n)
	}
	if got := metricValue(t, h, "carrier_sip_refused_total", "reason", "not_record_routed"); got != 2 {
		t.Errorf("carrier_sip_refused_total{not_record_routed} = %v, want 2", got)
	}
}

// TestTrunkCallCarriesAccount: a call from a trunk's source passes, and
// its INVITE event names the trunk and its account; the most specific
// source wins.
func TestTrunkCallCarriesAccount(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	alice := testkit.NewSIPPhone(t, "alice")
	h := startProxy(t, gw.Addr, "udp", func(c *Config) {
		c.Provisioning = FixedProvisioning(provisioning(
			schema.Trunk{ID: "loopback", Account: "lab", Sources: []schema.Source{{CIDR: "127.0.0.0/8"}}},
			schema.Trunk{ID: "alice-udp", Account: "acme", Sources: []schema.Source{{CIDR: "127.0.0.1", Port: alice.Port, Transport: "udp"}}},
		))
	})
	for _, tc := range []struct{ transport, trunk, account string }{
		{"UDP", "alice-udp", "acme"},
		{"TCP", "loopback", "lab"}, // another transport, and a port of the connection's
	} {
		c := alice.Invite(t, h.addr, tc.transport, nil)
		if res := c.WaitFinal(); res.StatusCode != 200 {
			t.Fatalf("INVITE over %s answered %d", tc.transport, res.StatusCode)
		}
		c.Ack()
		if res := c.Bye(); res.StatusCode != 200 {
			t.Fatalf("BYE answered %d", res.StatusCode)
		}
		ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
		if ev.Account != tc.account || ev.Trunk != tc.trunk || ev.Status != 200 || ev.Note != "" {
			t.Errorf("INVITE over %s: %+v, want account %q trunk %q", tc.transport, ev, tc.account, tc.trunk)
		}
		// The dialog's requests are not admitted again, and name no
		// customer: either side may send them.
		for _, m := range []sip.RequestMethod{sip.ACK, sip.BYE} {
			if ev := h.ev.wait(t, string(m), of(c.CallID, m)).tx; ev.Account != "" || ev.Trunk != "" {
				t.Errorf("%s event names account %q trunk %q", m, ev.Account, ev.Trunk)
			}
		}
	}
}

// TestPreloadedRoute: an initial request whose Route names another hop is
// refused from an untrusted trunk, and followed from a trusted one; a
// Route naming only this proxy is fine from anyone admitted.
func TestPreloadedRoute(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	elsewhere := testkit.NewSIPPhone(t, "elsewhere")
	alice := testkit.NewSIPPhone(t, "alice")
	trusted := false
	pv := func() *schema.Provisioning {
		return provisioning(schema.Trunk{ID: "local", Account: "local", Trusted: trusted, Sources: []schema.Source{{CIDR: "127.0.0.1"}}})
	}
	h := startProxy(t, gw.Addr, "udp", func(c *Config) { c.Provisioning = FixedProvisioning(pv()) })
	own := sip.Uri{Scheme: "sip", Host: h.host, Port: h.port, UriParams: sip.HeaderParams{{K: "lr", V: ""}}}
	foreign := sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: elsewhere.Port, UriParams: sip.HeaderParams{{K: "lr", V: ""}}}

	c := alice.Invite(t, h.addr, "UDP", func(r *sip.Request) { r.PrependHeader(&sip.RouteHeader{Address: foreign}) })
	if res := c.WaitFinal(); res.StatusCode != 403 {
		t.Fatalf("preloaded Route from an untrusted trunk answered %d, want 403", res.StatusCode)
	}
	if ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx; ev.Status != 403 || ev.Note != "preloaded_route" || ev.Trunk != "local" {
		t.Errorf("event %+v", ev)
	}
	if n := len(elsewhere.Received(c.CallID)) + len(gw.Received(c.CallID)); n != 0 {
		t.Errorf("a refused call was relayed (%d requests)", n)
	}
	if got := metricValue(t, h, "carrier_sip_refused_total", "reason", "preloaded_route"); got != 1 {
		t.Errorf("carrier_sip_refused_total{preloaded_route} = %v, want 1", got)
	}

	// Our own Route on top (an outbound proxy setting) is no preload.
	res, callID := alice.Options(t, h.addr, "UDP", func(r *sip.Request) { r.PrependHeader(&sip.RouteHeader{Address: own}) })
	if res.StatusCode != 200 {
		t.Fatalf("OPTIONS with the proxy's own Route answered %d", res.StatusCode)
	}
	gw.WaitRequest(t, sip.OPTIONS, callID, 1)

	// A trusted trunk's preloaded Route is followed.
	trusted = true
	ht := startProxy(t, gw.Addr, "udp", func(c *Config) { c.Provisioning = FixedProvisioning(pv()) })
	res, callID = alice.Options(t, ht.addr, "UDP", func(r *sip.Request) {
		// A Request-URI naming the proxy would read as strict routing.
		r.Recipient = sip.Uri{Scheme: "sip", User: "15551234567", Host: "example.com"}
		r.PrependHeader(&sip.RouteHeader{Address: foreign})
	})
	if res.StatusCode != 200 {
		t.Fatalf("preloaded Route from a trusted trunk answered %d", res.StatusCode)
	}
	elsewhere.WaitRequest(t, sip.OPTIONS, callID, 1)
	if n := len(gw.Received(callID)); n != 0 {
		t.Errorf("the default gateway got the request the Route sent elsewhere")
	}
}

// TestLiveProvisioning: the proxy follows the provisioning bucket while it
// runs: a trunk added takes calls, a gateway added takes them over from
// the configured one, a trunk removed stops taking calls.
func TestLiveProvisioning(t *testing.T) {
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	ctx := context.Background()
	store, err := eventlog.OpenProvisionStore(ctx, js, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	w, err := store.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	<-w.Ready()

	gw := testkit.NewSIPPhone(t, "gw")
	gw2 := testkit.NewSIPPhone(t, "gw2")
	h := startProxy(t, gw.Addr, "udp", func(c *Config) { c.Provisioning = w })
	alice := testkit.NewSIPPhone(t, "alice")
	status := func(want int) func() error {
		return func() error {
			res, _ := alice.Options(t, h.addr, "UDP", nil)
			if res.StatusCode != want {
				return fmt.Errorf("OPTIONS answered %d, want %d", res.StatusCode, want)
			}
			return nil
		}
	}
	if err := status(403)(); err != nil {
		t.Fatalf("before any trunk: %v", err)
	}
	before := metricValue(t, h, "carrier_sip_provisioning_revision")

	if _, err := store.Accounts().Put(ctx, schema.Account{ID: "acme", Currency: "USD"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Trunks().Put(ctx, schema.Trunk{ID: "acme-pbx", Account: "acme", Sources: []schema.Source{{CIDR: "127.0.0.0/24"}}}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, patience, status(200))
	if after := metricValue(t, h, "carrier_sip_provisioning_revision"); after <= before {
		t.Errorf("carrier_sip_provisioning_revision %v after the change, %v before", after, before)
	}
	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("INVITE from the new trunk answered %d", res.StatusCode)
	}
	c.Ack()
	ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
	if ev.Account != "acme" || ev.Trunk != "acme-pbx" || len(ev.Attempts) != 1 || ev.Attempts[0].Gateway != gw.Addr {
		t.Errorf("INVITE event %+v", ev)
	}

	if _, err := store.Gateways().Put(ctx, schema.Gateway{ID: "carrier-b", Address: gw2.Addr}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, patience, func() error {
		res, callID := alice.Options(t, h.addr, "UDP", nil)
		if res.StatusCode != 200 || len(gw2.Received(callID)) == 0 {
			return fmt.Errorf("OPTIONS answered %d, not by the provisioned gateway", res.StatusCode)
		}
		return nil
	})
	// The call set up before the change still ends through the proxy.
	if res := c.Bye(); res.StatusCode != 200 {
		t.Errorf("BYE of the earlier call answered %d", res.StatusCode)
	}
	c2 := alice.Invite(t, h.addr, "UDP", nil)
	if res := c2.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("INVITE to the provisioned gateway answered %d", res.StatusCode)
	}
	c2.Ack()
	ev = h.ev.wait(t, "INVITE", of(c2.CallID, sip.INVITE)).tx
	if len(ev.Attempts) != 1 || ev.Attempts[0].Gateway != "carrier-b" || ev.Attempts[0].Destination != gw2.Addr {
		t.Errorf("INVITE attempts %+v, want the provisioned gateway", ev.Attempts)
	}
	if res := c2.Bye(); res.StatusCode != 200 {
		t.Errorf("BYE answered %d", res.StatusCode)
	}

	if err := store.Trunks().Delete(ctx, "acme-pbx"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, patience, status(403))
	c3 := alice.Invite(t, h.addr, "UDP", nil)
	if res := c3.WaitFinal(); res.StatusCode != 403 {
		t.Fatalf("INVITE after the trunk went answered %d", res.StatusCode)
	}
	if ev := h.ev.wait(t, "INVITE", of(c3.CallID, sip.INVITE)).tx; ev.Note != "unknown_source" {
		t.Errorf("event %+v", ev)
	}
}

// BenchmarkAdmissionLookup is the per-request cost of finding a caller's
// trunk among a thousand trunks of assorted prefix lengths.
func BenchmarkAdmissionLookup(b *testing.B) {
	pv := schema.NewProvisioning()
	pv.Accounts["a"] = schema.Account{ID: "a", Currency: "EUR"}
	for i := range 1000 {
		id := fmt.Sprintf("t%d", i)
		cidr := fmt.Sprintf("10.%d.%d.0/%d", i/256, i%256, 24+i%9)
		pv.Trunks[id] = schema.Trunk{ID: id, Account: "a", Sources: []schema.Source{{CIDR: cidr}}}
	}
	p, err := New(Config{Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}}, Gateway: "127.0.0.1:5090", Provisioning: FixedProvisioning(pv)}, newCollector())
	if err != nil {
		b.Fatal(err)
	}
	a := p.table.Load()
	b.ReportAllocs()
	for b.Loop() {
		if a.lookup("10.3.7.9:5060", "UDP") == nil {
			b.Fatal("no trunk")
		}
	}
}
