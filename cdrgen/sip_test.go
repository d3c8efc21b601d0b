package cdrgen

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/proxy"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// Real SIP end to end: sipgo phones call through the real proxy, which
// writes its transactions with the real publisher to JetStream, where the
// correlator turns them into CDRs. The phones are testkit.SIPPhone, the
// same ones the proxy's tests use, calling over UDP.

// patience bounds every wait. It only turns a hang into a failure; no
// test passes or fails on how fast something happens.
const patience = 30 * time.Second

// sipRig is a proxy in front of one callee (its gateway), a caller and a
// correlator, all on one JetStream.
type sipRig struct {
	js     jetstream.JetStream
	proxy  string // host:port
	caller *testkit.SIPPhone
	callee *testkit.SIPPhone
}

// startSIPRig starts the rig; tune, when given, adjusts the proxy's
// configuration (its provisioning, timers) before it starts.
func startSIPRig(t *testing.T, cfg Config, tune ...func(*proxy.Config)) *sipRig {
	t.Helper()
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	quiet := slog.New(slog.DiscardHandler)
	pub, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := pub.Close(ctx); err != nil {
			t.Errorf("close publisher: %v", err)
		}
	})
	rig := &sipRig{js: js, callee: testkit.NewSIPPhone(t, "callee"), caller: testkit.NewSIPPhone(t, "caller")}
	rig.proxy = net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	pcfg := proxy.Config{
		Node:      "proxy-sip",
		Listeners: []proxy.Listener{{Transport: "udp", Addr: rig.proxy}},
		Gateway:   rig.callee.Addr,
		// The phones call from 127.0.0.1 on trunk "local" of account "acme".
		Provisioning: proxy.FixedProvisioning(localProvisioning()),
		Logger:       quiet,
	}
	for _, f := range tune {
		f(&pcfg)
	}
	p, err := proxy.New(pcfg, pub)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("proxy Run: %v", err)
			}
		case <-time.After(patience):
			t.Errorf("proxy did not stop")
		}
	})
	select {
	case <-p.Ready():
	case err := <-done:
		t.Fatalf("proxy did not start: %v", err)
	case <-time.After(patience):
		t.Fatal("proxy not ready")
	}
	cfg.Logger = quiet
	start(t, js, cfg)
	return rig
}

func localProvisioning() *schema.Provisioning {
	p := schema.NewProvisioning()
	p.Accounts["acme"] = schema.Account{ID: "acme", Currency: "EUR"}
	p.Trunks["local"] = schema.Trunk{ID: "local", Account: "acme", Sources: []schema.Source{{CIDR: "127.0.0.1"}}}
	return p
}

