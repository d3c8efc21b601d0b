package proxy

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// registerPhones registers each phone as a contact of user, with its own
// address as Contact.
func registerPhones(t *testing.T, h *harness, user string, phones ...*testkit.SIPPhone) {
	t.Helper()
	for i, ph := range phones {
		contact := "<sip:" + user + "@" + ph.Addr + ">;expires=300"
		callID := "reg-" + user + "-" + strconv.Itoa(i) + "-" + sip.GenerateTagN(6)
		res := ph.Do(t, registerReq(ph, h, user, callID, nextCSeq(), contact))
		realm, nonce, _ := challengeFor(t, res, "MD5")
		req := registerReq(ph, h, user, callID, nextCSeq(), contact)
		authorize(req, "Authorization", user, user+"-secret", realm, nonce, "MD5", 1)
		if res := ph.Do(t, req); res.StatusCode != 200 {
			t.Fatalf("REGISTER of %s from %s: %d", user, ph.Name, res.StatusCode)
		}
	}
}

// twoPhoneNet runs a proxy of a subNet whose alice has two phones
// registered, desk and mobile.
func twoPhoneNet(t *testing.T) (n *subNet, h *harness, desk, mobile *testkit.SIPPhone) {
	t.Helper()
	n = newSubNet(t)
	h, _ = n.start(t)
	desk, mobile = testkit.NewSIPPhone(t, "desk"), testkit.NewSIPPhone(t, "mobile")
	registerPhones(t, h, "alice", desk, mobile)
	return n, h, desk, mobile
}

// attemptCodes are the statuses of an event's attempts by destination.
func attemptCodes(ev schema.Transaction) map[string]int {
	out := map[string]int{}
	for _, a := range ev.Attempts {
		out[a.Destination] = a.Status
	}
	return out
}

// TestForkFirstAnswerWins: a call to a subscriber with two contacts rings
// both at once; the one that answers takes the call, the other is
// cancelled with "Call completed elsewhere", and the call's BYE goes to
// the one that answered.
func TestForkFirstAnswerWins(t *testing.T) {
	t.Parallel()
	n, h, desk, mobile := twoPhoneNet(t)
	desk.SetUAS(desk.RingForever())
	pickUp := make(chan struct{})
	mobile.SetUAS(mobile.AnswerWhen(true, pickUp))

	call := n.gw.Invite(t, h.addr, "UDP", toUser("alice"))
	// Both ring before either answers.
	desk.WaitRequest(t, sip.INVITE, call.CallID, 1)
	mobile.WaitRequest(t, sip.INVITE, call.CallID, 1)
	close(pickUp)
	call.WaitFor(200)
	call.Ack()

	cancel := desk.WaitRequest(t, sip.CANCEL, call.CallID, 1)
	if r := cancel.GetHeader("Reason"); r == nil || !strings.Contains(r.Value(), "cause=200") {
		t.Errorf("CANCEL to the other contact has Reason %v, want cause=200 (call completed elsewhere)", r)
	}
	mobile.WaitRequest(t, sip.ACK, call.CallID, 1)
	if res := call.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE: %d", res.StatusCode)
	}
	mobile.WaitRequest(t, sip.BYE, call.CallID, 1)
	for _, r := range desk.Received(call.CallID) {
		if r.Method == sip.BYE || r.Method == sip.ACK {
			t.Errorf("the cancelled contact got a %s", r.Method)
		}
	}

	ev := h.ev.wait(t, "forked INVITE", of(call.CallID, sip.INVITE)).tx
	got := attemptCodes(ev)
	if ev.Status != 200 || ev.Destination != mobile.Addr || got[mobile.Addr] != 200 || got[desk.Addr] != 487 || len(ev.Attempts) != 2 {
		t.Fatalf("event: status %d to %s, attempts %v; want 200 to %s, attempts 200 there and 487 at %s",
			ev.Status, ev.Destination, got, mobile.Addr, desk.Addr)
	}
	waitMetric(t, h, "carrier_sip_active_calls", 0)
}

// TestForkBestFinal: when no contact answers, the caller gets the best of
// their final responses (RFC 3261 16.7): a 6xx over anything, else the
// lowest class.
func TestForkBestFinal(t *testing.T) {
	t.Parallel()
	n, h, desk, mobile := twoPhoneNet(t)

	for _, tc := range []struct {
		desk, mobile, want int
	}{
		{486, 500, 486},
		{500, 486, 486},
		{486, 603, 603},
		{480, 503, 480},
	} {
		desk.SetUAS(desk.Reject(tc.desk, "Desk"))
		mobile.SetUAS(mobile.Reject(tc.mobile, "Mobile"))
		call := n.gw.Invite(t, h.addr, "UDP", toUser("alice"))
		if res := call.WaitFinal(); res.StatusCode != tc.want {
			t.Errorf("contacts answering %d and %d: caller got %d, want %d", tc.desk, tc.mobile, res.StatusCode, tc.want)
			continue
		}
		ev := h.ev.wait(t, "forked INVITE", of(call.CallID, sip.INVITE)).tx
		if ev.Status != tc.want || len(ev.Attempts) != 2 {
			t.Errorf("event: status %d with %d attempts, want %d with 2", ev.Status, len(ev.Attempts), tc.want)
		}
	}
}

