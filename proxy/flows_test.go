package proxy

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

func TestBusy(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			gw := testkit.NewSIPPhone(t, "gw")
			gw.SetUAS(gw.Reject(486, "Busy Here", sip.NewHeader("Reason", "Q.850;cause=17;text=\"User busy\"")))
			h := startProxy(t, gw.Addr, transport, nil)
			alice := testkit.NewSIPPhone(t, "alice")

			c := alice.Invite(t, h.addr, sip.NetworkToUpper(transport), nil)
			if res := c.WaitFinal(); res.StatusCode != 486 {
				t.Fatalf("INVITE answered %d, want 486", res.StatusCode)
			}
			// The caller's transaction ACKs the 486; the proxy absorbs that
			// ACK (hop by hop) and its own client transaction ACKs the
			// gateway.
			ack := gw.WaitRequest(t, sip.ACK, c.CallID, 1)
			inv := gw.WaitRequest(t, sip.INVITE, c.CallID, 1)
			ib, _ := inv.Via().Params.Get("branch")
			ab, _ := ack.Via().Params.Get("branch")
			if ib != ab {
				t.Errorf("gateway's ACK has branch %s, want its INVITE's %s (the proxy's own ACK)", ab, ib)
			}
			ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
			if ev.Status != 486 || ev.Reason != "Busy Here" || ev.Q850 != 17 || ev.ToTag == "" || ev.Note != "" {
				t.Errorf("INVITE event %+v", ev)
			}
			if len(ev.Attempts) != 1 || ev.Attempts[0].Status != 486 || ev.Attempts[0].Q850 != 17 || ev.Attempts[0].FinalAt == 0 {
				t.Errorf("attempts %+v", ev.Attempts)
			}
			// A later call still goes through, and only the proxy's ACK of
			// the busy call ever reached the gateway.
			if res, _ := alice.Options(t, h.addr, sip.NetworkToUpper(transport), nil); res.StatusCode != 200 {
				t.Fatalf("OPTIONS after busy: %d", res.StatusCode)
			}
			if n := countMethod(gw.Received(c.CallID), sip.ACK); n != 1 {
				t.Errorf("gateway got %d ACKs for the busy call, want 1", n)
			}
			for _, e := range h.ev.all() {
				if e.tx.CallID == c.CallID && e.tx.Method == "ACK" {
					t.Errorf("ACK of a non-2xx has an event of its own: %+v", e.tx)
				}
			}
		})
	}
}

func TestCancel(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			gw := testkit.NewSIPPhone(t, "gw")
			gw.SetUAS(gw.RingForever())
			h := startProxy(t, gw.Addr, transport, nil)
			alice := testkit.NewSIPPhone(t, "alice")

			c := alice.Invite(t, h.addr, sip.NetworkToUpper(transport), nil)
			c.WaitFor(180)
			if res := c.Cancel(sip.NewHeader("Reason", `Q.850;cause=31;text="Caller gave up"`)); res.StatusCode != 200 {
				t.Fatalf("CANCEL answered %d", res.StatusCode)
			}
			if res := c.WaitFinal(); res.StatusCode != 487 {
				t.Fatalf("INVITE answered %d after CANCEL, want 487", res.StatusCode)
			}
			cancel := gw.WaitRequest(t, sip.CANCEL, c.CallID, 1)
			inv := gw.WaitRequest(t, sip.INVITE, c.CallID, 1)
			ib, _ := inv.Via().Params.Get("branch")
			cb, _ := cancel.Via().Params.Get("branch")
			if ib != cb || cancel.Via().Host != h.host || cancel.Via().Port != h.port {
				t.Errorf("gateway's CANCEL Via %s, want the proxy's with the INVITE's branch %s", cancel.Via().Value(), ib)
			}
			if q850(cancel.Headers()) != 31 {
				t.Errorf("the caller's Reason was not passed on: %v", cancel.GetHeaders("Reason"))
			}

			ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
			if ev.Status != 487 || ev.ProvisionalStatus != 180 || !(ev.RequestAt <= ev.ProvisionalAt && ev.ProvisionalAt <= ev.FinalAt) {
				t.Errorf("INVITE event %+v", ev)
			}
			if len(ev.Attempts) != 1 || ev.Attempts[0].Status != 487 {
				t.Errorf("INVITE attempts %+v, want the gateway's 487", ev.Attempts)
			}
			cev := h.ev.wait(t, "CANCEL", of(c.CallID, sip.CANCEL)).tx
			if cev.Status != 200 || cev.Q850 != 31 || cev.CSeq != 1 || cev.Destination != gw.Addr || cev.FinalAt == 0 {
				t.Errorf("CANCEL event %+v", cev)
			}
			if len(cev.Attempts) != 1 || cev.Attempts[0].Status != 200 {
				t.Errorf("CANCEL attempts %+v, want the gateway's 200", cev.Attempts)
			}
		})
	}
}

