package proxy

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// rawRequest is a well-formed request from a raw socket at port; tests
// break it on purpose.
func rawRequest(method, transport string, port int, callID string) string {
	return method + " sip:15551234567@127.0.0.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/" + transport + " 127.0.0.1:" + strconv.Itoa(port) + ";branch=z9hG4bK" + callID + "\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:mallory@127.0.0.1>;tag=" + callID + "\r\n" +
		"To: <sip:15551234567@127.0.0.1>\r\n" +
		"Call-ID: " + callID + "\r\n" +
		"CSeq: 1 " + method + "\r\n" +
		"Content-Length: 0\r\n\r\n"
}

func TestMalformedUDP(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	h := startProxy(t, gw.Addr, "udp", nil)
	conn, err := net.Dial("udp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	port := conn.LocalAddr().(*net.UDPAddr).Port
	invite := func(id string) string { return rawRequest("INVITE", "UDP", port, id) }

	cases := []struct {
		name string
		msg  string
		want int // the proxy's reply; 0: dropped without one
		note string
	}{
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage", 0, ""},
		{"not sip", "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", 0, ""},
		{"truncated start line", "INVITE sip:15551234567@127.0.0.1", 0, ""},
		{"truncated after CSeq", strings.SplitAfter(invite("trunc1"), "CSeq: 1 INVITE\r\n")[0] + "Contact: <sip:mal", 400, "malformed"},
		{"truncated before CSeq", strings.Split(invite("trunc2"), "CSeq:")[0], 0, ""},
		{"missing Call-ID", strings.Replace(invite("nocallid"), "Call-ID: nocallid\r\n", "", 1), 400, "malformed"},
		{"bad CSeq", strings.Replace(invite("badcseq"), "CSeq: 1 INVITE", "CSeq: abc INVITE", 1), 400, "malformed"},
		{"CSeq of another method", strings.Replace(invite("othercseq"), "CSeq: 1 INVITE", "CSeq: 1 BYE", 1), 400, "malformed"},
		{"bad Max-Forwards", strings.Replace(invite("badmf"), "Max-Forwards: 70", "Max-Forwards: many", 1), 400, "malformed"},
		{"bad From", strings.Replace(invite("badfrom"), "From: <sip:mallory@127.0.0.1>;tag=badfrom", "From: <sip:mallory@", 1), 400, "malformed"},
		{"body shorter than Content-Length", strings.Replace(invite("shortbody"), "Content-Length: 0\r\n\r\n", "Content-Length: 500\r\n\r\nv=0\r\n", 1), 400, "malformed"},
		{"no Via", strings.Replace(invite("novia"), "Via: SIP/2.0/UDP 127.0.0.1:"+strconv.Itoa(port)+";branch=z9hG4bKnovia\r\n", "", 1), 0, ""},
		{"malformed ACK", strings.Replace(rawRequest("ACK", "UDP", port, "badack"), "CSeq: 1 ACK", "CSeq: x ACK", 1), 0, ""},
		{"malformed response", "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\nCSeq: what\r\n\r\n", 0, ""},
		{"oversized", strings.Replace(invite("big"), "Content-Length: 0\r\n\r\n", "X-Padding: "+strings.Repeat("a", 40000)+"\r\nContent-Length: 0\r\n\r\n", 1), 413, "too_large"},
	}
	answered := 0
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := conn.Write([]byte(tc.msg)); err != nil {
				t.Fatal(err)
			}
			// The proxy reads datagrams in order: the reply to this probe
			// (483, Max-Forwards 0) comes after whatever the case got.
			probeID := "probe" + strconv.Itoa(i)
			probe := strings.Replace(rawRequest("OPTIONS", "UDP", port, probeID), "Max-Forwards: 70", "Max-Forwards: 0", 1)
			if _, err := conn.Write([]byte(probe)); err != nil {
				t.Fatal(err)
			}
			reply := readDatagram(t, conn)
			if tc.want != 0 {
				answered++
				checkRawReply(t, reply, tc.want, tc.msg)
				reply = readDatagram(t, conn)
			}
			if code, cid := rawStatus(reply), rawHeader(reply, "Call-ID"); code != 483 || cid != probeID {
				t.Fatalf("got %d for %q, want the probe's 483 (the case must have been dropped)", code, cid)
			}
			if tc.want != 0 {
				ev := h.ev.wait(t, tc.name, func(tx schema.Transaction) bool {
					return tx.Note == tc.note && tx.CallID != probeID &&
						((tx.CallID != "" && strings.Contains(tc.msg, "Call-ID: "+tx.CallID+"\r\n")) || (tx.FromTag != "" && strings.Contains(tc.msg, "tag="+tx.FromTag+"\r\n")))
				})
				if ev.tx.Status != tc.want || ev.tx.Method != "INVITE" || ev.tx.Source != conn.LocalAddr().String() || ev.tx.Transport != "udp" || ev.tx.Local != h.addr || ev.tx.ToTag == "" {
					t.Errorf("event %+v", ev.tx)
				}
			}
		})
	}
	if got, want := metricValue(t, h, "carrier_sip_malformed_total"), float64(len(cases)); got != want {
		t.Errorf("carrier_sip_malformed_total = %v, want %v", got, want)
	}
	if answered == 0 {
		t.Fatal("no case was answered")
	}

	// And the proxy still carries calls.
	alice := testkit.NewSIPPhone(t, "alice")
	gw.SetUAS(gw.Answer(false))
	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("call after malformed input answered %d", res.StatusCode)
	}
	c.Ack()
	if res := c.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE after malformed input answered %d", res.StatusCode)
	}
}

