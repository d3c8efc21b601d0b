package proxy

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// TestDialogTimeoutEndsCall: a call whose BYE never comes is ended by the
// proxy after the dialog timeout with a BYE to each side, in each side's
// dialog (tags, CSeq above what that side's peer used), and two BYE events
// that say why.
func TestDialogTimeoutEndsCall(t *testing.T) {
	for _, tc := range []struct{ name, caller, gateway string }{
		{"udp", "UDP", "udp"},
		{"tcp caller udp gateway", "TCP", "udp"},
		{"udp caller tcp gateway", "UDP", "tcp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			gw := testkit.NewSIPPhone(t, "gw")
			gw.SetUAS(gw.Answer(false))
			h := startProxy(t, gw.Addr, tc.gateway, func(c *Config) { c.DialogTimeout = time.Second })
			alice := testkit.NewSIPPhone(t, "alice")
			c := alice.Invite(t, h.addr, tc.caller, nil)
			if res := c.WaitFinal(); res.StatusCode != 200 {
				t.Fatalf("answered %d", res.StatusCode)
			}
			c.Ack()
			if got := metricValue(t, h, "carrier_sip_active_calls"); got != 1 {
				t.Errorf("active calls %v after the answer, want 1", got)
			}
			// A re-INVITE moves the caller's CSeq: the proxy's BYE to the
			// callee must go above it.
			reinvite := c.InDialog(sip.INVITE, 7)
			reinvite.AppendHeader(alice.Contact(tc.caller))
			reinvite.SetBody([]byte(testkit.SDP))
			if res := alice.Do(t, reinvite); res.StatusCode != 200 {
				t.Fatalf("re-INVITE answered %d", res.StatusCode)
			}

			toCaller := wantProxyByes(t, c, gw, alice, 7)
			if toCaller.Recipient.User != alice.Contact(tc.caller).Address.User || toCaller.Recipient.Port != alice.Port {
				t.Errorf("BYE to the caller: Request-URI %s, want the caller's Contact", toCaller.Recipient.String())
			}

			byes := byeEvents(t, h, c.CallID)
			for _, b := range byes {
				if b.Note != schema.EndNoBye || b.Status != 200 || b.Account != "local" {
					t.Errorf("BYE event %+v: want note %s, status 200, account local", b, schema.EndNoBye)
				}
				if b.RequestAt != byes[0].RequestAt {
					t.Errorf("BYE events at %d and %d: both sides' BYEs must carry one end time", b.RequestAt, byes[0].RequestAt)
				}
			}
			waitMetric(t, h, "carrier_sip_active_calls", 0)
			if got := metricValue(t, h, "carrier_sip_forced_hangups_total", "reason", schema.EndNoBye); got != 1 {
				t.Errorf("forced hangups %v, want 1", got)
			}
		})
	}
}

// TestByeEndsDialog: a party's BYE ends the proxy's tracking, so no
// timeout fires for a call that ended normally.
func TestByeEndsDialog(t *testing.T) {
	t.Parallel()
	gw := testkit.NewSIPPhone(t, "gw")
	gw.SetUAS(gw.Answer(false))
	h := startProxy(t, gw.Addr, "udp", func(c *Config) { c.DialogTimeout = 500 * time.Millisecond })
	alice := testkit.NewSIPPhone(t, "alice")
	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("answered %d", res.StatusCode)
	}
	c.Ack()
	if res := gw.HangUp(t, "UDP"); res.StatusCode != 200 {
		t.Fatalf("callee's BYE answered %d", res.StatusCode)
	}
	waitMetric(t, h, "carrier_sip_active_calls", 0)
	// Past the timeout, nothing more happens.
	time.Sleep(time.Second)
	if got := metricValue(t, h, "carrier_sip_forced_hangups_total", "reason", schema.EndNoBye); got != 0 {
		t.Errorf("forced hangups %v after a normal BYE, want 0", got)
	}
	if n := len(alice.Received(c.CallID)); n != 1 {
		t.Errorf("caller got %d requests, want only the callee's BYE", n)
	}
}

