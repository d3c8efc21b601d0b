package proxy

import (
	"net"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/tools/testkit"
)

const benchInvite = "INVITE sip:15551234567@127.0.0.1:5060 SIP/2.0\r\n" +
	"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-524287-1---a7ab0bd4d19d7f4f\r\n" +
	"Max-Forwards: 70\r\n" +
	"Contact: <sip:alice@127.0.0.1:5070>\r\n" +
	"To: <sip:15551234567@127.0.0.1>\r\n" +
	"From: <sip:alice@127.0.0.1>;tag=2b3c1e45\r\n" +
	"Call-ID: 3848276298220188511@127.0.0.1\r\n" +
	"CSeq: 1 INVITE\r\n" +
	"Allow: INVITE, ACK, CANCEL, BYE\r\n" +
	"Content-Type: application/sdp\r\n" +
	"User-Agent: sipp\r\n" +
	"Content-Length: 129\r\n\r\n" +
	"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"

func benchProxy(b *testing.B) *Proxy {
	p, err := New(Config{Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}}, Gateway: "127.0.0.1:5090"}, newCollector())
	if err != nil {
		b.Fatal(err)
	}
	l, err := p.bind(p.cfg.Listeners[0])
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(l.close)
	p.listeners = []*listener{l}
	return p
}

// BenchmarkAdmit is the screen every received message passes before sipgo
// parses it.
func BenchmarkAdmit(b *testing.B) {
	p := benchProxy(b)
	data := []byte(benchInvite)
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5070}
	b.ReportAllocs()
	for b.Loop() {
		if !p.admit(data, maxMessageSize, p.listeners[0], src, "", p.listeners[0].udp) {
			b.Fatal("valid INVITE refused")
		}
	}
}

// BenchmarkForward is routing an initial INVITE and building the request
// relayed to the gateway.
func BenchmarkForward(b *testing.B) {
	p := benchProxy(b)
	msg, err := sip.ParseMessage([]byte(benchInvite))
	if err != nil {
		b.Fatal(err)
	}
	req := msg.(*sip.Request)
	req.SetSource("127.0.0.1:5070")
	req.SetTransport("UDP")
	b.ReportAllocs()
	for b.Loop() {
		h, err := p.route(req, p.listeners[0], true)
		if err != nil {
			b.Fatal(err)
		}
		_ = p.forward(req, &h, true)
	}
}

// BenchmarkRejectMalformed is the path of a malformed request: raw scan,
// 400 from its own lines, event.
func BenchmarkRejectMalformed(b *testing.B) {
	p := benchProxy(b)
	data := []byte(benchInvite[:len(benchInvite)-60]) // body cut short
	var w discardReplier
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5070}
	b.ReportAllocs()
	for b.Loop() {
		if p.admit(data, maxMessageSize, p.listeners[0], src, "", w) {
			b.Fatal("malformed INVITE admitted")
		}
	}
}

type discardReplier struct{}

func (discardReplier) reply([]byte, net.Addr) {}

// BenchmarkCall carries whole calls (INVITE, 200, ACK, BYE) through a
// running proxy between two sipgo phones over UDP, several at a time. The
// phones' own cost is part of the figure.
func BenchmarkCall(b *testing.B) {
	gw := testkit.NewSIPPhone(b, "gw")
	gw.SetUAS(gw.Answer(false))
	h := startProxy(b, gw.Addr, "udp", nil)
	const callers = 8
	phones := make(chan *testkit.SIPPhone, callers)
	for range callers {
		phones <- testkit.NewSIPPhone(b, "alice")
	}
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	sem := make(chan struct{}, callers)
	for b.Loop() {
		sem <- struct{}{}
		wg.Add(1)
		ph := <-phones
		go func() {
			defer wg.Done()
			defer func() { phones <- ph; <-sem }()
			c := ph.Invite(b, h.addr, "UDP", nil)
			if res := c.WaitFinal(); res.StatusCode != 200 {
				b.Errorf("answered %d", res.StatusCode)
				return
			}
			c.Ack()
			if res := c.Bye(); res.StatusCode != 200 {
				b.Errorf("BYE answered %d", res.StatusCode)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}
