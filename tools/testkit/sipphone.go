package testkit

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
)

// SIPPatience bounds every wait of a SIPPhone. It only turns a hang into a
// failure; no test passes or fails on how fast something happens.
const SIPPatience = 30 * time.Second

// SDP is the session description every SIPPhone offers and answers with.
const SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"

// NoBuild keeps sipgo from adding headers to requests the tests built, so
// that what goes on the wire is exactly what the test wrote.
func NoBuild(*sipgo.Client, *sip.Request) error { return nil }

// SIPPhone is an in-process SIP user agent (sipgo) listening on UDP and
// TCP on one loopback port. As a caller it places calls through a proxy;
// as a callee it answers with the behaviour set by SetUAS (by default it
// rings and answers). It is shared by the proxy and CDR tests so that both
// drive SIP the same way.
//
// Methods that may fail the test take the testing.TB of the (sub)test
// using them, as one phone often outlives the subtests it serves.
type SIPPhone struct {
	Name   string
	Port   int
	Addr   string // host:port of both listeners
	Client *sipgo.Client

	mu   sync.Mutex
	reqs []*sip.Request
	more chan struct{}
	uas  func(req *sip.Request, tx sip.ServerTransaction)
	// dlgInvite and dlgTag are the last INVITE this phone answered and
	// the To tag it used, for HangUp.
	dlgInvite *sip.Request
	dlgTag    string
	cseq      uint32
}

// NewSIPPhone starts a phone called name on a free port; it stops when the
// test ends.
func NewSIPPhone(t testing.TB, name string) *SIPPhone {
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
	port := FreePort(t)
	ph := &SIPPhone{Name: name, Client: cli, Port: port, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		more: make(chan struct{}, 1), cseq: 100}
	ph.uas = ph.Answer(true)
	pc, err := net.ListenPacket("udp", ph.Addr)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", ph.Addr)
	if err != nil {
		_ = pc.Close()
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
	ua.TransportLayer().Pool("udp").Add(ph.Addr, &sip.UDPConnection{PacketConn: pc, PacketAddr: ph.Addr, Listener: true})
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.ServeUDP(pc) })
	wg.Go(func() { _ = srv.ServeTCP(ln) })
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

// SetUAS sets how the phone handles the INVITEs it gets from now on.
func (ph *SIPPhone) SetUAS(f func(req *sip.Request, tx sip.ServerTransaction)) {
	ph.mu.Lock()
	ph.uas = f
	ph.mu.Unlock()
}

func (ph *SIPPhone) record(req *sip.Request) {
	ph.mu.Lock()
	ph.reqs = append(ph.reqs, req)
	ph.mu.Unlock()
	select {
	case ph.more <- struct{}{}:
	default:
	}
}

// Requests lists every request this phone got, in order.
func (ph *SIPPhone) Requests() []*sip.Request {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	return append([]*sip.Request(nil), ph.reqs...)
}

// Received lists the requests of a call this phone got, in order.
func (ph *SIPPhone) Received(callID string) []*sip.Request {
	var out []*sip.Request
	for _, r := range ph.Requests() {
		if r.CallID() != nil && r.CallID().Value() == callID {
			out = append(out, r)
		}
	}
	return out
}

// WaitRequest returns the n-th (from 1) request of a method in a call.
func (ph *SIPPhone) WaitRequest(t testing.TB, method sip.RequestMethod, callID string, n int) *sip.Request {
	t.Helper()
	deadline := time.After(SIPPatience)
	for {
		seen := 0
		for _, r := range ph.Received(callID) {
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
			t.Fatalf("%s: no %s #%d in call %s", ph.Name, method, n, callID)
		}
	}
}

// Answer is the callee's default: ring (optionally), then 200 with SDP.
func (ph *SIPPhone) Answer(ring bool) func(req *sip.Request, tx sip.ServerTransaction) {
	return ph.AnswerWhen(ring, nil)
}

// AnswerWhen rings (optionally) and answers once pickUp is closed (nil: at
// once). sipgo handles every message on a goroutine of its own, so a 200
// sent right after the 180 may overtake it; tests open pickUp once the
// caller has the 180.
func (ph *SIPPhone) AnswerWhen(ring bool, pickUp <-chan struct{}) func(req *sip.Request, tx sip.ServerTransaction) {
	code, reason := 0, ""
	if ring {
		code, reason = 180, "Ringing"
	}
	return ph.provisionalThenAnswer(code, reason, pickUp)
}

// ProgressWhen sends 183 Session Progress with SDP (early media), then
// answers once pickUp is closed.
func (ph *SIPPhone) ProgressWhen(pickUp <-chan struct{}) func(req *sip.Request, tx sip.ServerTransaction) {
	return ph.provisionalThenAnswer(183, "Session Progress", pickUp)
}

