package proxy

import (
	"errors"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestQ850(t *testing.T) {
	for v, want := range map[string]int{
		`Q.850;cause=16;text="Normal call clearing"`:                    16,
		`q.850 ; cause = 17`:                                            17,
		`SIP;cause=200;text="Call completed elsewhere", Q.850;cause=26`: 26,
		`SIP;cause=487;text="a, b; Q.850;cause=9", Q.850;cause=31`:      31,
		`SIP;cause=487`:         0,
		`Q.850;text="no cause"`: 0,
		`Q.850;cause=abc`:       0,
		``:                      0,
	} {
		if got := q850Value(v); got != want {
			t.Errorf("q850Value(%q) = %d, want %d", v, got, want)
		}
	}
	hs := []sip.Header{sip.NewHeader("Reason", "SIP;cause=480"), sip.NewHeader("reason", "Q.850;cause=18")}
	if got := q850(hs); got != 18 {
		t.Errorf("q850 over two headers = %d", got)
	}
}

func TestAddrParts(t *testing.T) {
	for v, want := range map[string][2]string{
		`"Alice" <sip:alice@example.com>;tag=abc`: {"sip:alice@example.com", "abc"},
		`<sip:alice@example.com;transport=tcp>`:   {"sip:alice@example.com;transport=tcp", ""},
		`sip:bob@example.com;TAG=x1;foo`:          {"sip:bob@example.com", "x1"},
		`sip:bob@example.com`:                     {"sip:bob@example.com", ""},
		`<sip:broken`:                             {"sip:broken", ""},
	} {
		uri, tag := addrParts([]byte(v))
		if string(uri) != want[0] || string(tag) != want[1] {
			t.Errorf("addrParts(%q) = %q, %q; want %q, %q", v, uri, tag, want[0], want[1])
		}
	}
}

func TestContentLength(t *testing.T) {
	for head, want := range map[string]int{
		"INVITE sip:a@b SIP/2.0\r\nContent-Length: 12\r\n\r\n":  12,
		"INVITE sip:a@b SIP/2.0\r\nl:7\r\n\r\n":                 7,
		"INVITE sip:a@b SIP/2.0\r\ncontent-length:  0 \r\n\r\n": 0,
		"INVITE sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n":   -1,
		"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n":              -1,
	} {
		n, ok := contentLength([]byte(head))
		if !ok {
			n = -1
		}
		if n != want {
			t.Errorf("contentLength(%q) = %d, want %d", head, n, want)
		}
	}
}

func TestRawReplyFoldedAndCompact(t *testing.T) {
	msg := "INVITE sip:a@b SIP/2.0\r\n" +
		"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.2:5060\r\n ;branch=z9hG4bK2\r\n" +
		"f: <sip:x@y>;tag=1\r\n" +
		"t: <sip:a@b>;tag=already\r\n" +
		"i: cid\r\n" +
		"CSeq: 9 INVITE\r\n" +
		"Content-Length: oops\r\n\r\n"
	r := scanRaw([]byte(msg))
	if !r.replyable() {
		t.Fatal("not replyable")
	}
	reply := string(r.reply(400, "Bad Request", []byte("new")))
	want := "SIP/2.0 400 Bad Request\r\n" +
		"v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.2:5060\r\n ;branch=z9hG4bK2\r\n" +
		"f: <sip:x@y>;tag=1\r\n" +
		"t: <sip:a@b>;tag=already\r\n" +
		"i: cid\r\n" +
		"CSeq: 9 INVITE\r\n" +
		"Content-Length: 0\r\n\r\n"
	if reply != want {
		t.Errorf("reply\n%q\nwant\n%q", reply, want)
	}
	tx := r.transaction(400, "Bad Request", noteMalformed, []byte("already"))
	if tx.Method != "INVITE" || tx.CallID != "cid" || tx.CSeq != 9 || tx.FromTag != "1" || !tx.InDialog || tx.RequestURI != "sip:a@b" {
		t.Errorf("event %+v", tx)
	}
	for _, bad := range []string{
		"SIP/2.0 200 OK\r\nVia: x\r\nCSeq: 1 INVITE\r\n\r\n",      // a response
		"ACK sip:a@b SIP/2.0\r\nVia: x\r\nCSeq: 1 ACK\r\n\r\n",    // never answered
		"INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n",        // no Via
		"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n",                // no CSeq
		"INV<>ITE sip:a@b SIP/2.0\r\nVia: x\r\nCSeq: 1 X\r\n\r\n", // not a method
		"INVITE sip:a@b HTTP/1.1\r\nVia: x\r\nCSeq: 1 X\r\n\r\n",  // not SIP
	} {
		if r := scanRaw([]byte(bad)); r.replyable() {
			t.Errorf("replyable: %q", bad)
		}
	}
}

// TestRoute covers the routing decisions on requests built by hand: loose
// and strict routing, double Record-Route, transports and loops.
func TestRoute(t *testing.T) {
	p, err := New(Config{
		Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}, {Transport: "tcp", Addr: "127.0.0.1:0"}},
		Gateway:   "10.0.0.9:5060",
	}, newCollector())
	if err != nil {
		t.Fatal(err)
	}
	for _, lc := range p.cfg.Listeners {
		l, err := p.bind(lc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(l.close)
		p.listeners = append(p.listeners, l)
	}
	udp, tcp := p.listeners[0], p.listeners[1]
	ours := func(l *listener) string {
		return "<sip:" + l.host + ":" + strings.Split(l.local, ":")[1] + ";transport=" + l.network + ";lr>"
	}
	build := func(ruri string, routes ...string) *sip.Request {
		t.Helper()
		raw := "BYE " + ruri + " SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKx\r\n"
		for _, r := range routes {
			raw += "Route: " + r + "\r\n"
		}
		raw += "From: <sip:a@x>;tag=1\r\nTo: <sip:b@y>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\nMax-Forwards: 5\r\nContent-Length: 0\r\n\r\n"
		msg, err := sip.ParseMessage([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		req := msg.(*sip.Request)
		req.SetSource("10.0.0.1:5060")
		req.SetTransport("UDP")
		return req
	}

	t.Run("loose", func(t *testing.T) {
		req := build("sip:bob@10.0.0.5:5070", ours(udp), "<sip:10.0.0.7;lr>")
		h, err := p.route(req, udp, false)
		if err != nil || h.dest != "10.0.0.7:5060" || h.transport != "UDP" || h.popped != 1 || h.out != udp {
			t.Fatalf("hop %+v, %v", h, err)
		}
		out := p.forward(req, &h, false)
		routes := out.GetHeaders("Route")
		if len(routes) != 1 || !strings.Contains(routes[0].Value(), "10.0.0.7") {
			t.Errorf("routes after forwarding: %v", routes)
		}
		if mf := out.MaxForwards(); mf == nil || *mf != 4 {
			t.Errorf("Max-Forwards %v", mf)
		}
		if mf := req.MaxForwards(); *mf != 5 {
			t.Errorf("the received request changed: Max-Forwards %d", *mf)
		}
	})
	t.Run("double record-route leaves on the other side", func(t *testing.T) {
		req := build("sip:alice@10.0.0.1:5062", ours(udp), ours(tcp))
		h, err := p.route(req, udp, false)
		if err != nil || h.dest != "10.0.0.1:5062" || h.transport != "TCP" || h.popped != 2 || h.out != tcp {
			t.Fatalf("hop %+v, %v", h, err)
		}
		if out := p.forward(req, &h, false); len(out.GetHeaders("Route")) != 0 || out.Via().Transport != "TCP" || out.Laddr.IP != nil {
			t.Errorf("forwarded: routes %v, via %s", out.GetHeaders("Route"), out.Via().Value())
		}
	})
	t.Run("transport parameter of the target", func(t *testing.T) {
		req := build("sip:alice@10.0.0.1:5062;transport=tcp", ours(udp))
		h, err := p.route(req, udp, false)
		if err != nil || h.transport != "TCP" || h.out != tcp {
			t.Fatalf("hop %+v, %v", h, err)
		}
	})
	t.Run("strict router before us", func(t *testing.T) {
		req := build("sip:"+udp.host+":"+strings.Split(udp.local, ":")[1], "<sip:10.0.0.8:5080>", "<sip:carol@10.0.0.3:5090>")
		h, err := p.route(req, udp, false)
		if err != nil || h.uri.Host != "10.0.0.3" || h.dest != "10.0.0.8:5080" || !h.dropLast {
			t.Fatalf("hop %+v, %v", h, err)
		}
		out := p.forward(req, &h, false)
		if out.Recipient.User != "carol" || len(out.GetHeaders("Route")) != 1 {
			t.Errorf("forwarded %s with routes %v", out.StartLine(), out.GetHeaders("Route"))
		}
	})
	t.Run("loop", func(t *testing.T) {
		req := build("sip:"+udp.host+":"+strings.Split(udp.local, ":")[1], ours(udp))
		if _, err := p.route(req, udp, false); !errors.Is(err, errLoop) {
			t.Errorf("route to ourselves: %v", err)
		}
	})
	t.Run("unsupported transport", func(t *testing.T) {
		req := build("sip:alice@10.0.0.1:5062;transport=sctp", ours(udp))
		if _, err := p.route(req, udp, false); !errors.Is(err, errUnsupportedTransport) {
			t.Errorf("sctp: %v", err)
		}
	})
	t.Run("initial goes to the gateway", func(t *testing.T) {
		req := build("sip:15551234567@example.com", ours(udp))
		h, err := p.route(req, tcp, true)
		if err != nil || h.dest != "10.0.0.9:5060" || !h.gateway || h.out != udp || h.popped != 1 {
			t.Fatalf("hop %+v, %v", h, err)
		}
		out := p.forward(req, &h, true)
		rr := out.GetHeaders("Record-Route")
		if len(rr) != 2 || rr[0] != udp.rr || rr[1] != tcp.rr {
			t.Errorf("Record-Route %v, want the gateway side (udp) above the caller side (tcp)", rr)
		}
	})
	t.Run("received and rport", func(t *testing.T) {
		req := build("sip:bob@10.0.0.5:5070", ours(udp))
		req.Via().Params.Add("rport", "")
		req.SetSource("192.0.2.1:40000")
		h, _ := p.route(req, udp, false)
		out := p.forward(req, &h, false)
		vias := out.GetHeaders("Via")
		if v := vias[1].Value(); !strings.Contains(v, "received=192.0.2.1") || !strings.Contains(v, "rport=40000") {
			t.Errorf("sender's Via %s", v)
		}
		if strings.Contains(req.Via().Value(), "received") {
			t.Errorf("the received request's Via changed: %s", req.Via().Value())
		}
		if up := upstream(req); up != "192.0.2.1:40000" {
			t.Errorf("responses go to %s", up)
		}
	})
}

func TestUpstream(t *testing.T) {
	msg, _ := sip.ParseMessage([]byte("OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bKx\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"))
	req := msg.(*sip.Request)
	req.SetTransport("UDP")
	req.SetSource("192.0.2.1:40000")
	if up := upstream(req); up != "192.0.2.1:5062" {
		t.Errorf("UDP without rport: responses to %s, want the source IP and the Via port", up)
	}
	req.SetTransport("TCP")
	if up := upstream(req); up != "192.0.2.1:40000" {
		t.Errorf("TCP: %s", up)
	}
}