func TestMaxForwards(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	h := startProxy(t, gw.Addr, "udp", nil)
	alice := testkit.NewSIPPhone(t, "alice")

	c := alice.Invite(t, h.addr, "UDP", func(r *sip.Request) {
		mf := sip.MaxForwardsHeader(0)
		r.ReplaceHeader(&mf)
	})
	if res := c.WaitFinal(); res.StatusCode != 483 {
		t.Fatalf("INVITE with Max-Forwards 0 answered %d, want 483", res.StatusCode)
	}
	ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
	if ev.Status != 483 || ev.Note != "max_forwards" || len(ev.Attempts) != 0 || ev.Destination != "" {
		t.Errorf("483 event %+v", ev)
	}

	// Absent Max-Forwards: the proxy adds 70.
	res, callID := alice.Options(t, h.addr, "UDP", func(r *sip.Request) { r.RemoveHeader("Max-Forwards") })
	if res.StatusCode != 200 {
		t.Fatalf("OPTIONS answered %d", res.StatusCode)
	}
	if mf := gw.WaitRequest(t, sip.OPTIONS, callID, 1).MaxForwards(); mf == nil || *mf != 70 {
		t.Errorf("Max-Forwards at the gateway %v, want 70", mf)
	}
	if len(gw.Received(c.CallID)) != 0 {
		t.Errorf("the gateway saw the call with Max-Forwards 0")
	}
}

func TestOptionsGoToGateway(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	h := startProxy(t, gw.Addr, "udp", nil)
	alice := testkit.NewSIPPhone(t, "alice")
	res, callID := alice.Options(t, h.addr, "TCP", nil)
	if res.StatusCode != 200 {
		t.Fatalf("OPTIONS answered %d", res.StatusCode)
	}
	req := gw.WaitRequest(t, sip.OPTIONS, callID, 1)
	checkRelayed(t, req, h, "UDP", 2)
	if len(req.GetHeaders("Record-Route")) != 0 {
		t.Errorf("OPTIONS was record-routed")
	}
	ev := h.ev.wait(t, "OPTIONS", of(callID, sip.OPTIONS)).tx
	if ev.Status != 200 || ev.Transport != "tcp" || ev.InDialog || ev.Destination != gw.Addr || len(ev.Attempts) != 1 || ev.Attempts[0].Status != 200 {
		t.Errorf("OPTIONS event %+v", ev)
	}
	if got := metricValue(t, h, "carrier_sip_transactions_total", "method", "OPTIONS", "code", "200"); got != 1 {
		t.Errorf("carrier_sip_transactions_total{OPTIONS,200} = %v", got)
	}
}

// TestGatewayUnreachable: a TCP gateway that refuses connections gets the
// caller a 503.
func TestGatewayUnreachable(t *testing.T) {
	dead := net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreeTCPPort(t)))
	h := startProxy(t, dead, "tcp", nil)
	alice := testkit.NewSIPPhone(t, "alice")
	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 503 {
		t.Fatalf("INVITE to an unreachable gateway answered %d, want 503", res.StatusCode)
	}
	ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
	if ev.Status != 503 || ev.Note != "unreachable" || ev.Destination != dead || len(ev.Attempts) != 1 || ev.Attempts[0].Status != 503 {
		t.Errorf("event %+v", ev)
	}
}

// TestNoResponse: a gateway that never answers; the proxy gives up after
// its response timer with 408.
func TestNoResponse(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	h := startProxy(t, silent.LocalAddr().String(), "udp", func(c *Config) { c.Timers.Response = 300 * time.Millisecond })
	alice := testkit.NewSIPPhone(t, "alice")
	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 408 {
		t.Fatalf("INVITE answered %d, want 408", res.StatusCode)
	}
	ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
	if ev.Status != 408 || ev.Note != "timeout" || len(ev.Attempts) != 1 || ev.Attempts[0].Status != 408 {
		t.Errorf("event %+v", ev)
	}
}

// TestRingTimeout: timer C ends a call that rings too long: 408 to the
// caller, CANCEL to the gateway.
func TestRingTimeout(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	gw.SetUAS(gw.RingForever())
	h := startProxy(t, gw.Addr, "udp", func(c *Config) { c.Timers.Invite = 300 * time.Millisecond })
	alice := testkit.NewSIPPhone(t, "alice")
	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 408 {
		t.Fatalf("INVITE answered %d, want 408", res.StatusCode)
	}
	gw.WaitRequest(t, sip.CANCEL, c.CallID, 1)
	ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
	if ev.Status != 408 || ev.Note != "timeout" || ev.ProvisionalStatus != 180 || len(ev.Attempts) != 1 || ev.Attempts[0].Status != 487 {
		t.Errorf("event %+v", ev)
	}
	for _, e := range h.ev.all() {
		if e.tx.Method == "CANCEL" {
			t.Errorf("the proxy's own CANCEL has a server transaction event: %+v", e.tx)
		}
	}
}

