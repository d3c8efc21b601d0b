package proxy

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// TestCall carries a call INVITE/180/200/ACK/BYE through the proxy between
// two sipgo phones, the gateway as callee, over each transport pairing, and
// checks that the dialog's ACK and BYE come through the proxy (Record-Route
// honoured) and what the events say.
func TestCall(t *testing.T) {
	for _, tc := range []struct {
		name          string
		caller        string // transport of the caller's leg
		gateway       string // transport of the gateway's leg
		calleeHangsUp bool
	}{
		{"udp", "UDP", "udp", false},
		{"tcp", "TCP", "tcp", false},
		{"udp callee hangs up", "UDP", "udp", true},
		{"tcp callee hangs up", "TCP", "tcp", true},
		{"tcp caller udp gateway", "TCP", "udp", true},
		{"udp caller tcp gateway", "UDP", "tcp", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := testkit.NewSIPPhone(t, "gw")
			pickUp := make(chan struct{})
			gw.SetUAS(gw.AnswerWhen(true, pickUp))
			h := startProxy(t, gw.Addr, tc.gateway, nil)
			alice := testkit.NewSIPPhone(t, "alice")

			c := alice.Invite(t, h.addr, tc.caller, nil)
			c.WaitFor(180)
			close(pickUp)
			res := c.WaitFinal()
			if res.StatusCode != 200 {
				t.Fatalf("INVITE answered %d", res.StatusCode)
			}
			if got := statuses(c.Responses); len(got) != 3 || !slices.Contains(got, 100) {
				t.Fatalf("responses %v, want the proxy's 100, then 180 and 200", got)
			}
			if n := len(res.GetHeaders("Via")); n != 1 {
				t.Errorf("200 reached the caller with %d Via, want 1 (the proxy removes its own)", n)
			}
			wantRR := 1
			if !strings.EqualFold(tc.caller, tc.gateway) {
				wantRR = 2 // one per side (RFC 5658)
			}
			rrs := res.GetHeaders("Record-Route")
			if len(rrs) != wantRR {
				t.Fatalf("Record-Route %v, want %d entries of the proxy", rrs, wantRR)
			}
			for _, hdr := range rrs {
				rr := hdr.(*sip.RecordRouteHeader)
				if rr.Address.Host != h.host || rr.Address.Port != h.port || !rr.Address.UriParams.Has("lr") {
					t.Errorf("Record-Route %s does not point at the proxy %s with ;lr", rr.Value(), h.addr)
				}
			}

			inv := gw.WaitRequest(t, sip.INVITE, c.CallID, 1)
			checkRelayed(t, inv, h, strings.ToUpper(tc.gateway), 2)
			if mf := inv.MaxForwards(); mf == nil || *mf != 69 {
				t.Errorf("Max-Forwards at the gateway %v, want 69", mf)
			}
			if inv.Recipient.User != "15551234567" {
				t.Errorf("Request-URI changed to %s", inv.Recipient.String())
			}

			c.Ack()
			ack := gw.WaitRequest(t, sip.ACK, c.CallID, 1)
			checkRelayed(t, ack, h, strings.ToUpper(tc.gateway), 2)
			if len(ack.GetHeaders("Route")) != 0 {
				t.Errorf("ACK kept the proxy's Route: %v", ack.GetHeaders("Route"))
			}

			reason := sip.NewHeader("Reason", `Q.850;cause=16;text="Normal call clearing"`)
			var bye *sip.Request
			if tc.calleeHangsUp {
				if res := gw.HangUp(t, strings.ToUpper(tc.gateway), reason); res.StatusCode != 200 {
					t.Fatalf("callee's BYE answered %d", res.StatusCode)
				}
				bye = alice.WaitRequest(t, sip.BYE, c.CallID, 1)
				checkRelayed(t, bye, h, tc.caller, 2)
			} else {
				if res := c.Bye(reason); res.StatusCode != 200 {
					t.Fatalf("caller's BYE answered %d", res.StatusCode)
				}
				bye = gw.WaitRequest(t, sip.BYE, c.CallID, 1)
				checkRelayed(t, bye, h, strings.ToUpper(tc.gateway), 2)
			}
			if len(bye.GetHeaders("Route")) != 0 {
				t.Errorf("BYE kept the proxy's Route: %v", bye.GetHeaders("Route"))
			}

			// The events, field by field.
			toTag, _ := res.To().Params.Get("tag")
			fromTag, _ := c.Invite.From().Params.Get("tag")
			callerTransport := strings.ToLower(tc.caller)
			e := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE))
			checkEnvelope(t, e)
			ev := e.tx
			want := schema.Transaction{
				Method: "INVITE", CallID: c.CallID, FromURI: "sip:alice@127.0.0.1", FromTag: fromTag,
				ToURI: "sip:15551234567@127.0.0.1", ToTag: toTag, CSeq: 1,
				RequestURI: c.Invite.Recipient.String(), Source: callerSource(alice, tc.caller, ev.Source),
				Local: h.addr, Transport: callerTransport, Destination: gw.Addr,
				Status: 200, Reason: "OK", ProvisionalStatus: 180, Account: "local", Trunk: "local",
			}
			checkTx(t, ev, want)
			if !(ev.RequestAt > 0 && ev.RequestAt <= ev.ProvisionalAt && ev.ProvisionalAt <= ev.FinalAt) {
				t.Errorf("INVITE times out of order: request %d provisional %d final %d", ev.RequestAt, ev.ProvisionalAt, ev.FinalAt)
			}
			if len(ev.Attempts) != 1 {
				t.Fatalf("INVITE attempts %+v, want one", ev.Attempts)
			}
			at := ev.Attempts[0]
			if at.Destination != gw.Addr || at.Gateway != gw.Addr || at.Status != 200 || at.Reason != "OK" {
				t.Errorf("attempt %+v", at)
			}
			if !(ev.RequestAt <= at.StartAt && at.StartAt <= at.ProvisionalAt && at.ProvisionalAt <= at.FinalAt && at.FinalAt <= ev.FinalAt) {
				t.Errorf("attempt times out of order: %+v (request %d, final %d)", at, ev.RequestAt, ev.FinalAt)
			}

			e = h.ev.wait(t, "ACK", of(c.CallID, sip.ACK))
			checkEnvelope(t, e)
			checkTx(t, e.tx, schema.Transaction{
				Method: "ACK", CallID: c.CallID, FromURI: "sip:alice@127.0.0.1", FromTag: fromTag,
				ToURI: "sip:15551234567@127.0.0.1", ToTag: toTag, CSeq: 1, InDialog: true,
				RequestURI: res.Contact().Address.String(), Source: callerSource(alice, tc.caller, e.tx.Source),
				Local: h.addr, Transport: callerTransport, Destination: h.gatewaySide(gw, tc.gateway),
			})
			if len(e.tx.Attempts) != 0 || e.tx.FinalAt != 0 {
				t.Errorf("ACK event has attempts or a final: %+v", e.tx)
			}

			e = h.ev.wait(t, "BYE", of(c.CallID, sip.BYE))
			checkEnvelope(t, e)
			ev = e.tx
			if ev.Status != 200 || !ev.InDialog || ev.Q850 != 16 || len(ev.Attempts) != 1 || ev.Attempts[0].Status != 200 {
				t.Errorf("BYE event %+v", ev)
			}
			if tc.calleeHangsUp {
				// The callee's BYE: tags swap, it came from the gateway's leg.
				if ev.FromTag != toTag || ev.ToTag != fromTag || ev.Transport != strings.ToLower(tc.gateway) || ev.Destination != alice.Addr {
					t.Errorf("callee's BYE event %+v", ev)
				}
			} else if ev.FromTag != fromTag || ev.ToTag != toTag || ev.Transport != callerTransport || ev.Destination != gw.Addr {
				t.Errorf("caller's BYE event %+v", ev)
			}
			if !(ev.RequestAt <= ev.FinalAt) || ev.FinalAt == 0 {
				t.Errorf("BYE times: %d %d", ev.RequestAt, ev.FinalAt)
			}
			for _, m := range []string{"INVITE", "ACK", "BYE"} {
				code := "200"
				if m == "ACK" {
					code = "0"
				}
				if got := metricValue(t, h, "carrier_sip_transactions_total", "method", m, "code", code); got != 1 {
					t.Errorf("carrier_sip_transactions_total{%s,%s} = %v, want 1", m, code, got)
				}
			}
			waitMetric(t, h, "carrier_sip_inflight_transactions", 0)
		})
	}
}

