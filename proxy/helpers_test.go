package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// patience bounds every wait in the tests. It only turns a hang into a
// failure; no test passes or fails on how fast something happens.
const patience = 15 * time.Second

func testLogger() *slog.Logger {
	if os.Getenv("PROXY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// collector is an EventPublisher that keeps what it is given.
type collector struct {
	mu     sync.Mutex
	events []published
	more   chan struct{}
}

type published struct {
	subject string
	env     schema.Envelope
	tx      schema.Transaction
}

func newCollector() *collector { return &collector{more: make(chan struct{}, 1)} }

func (c *collector) Publish(subject string, env schema.Envelope) error {
	var tx schema.Transaction
	if err := env.Decode(schema.TypeTransaction, schema.TransactionVersion, &tx); err != nil {
		return err
	}
	c.mu.Lock()
	c.events = append(c.events, published{subject: subject, env: env, tx: tx})
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) all() []published {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]published(nil), c.events...)
}

// wait returns the first event that matches.
func (c *collector) wait(t testing.TB, what string, match func(schema.Transaction) bool) published {
	t.Helper()
	deadline := time.After(patience)
	for {
		for _, e := range c.all() {
			if match(e.tx) {
				return e
			}
		}
		select {
		case <-c.more:
		case <-deadline:
			t.Fatalf("no %s event; have %+v", what, c.all())
		}
	}
}

// of matches the event of a method in a call.
func of(callID string, method sip.RequestMethod) func(schema.Transaction) bool {
	return func(tx schema.Transaction) bool { return tx.CallID == callID && tx.Method == string(method) }
}

// harness is a running proxy with its event collector and metrics.
type harness struct {
	p    *Proxy
	ev   *collector
	reg  *prometheus.Registry
	addr string // host:port of its UDP and TCP listeners
	host string
	port int
}

func startProxy(t testing.TB, gateway, gatewayTransport string, tune func(*Config)) *harness {
	t.Helper()
	port := testkit.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	h := &harness{ev: newCollector(), reg: prometheus.NewRegistry(), addr: addr, host: "127.0.0.1", port: port}
	cfg := Config{
		Node:             "test-node",
		Listeners:        []Listener{{Transport: "udp", Addr: addr}, {Transport: "tcp", Addr: addr}},
		Gateway:          gateway,
		GatewayTransport: gatewayTransport,
		Logger:           testLogger(),
		Registerer:       h.reg,
		// The phones call from 127.0.0.1; there is no open relay.
		Provisioning: FixedProvisioning(localProvisioning()),
	}
	if tune != nil {
		tune(&cfg)
	}
	p, err := New(cfg, h.ev)
	if err != nil {
		t.Fatal(err)
	}
	h.p = p
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		cancel()
		t.Fatalf("proxy did not start: %v", err)
	case <-time.After(patience):
		t.Fatal("proxy not ready")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(patience):
			t.Errorf("Run did not return after its context ended")
		}
	})
	return h
}

// localProvisioning has one trunk, "local" of account "local", for the
// test phones' address 127.0.0.1.
func localProvisioning() *schema.Provisioning {
	p := schema.NewProvisioning()
	p.Accounts["local"] = schema.Account{ID: "local", Currency: "EUR"}
	p.Trunks["local"] = schema.Trunk{ID: "local", Account: "local", Sources: []schema.Source{{CIDR: "127.0.0.1"}}}
	return p
}

