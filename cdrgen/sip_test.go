package cdrgen

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/proxy"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// Real SIP end to end: sipgo phones call through the real proxy, which
// writes its transactions with the real publisher to JetStream, where the
// correlator turns them into CDRs. The phones are trimmed from the
// proxy's own test helpers (UDP only).

// patience bounds every wait. It only turns a hang into a failure; no
// test passes or fails on how fast something happens.
const patience = 30 * time.Second

// sipRig is a proxy in front of one callee (its gateway), a caller and a
// correlator, all on one JetStream.
type sipRig struct {
	js     jetstream.JetStream
	proxy  string // host:port
	caller *phone
	callee *phone
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
	rig := &sipRig{js: js, callee: newPhone(t, "callee"), caller: newPhone(t, "caller")}
	rig.proxy = net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	pcfg := proxy.Config{
		Node:      "proxy-sip",
		Listeners: []proxy.Listener{{Transport: "udp", Addr: rig.proxy}},
		Gateway:   rig.callee.addr,
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
func (r *sipRig) finished(t *testing.T, c *call) (string, schema.CDR) {
	t.Helper()
	id := schema.CDRID(c.callID, c.fromTag())
	deadline := time.Now().Add(patience)
	for {
		for _, m := range readCDRStream(t, r.js) {
			if m.Env.ID == id {
				return m.Env.Type, m.CDR
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CDR for call %s", c.callID)
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
func (r *sipRig) golden(c *call) schema.CDR {
	return schema.CDR{
		ID:        schema.CDRID(c.callID, c.fromTag()),
		CallID:    c.callID,
		FromTag:   c.fromTag(),
		ToTag:     c.toTag(),
		Account:   "acme",
		Trunk:     "local",
		Source:    r.caller.addr,
		Transport: "udp",
		Caller:    "caller",
		Callee:    "15551234567", CalleeE164: "15551234567",
		Gateway:  r.callee.addr,
		InviteAt: 1,
		EndAt:    1,
		Node:     "proxy-sip",
	}
}

func attempt(r *sipRig, status int, reason string, q850 int, rang bool) schema.Attempt {
	return schema.Attempt{Gateway: r.callee.addr, Destination: r.callee.addr, Status: status, Reason: reason, Q850: q850,
		StartAt: 1, ProvisionalAt: happened(map[bool]int64{true: 1}[rang]), FinalAt: 1}
}

func TestSIPGolden(t *testing.T) {
	if testing.Short() {
		t.Skip("real SIP through the proxy")
	}
	cfg := testConfig(nil)
	rig := startSIPRig(t, cfg)

	answered := func(c *call, by string) schema.CDR {
		g := rig.golden(c)
		g.Attempts = []schema.Attempt{attempt(rig, 200, "OK", 0, true)}
		g.Disposition, g.Status, g.Reason = schema.Answered, 200, "OK"
		g.ProvisionalAt, g.AnswerAt = 1, 1
		g.HangupBy, g.HangupReason = by, schema.EndNormal
		return g
	}
	failed := func(c *call, d schema.Disposition, status int, reason string, q850 int, rang bool) schema.CDR {
		g := rig.golden(c)
		g.Attempts = []schema.Attempt{attempt(rig, status, reason, q850, rang)}
		g.Disposition, g.Status, g.Reason, g.Q850 = d, status, reason, q850
		g.ProvisionalAt = happened(map[bool]int64{true: 1}[rang])
		return g
	}
	check := func(t *testing.T, c *call, wantType string, want schema.CDR) {
		t.Helper()
		typ, got := rig.finished(t, c)
		if typ != wantType {
			t.Errorf("%s, want %s", typ, wantType)
		}
		assertCDR(t, typ, normalised(t, got, false), want)
	}

	t.Run("answered, caller hangs up", func(t *testing.T) {
		pickUp := make(chan struct{})
		rig.callee.setUAS(rig.callee.answerWhen(true, pickUp))
		c := rig.caller.invite(t, rig.proxy)
		c.waitFor(180)
		close(pickUp)
		c.waitFor(200)
		c.ack()
		if res := c.bye(); res.StatusCode != 200 {
			t.Fatalf("BYE: %d", res.StatusCode)
		}
		check(t, c, schema.TypeCallEnded, answered(c, schema.HangupCaller))
	})
	t.Run("callee hangs up", func(t *testing.T) {
		pickUp := make(chan struct{})
		rig.callee.setUAS(rig.callee.answerWhen(true, pickUp))
		c := rig.caller.invite(t, rig.proxy)
		c.waitFor(180)
		close(pickUp)
		c.waitFor(200)
		c.ack()
		rig.callee.waitRequest(t, sip.ACK, c.callID)
		if res := rig.callee.hangUp(t); res.StatusCode != 200 {
			t.Fatalf("BYE: %d", res.StatusCode)
		}
		check(t, c, schema.TypeCallEnded, answered(c, schema.HangupCallee))
	})
	t.Run("early media", func(t *testing.T) {
		pickUp := make(chan struct{})
		rig.callee.setUAS(rig.callee.progressWhen(pickUp))
		c := rig.caller.invite(t, rig.proxy)
		c.waitFor(183)
		close(pickUp)
		c.waitFor(200)
		c.ack()
		c.bye()
		want := answered(c, schema.HangupCaller)
		want.EarlyMedia = true
		check(t, c, schema.TypeCallEnded, want)
	})
	t.Run("busy", func(t *testing.T) {
		rig.callee.setUAS(rig.callee.reject(486, "Busy Here", sip.NewHeader("Reason", `Q.850;cause=17;text="User busy"`)))
		c := rig.caller.invite(t, rig.proxy)
		if res := c.waitFinal(); res.StatusCode != 486 {
			t.Fatalf("final %d", res.StatusCode)
		}
		check(t, c, schema.TypeCallFailed, failed(c, schema.Busy, 486, "Busy Here", 17, false))
	})
	t.Run("no answer 480", func(t *testing.T) {
		rig.callee.setUAS(rig.callee.reject(480, "Temporarily Unavailable"))
		c := rig.caller.invite(t, rig.proxy)
		if res := c.waitFinal(); res.StatusCode != 480 {
			t.Fatalf("final %d", res.StatusCode)
		}
		check(t, c, schema.TypeCallFailed, failed(c, schema.NoAnswer, 480, "Temporarily Unavailable", 0, false))
	})
	t.Run("cancel during ringing", func(t *testing.T) {
		rig.callee.setUAS(rig.callee.ringForever())
		c := rig.caller.invite(t, rig.proxy)
		c.waitFor(180)
		if res := c.cancel(); res.StatusCode != 200 {
			t.Fatalf("CANCEL: %d", res.StatusCode)
		}
		if res := c.waitFinal(); res.StatusCode != 487 {
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
	rig.callee.setUAS(rig.callee.answerWhen(false, nil))
	c := rig.caller.invite(t, rig.proxy)
	c.waitFor(200)
	c.ack()

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

// phone is an in-process SIP user agent (sipgo) on one UDP port. As a
// callee it answers with the behaviour in uas.
type phone struct {
	t    testing.TB
	name string
	cli  *sipgo.Client
	port int
	addr string

	mu   sync.Mutex
	reqs []*sip.Request
	more chan struct{}
	uas  func(req *sip.Request, tx sip.ServerTransaction)
	// dlgInvite and dlgTag are the last INVITE this phone answered and
	// the To tag it used.
	dlgInvite *sip.Request
	dlgTag    string
	cseq      uint32
}

func newPhone(t testing.TB, name string) *phone {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(name), sipgo.WithUserAgentHostname("127.0.0.1"),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientLogger(quiet), sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	port := testkit.FreePort(t)
	ph := &phone{t: t, name: name, cli: cli, port: port, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		more: make(chan struct{}, 1), cseq: 100}
	ph.uas = ph.answerWhen(true, nil)
	pc, err := net.ListenPacket("udp", ph.addr)
	if err != nil {
		t.Fatal(err)
	}
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		ph.record(req)
		ph.mu.Lock()
		uas := ph.uas
		ph.mu.Unlock()
		uas(req, tx)
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { ph.record(req) })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		ph.record(req)
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	// Registered before the reader starts, so that the first request sent
	// from this socket finds it.
	ua.TransportLayer().Pool("udp").Add(ph.addr, &sip.UDPConnection{PacketConn: pc, PacketAddr: ph.addr, Listener: true})
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.ServeUDP(pc) })
	t.Cleanup(func() {
		_ = pc.Close()
		_ = ua.Close()
		wg.Wait()
	})
	return ph
}

func (ph *phone) setUAS(f func(req *sip.Request, tx sip.ServerTransaction)) {
	ph.mu.Lock()
	ph.uas = f
	ph.mu.Unlock()
}

func (ph *phone) record(req *sip.Request) {
	ph.mu.Lock()
	ph.reqs = append(ph.reqs, req)
	ph.mu.Unlock()
	select {
	case ph.more <- struct{}{}:
	default:
	}
}

// waitRequest waits for a request of a method in a call.
func (ph *phone) waitRequest(t *testing.T, method sip.RequestMethod, callID string) {
	t.Helper()
	deadline := time.After(patience)
	for {
		ph.mu.Lock()
		for _, r := range ph.reqs {
			if r.Method == method && r.CallID() != nil && r.CallID().Value() == callID {
				ph.mu.Unlock()
				return
			}
		}
		ph.mu.Unlock()
		select {
		case <-ph.more:
		case <-deadline:
			t.Fatalf("%s: no %s in call %s", ph.name, method, callID)
		}
	}
}

// answerWhen rings (optionally) and answers once pickUp is closed (nil: at
// once). sipgo handles every message on a goroutine of its own, so a 200
// sent right after the 180 may overtake it; the tests open pickUp once the
// caller has the 180.
func (ph *phone) answerWhen(ring bool, pickUp <-chan struct{}) func(req *sip.Request, tx sip.ServerTransaction) {
	code, reason := 0, ""
	if ring {
		code, reason = 180, "Ringing"
	}
	return ph.provisionalThenAnswer(code, reason, pickUp)
}

// progressWhen sends 183 Session Progress with SDP, then answers once
// pickUp is closed.
func (ph *phone) progressWhen(pickUp <-chan struct{}) func(req *sip.Request, tx sip.ServerTransaction) {
	return ph.provisionalThenAnswer(183, "Session Progress", pickUp)
}

func (ph *phone) provisionalThenAnswer(code int, reason string, pickUp <-chan struct{}) func(req *sip.Request, tx sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		tag := sip.GenerateTagN(10)
		if code != 0 {
			var body []byte
			if code == 183 {
				body = []byte(sdp)
			}
			res := ph.response(req, code, reason, tag, body)
			if body != nil {
				res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			}
			_ = tx.Respond(res)
		}
		if pickUp != nil {
			select {
			case <-pickUp:
			case <-tx.Done():
				return
			}
		}
		ph.mu.Lock()
		ph.dlgInvite, ph.dlgTag = req, tag
		ph.mu.Unlock()
		res := ph.response(req, 200, "OK", tag, []byte(sdp))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		_ = tx.Respond(res)
	}
}

// reject answers every INVITE with code.
func (ph *phone) reject(code int, reason string, extra ...sip.Header) func(req *sip.Request, tx sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		res := ph.response(req, code, reason, sip.GenerateTagN(10), nil)
		for _, h := range extra {
			res.AppendHeader(h)
		}
		_ = tx.Respond(res)
		// The ACK of a non-2xx belongs to this transaction.
		select {
		case <-tx.Acks():
		case <-tx.Done():
		}
	}
}

// ringForever rings and waits for the INVITE to be cancelled (sipgo sends
// the 487).
func (ph *phone) ringForever() func(req *sip.Request, tx sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(ph.response(req, 180, "Ringing", sip.GenerateTagN(10), nil))
		<-tx.Done()
	}
}

func (ph *phone) response(req *sip.Request, code int, reason, tag string, body []byte) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reason, body)
	if to := res.To(); to != nil {
		to.Params.Add("tag", tag)
	}
	if code >= 180 && code < 300 {
		res.AppendHeader(ph.contact())
	}
	return res
}

const sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"

// noBuild keeps sipgo from adding headers to requests the tests built.
func noBuild(*sipgo.Client, *sip.Request) error { return nil }

// newRequest builds a request from this phone's socket to dest.
func (ph *phone) newRequest(method sip.RequestMethod, ruri sip.Uri, dest string) *sip.Request {
	req := sip.NewRequest(method, ruri)
	req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP",
		Host: "127.0.0.1", Port: ph.port, Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}}})
	req.SetTransport("UDP")
	req.SetDestination(dest)
	req.Laddr = sip.Addr{IP: net.ParseIP("127.0.0.1"), Port: ph.port}
	return req
}

