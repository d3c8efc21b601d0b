package cdrgen

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/proxy"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// Real SIP through a route of several gateways: the proxy hunts over
// them (failing over on 408, 5xx and silence), and the CDR tells every
// attempt in order.

// startHuntRig is the rig with a gateway at each address, provisioned
// as g1, g2, ... and tried in that order by the default route "all".
// tune, when not nil, adjusts the proxy's configuration further.
func startHuntRig(t *testing.T, tune func(*proxy.Config), addrs ...string) *sipRig {
	t.Helper()
	pv := localProvisioning()
	route := schema.Route{ID: "all"}
	for i, a := range addrs {
		id := "g" + strconv.Itoa(i+1)
		pv.Gateways[id] = schema.Gateway{ID: id, Address: a}
		route.Gateways = append(route.Gateways, id)
	}
	pv.Routes[route.ID] = route
	if err := pv.Check(); err != nil {
		t.Fatal(err)
	}
	return startSIPRig(t, testConfig(nil), func(c *proxy.Config) {
		c.Provisioning = proxy.FixedProvisioning(pv)
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

// gwAttempt is the golden attempt at gateway id at addr.
func gwAttempt(id, addr string, status int, reason string, q850 int, rang bool) schema.Attempt {
	return schema.Attempt{Gateway: id, Destination: addr, Status: status, Reason: reason, Q850: q850,
		StartAt: 1, ProvisionalAt: happened(map[bool]int64{true: 1}[rang]), FinalAt: 1}
}

// huntTimes checks that the attempts of a real call came one after the
// other, the last one ending the INVITE, before normalised forgets the
// times.
func huntTimes(t *testing.T, c schema.CDR) {
	t.Helper()
	for i := 1; i < len(c.Attempts); i++ {
		if prev, a := c.Attempts[i-1], c.Attempts[i]; a.StartAt < prev.FinalAt {
			t.Errorf("attempt %d started at %d, before attempt %d ended at %d", i, a.StartAt, i-1, prev.FinalAt)
		}
	}
	if len(c.Attempts) == 0 {
		return
	}
	last := c.Attempts[len(c.Attempts)-1]
	end := c.EndAt
	if c.AnswerAt != 0 {
		end = c.AnswerAt
	}
	if last.FinalAt > end {
		t.Errorf("last attempt ended at %d, after the INVITE's final at %d", last.FinalAt, end)
	}
	if c.ProvisionalAt != 0 && last.ProvisionalAt != 0 && c.ProvisionalAt < last.StartAt {
		t.Errorf("18x at %d, before the attempt that rang started at %d", c.ProvisionalAt, last.StartAt)
	}
}

// inviteNote is the note of the proxy's event for the INVITE of a call.
// Call it once the call's CDR is out: the event is on the log by then.
func inviteNote(t *testing.T, r *sipRig, c *testkit.SIPCall) string {
	t.Helper()
	for _, m := range sipBatch(t, r.js) {
		if m.Envelope.Type != schema.TypeTransaction {
			continue
		}
		var tx schema.Transaction
		if err := m.Envelope.Decode(schema.TypeTransaction, schema.TransactionVersion, &tx); err != nil {
			t.Fatal(err)
		}
		if tx.CallID == c.CallID && tx.Method == "INVITE" && !tx.InDialog {
			return tx.Note
		}
	}
	t.Fatalf("no INVITE event for call %s", c.CallID)
	return ""
}

// TestSIPFailoverGolden: the first gateway answers 503, the second 500
// (or says nothing at all), the third rings and answers; the caller
// hangs up. One answered CDR, accounted on the third gateway, with the
// three attempts in order.
func TestSIPFailoverGolden(t *testing.T) {
	if testing.Short() {
		t.Skip("real SIP through the proxy")
	}
	for _, second := range []string{"500", "silent"} {
		t.Run(second, func(t *testing.T) {
			first, third := testkit.NewSIPPhone(t, "gw1"), testkit.NewSIPPhone(t, "gw3")
			first.SetUAS(first.Reject(503, "Service Unavailable"))
			pickUp := make(chan struct{})
			third.SetUAS(third.AnswerWhen(true, pickUp))
			var (
				tune       func(*proxy.Config)
				secondAddr string
				secondTry  schema.Attempt
				answering  *testkit.SIPPhone
			)
			if second == "silent" {
				secondAddr = silentGateway(t)
				// The proxy gives up on the silent gateway after this; the
				// others answer at once.
				tune = func(c *proxy.Config) { c.Timers.Response = time.Second }
				secondTry = gwAttempt("g2", secondAddr, 408, "Request Timeout", 0, false)
			} else {
				answering = testkit.NewSIPPhone(t, "gw2")
				answering.SetUAS(answering.Reject(500, "Server Internal Error"))
				secondAddr = answering.Addr
				secondTry = gwAttempt("g2", secondAddr, 500, "Server Internal Error", 0, false)
			}
			rig := startHuntRig(t, tune, first.Addr, secondAddr, third.Addr)

			c := rig.caller.Invite(t, rig.proxy, "UDP", nil)
			c.WaitFor(180)
			close(pickUp)
			c.WaitFor(200)
			c.Ack()
			third.WaitRequest(t, sip.ACK, c.CallID, 1)
			if res := c.Bye(); res.StatusCode != 200 {
				t.Fatalf("BYE: %d", res.StatusCode)
			}

			typ, got := rig.finished(t, c)
			if typ != schema.TypeCallEnded {
				t.Errorf("%s, want %s", typ, schema.TypeCallEnded)
			}
			huntTimes(t, got)
			want := rig.golden(c)
			want.Attempts = []schema.Attempt{
				gwAttempt("g1", first.Addr, 503, "Service Unavailable", 0, false),
				secondTry,
				gwAttempt("g3", third.Addr, 200, "OK", 0, true),
			}
			want.Gateway = "g3"
			want.Disposition, want.Status, want.Reason = schema.Answered, 200, "OK"
			want.ProvisionalAt, want.AnswerAt = 1, 1
			want.HangupBy, want.HangupReason = schema.HangupCaller, schema.EndNormal
			assertCDR(t, typ, normalised(t, got, false), want)
			for _, gw := range []*testkit.SIPPhone{first, answering} {
				if gw == nil {
					continue
				}
				// A failed gateway had its INVITE (and the ACK of its
				// failure) and nothing of the dialog, which was over at
				// the third before its CDR came out.
				gw.WaitRequest(t, sip.INVITE, c.CallID, 1)
				for _, r := range gw.Requests() {
					if r.Method == sip.BYE {
						t.Errorf("%s got the BYE", gw.Name)
					}
				}
			}
		})
	}
}

// TestSIPFailoverExhausted: both gateways answer 503; the proxy, with no
// gateway left, gives the caller its own 503. The CDR is congestion,
// with both attempts, accounted on the last gateway, whose failure
// (with its Q.850 cause) is the last attempt.
func TestSIPFailoverExhausted(t *testing.T) {
	if testing.Short() {
		t.Skip("real SIP through the proxy")
	}
	gws := []*testkit.SIPPhone{testkit.NewSIPPhone(t, "gw1"), testkit.NewSIPPhone(t, "gw2")}
	rig := startHuntRig(t, nil, gws[0].Addr, gws[1].Addr)
	gws[0].SetUAS(gws[0].Reject(503, "Service Unavailable"))
	gws[1].SetUAS(gws[1].Reject(503, "Service Unavailable",
		sip.NewHeader("Reason", `Q.850;cause=34;text="No circuit/channel available"`)))

	c := rig.caller.Invite(t, rig.proxy, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 503 {
		t.Fatalf("final %d", res.StatusCode)
	}

	typ, got := rig.finished(t, c)
	if typ != schema.TypeCallFailed {
		t.Errorf("%s, want %s", typ, schema.TypeCallFailed)
	}
	huntTimes(t, got)
	want := rig.golden(c)
	want.Attempts = []schema.Attempt{
		gwAttempt("g1", gws[0].Addr, 503, "Service Unavailable", 0, false),
		gwAttempt("g2", gws[1].Addr, 503, "Service Unavailable", 34, false),
	}
	want.Gateway = "g2"
	// The caller's 503 is the proxy's own, without a Reason header: the
	// gateway's cause stays on its attempt.
	want.Disposition, want.Status, want.Reason = schema.Congestion, 503, "Service Unavailable"
	assertCDR(t, typ, normalised(t, got, false), want)
	if note := inviteNote(t, rig, c); note != "no_gateway_left" {
		t.Errorf("INVITE event note %q, want no_gateway_left", note)
	}
}