// TestAccountMaxCalls: an account at its concurrent-calls limit gets its
// next call refused; a call that ends (BYE, or a failure) gives its place
// back, and so does one the proxy ends itself.
func TestAccountMaxCalls(t *testing.T) {
	t.Parallel()
	gw := testkit.NewSIPPhone(t, "gw")
	gw.SetUAS(gw.Answer(false))
	pv := localProvisioning()
	acc := pv.Accounts["local"]
	acc.MaxCalls = 1
	pv.Accounts["local"] = acc
	h := startProxy(t, gw.Addr, "udp", func(c *Config) { c.Provisioning = FixedProvisioning(pv) })
	alice := testkit.NewSIPPhone(t, "alice")

	first := alice.Invite(t, h.addr, "UDP", nil)
	if res := first.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("first call answered %d", res.StatusCode)
	}
	first.Ack()
	second := alice.Invite(t, h.addr, "UDP", nil)
	if res := second.WaitFinal(); res.StatusCode != 503 {
		t.Fatalf("second call answered %d while the first is up, want 503", res.StatusCode)
	}
	if ev := h.ev.wait(t, "INVITE", of(second.CallID, sip.INVITE)).tx; ev.Note != noteAccountCalls || len(gw.Received(second.CallID)) != 0 {
		t.Errorf("refused call: note %q, %d requests at the gateway", ev.Note, len(gw.Received(second.CallID)))
	}
	if res := first.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE answered %d", res.StatusCode)
	}

	waitMetric(t, h, "carrier_sip_active_calls", 0)
	if n := h.p.cfg.guards.limits.calls.inProgress("account:local"); n != 0 {
		t.Fatalf("%d calls in progress after the BYE, want 0", n)
	}
	// A failed call gives its place back too.
	gw.SetUAS(gw.Reject(486, "Busy Here"))
	if res := alice.Invite(t, h.addr, "UDP", nil).WaitFinal(); res.StatusCode != 486 {
		t.Fatalf("call to a busy callee answered %d", res.StatusCode)
	}
	gw.SetUAS(gw.Answer(false))
	third := alice.Invite(t, h.addr, "UDP", nil)
	if res := third.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("call after the others ended answered %d, want 200", res.StatusCode)
	}
	third.Ack()
	third.Bye()
	if got := metricValue(t, h, "carrier_sip_limited_total", "scope", "account_calls"); got != 1 {
		t.Errorf("limited account_calls %v, want 1", got)
	}
}

// wantProxyByes waits for the proxy's BYE to each side of call c and
// checks that each is in that side's dialog: tags swapped for the
// caller, the callee's CSeq above callerSeq, the caller's last.
func wantProxyByes(t *testing.T, c *testkit.SIPCall, callee, caller *testkit.SIPPhone, callerSeq uint32) (toCaller *sip.Request) {
	t.Helper()
	toCallee := callee.WaitRequest(t, sip.BYE, c.CallID, 1)
	toCaller = caller.WaitRequest(t, sip.BYE, c.CallID, 1)
	if tag, _ := toCallee.From().Params.Get("tag"); tag != c.FromTag() {
		t.Errorf("BYE to the callee: From tag %q, want the caller's %q", tag, c.FromTag())
	}
	if tag, _ := toCallee.To().Params.Get("tag"); tag != c.ToTag() {
		t.Errorf("BYE to the callee: To tag %q, want the callee's %q", tag, c.ToTag())
	}
	if seq := toCallee.CSeq().SeqNo; seq <= callerSeq {
		t.Errorf("BYE to the callee: CSeq %d, want above the caller's %d", seq, callerSeq)
	}
	if tag, _ := toCaller.From().Params.Get("tag"); tag != c.ToTag() {
		t.Errorf("BYE to the caller: From tag %q, want the callee's %q", tag, c.ToTag())
	}
	if tag, _ := toCaller.To().Params.Get("tag"); tag != c.FromTag() {
		t.Errorf("BYE to the caller: To tag %q, want the caller's %q", tag, c.FromTag())
	}
	return toCaller
}