func (ph *phone) contact() *sip.ContactHeader {
	return &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: ph.name, Host: "127.0.0.1", Port: ph.port,
		UriParams: sip.HeaderParams{{K: "transport", V: "udp"}}}}
}

// call is an INVITE this phone placed.
type call struct {
	t      *testing.T
	ph     *phone
	callID string
	inv    *sip.Request
	tx     sip.ClientTransaction
	final  *sip.Response
	cseq   uint32
}

func (c *call) fromTag() string { tag, _ := c.inv.From().Params.Get("tag"); return tag }

// toTag is the tag of the final response the caller got.
func (c *call) toTag() string {
	if c.final == nil {
		return ""
	}
	tag, _ := c.final.To().Params.Get("tag")
	return tag
}

// invite places a call to 15551234567 through proxy.
func (ph *phone) invite(t *testing.T, proxy string) *call {
	t.Helper()
	host, port, _ := sip.ParseAddr(proxy)
	callID := sip.GenerateTagN(16) + "@" + ph.name
	req := ph.newRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "15551234567", Host: host, Port: port}, proxy)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: ph.name, Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(10)}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "15551234567", Host: host}})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	req.AppendHeader(ph.contact())
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(sdp))
	tx, err := ph.cli.TransactionRequest(context.Background(), req, noBuild)
	if err != nil {
		t.Fatalf("%s: send INVITE: %v", ph.name, err)
	}
	t.Cleanup(tx.Terminate)
	return &call{t: t, ph: ph, callID: callID, inv: req, tx: tx, cseq: 1}
}