// provisionalThenAnswer sends the provisional code (0: none), then 200
// with SDP once pickUp is closed, and remembers the dialog for HangUp.
func (ph *SIPPhone) provisionalThenAnswer(code int, reason string, pickUp <-chan struct{}) func(req *sip.Request, tx sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		tag := sip.GenerateTagN(10)
		if code != 0 {
			var body []byte
			if code == 183 {
				body = []byte(SDP)
			}
			res := ph.Response(req, code, reason, tag, body)
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
		res := ph.Response(req, 200, "OK", tag, []byte(SDP))
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		_ = tx.Respond(res)
	}
}

// Reject answers every INVITE with code and the extra headers.
func (ph *SIPPhone) Reject(code int, reason string, extra ...sip.Header) func(req *sip.Request, tx sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		res := ph.Response(req, code, reason, sip.GenerateTagN(10), nil)
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

// RingForever rings and waits for the INVITE to be cancelled (sipgo sends
// the 487); the CANCEL is recorded.
func (ph *SIPPhone) RingForever() func(req *sip.Request, tx sip.ServerTransaction) {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		tx.OnCancel(func(c *sip.Request) { ph.record(c) })
		_ = tx.Respond(ph.Response(req, 180, "Ringing", sip.GenerateTagN(10), nil))
		<-tx.Done()
	}
}

// Response builds this phone's response to req with a To tag; ringing and
// success carry a Contact on the transport req came over.
func (ph *SIPPhone) Response(req *sip.Request, code int, reason, tag string, body []byte) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reason, body)
	if to := res.To(); to != nil {
		to.Params.Add("tag", tag)
	}
	if code >= 180 && code < 300 {
		res.AppendHeader(ph.Contact(req.Transport()))
	}
	return res
}

// NewRequest builds a request from this phone, sent to dest over
// transport. Over UDP it goes from the listening socket, as a phone's does.
func (ph *SIPPhone) NewRequest(method sip.RequestMethod, ruri sip.Uri, transport, dest string) *sip.Request {
	req := sip.NewRequest(method, ruri)
	req.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transport,
		Host: "127.0.0.1", Port: ph.Port, Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}}})
	req.SetTransport(transport)
	req.SetDestination(dest)
	if transport == "UDP" {
		req.Laddr = sip.Addr{IP: net.ParseIP("127.0.0.1"), Port: ph.Port}
	}
	return req
}

// Contact is this phone's Contact for transport.
func (ph *SIPPhone) Contact(transport string) *sip.ContactHeader {
	return &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: ph.Name, Host: "127.0.0.1", Port: ph.Port,
		UriParams: sip.HeaderParams{{K: "transport", V: sip.NetworkToLower(transport)}}}}
}

// SIPCall is an INVITE a SIPPhone placed. It fails the test that placed it.
type SIPCall struct {
	t         testing.TB
	ph        *SIPPhone
	Transport string
	CallID    string
	Invite    *sip.Request
	tx        sip.ClientTransaction
	Responses []*sip.Response // every response read so far
	Final     *sip.Response   // the final response, once read
	cseq      uint32
}

// Invite places a call to 15551234567 through proxy over transport; mod
// may change the INVITE before it is sent.
func (ph *SIPPhone) Invite(t testing.TB, proxy, transport string, mod func(*sip.Request)) *SIPCall {
	t.Helper()
	host, port, _ := sip.ParseAddr(proxy)
	callID := sip.GenerateTagN(16) + "@" + ph.Name
	req := ph.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "15551234567", Host: host, Port: port}, transport, proxy)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: ph.Name, Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(10)}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "15551234567", Host: host}})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	req.AppendHeader(ph.Contact(transport))
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(SDP))
	if mod != nil {
		mod(req)
	}
	tx, err := ph.Client.TransactionRequest(context.Background(), req, NoBuild)
	if err != nil {
		t.Fatalf("%s: send INVITE: %v", ph.Name, err)
	}
	t.Cleanup(tx.Terminate)
	return &SIPCall{t: t, ph: ph, Transport: transport, CallID: callID, Invite: req, tx: tx, cseq: 1}
}

// FromTag is the caller's tag.
func (c *SIPCall) FromTag() string { tag, _ := c.Invite.From().Params.Get("tag"); return tag }

// ToTag is the tag of the final response the caller got ("" before it).
func (c *SIPCall) ToTag() string {
	if c.Final == nil {
		return ""
	}
	tag, _ := c.Final.To().Params.Get("tag")
	return tag
}

// Next returns the next response to the INVITE.
func (c *SIPCall) Next() *sip.Response {
	c.t.Helper()
	select {
	case res := <-c.tx.Responses():
		c.Responses = append(c.Responses, res)
		if res.StatusCode >= 200 {
			c.Final = res
		}
		return res
	case <-c.tx.Done():
		c.t.Fatalf("INVITE transaction ended without a final response: %v", c.tx.Err())
	case <-time.After(SIPPatience):
		c.t.Fatal("no response to the INVITE")
	}
	return nil
}

// WaitFor reads responses until one with code and returns it.
func (c *SIPCall) WaitFor(code int) *sip.Response {
	c.t.Helper()
	for {
		res := c.Next()
		if res.StatusCode == code {
			return res
		}
		if res.StatusCode >= 200 {
			c.t.Fatalf("final %d while waiting for %d", res.StatusCode, code)
		}
	}
}