// TestLateAnswer: the gateway answers 200 although the caller cancelled
// (the 2xx crossed the CANCEL). The caller keeps its 487; the proxy ACKs
// the 2xx and hangs up the gateway's leg.
func TestLateAnswer(t *testing.T) {
	gw := newRawPeer(t)
	h := startProxy(t, gw.addr(), "udp", nil)
	alice := testkit.NewSIPPhone(t, "alice")
	c := alice.Invite(t, h.addr, "UDP", nil)

	inv := gw.readRequest(sip.INVITE)
	gw.respond(inv, 180, "Ringing", "gwtag", nil)
	c.WaitFor(180)
	if res := c.Cancel(); res.StatusCode != 200 {
		t.Fatalf("CANCEL answered %d", res.StatusCode)
	}
	cancel := gw.readRequest(sip.CANCEL)
	gw.respond(cancel, 200, "OK", "gwtag", nil)
	gw.respond(inv, 200, "OK", "gwtag", func(r *sip.Response) {
		r.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "gw", Host: "127.0.0.1", Port: gw.port()}})
	})
	if res := c.WaitFinal(); res.StatusCode != 487 {
		t.Fatalf("caller got %d, want 487", res.StatusCode)
	}
	ack := gw.readRequest(sip.ACK)
	if tag, _ := ack.To().Params.Get("tag"); tag != "gwtag" || ack.Recipient.Port != gw.port() {
		t.Errorf("ACK of the late 2xx: %s", ack.StartLine())
	}
	bye := gw.readRequest(sip.BYE)
	gw.respond(bye, 200, "OK", "", nil)
	if bye.CSeq().SeqNo != inv.CSeq().SeqNo+1 || q850(bye.Headers()) != 0 || len(bye.GetHeaders("Reason")) != 1 {
		t.Errorf("BYE of the late answer: CSeq %v, Reason %v", bye.CSeq(), bye.GetHeaders("Reason"))
	}
	ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx
	if ev.Status != 487 || ev.Note != "late_answer" || len(ev.Attempts) != 1 || ev.Attempts[0].Status != 200 {
		t.Errorf("event %+v", ev)
	}
}

func countMethod(reqs []*sip.Request, m sip.RequestMethod) int {
	n := 0
	for _, r := range reqs {
		if r.Method == m {
			n++
		}
	}
	return n
}

// rawPeer is a UDP SIP peer driven by hand, for flows sipgo's own
// transactions would not produce.
type rawPeer struct {
	t  testing.TB
	pc net.PacketConn
	// last is where the last request came from.
	last net.Addr
}

func newRawPeer(t testing.TB) *rawPeer {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return &rawPeer{t: t, pc: pc}
}

func (r *rawPeer) addr() string { return r.pc.LocalAddr().String() }
func (r *rawPeer) port() int    { return r.pc.LocalAddr().(*net.UDPAddr).Port }

// readRequest returns the next request of method, skipping others
// (retransmissions included).
func (r *rawPeer) readRequest(method sip.RequestMethod) *sip.Request {
	r.t.Helper()
	buf := make([]byte, 65536)
	deadline := time.Now().Add(patience)
	for {
		_ = r.pc.SetReadDeadline(deadline)
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			r.t.Fatalf("raw peer: waiting for %s: %v", method, err)
		}
		msg, err := sip.ParseMessage(buf[:n])
		if err != nil {
			r.t.Fatalf("raw peer: unparseable message: %v\n%s", err, buf[:n])
		}
		if req, ok := msg.(*sip.Request); ok && req.Method == method {
			r.last = from
			return req
		}
	}
}

// respond answers req with code, with To tag tag (none when empty).
func (r *rawPeer) respond(req *sip.Request, code int, reason, tag string, mod func(*sip.Response)) *sip.Response {
	r.t.Helper()
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	if to := res.To(); to != nil && tag != "" {
		to.Params.Add("tag", tag)
	}
	if mod != nil {
		mod(res)
	}
	if _, err := r.pc.WriteTo([]byte(res.String()), r.last); err != nil {
		r.t.Fatal(err)
	}
	return res
}