// next returns the next response to the INVITE.
func (c *call) next() *sip.Response {
	c.t.Helper()
	select {
	case res := <-c.tx.Responses():
		if res.StatusCode >= 200 {
			c.final = res
		}
		return res
	case <-c.tx.Done():
		c.t.Fatalf("INVITE transaction ended without a final response: %v", c.tx.Err())
	case <-time.After(patience):
		c.t.Fatal("no response to the INVITE")
	}
	return nil
}

// waitFor reads responses until one with code.
func (c *call) waitFor(code int) *sip.Response {
	c.t.Helper()
	for {
		res := c.next()
		if res.StatusCode == code {
			return res
		}
		if res.StatusCode >= 200 {
			c.t.Fatalf("final %d while waiting for %d", res.StatusCode, code)
		}
	}
}

// waitFinal reads responses until the final one.
func (c *call) waitFinal() *sip.Response {
	c.t.Helper()
	for c.final == nil {
		c.next()
	}
	return c.final
}

// inDialog builds a request in the dialog the 2xx established, routed by
// its Record-Route (RFC 3261 12.2.1.1).
func (c *call) inDialog(method sip.RequestMethod, cseq uint32) *sip.Request {
	res := c.final
	var routes []sip.Uri
	for _, h := range res.GetHeaders("Record-Route") {
		routes = append([]sip.Uri{h.(*sip.RecordRouteHeader).Address}, routes...)
	}
	return c.ph.dialogRequest(method, res.Contact().Address, routes, c.inv.From(), res.To(), c.callID, cseq)
}