// WaitFinal reads responses until the final one.
func (c *SIPCall) WaitFinal() *sip.Response {
	c.t.Helper()
	for c.Final == nil {
		c.Next()
	}
	return c.Final
}

// InDialog builds a request in the dialog the 2xx established, routed by
// its Record-Route (RFC 3261 12.2.1.1).
func (c *SIPCall) InDialog(method sip.RequestMethod, cseq uint32) *sip.Request {
	res := c.Final
	var routes []sip.Uri
	for _, h := range res.GetHeaders("Record-Route") {
		routes = append([]sip.Uri{h.(*sip.RecordRouteHeader).Address}, routes...)
	}
	return c.ph.DialogRequest(method, res.Contact().Address, routes, c.Invite.From(), res.To(), c.CallID, cseq, c.Transport)
}

// DialogRequest builds a request along a route set; it goes to the first
// route (on its transport parameter, else transport) or to the target.
func (ph *SIPPhone) DialogRequest(method sip.RequestMethod, target sip.Uri, routes []sip.Uri, from *sip.FromHeader, to *sip.ToHeader, callID string, cseq uint32, transport string) *sip.Request {
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
	req := ph.NewRequest(method, target, transport, net.JoinHostPort(next.Host, strconv.Itoa(port)))
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

// Ack acknowledges the 2xx and returns the ACK sent.
func (c *SIPCall) Ack() *sip.Request {
	c.t.Helper()
	ack := c.InDialog(sip.ACK, 1)
	if err := c.ph.Client.WriteRequest(ack, NoBuild); err != nil {
		c.t.Fatalf("send ACK: %v", err)
	}
	return ack
}

// Bye hangs up from the caller's side and returns the final response.
func (c *SIPCall) Bye(extra ...sip.Header) *sip.Response {
	c.t.Helper()
	c.cseq++
	bye := c.InDialog(sip.BYE, c.cseq)
	for _, h := range extra {
		bye.AppendHeader(h)
	}
	return c.ph.Do(c.t, bye)
}

// Cancel cancels the INVITE and returns the final response to the CANCEL.
func (c *SIPCall) Cancel(extra ...sip.Header) *sip.Response {
	c.t.Helper()
	inv := c.Invite
	cancel := sip.NewRequest(sip.CANCEL, inv.Recipient)
	cancel.AppendHeader(inv.Via().Clone())
	mf := sip.MaxForwardsHeader(70)
	cancel.AppendHeader(&mf)
	cancel.AppendHeader(sip.HeaderClone(inv.From()))
	cancel.AppendHeader(sip.HeaderClone(inv.To()))
	cancel.AppendHeader(sip.HeaderClone(inv.CallID()))
	cancel.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	for _, h := range extra {
		cancel.AppendHeader(h)
	}
	cancel.SetBody(nil)
	cancel.SetTransport(inv.Transport())
	cancel.SetDestination(inv.Destination())
	cancel.Laddr = inv.Laddr
	return c.ph.Do(c.t, cancel)
}

// HangUp sends BYE over transport from the callee's side of the last
// dialog this phone answered.
func (ph *SIPPhone) HangUp(t testing.TB, transport string, extra ...sip.Header) *sip.Response {
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
	bye := ph.DialogRequest(sip.BYE, inv.Contact().Address, routes, &from, &to, inv.CallID().Value(), cseq, transport)
	for _, h := range extra {
		bye.AppendHeader(h)
	}
	return ph.Do(t, bye)
}

// Do sends a request on a client transaction and returns its final response.
func (ph *SIPPhone) Do(t testing.TB, req *sip.Request) *sip.Response {
	t.Helper()
	tx, err := ph.Client.TransactionRequest(context.Background(), req, NoBuild)
	if err != nil {
		t.Fatalf("%s: send %s: %v", ph.Name, req.Method, err)
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode >= 200 {
				return res
			}
		case <-tx.Done():
			t.Fatalf("%s: %s ended without a final response: %v", ph.Name, req.Method, tx.Err())
		case <-time.After(SIPPatience):
			t.Fatalf("%s: no final response to %s", ph.Name, req.Method)
		}
	}
}

// Options sends an out-of-dialog OPTIONS through proxy over transport; mod
// may change it before it is sent. It returns the final response and the
// Call-ID.
func (ph *SIPPhone) Options(t testing.TB, proxy, transport string, mod func(*sip.Request)) (*sip.Response, string) {
	t.Helper()
	host, port, _ := sip.ParseAddr(proxy)
	callID := sip.GenerateTagN(16) + "@" + ph.Name
	req := ph.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", User: "ping", Host: host, Port: port}, transport, proxy)
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: ph.Name, Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(10)}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "ping", Host: host}})
	cid := sip.CallIDHeader(callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	req.SetBody(nil)
	if mod != nil {
		mod(req)
	}
	return ph.Do(t, req), callID
}
