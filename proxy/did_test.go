package proxy

import (
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// TestDID: a call to a DID from a gateway's address (no trunk's) or from
// a trusted trunk goes to the owning trunk's address with the DID kept
// as the Request-URI user; the same number from an ordinary trunk is
// routed like any call, and a gateway may call nothing but our DIDs.
func TestDID(t *testing.T) {
	t.Parallel()
	carrier := testkit.NewSIPPhone(t, "carrier") // a supplier's gateway, calling in
	pbx := testkit.NewSIPPhone(t, "pbx")         // the customer's PBX
	alice := testkit.NewSIPPhone(t, "alice")     // a customer phone
	sbc := testkit.NewSIPPhone(t, "sbc")         // a trusted peer
	pv := schema.NewProvisioning()
	pv.Accounts["acme"] = schema.Account{ID: "acme", Currency: "EUR"}
	pv.Trunks["acme"] = schema.Trunk{ID: "acme", Account: "acme", Sources: []schema.Source{{CIDR: "127.0.0.1", Port: alice.Port}}}
	pv.Trunks["sbc"] = schema.Trunk{ID: "sbc", Account: "acme", Trusted: true, Sources: []schema.Source{{CIDR: "127.0.0.1", Port: sbc.Port}}}
	pv.Gateways["g1"] = schema.Gateway{ID: "g1", Address: carrier.Addr}
	pv.DIDs["493012345678"] = schema.DID{Number: "493012345678", OwnerKind: schema.DIDOwnerTrunk, Owner: "acme", DeliverTo: pbx.Addr}
	if err := pv.Check(); err != nil {
		t.Fatal(err)
	}
	h := startProxy(t, carrier.Addr, "udp", func(c *Config) { c.Provisioning = FixedProvisioning(pv) })

	for _, from := range []*testkit.SIPPhone{carrier, sbc} {
		for _, did := range []string{"+493012345678", "493012345678"} {
			c := from.Invite(t, h.addr, "UDP", func(r *sip.Request) { r.Recipient.User = did })
			if res := c.WaitFinal(); res.StatusCode != 200 {
				t.Fatalf("%s to DID %s: INVITE answered %d", from.Name, did, res.StatusCode)
			}
			c.Ack()
			got := pbx.WaitRequest(t, sip.INVITE, c.CallID, 1)
			if got.Recipient.User != did {
				t.Errorf("%s: the PBX got R-URI user %q, want %q", from.Name, got.Recipient.User, did)
			}
			pbx.WaitRequest(t, sip.ACK, c.CallID, 1) // the dialog is record-routed through the proxy
			ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
			if ev.DID != "493012345678" || ev.Destination != pbx.Addr || len(ev.Attempts) != 1 || ev.Attempts[0].Gateway != "" {
				t.Errorf("%s: event %+v", from.Name, ev)
			}
		}
	}

	// From an ordinary trunk the DID is just a number: routed to the
	// gateway.
	c := alice.Invite(t, h.addr, "UDP", func(r *sip.Request) { r.Recipient.User = "+493012345678" })
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("alice to the DID: INVITE answered %d", res.StatusCode)
	}
	c.Ack()
	carrier.WaitRequest(t, sip.INVITE, c.CallID, 1)
	if ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx; ev.DID != "" || ev.Account != "acme" {
		t.Errorf("alice's call: %+v", ev)
	}
	if got := pbx.Received(c.CallID); len(got) != 0 {
		t.Errorf("the PBX got alice's call")
	}

	// A gateway is no customer: any other number is refused.
	c = carrier.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 403 {
		t.Fatalf("gateway to a non-DID: INVITE answered %d, want 403", res.StatusCode)
	}
}