// metricValue reads a counter or gauge from the proxy's registry; labels
// are name, value pairs.
func metricValue(t testing.TB, h *harness, name string, labels ...string) float64 {
	t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// waitMetric waits until a metric reads want.
func waitMetric(t testing.TB, h *harness, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for metricValue(t, h, name) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", name, metricValue(t, h, name), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// phone is an in-process SIP user agent (sipgo) listening on UDP and TCP
// on one port. As a callee it answers with the behaviour in uas.
type phone struct {
	t    testing.TB
	name string
	ua   *sipgo.UserAgent
	cli  *sipgo.Client
	port int
	addr string

	mu   sync.Mutex
	reqs []*sip.Request
	more chan struct{}
	uas  func(req *sip.Request, tx sip.ServerTransaction)
	// dialog is the last INVITE this phone answered and the To tag it used.
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
	ph := &phone{t: t, name: name, ua: ua, cli: cli, port: port, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		more: make(chan struct{}, 1), cseq: 100}
	ph.uas = ph.answer(true)
	pc, err := net.ListenPacket("udp", ph.addr)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", ph.addr)
	if err != nil {
		t.Fatal(err)
	}
	ln := &trackingListener{Listener: tl}
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		ph.record(req)
		ph.mu.Lock()
		uas := ph.uas
		ph.mu.Unlock()
		uas(req, tx)
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { ph.record(req) })
	ok := func(req *sip.Request, tx sip.ServerTransaction) {
		ph.record(req)
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	}
	srv.OnBye(ok)
	srv.OnOptions(ok)
	srv.OnCancel(func(req *sip.Request, tx sip.ServerTransaction) {
		ph.record(req)
		_ = tx.Respond(sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
	})
	// Registered before the reader starts, so that the first request sent
	// from this socket finds it.
	ua.TransportLayer().Pool("udp").Add(ph.addr, &sip.UDPConnection{PacketConn: pc, PacketAddr: ph.addr, Listener: true})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.ServeUDP(pc) }()
	go func() { defer wg.Done(); _ = srv.ServeTCP(ln) }()
	t.Cleanup(func() {
		_ = pc.Close()
		_ = ln.Close()
		_ = ua.Close()
		ln.closeAll()
		wg.Wait()
	})
	return ph
}

// trackingListener closes the connections it accepted when the phone
// goes, so that no reader goroutine outlives a test.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		_ = c.Close()
	}
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

// received lists the requests of a call this phone got, in order.
func (ph *phone) received(callID string) []*sip.Request {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	var out []*sip.Request
	for _, r := range ph.reqs {
		if r.CallID() != nil && r.CallID().Value() == callID {
			out = append(out, r)
		}
	}
	return out
}

// waitRequest returns the n-th (from 1) request of a method in a call.
func (ph *phone) waitRequest(method sip.RequestMethod, callID string, n int) *sip.Request {
	ph.t.Helper()
	deadline := time.After(patience)
	for {
		seen := 0
		for _, r := range ph.received(callID) {
			if r.Method == method {
				seen++
				if seen == n {
					return r
				}
			}
		}
		select {
		case <-ph.more:
		case <-deadline:
			ph.t.Fatalf("%s: no %s #%d in call %s", ph.name, method, n, callID)
		}
	}
}

// answer is the callee's default: ring (optionally), then 200 with SDP.
func (ph *phone) answer(ring bool) func(req *sip.Request, tx sip.ServerTransaction) {
	return ph.answerWhen(ring, nil)
}

// answerWhen rings and answers once pickUp is closed (nil: at once). sipgo
// handles every message on a goroutine of its own, so a 200 sent right
// after the 180 may overtake it; the tests open pickUp once the caller has
// the 180.
func (ph *phone) answerWhen(ring bool, pickUp <-chan struct{}) func(req *sip.Request, tx sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		tag := sip.GenerateTagN(10)
		if ring {
			_ = tx.Respond(ph.response(req, 180, "Ringing", tag, nil))
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
		// The ACK of a non-2xx belongs to this transaction and never
		// reaches OnAck: take it here.
		select {
		case ack := <-tx.Acks():
			ph.record(ack)
		case <-tx.Done():
		}
	}
}

// ringForever rings and waits for the INVITE to be cancelled (sipgo sends
// the 487); the CANCEL is recorded.
func (ph *phone) ringForever() func(req *sip.Request, tx sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		tx.OnCancel(func(c *sip.Request) { ph.record(c) })
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
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: ph.name, Host: "127.0.0.1", Port: ph.port,
			UriParams: sip.HeaderParams{{K: "transport", V: sip.NetworkToLower(req.Transport())}}}})
	}
	return res
}

const sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"

// noBuild keeps sipgo from adding headers to requests the tests built.
func noBuild(*sipgo.Client, *sip.Request) error { return nil }

// newRequest builds a request from this phone, sent to dest over transport.
func (ph *phone) newRequest(method sip.RequestMethod, ruri sip.Uri, transport, dest string) *sip.Request {
	req := sip.NewRequest(method, ruri)
	req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transport,
		Host: "127.0.0.1", Port: ph.port, Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}}})
	req.SetTransport(transport)
	req.SetDestination(dest)
	if transport == "UDP" {
		// Send from the listening socket, as a phone does.
		req.Laddr = sip.Addr{IP: net.ParseIP("127.0.0.1"), Port: ph.port}
	}
	return req
}

func (ph *phone) contact(transport string) *sip.ContactHeader {
	return &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: ph.name, Host: "127.0.0.1", Port: ph.port,
		UriParams: sip.HeaderParams{{K: "transport", V: sip.NetworkToLower(transport)}}}}
}

// call is an INVITE this phone placed.
type call struct {
	ph        *phone
	transport string
	callID    string
	inv       *sip.Request
	tx        sip.ClientTransaction
	responses []*sip.Response
	final     *sip.Response
	cseq      uint32
}

// invite places a call to proxy over transport; mod may change the INVITE
// before it is sent.
func (ph *phone) invite(proxy, transport string, mod func(*sip.Request)) *call {
	ph.t.Helper()
	host, port, _ := sip.ParseAddr(proxy)
	callID := sip.GenerateTagN(16) + "@" + ph.name
	req := ph.newRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "15551234567", Host: host, Port: port}, transport, proxy)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: ph.name, Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(10)}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "15551234567", Host: host}})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	req.AppendHeader(ph.contact(transport))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(sdp))
	if mod != nil {
		mod(req)
	}
	tx, err := ph.cli.TransactionRequest(context.Background(), req, noBuild)
	if err != nil {
		ph.t.Fatalf("%s: send INVITE: %v", ph.name, err)
	}
	ph.t.Cleanup(tx.Terminate)
	return &call{ph: ph, transport: transport, callID: callID, inv: req, tx: tx, cseq: 1}
}

// next returns the next response to the INVITE.
func (c *call) next() *sip.Response {
	c.ph.t.Helper()
	select {
	case res := <-c.tx.Responses():
		c.responses = append(c.responses, res)
		if res.StatusCode >= 200 {
			c.final = res
		}
		return res
	case <-c.tx.Done():
		c.ph.t.Fatalf("INVITE transaction ended without a final response: %v", c.tx.Err())
	case <-time.After(patience):
		c.ph.t.Fatal("no response to the INVITE")
	}
	return nil
}

// waitFor reads responses until one with code and returns it.
func (c *call) waitFor(code int) *sip.Response {
	c.ph.t.Helper()
	for {
		res := c.next()
		if res.StatusCode == code {
			return res
		}
		if res.StatusCode >= 200 {
			c.ph.t.Fatalf("final %d while waiting for %d", res.StatusCode, code)
		}
	}
}

// waitFinal reads responses until the final one.
func (c *call) waitFinal() *sip.Response {
	c.ph.t.Helper()
	for c.final == nil {
		c.next()
	}
	return c.final
}

// inDialog builds a request in the dialog the 2xx established, routed by
// its Record-Route (RFC 3261 12.2.1.1).
func (c *call) inDialog(method sip.RequestMethod, cseq uint32) *sip.Request {
	res := c.final
	target := res.Contact().Address
	var routes []sip.Uri
	for _, h := range res.GetHeaders("Record-Route") {
		rr := h.(*sip.RecordRouteHeader)
		routes = append([]sip.Uri{rr.Address}, routes...)
	}
	return c.ph.dialogRequest(method, target, routes, c.inv.From(), res.To(), c.callID, cseq, c.transport)
}