// TestForkCallerCancels: the caller's CANCEL reaches every ringing
// contact, and the caller gets 487.
func TestForkCallerCancels(t *testing.T) {
	t.Parallel()
	n, h, desk, mobile := twoPhoneNet(t)
	desk.SetUAS(desk.RingForever())
	mobile.SetUAS(mobile.RingForever())

	call := n.gw.Invite(t, h.addr, "UDP", toUser("alice"))
	call.WaitFor(180)
	desk.WaitRequest(t, sip.INVITE, call.CallID, 1)
	mobile.WaitRequest(t, sip.INVITE, call.CallID, 1)
	if res := call.Cancel(); res.StatusCode != 200 {
		t.Fatalf("CANCEL: %d", res.StatusCode)
	}
	if res := call.WaitFinal(); res.StatusCode != 487 {
		t.Fatalf("cancelled call: %d, want 487", res.StatusCode)
	}
	desk.WaitRequest(t, sip.CANCEL, call.CallID, 1)
	mobile.WaitRequest(t, sip.CANCEL, call.CallID, 1)
	ev := h.ev.wait(t, "forked INVITE", of(call.CallID, sip.INVITE)).tx
	if ev.Status != 487 || len(ev.Attempts) != 2 {
		t.Fatalf("event: status %d, attempts %v; want 487 with both contacts", ev.Status, attemptCodes(ev))
	}
	c := h.ev.wait(t, "CANCEL", of(call.CallID, sip.CANCEL)).tx
	if len(c.Attempts) != 2 {
		t.Errorf("CANCEL event has %d attempts, want one CANCEL per contact", len(c.Attempts))
	}
}

// TestForkBothAnswer: when both contacts answer, the caller gets one
// answer; the proxy ACKs the other and hangs it up, so that no phone is
// left in a call nobody is on.
func TestForkBothAnswer(t *testing.T) {
	t.Parallel()
	n, h, desk, mobile := twoPhoneNet(t)
	// Neither rings: the proxy cancels only after a provisional (RFC 3261
	// 9.1), so both answers surely come.
	desk.SetUAS(desk.Answer(false))
	mobile.SetUAS(mobile.Answer(false))

	call := n.gw.Invite(t, h.addr, "UDP", toUser("alice"))
	call.WaitFor(200)
	call.Ack()
	ev := h.ev.wait(t, "forked INVITE", of(call.CallID, sip.INVITE)).tx
	winner, loser := mobile, desk
	if ev.Destination == desk.Addr {
		winner, loser = desk, mobile
	}
	bye := loser.WaitRequest(t, sip.BYE, call.CallID, 1)
	if r := bye.GetHeader("Reason"); r == nil || !strings.Contains(r.Value(), "cause=200") {
		t.Errorf("BYE to the second answer has Reason %v, want cause=200", r)
	}
	winner.WaitRequest(t, sip.ACK, call.CallID, 1)
	if res := call.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE: %d", res.StatusCode)
	}
	winner.WaitRequest(t, sip.BYE, call.CallID, 1)
	if ev.Status != 200 || attemptCodes(ev)[loser.Addr] != 200 || attemptCodes(ev)[winner.Addr] != 200 {
		t.Fatalf("event: status %d, attempts %v", ev.Status, attemptCodes(ev))
	}
	waitMetric(t, h, "carrier_sip_active_calls", 0)
}