// dialogRequest builds a request along a route set; it goes to the first
// route or to the target.
func (ph *phone) dialogRequest(method sip.RequestMethod, target sip.Uri, routes []sip.Uri, from *sip.FromHeader, to *sip.ToHeader, callID string, cseq uint32) *sip.Request {
	next := target
	if len(routes) > 0 {
		next = routes[0]
	}
	port := next.Port
	if port == 0 {
		port = 5060
	}
	req := ph.newRequest(method, target, net.JoinHostPort(next.Host, strconv.Itoa(port)))
	for _, r := range routes {
		req.AppendHeader(&sip.RouteHeader{Address: r})
	}
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.FromHeader{DisplayName: from.DisplayName, Address: from.Address, Params: from.Params.Clone()})
	req.AppendHeader(&sip.ToHeader{DisplayName: to.DisplayName, Address: to.Address, Params: to.Params.Clone()})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: method})
	req.SetBody(nil)
	return req
}

func (c *call) ack() {
	c.t.Helper()
	if err := c.ph.cli.WriteRequest(c.inDialog(sip.ACK, 1), noBuild); err != nil {
		c.t.Fatalf("send ACK: %v", err)
	}
}

// bye hangs up from the caller's side and returns the final response.
func (c *call) bye() *sip.Response {
	c.t.Helper()
	c.cseq++
	return c.ph.do(c.t, c.inDialog(sip.BYE, c.cseq))
}