// dialogRequest builds a request along a route set; it goes to the first
// route (on its transport) or to the target.
func (ph *phone) dialogRequest(method sip.RequestMethod, target sip.Uri, routes []sip.Uri, from *sip.FromHeader, to *sip.ToHeader, callID string, cseq uint32, transport string) *sip.Request {
	next := target
	if len(routes) > 0 {
		next = routes[0]
	}
	if t, ok := next.UriParams.Get("transport"); ok {
		transport = sip.NetworkToUpper(t)
	}
	port := next.Port
	if port == 0 {
		port = 5060
	}
	req := ph.newRequest(method, target, transport, net.JoinHostPort(next.Host, strconv.Itoa(port)))
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

func (c *call) ack() *sip.Request {
	c.ph.t.Helper()
	ack := c.inDialog(sip.ACK, 1)
	if err := c.ph.cli.WriteRequest(ack, noBuild); err != nil {
		c.ph.t.Fatalf("send ACK: %v", err)
	}
	return ack
}

// bye hangs up from the caller's side and returns the final response.
func (c *call) bye(extra ...sip.Header) *sip.Response {
	c.ph.t.Helper()
	c.cseq++
	bye := c.inDialog(sip.BYE, c.cseq)
	for _, h := range extra {
		bye.AppendHeader(h)
	}
	return c.ph.do(bye)
}

// cancel cancels the INVITE and returns the final response to the CANCEL.
func (c *call) cancel(extra ...sip.Header) *sip.Response {
	c.ph.t.Helper()
	cancel := sip.NewRequest(sip.CANCEL, c.inv.Recipient)
	cancel.AppendHeader(c.inv.Via().Clone())
	mf := sip.MaxForwardsHeader(70)
	cancel.AppendHeader(&mf)
	cancel.AppendHeader(sip.HeaderClone(c.inv.From()))
	cancel.AppendHeader(sip.HeaderClone(c.inv.To()))
	cancel.AppendHeader(sip.HeaderClone(c.inv.CallID()))
	cancel.AppendHeader(&sip.CSeqHeader{SeqNo: c.inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	for _, h := range extra {
		cancel.AppendHeader(h)
	}
	cancel.SetBody(nil)
	cancel.SetTransport(c.inv.Transport())
	cancel.SetDestination(c.inv.Destination())
	cancel.Laddr = c.inv.Laddr
	return c.ph.do(cancel)
}

// hangUp sends BYE from the callee's side of the last dialog it answered.
func (ph *phone) hangUp(transport string, extra ...sip.Header) *sip.Response {
	ph.t.Helper()
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
	bye := ph.dialogRequest(sip.BYE, inv.Contact().Address, routes, &from, &to, inv.CallID().Value(), cseq, transport)
	for _, h := range extra {
		bye.AppendHeader(h)
	}
	return ph.do(bye)
}

// do sends a request on a client transaction and returns its final response.
func (ph *phone) do(req *sip.Request) *sip.Response {
	ph.t.Helper()
	tx, err := ph.cli.TransactionRequest(context.Background(), req, noBuild)
	if err != nil {
		ph.t.Fatalf("%s: send %s: %v", ph.name, req.Method, err)
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode >= 200 {
				return res
			}
		case <-tx.Done():
			ph.t.Fatalf("%s: %s ended without a final response: %v", ph.name, req.Method, tx.Err())
		case <-time.After(patience):
			ph.t.Fatalf("%s: no final response to %s", ph.name, req.Method)
		}
	}
}

// options sends an out-of-dialog OPTIONS through the proxy.
func (ph *phone) options(proxy, transport string, mod func(*sip.Request)) (*sip.Response, string) {
	ph.t.Helper()
	host, port, _ := sip.ParseAddr(proxy)
	callID := sip.GenerateTagN(16) + "@" + ph.name
	req := ph.newRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", User: "ping", Host: host, Port: port}, transport, proxy)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: ph.name, Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(10)}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "ping", Host: host}})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	req.SetBody(nil)
	if mod != nil {
		mod(req)
	}
	return ph.do(req), callID
}

func topVia(req *sip.Request) *sip.ViaHeader { return req.Via() }