// TestSubscriberDID: a call from a trusted trunk to a DID a subscriber
// owns rings the subscriber's contacts, with the DID as the Request-URI
// user.
func TestSubscriberDID(t *testing.T) {
	t.Parallel()
	n := newSubNet(t)
	pstn := n.pv.Trunks["pstn"]
	pstn.Trusted = true
	n.pv.Trunks["pstn"] = pstn
	n.pv.DIDs["4930111222"] = schema.DID{Number: "4930111222", OwnerKind: schema.DIDOwnerSubscriber, Owner: "alice"}
	if err := n.pv.Check(); err != nil {
		t.Fatal(err)
	}
	h, _ := n.start(t)
	desk, mobile := testkit.NewSIPPhone(t, "desk"), testkit.NewSIPPhone(t, "mobile")

	// Not registered yet: 480.
	call := n.gw.Invite(t, h.addr, "UDP", func(req *sip.Request) { req.Recipient.User = "+4930111222" })
	if res := call.WaitFinal(); res.StatusCode != 480 {
		t.Fatalf("DID of an unregistered subscriber: %d, want 480", res.StatusCode)
	}

	registerPhones(t, h, "alice", desk, mobile)
	desk.SetUAS(desk.Answer(true))
	mobile.SetUAS(mobile.RingForever())
	call = n.gw.Invite(t, h.addr, "UDP", func(req *sip.Request) { req.Recipient.User = "+4930111222" })
	call.WaitFor(200)
	call.Ack()
	for _, ph := range []*testkit.SIPPhone{desk, mobile} {
		got := ph.WaitRequest(t, sip.INVITE, call.CallID, 1)
		if got.Recipient.User != "4930111222" || got.Recipient.Port != ph.Port {
			t.Errorf("%s got Request-URI %s, want the DID at its contact", ph.Name, got.Recipient.String())
		}
	}
	if res := call.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE: %d", res.StatusCode)
	}
	ev := h.ev.wait(t, "DID INVITE", of(call.CallID, sip.INVITE)).tx
	if ev.Status != 200 || ev.DID != "4930111222" || ev.Destination != desk.Addr {
		t.Fatalf("event: status %d did %q to %s", ev.Status, ev.DID, ev.Destination)
	}
}

// TestGatewayMaxCalls: a gateway at its concurrent-calls limit is skipped
// for the route's next one, and the event says so; a call that ends, or
// an attempt that fails, gives its place back.
func TestGatewayMaxCalls(t *testing.T) {
	t.Parallel()
	g1, g2 := testkit.NewSIPPhone(t, "gw1"), testkit.NewSIPPhone(t, "gw2")
	g1.SetUAS(g1.Answer(false))
	g2.SetUAS(g2.Answer(false))
	pv := localProvisioning()
	pv.Gateways["g1"] = schema.Gateway{ID: "g1", Address: g1.Addr, MaxCalls: 1}
	pv.Gateways["g2"] = schema.Gateway{ID: "g2", Address: g2.Addr}
	pv.Routes["both"] = schema.Route{ID: "both", Prefix: "1555", Gateways: []string{"g1", "g2"}}
	pv.Routes["only"] = schema.Route{ID: "only", Prefix: "1666", Gateways: []string{"g1"}}
	if err := pv.Check(); err != nil {
		t.Fatal(err)
	}
	h := startProxy(t, g1.Addr, "udp", func(c *Config) { c.Provisioning = FixedProvisioning(pv) })
	alice := testkit.NewSIPPhone(t, "alice")
	to := func(number string) func(*sip.Request) {
		return func(req *sip.Request) { req.Recipient.User = number }
	}
	inProgress := func() int { return h.p.cfg.guards.limits.calls.inProgress("gw:g1") }

	first := alice.Invite(t, h.addr, "UDP", to("15550001"))
	if res := first.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("first call: %d", res.StatusCode)
	}
	first.Ack()
	second := alice.Invite(t, h.addr, "UDP", to("15550002"))
	if res := second.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("second call: %d", res.StatusCode)
	}
	second.Ack()
	ev := h.ev.wait(t, "second INVITE", of(second.CallID, sip.INVITE)).tx
	if !slices.Equal(attemptsOf(ev), []string{"g2:200"}) || len(ev.Skipped) != 1 || ev.Skipped[0] != (schema.SkippedGateway{Gateway: "g1", Reason: schema.SkipCalls}) {
		t.Fatalf("second call: attempts %v skipped %+v; want g2 after g1 skipped for max_calls", attemptsOf(ev), ev.Skipped)
	}
	// g1 alone: nothing left.
	third := alice.Invite(t, h.addr, "UDP", to("16660003"))
	if res := third.WaitFinal(); res.StatusCode != 503 {
		t.Fatalf("third call: %d, want 503", res.StatusCode)
	}
	if ev := h.ev.wait(t, "third INVITE", of(third.CallID, sip.INVITE)).tx; ev.Note != noteGatewaysBusy {
		t.Errorf("third call's note %q, want %q", ev.Note, noteGatewaysBusy)
	}
	if res := first.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE: %d", res.StatusCode)
	}
	second.Bye()
	waitFor(t, "g1's place back", func() bool { return inProgress() == 0 })

	// A failed attempt gives its place back at once.
	g1.SetUAS(g1.Reject(486, "Busy Here"))
	if res := alice.Invite(t, h.addr, "UDP", to("16660004")).WaitFinal(); res.StatusCode != 486 {
		t.Fatalf("busy call: %d", res.StatusCode)
	}
	waitFor(t, "g1's place back after a failure", func() bool { return inProgress() == 0 })
	g1.SetUAS(g1.Answer(false))
	last := alice.Invite(t, h.addr, "UDP", to("16660005"))
	if res := last.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("call after the others ended: %d", res.StatusCode)
	}
	last.Ack()
	last.Bye()
}

// waitFor polls cond until it holds or the test's patience runs out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