// cancel cancels the INVITE and returns the final response to the CANCEL.
func (c *call) cancel() *sip.Response {
	c.t.Helper()
	cancel := sip.NewRequest(sip.CANCEL, c.inv.Recipient)
	cancel.AppendHeader(c.inv.Via().Clone())
	mf := sip.MaxForwardsHeader(70)
	cancel.AppendHeader(&mf)
	cancel.AppendHeader(sip.HeaderClone(c.inv.From()))
	cancel.AppendHeader(sip.HeaderClone(c.inv.To()))
	cancel.AppendHeader(sip.HeaderClone(c.inv.CallID()))
	cancel.AppendHeader(&sip.CSeqHeader{SeqNo: c.inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	cancel.SetBody(nil)
	cancel.SetTransport(c.inv.Transport())
	cancel.SetDestination(c.inv.Destination())
	cancel.Laddr = c.inv.Laddr
	return c.ph.do(c.t, cancel)
}

// hangUp sends BYE from the callee's side of the last dialog it answered.
func (ph *phone) hangUp(t *testing.T) *sip.Response {
	t.Helper()
	ph.mu.Lock()
	inv, tag := ph.dlgInvite, ph.dlgTag
	ph.cseq++
	cseq := ph.cseq
	ph.mu.Unlock()
	var routes []sip.Uri
	for _, h := range inv.GetHeaders("Record-Route") {
		routes = append(routes, h.(*sip.RecordRouteHeader).Address)
	}
	from := inv.To().AsFrom()
	from.Params = from.Params.Clone()
	from.Params.Add("tag", tag)
	to := inv.From().AsTo()
	return ph.do(t, ph.dialogRequest(sip.BYE, inv.Contact().Address, routes, &from, &to, inv.CallID().Value(), cseq))
}

// do sends a request on a client transaction and returns its final response.
func (ph *phone) do(t *testing.T, req *sip.Request) *sip.Response {
	t.Helper()
	tx, err := ph.cli.TransactionRequest(context.Background(), req, noBuild)
	if err != nil {
		t.Fatalf("%s: send %s: %v", ph.name, req.Method, err)
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode >= 200 {
				return res
			}
		case <-tx.Done():
			t.Fatalf("%s: %s ended without a final response: %v", ph.name, req.Method, tx.Err())
		case <-time.After(patience):
			t.Fatalf("%s: no final response to %s", ph.name, req.Method)
		}
	}
}