// checkRawReply: the reply has code and copies the request's Via, Call-ID
// and CSeq lines (whatever they hold), with a To tag added. It is read
// raw: it echoes what the request broke.
func checkRawReply(t *testing.T, reply []byte, code int, req string) {
	t.Helper()
	if got := rawStatus(reply); got != code {
		t.Fatalf("reply %d, want %d:\n%s", got, code, reply)
	}
	for _, name := range []string{"Via", "Call-ID", "CSeq"} {
		if v := rawHeader(reply, name); v != rawHeader([]byte(req), name) {
			t.Errorf("reply %s %q, request's %q", name, v, rawHeader([]byte(req), name))
		}
	}
	if to := rawHeader(reply, "To"); to != "" && !strings.Contains(to, ";tag=") {
		t.Errorf("reply To has no tag: %s", to)
	}
}

// rawStatus is the status code of a raw response, 0 when it is not one.
func rawStatus(b []byte) int {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	f := strings.Fields(string(line))
	if len(f) < 2 || f[0] != "SIP/2.0" {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// rawHeader is the value of the first header name in a raw message.
func rawHeader(b []byte, name string) string {
	head, _, _ := bytes.Cut(b, []byte("\r\n\r\n"))
	for _, line := range strings.Split(string(head), "\r\n")[1:] {
		n, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(n), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestMalformedTCP(t *testing.T) {
	gw := testkit.NewSIPPhone(t, "gw")
	h := startProxy(t, gw.Addr, "udp", nil)
	dial := func() (net.Conn, int) {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, c.LocalAddr().(*net.TCPAddr).Port
	}
	send := func(c net.Conn, s string) {
		t.Helper()
		if _, err := c.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}

	// A malformed message with a Content-Length: 400, and the connection
	// goes on (split across writes, with a keep-alive ping before it).
	c, port := dial()
	r := &streamReader{c: c}
	send(c, "\r\n\r\n")
	if pong := r.pong(t); pong != "\r\n" {
		t.Fatalf("keep-alive ping got %q, want a CRLF pong", pong)
	}
	bad := strings.Replace(rawRequest("INVITE", "TCP", port, "tcpbad"), "CSeq: 1 INVITE", "CSeq: abc INVITE", 1)
	send(c, bad[:40])
	send(c, bad[40:])
	if code := r.status(t); code != 400 {
		t.Fatalf("malformed over TCP answered %d, want 400", code)
	}
	probe := strings.Replace(rawRequest("OPTIONS", "TCP", port, "tcpprobe"), "Max-Forwards: 70", "Max-Forwards: 0", 1)
	send(c, probe)
	if code := r.status(t); code != 483 {
		t.Fatalf("probe after a malformed message got %d, want 483", code)
	}

	// No Content-Length on a stream: 400, then the connection ends, as no
	// message boundary is left.
	c, port = dial()
	r = &streamReader{c: c}
	send(c, strings.Replace(rawRequest("INVITE", "TCP", port, "tcpnocl"), "Content-Length: 0\r\n", "", 1))
	if code := r.status(t); code != 400 {
		t.Fatalf("no Content-Length answered %d, want 400", code)
	}
	r.closed(t)

	// Over 64 KiB: 413 and the end of the connection.
	c, port = dial()
	r = &streamReader{c: c}
	big := strings.Replace(rawRequest("INVITE", "TCP", port, "tcpbig"), "Content-Length: 0", "Content-Length: 70000", 1) + strings.Repeat("a", 70000)
	go func() { _, _ = c.Write([]byte(big)) }()
	if code := r.status(t); code != 413 {
		t.Fatalf("oversized answered %d, want 413", code)
	}
	r.closed(t)

	// Garbage: dropped, connection closed.
	c, _ = dial()
	r = &streamReader{c: c}
	send(c, "\x16\x03\x01 hello\r\n\r\n")
	r.closed(t)

	// And calls still go through over TCP.
	alice := testkit.NewSIPPhone(t, "alice")
	gw.SetUAS(gw.Answer(false))
	call := alice.Invite(t, h.addr, "TCP", nil)
	if res := call.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("call after malformed input answered %d", res.StatusCode)
	}
	call.Ack()
	if res := call.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE answered %d", res.StatusCode)
	}
	if got := metricValue(t, h, "carrier_sip_malformed_total"); got != 4 {
		t.Errorf("carrier_sip_malformed_total = %v, want 4", got)
	}
}

func readDatagram(t *testing.T, conn net.Conn) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	_ = conn.SetReadDeadline(time.Now().Add(patience))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no reply: %v", err)
	}
	return buf[:n]
}