// finished waits for the finished CDR of a call and returns it with its
// event type.
func (r *sipRig) finished(t *testing.T, c *testkit.SIPCall) (string, schema.CDR) {
	t.Helper()
	id := schema.CDRID(c.CallID, c.FromTag())
	deadline := time.Now().Add(patience)
	for {
		for _, m := range readCDRStream(t, r.js) {
			if m.Env.ID == id {
				return m.Env.Type, m.CDR
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CDR for call %s", c.CallID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// normalised checks the times of a CDR from a real call against each
// other and replaces them by 1 (it happened) or 0 (it did not), so that
// it compares with a golden CDR. The durations derived from the times are
// checked and zeroed, unless keepDuration (a duration the rules fix).
func normalised(t *testing.T, c schema.CDR, keepDuration bool) schema.CDR {
	t.Helper()
	if c.InviteAt <= 0 || c.EndAt < c.InviteAt {
		t.Errorf("INVITE at %d, end at %d", c.InviteAt, c.EndAt)
	}
	if c.ProvisionalAt != 0 && (c.ProvisionalAt < c.InviteAt || c.PDDMs != c.ProvisionalAt-c.InviteAt) {
		t.Errorf("18x at %d, PDD %d ms, INVITE at %d", c.ProvisionalAt, c.PDDMs, c.InviteAt)
	}
	if c.AnswerAt != 0 {
		if c.AnswerAt < max(c.InviteAt, c.ProvisionalAt) || c.EndAt < c.AnswerAt || c.SetupMs != c.AnswerAt-c.InviteAt {
			t.Errorf("INVITE at %d, 18x at %d, answer at %d, end at %d, setup %d ms", c.InviteAt, c.ProvisionalAt, c.AnswerAt, c.EndAt, c.SetupMs)
		}
		if c.DurationMs != c.EndAt-c.AnswerAt || c.BillableSec != schema.BillableSeconds(c.DurationMs) {
			t.Errorf("answer at %d, end at %d: duration %d ms, billable %d s", c.AnswerAt, c.EndAt, c.DurationMs, c.BillableSec)
		}
	} else if c.DurationMs != 0 || c.BillableSec != 0 || c.SetupMs != 0 {
		t.Errorf("unanswered call with duration %d ms, billable %d s, setup %d ms", c.DurationMs, c.BillableSec, c.SetupMs)
	}
	for i, a := range c.Attempts {
		if a.StartAt < c.InviteAt || a.FinalAt < a.StartAt || (a.ProvisionalAt != 0 && a.ProvisionalAt < a.StartAt) {
			t.Errorf("attempt %d: start %d, 18x %d, final %d; INVITE at %d", i, a.StartAt, a.ProvisionalAt, a.FinalAt, c.InviteAt)
		}
		c.Attempts[i].StartAt, c.Attempts[i].ProvisionalAt, c.Attempts[i].FinalAt = happened(a.StartAt), happened(a.ProvisionalAt), happened(a.FinalAt)
	}
	c.InviteAt, c.ProvisionalAt, c.AnswerAt, c.EndAt = happened(c.InviteAt), happened(c.ProvisionalAt), happened(c.AnswerAt), happened(c.EndAt)
	c.SetupMs, c.PDDMs = 0, 0
	if !keepDuration {
		c.DurationMs, c.BillableSec = 0, 0
	}
	return c
}

func happened(ms int64) int64 {
	if ms != 0 {
		return 1
	}
	return 0
}

// golden is the CDR of a call through the rig, before the outcome.
func (r *sipRig) golden(c *testkit.SIPCall) schema.CDR {
	return schema.CDR{
		ID:        schema.CDRID(c.CallID, c.FromTag()),
		CallID:    c.CallID,
		FromTag:   c.FromTag(),
		ToTag:     c.ToTag(),
		Account:   "acme",
		Trunk:     "local",
		Source:    r.caller.Addr,
		Transport: "udp",
		Caller:    "caller",
		Callee:    "15551234567", CalleeE164: "15551234567",
		Gateway:   r.callee.Addr,
		Direction: schema.Outbound,
		InviteAt:  1,
		EndAt:     1,
		Node:      "proxy-sip",
	}
}

func attempt(r *sipRig, status int, reason string, q850 int, rang bool) schema.Attempt {
	return schema.Attempt{Gateway: r.callee.Addr, Destination: r.callee.Addr, Status: status, Reason: reason, Q850: q850,
		StartAt: 1, ProvisionalAt: happened(map[bool]int64{true: 1}[rang]), FinalAt: 1}
}

func TestSIPGolden(t *testing.T) {
	if testing.Short() {
		t.Skip("real SIP through the proxy")
	}
	cfg := testConfig(nil)
	rig := startSIPRig(t, cfg)

	answered := func(c *testkit.SIPCall, by string) schema.CDR {
		g := rig.golden(c)
		g.Attempts = []schema.Attempt{attempt(rig, 200, "OK", 0, true)}
		g.Disposition, g.Status, g.Reason = schema.Answered, 200, "OK"
		g.ProvisionalAt, g.AnswerAt = 1, 1
		g.HangupBy, g.HangupReason = by, schema.EndNormal
		return g
	}
	failed := func(c *testkit.SIPCall, d schema.Disposition, status int, reason string, q850 int, rang bool) schema.CDR {
		g := rig.golden(c)
		g.Attempts = []schema.Attempt{attempt(rig, status, reason, q850, rang)}
		g.Disposition, g.Status, g.Reason, g.Q850 = d, status, reason, q850
		g.ProvisionalAt = happened(map[bool]int64{true: 1}[rang])
		return g
	}
	check := func(t *testing.T, c *testkit.SIPCall, wantType string, want schema.CDR) {
		t.Helper()
		typ, got := rig.finished(t, c)
		if typ != wantType {
			t.Errorf("%s, want %s", typ, wantType)
		}
		assertCDR(t, typ, normalised(t, got, false), want)
	}

	t.Run("answered, caller hangs up", func(t *testing.T) {
		pickUp := make(chan struct{})
		rig.callee.SetUAS(rig.callee.AnswerWhen(true, pickUp))
		c := rig.caller.Invite(t, rig.proxy, "UDP", nil)
		c.WaitFor(180)
		close(pickUp)
		c.WaitFor(200)
		c.Ack()
		if res := c.Bye(); res.StatusCode != 200 {
			t.Fatalf("BYE: %d", res.StatusCode)
		}
		check(t, c, schema.TypeCallEnded, answered(c, schema.HangupCaller))
	})
	t.Run("callee hangs up", func(t *testing.T) {
		pickUp := make(chan struct{})
		rig.callee.SetUAS(rig.callee.AnswerWhen(true, pickUp))
		c := rig.caller.Invite(t, rig.proxy, "UDP", nil)
		c.WaitFor(180)
		close(pickUp)
		c.WaitFor(200)
		c.Ack()
		rig.callee.WaitRequest(t, sip.ACK, c.CallID, 1)
		if res := rig.callee.HangUp(t, "UDP"); res.StatusCode != 200 {
			t.Fatalf("BYE: %d", res.StatusCode)
		}
		check(t, c, schema.TypeCallEnded, answered(c, schema.HangupCallee))
	})
	t.Run("early media", func(t *testing.T) {
		pickUp := make(chan struct{})
		rig.callee.SetUAS(rig.callee.ProgressWhen(pickUp))
		c := rig.caller.Invite(t, rig.proxy, "UDP", nil)
		c.WaitFor(183)
		close(pickUp)
		c.WaitFor(200)
		c.Ack()
		c.Bye()
		want := answered(c, schema.HangupCaller)
		want.EarlyMedia = true
		check(t, c, schema.TypeCallEnded, want)
	})
	t.Run("busy", func(t *testing.T) {
		rig.callee.SetUAS(rig.callee.Reject(486, "Busy Here", sip.NewHeader("Reason", `Q.850;cause=17;text="User busy"`)))
		c := rig.caller.Invite(t, rig.proxy, "UDP", nil)
		if res := c.WaitFinal(); res.StatusCode != 486 {
			t.Fatalf("final %d", res.StatusCode)
		}
		check(t, c, schema.TypeCallFailed, failed(c, schema.Busy, 486, "Busy Here", 17, false))
	})
	t.Run("no answer 480", func(t *testing.T) {
		rig.callee.SetUAS(rig.callee.Reject(480, "Temporarily Unavailable"))
		c := rig.caller.Invite(t, rig.proxy, "UDP", nil)
		if res := c.WaitFinal(); res.StatusCode != 480 {
			t.Fatalf("final %d", res.StatusCode)
		}
		check(t, c, schema.TypeCallFailed, failed(c, schema.NoAnswer, 480, "Temporarily Unavailable", 0, false))
	})
	t.Run("cancel during ringing", func(t *testing.T) {
		rig.callee.SetUAS(rig.callee.RingForever())
		c := rig.caller.Invite(t, rig.proxy, "UDP", nil)
		c.WaitFor(180)
		if res := c.Cancel(); res.StatusCode != 200 {
			t.Fatalf("CANCEL: %d", res.StatusCode)
		}
		if res := c.WaitFinal(); res.StatusCode != 487 {
			t.Fatalf("final %d", res.StatusCode)
		}
		want := failed(c, schema.NoAnswer, 487, "Request Terminated", 0, true)
		// The 487 is the proxy's SIP stack's answer to the CANCEL, whose
		// To tag the proxy does not log.
		want.ToTag = ""
		check(t, c, schema.TypeCallFailed, want)
	})
}

// TestSIPMissingBye: the caller and callee never hang up, and nothing
// else happens on the log; the correlator's sweep ends the call at its
// maximum duration.
func TestSIPMissingBye(t *testing.T) {
	if testing.Short() {
		t.Skip("real SIP through the proxy")
	}
	cfg := testConfig(nil)
	cfg.MaxCallDuration = time.Second
	cfg.SweepInterval = 50 * time.Millisecond
	cfg.SweepLag = time.Millisecond
	rig := startSIPRig(t, cfg)
	rig.callee.SetUAS(rig.callee.AnswerWhen(false, nil))
	c := rig.caller.Invite(t, rig.proxy, "UDP", nil)
	c.WaitFor(200)
	c.Ack()

	typ, got := rig.finished(t, c)
	if typ != schema.TypeCallEnded {
		t.Errorf("%s, want %s", typ, schema.TypeCallEnded)
	}
	if got.EndAt != got.AnswerAt+1000 {
		t.Errorf("answer at %d, end at %d: want the maximum duration of 1s", got.AnswerAt, got.EndAt)
	}
	want := rig.golden(c)
	want.Attempts = []schema.Attempt{attempt(rig, 200, "OK", 0, false)}
	want.Disposition, want.Status, want.Reason = schema.Answered, 200, "OK"
	want.AnswerAt, want.DurationMs, want.BillableSec = 1, 1000, 1
	want.HangupBy, want.HangupReason = schema.HangupProxy, schema.EndNoBye
	assertCDR(t, typ, normalised(t, got, true), want)
}

// TestSIPForcedDisconnect: the proxy ends a call itself (here its dialog
// timeout; credit exhaustion takes the same path, see the prepaid tests
// in cmd/carrier) with a BYE to both sides, and the CDR says the proxy
// hung up and why, at the time the proxy's BYEs went out.
func TestSIPForcedDisconnect(t *testing.T) {
	if testing.Short() {
		t.Skip("real SIP through the proxy")
	}
	const timeout = 1500 * time.Millisecond
	rig := startSIPRig(t, testConfig(nil), func(c *proxy.Config) { c.DialogTimeout = timeout })
	rig.callee.SetUAS(rig.callee.AnswerWhen(false, nil))
	c := rig.caller.Invite(t, rig.proxy, "UDP", nil)
	c.WaitFor(200)
	c.Ack()
	rig.caller.WaitRequest(t, sip.BYE, c.CallID, 1)
	rig.callee.WaitRequest(t, sip.BYE, c.CallID, 1)

	typ, got := rig.finished(t, c)
	if typ != schema.TypeCallEnded {
		t.Errorf("%s, want %s", typ, schema.TypeCallEnded)
	}
	if got.DurationMs < timeout.Milliseconds() || got.DurationMs > timeout.Milliseconds()+patience.Milliseconds() {
		t.Errorf("call lasted %d ms, the dialog timeout is %v", got.DurationMs, timeout)
	}
	want := rig.golden(c)
	want.Attempts = []schema.Attempt{attempt(rig, 200, "OK", 0, false)}
	want.Disposition, want.Status, want.Reason = schema.Answered, 200, "OK"
	want.AnswerAt = 1
	want.HangupBy, want.HangupReason = schema.HangupProxy, schema.EndNoBye
	assertCDR(t, typ, normalised(t, got, false), want)
}

// TestSIPCallKind: through the real proxy, a trusted trunk's call that its
// dial plan classifies goes out to the gateway (outbound, with the class),
// and its call to a DID of ours goes to the DID's owner (inbound, with the
// DID and no gateway).
func TestSIPCallKind(t *testing.T) {
	if testing.Short() {
		t.Skip("real SIP through the proxy")
	}
	const did = "4930555000"
	pbx := testkit.NewSIPPhone(t, "pbx") // the PBX of the trunk that owns the DID
	rig := startSIPRig(t, testConfig(nil), func(c *proxy.Config) {
		p := localProvisioning()
		p.DialPlans["us"] = schema.DialPlan{ID: "us", Rules: []schema.DialRule{{Name: "us", Prefix: "1555", Class: "mobile"}}}
		trunk := p.Trunks["local"]
		trunk.Trusted, trunk.DialPlan = true, "us"
		p.Trunks["local"] = trunk
		p.DIDs[did] = schema.DID{Number: did, OwnerKind: schema.DIDOwnerTrunk, Owner: "local", DeliverTo: pbx.Addr}
		if err := p.Check(); err != nil {
			t.Fatal(err)
		}
		c.Provisioning = proxy.FixedProvisioning(p)
	})
	rig.callee.SetUAS(rig.callee.AnswerWhen(false, nil))
	pbx.SetUAS(pbx.AnswerWhen(false, nil))
	answered := func(c *testkit.SIPCall, want schema.CDR) {
		t.Helper()
		c.WaitFor(200)
		c.Ack()
		if res := c.Bye(); res.StatusCode != 200 {
			t.Fatalf("BYE: %d", res.StatusCode)
		}
		typ, got := rig.finished(t, c)
		if typ != schema.TypeCallEnded {
			t.Errorf("%s, want %s", typ, schema.TypeCallEnded)
		}
		want.ToTag = c.ToTag()
		want.Disposition, want.Status, want.Reason = schema.Answered, 200, "OK"
		want.AnswerAt = 1
		want.HangupBy, want.HangupReason = schema.HangupCaller, schema.EndNormal
		assertCDR(t, typ, normalised(t, got, false), want)
	}

	c := rig.caller.Invite(t, rig.proxy, "UDP", nil)
	out := rig.golden(c)
	out.Class = "mobile"
	out.Attempts = []schema.Attempt{attempt(rig, 200, "OK", 0, false)}
	answered(c, out)

	c = rig.caller.Invite(t, rig.proxy, "UDP", func(r *sip.Request) { r.Recipient.User = "+" + did })
	in := rig.golden(c)
	in.Callee, in.CalleeE164, in.DID, in.Direction = "+"+did, did, did, schema.Inbound
	in.Gateway = ""
	in.Attempts = []schema.Attempt{{Destination: pbx.Addr, Status: 200, Reason: "OK", StartAt: 1, FinalAt: 1}}
	answered(c, in)
	if got := rig.callee.Received(c.CallID); len(got) != 0 {
		t.Errorf("the gateway got the DID's call")
	}
}