// TestReInvite: a re-INVITE inside the dialog follows the route set and is
// not record-routed again.
func TestReInvite(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	gw.SetUAS(gw.Answer(false))
	h := startProxy(t, gw.Addr, "udp", nil)
	alice := testkit.NewSIPPhone(t, "alice")
	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("answered %d", res.StatusCode)
	}
	c.Ack()
	reinvite := c.InDialog(sip.INVITE, 2)
	reinvite.AppendHeader(alice.Contact("UDP"))
	reinvite.SetBody([]byte(testkit.SDP))
	if res := alice.Do(t, reinvite); res.StatusCode != 200 {
		t.Fatalf("re-INVITE answered %d", res.StatusCode)
	}
	got := gw.WaitRequest(t, sip.INVITE, c.CallID, 2)
	checkRelayed(t, got, h, "UDP", 2)
	if len(got.GetHeaders("Record-Route")) != 0 || len(got.GetHeaders("Route")) != 0 {
		t.Errorf("re-INVITE at the gateway: Record-Route %v, Route %v", got.GetHeaders("Record-Route"), got.GetHeaders("Route"))
	}
	ev := h.ev.wait(t, "re-INVITE", func(tx schema.Transaction) bool {
		return tx.CallID == c.CallID && tx.Method == "INVITE" && tx.CSeq == 2
	})
	if ev.tx.Status != 200 || !ev.tx.InDialog || ev.tx.Destination != gw.Addr {
		t.Errorf("re-INVITE event %+v", ev.tx)
	}
}

// TestNoDialogRoute: requests the proxy cannot place get a final answer of
// its own, and an event that says why.
func TestNoDialogRoute(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	h := startProxy(t, gw.Addr, "udp", nil)
	alice := testkit.NewSIPPhone(t, "alice")
	host, port, _ := sip.ParseAddr(h.addr)

	// A BYE for a dialog with no route set, addressed to the proxy itself.
	to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: host}, Params: sip.HeaderParams{{K: "tag", V: "t1"}}}
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: "f1"}}}
	bye := alice.DialogRequest(sip.BYE, sip.Uri{Scheme: "sip", User: "bob", Host: host, Port: port}, nil, from, to, "noroute@alice", 2, "UDP")
	if res := alice.Do(t, bye); res.StatusCode != 404 {
		t.Fatalf("BYE with nowhere to go answered %d, want 404", res.StatusCode)
	}
	if ev := h.ev.wait(t, "BYE", of("noroute@alice", sip.BYE)).tx; ev.Status != 404 || ev.Note != "no_route" {
		t.Errorf("event %+v", ev)
	}

	// A CANCEL that matches no INVITE.
	cancel := alice.DialogRequest(sip.CANCEL, sip.Uri{Scheme: "sip", User: "bob", Host: host, Port: port}, nil, from, &sip.ToHeader{Address: to.Address}, "nocancel@alice", 1, "UDP")
	if res := alice.Do(t, cancel); res.StatusCode != 481 {
		t.Fatalf("unmatched CANCEL answered %d, want 481", res.StatusCode)
	}
	if ev := h.ev.wait(t, "CANCEL", of("nocancel@alice", sip.CANCEL)).tx; ev.Status != 481 || ev.Note != "no_transaction" {
		t.Errorf("event %+v", ev)
	}
	if n := len(gw.Received("noroute@alice")) + len(gw.Received("nocancel@alice")); n != 0 {
		t.Errorf("the gateway got %d of them", n)
	}
}

// TestTooLargeForUDP: sipgo will not send a UDP message over
// sip.UDPMTUSize-200 bytes; a call whose INVITE grows past it towards a
// UDP gateway gets 503, and the event says why.
func TestTooLargeForUDP(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	h := startProxy(t, gw.Addr, "udp", nil)
	alice := testkit.NewSIPPhone(t, "alice")
	c := alice.Invite(t, h.addr, "TCP", func(r *sip.Request) {
		r.SetBody([]byte(testkit.SDP + "a=x-padding:" + strings.Repeat("x", sip.UDPMTUSize) + "\r\n"))
	})
	if res := c.WaitFinal(); res.StatusCode != 503 {
		t.Fatalf("oversized INVITE towards UDP answered %d, want 503", res.StatusCode)
	}
	if ev := h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx; ev.Note != "too_large" || ev.Status != 503 {
		t.Errorf("event %+v", ev)
	}
}

// TestGatewayByName: a gateway given by name is resolved once; the
// attempts name it and record the address.
func TestGatewayByName(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	named := "localhost:" + strconv.Itoa(gw.Port)
	h := startProxy(t, named, "udp", nil)
	alice := testkit.NewSIPPhone(t, "alice")
	res, callID := alice.Options(t, h.addr, "UDP", nil)
	if res.StatusCode != 200 {
		t.Fatalf("OPTIONS answered %d", res.StatusCode)
	}
	ev := h.ev.wait(t, "OPTIONS", of(callID, sip.OPTIONS)).tx
	if len(ev.Attempts) != 1 || ev.Attempts[0].Gateway != named || ev.Attempts[0].Destination != gw.Addr || ev.Destination != gw.Addr {
		t.Errorf("event %+v", ev)
	}
}