// streamReader reads SIP responses off a TCP connection.
type streamReader struct {
	c   net.Conn
	buf []byte
}

func (r *streamReader) fill(t *testing.T) {
	t.Helper()
	b := make([]byte, 4096)
	_ = r.c.SetReadDeadline(time.Now().Add(patience))
	n, err := r.c.Read(b)
	if err != nil {
		t.Fatalf("read: %v (have %q)", err, r.buf)
	}
	r.buf = append(r.buf, b[:n]...)
}

func (r *streamReader) pong(t *testing.T) string {
	t.Helper()
	for len(r.buf) < 2 {
		r.fill(t)
	}
	p := string(r.buf[:2])
	r.buf = r.buf[2:]
	return p
}

// status reads the next response and returns its status code.
func (r *streamReader) status(t *testing.T) int {
	t.Helper()
	for {
		r.buf = bytes.TrimLeft(r.buf, "\r\n")
		if end := bytes.Index(r.buf, []byte("\r\n\r\n")); end >= 0 {
			cl, ok := contentLength(r.buf[:end+4])
			if !ok {
				t.Fatalf("response without Content-Length: %q", r.buf)
			}
			if total := end + 4 + cl; len(r.buf) >= total {
				code := rawStatus(r.buf[:total])
				r.buf = r.buf[total:]
				return code
			}
		}
		r.fill(t)
	}
}

// closed waits for the proxy to end the connection.
func (r *streamReader) closed(t *testing.T) {
	t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(patience))
	b := make([]byte, 4096)
	for {
		n, err := r.c.Read(b)
		if err == io.EOF || (err != nil && strings.Contains(err.Error(), "reset")) {
			return
		}
		if err != nil {
			t.Fatalf("connection not closed by the proxy: %v", err)
		}
		if n > 0 && len(bytes.Trim(b[:n], "\r\n")) > 0 {
			t.Fatalf("unexpected data before close: %q", b[:n])
		}
	}
}