// gatewaySide is where an in-dialog request towards the gateway goes: its
// Contact.
func (h *harness) gatewaySide(gw *testkit.SIPPhone, transport string) string { return gw.Addr }

// callerSource is the caller's address as the proxy saw it: over UDP its
// listening port, over TCP the connection's port (any).
func callerSource(ph *testkit.SIPPhone, transport, got string) string {
	if transport == "UDP" {
		return ph.Addr
	}
	if strings.HasPrefix(got, "127.0.0.1:") {
		return got
	}
	return "127.0.0.1:<any>"
}

// checkRelayed: req came through the proxy, whose Via is on top, over
// transport, with vias Via headers in all.
func checkRelayed(t *testing.T, req *sip.Request, h *harness, transport string, vias int) {
	t.Helper()
	v := topVia(req)
	branch, _ := v.Params.Get("branch")
	if v.Host != h.host || v.Port != h.port || !strings.HasPrefix(branch, branchPrefix) || !strings.EqualFold(v.Transport, transport) {
		t.Errorf("%s top Via %s, want the proxy's %s over %s", req.Method, v.Value(), h.addr, transport)
	}
	if n := len(req.GetHeaders("Via")); n != vias {
		t.Errorf("%s has %d Via, want %d", req.Method, n, vias)
	}
	if strings.EqualFold(transport, "UDP") && req.Source() != h.addr {
		t.Errorf("%s came from %s, want the proxy's listener %s", req.Method, req.Source(), h.addr)
	}
}

func checkEnvelope(t *testing.T, e published) {
	t.Helper()
	if e.env.ID == "" || e.env.Type != schema.TypeTransaction || e.env.Version != schema.TransactionVersion || e.env.Node != "test-node" || e.env.Time == 0 {
		t.Errorf("envelope %+v", e.env)
	}
	if want := schema.TransactionSubject(e.tx.CallID); e.subject != want {
		t.Errorf("published on %s, want %s", e.subject, want)
	}
}

// checkTx compares the fields of want that the test knows; times and
// attempts are checked by the callers.
func checkTx(t *testing.T, got, want schema.Transaction) {
	t.Helper()
	if strings.HasSuffix(want.Source, "<any>") {
		want.Source = got.Source
	}
	got.RequestAt, got.ProvisionalAt, got.FinalAt, got.Attempts = 0, 0, 0, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s event\n got %+v\nwant %+v", want.Method, got, want)
	}
}

func statuses(rs []*sip.Response) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = r.StatusCode
	}
	return out
}
