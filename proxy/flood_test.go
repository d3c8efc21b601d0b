package proxy

import (
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// banCollector keeps the ban events apart and hands the transaction
// events to the harness's collector.
type banCollector struct {
	*collector
	mu   sync.Mutex
	bans []schema.Envelope
	more chan struct{}
}

func (b *banCollector) Publish(subject string, env schema.Envelope) error {
	if subject != schema.SubjectBans {
		return b.collector.Publish(subject, env)
	}
	b.mu.Lock()
	b.bans = append(b.bans, env)
	b.mu.Unlock()
	select {
	case b.more <- struct{}{}:
	default:
	}
	return nil
}

// waitBan returns the first ban event of type typ.
func (b *banCollector) waitBan(t *testing.T, typ string) schema.SourceBan {
	t.Helper()
	deadline := time.After(patience)
	for {
		b.mu.Lock()
		for _, env := range b.bans {
			if env.Type != typ {
				continue
			}
			b.mu.Unlock()
			var ban schema.SourceBan
			if err := env.Decode(typ, schema.BanVersion, &ban); err != nil {
				t.Fatal(err)
			}
			return ban
		}
		b.mu.Unlock()
		select {
		case <-b.more:
		case <-deadline:
			t.Fatalf("no %s event", typ)
		}
	}
}

// guardedProxy starts a proxy as startProxy does (UDP and TCP on one
// port, the local trunk) whose ban events go to a banCollector.
func guardedProxy(t *testing.T, gateway string, tune func(*Config)) (*harness, *banCollector) {
	t.Helper()
	h := newHarness(t)
	bans := &banCollector{collector: h.ev, more: make(chan struct{}, 1)}
	cfg := h.config(gateway)
	if tune != nil {
		tune(&cfg)
	}
	h.run(t, cfg, bans)
	return h, bans
}

// flooder sends raw SIP requests from a loopback address other than the
// phones' 127.0.0.1, as a scanner would.
type flooder struct {
	conn *net.UDPConn
	to   *net.UDPAddr
	seq  int
}

func newFlooder(t *testing.T, ip, proxyAddr string) *flooder {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Skipf("cannot bind %s (a second loopback address): %v", ip, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	to, err := net.ResolveUDPAddr("udp", proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	return &flooder{conn: conn, to: to}
}

// send sends one OPTIONS.
func (f *flooder) send(t *testing.T) {
	t.Helper()
	f.seq++
	local := f.conn.LocalAddr().String()
	n := strconv.Itoa(f.seq)
	msg := "OPTIONS sip:100@" + f.to.String() + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK-flood" + n + "\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:scan@" + local + ">;tag=f" + n + "\r\n" +
		"To: <sip:100@" + f.to.String() + ">\r\n" +
		"Call-ID: flood-" + n + "@" + local + "\r\n" +
		"CSeq: 1 OPTIONS\r\n" +
		"Content-Length: 0\r\n\r\n"
	if _, err := f.conn.WriteToUDP([]byte(msg), f.to); err != nil {
		t.Fatal(err)
	}
}

// answer reads the final response to the last request; "" when none came
// within wait.
func (f *flooder) answer(t *testing.T, wait time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	want := "flood-" + strconv.Itoa(f.seq) + "@"
	deadline := time.Now().Add(wait)
	for {
		_ = f.conn.SetReadDeadline(deadline)
		n, _, err := f.conn.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return ""
			}
			t.Fatal(err)
		}
		res := string(buf[:n])
		status, _, _ := strings.Cut(res, "\r\n")
		if strings.Contains(res, want) && !strings.HasPrefix(status, "SIP/2.0 1") {
			return status
		}
	}
}

// TestFloodBan: an address that sends more requests within the window
// than the threshold is banned: the ban is an event, its messages are
// dropped unanswered and counted, and a call from another address goes
// through all the while.
func TestFloodBan(t *testing.T) {
	t.Parallel()
	gw := testkit.NewSIPPhone(t, "gw")
	const threshold = 5
	h, bans := guardedProxy(t, gw.Addr, func(c *Config) {
		// A window and a ban far longer than the test: nothing here
		// depends on how fast it runs.
		c.Flood = Flood{Threshold: threshold, Window: time.Minute, Ban: time.Hour}
	})
	f := newFlooder(t, "127.0.0.2", h.addr)
	for i := 0; i < threshold; i++ {
		f.send(t)
		// Not a trunk's address: refused, but answered.
		if got := f.answer(t, patience); got != "SIP/2.0 403 Forbidden" {
			t.Fatalf("request %d under the threshold answered %q, want 403", i+1, got)
		}
	}
	f.send(t)
	ban := bans.waitBan(t, schema.TypeSourceBanned)
	if ban.Source != "127.0.0.2" || ban.Transport != "udp" || ban.Requests != threshold+1 || ban.Threshold != threshold ||
		ban.WindowMs != time.Minute.Milliseconds() || ban.Until-ban.BannedAt != time.Hour.Milliseconds() {
		t.Errorf("ban event %+v", ban)
	}
	waitMetric(t, h, "carrier_sip_flood_banned_sources", 1)
	waitMetric(t, h, "carrier_sip_flood_dropped_total", 1)

	// Banned: dropped before parsing, so no answer, and no event.
	f.send(t)
	waitMetric(t, h, "carrier_sip_flood_dropped_total", 2)
	if got := f.answer(t, 200*time.Millisecond); got != "" {
		t.Fatalf("banned address answered %q", got)
	}

	// Another address still calls.
	alice := testkit.NewSIPPhone(t, "alice")
	c := alice.Invite(t, h.addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("call from another address answered %d during the ban", res.StatusCode)
	}
	c.Ack()
	if res := c.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE answered %d", res.StatusCode)
	}
	// The requests under the threshold have their events; the dropped
	// ones none.
	flood := 0
	for _, e := range h.ev.all() {
		if strings.HasPrefix(e.tx.CallID, "flood-") {
			flood++
		}
	}
	if flood != threshold {
		t.Errorf("%d events of the flooding address, want %d", flood, threshold)
	}
	if got := metricValue(t, h, "carrier_sip_flood_bans_total"); got != 1 {
		t.Errorf("bans_total %v, want 1", got)
	}
}

// TestFloodBanEnds: a ban lifts after its period, with an event; the
// address is answered again.
func TestFloodBanEnds(t *testing.T) {
	t.Parallel()
	gw := testkit.NewSIPPhone(t, "gw")
	h, bans := guardedProxy(t, gw.Addr, func(c *Config) {
		c.Flood = Flood{Threshold: 2, Window: time.Minute, Ban: 300 * time.Millisecond}
	})
	f := newFlooder(t, "127.0.0.3", h.addr)
	for range 3 {
		f.send(t)
	}
	banned := bans.waitBan(t, schema.TypeSourceBanned)
	lifted := bans.waitBan(t, schema.TypeSourceUnbanned)
	if lifted.Source != "127.0.0.3" || lifted.BannedAt != banned.BannedAt || lifted.Until != banned.Until {
		t.Errorf("unban event %+v after ban %+v", lifted, banned)
	}
	waitMetric(t, h, "carrier_sip_flood_banned_sources", 0)
	f.send(t)
	if got := f.answer(t, patience); got != "SIP/2.0 403 Forbidden" {
		t.Fatalf("after the ban the address was answered %q, want 403", got)
	}
}

// TestFloodExempt: a trusted trunk's source sends past the threshold and
// is not banned; over TCP, a banned address's connection is refused.
func TestFloodExempt(t *testing.T) {
	t.Parallel()
	gw := testkit.NewSIPPhone(t, "gw")
	pv := localProvisioning()
	pv.Trunks["sbc"] = schema.Trunk{ID: "sbc", Account: "local", Trusted: true, Sources: []schema.Source{{CIDR: "127.0.0.4"}}}
	h, bans := guardedProxy(t, gw.Addr, func(c *Config) {
		c.Flood = Flood{Threshold: 2, Window: time.Minute, Ban: time.Hour}
		c.Provisioning = FixedProvisioning(pv)
	})
	trusted := newFlooder(t, "127.0.0.4", h.addr)
	for i := range 5 {
		trusted.send(t)
		if got := trusted.answer(t, patience); got != "SIP/2.0 200 OK" {
			t.Fatalf("trusted request %d answered %q, want the gateway's 200", i+1, got)
		}
	}
	if got := metricValue(t, h, "carrier_sip_flood_bans_total"); got != 0 {
		t.Fatalf("bans_total %v, want 0", got)
	}

	// Banned over UDP, then refused over TCP too: a ban is by address.
	f := newFlooder(t, "127.0.0.5", h.addr)
	for range 3 {
		f.send(t)
	}
	bans.waitBan(t, schema.TypeSourceBanned)
	dropped := metricValue(t, h, "carrier_sip_flood_dropped_total")
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}, Timeout: patience}
	conn, err := d.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(patience))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("a banned address's connection was served")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("a banned address's connection stayed open")
	}
	waitMetric(t, h, "carrier_sip_flood_dropped_total", dropped+1)
}

// TestFloodMemoryBound: a flood from more addresses than MaxSources keeps
// the table at its bound and still bans.
func TestFloodMemoryBound(t *testing.T) {
	g := newFloodGuard(Flood{Threshold: 1, Window: time.Minute, Ban: time.Hour, MaxSources: 8})
	p := &Proxy{cfg: Config{guards: &guards{flood: g}}}
	p.m, _ = newMetrics(nil)
	p.log = testLogger()
	p.events = newCollector()
	p.table.Store(&admission{})
	for i := range 100 {
		src := &net.UDPAddr{IP: net.IPv4(10, 0, byte(i>>8), byte(i)), Port: 5060}
		p.floodAllowed(src, []byte("OPTIONS sip:x SIP/2.0\r\n"), "udp")
	}
	if n := len(g.sources); n > 8 {
		t.Fatalf("%d sources tracked, bound 8", n)
	}
	src := &net.UDPAddr{IP: net.IPv4(10, 9, 9, 9), Port: 5060}
	req := []byte("INVITE sip:x SIP/2.0\r\n")
	if !p.floodAllowed(src, req, "udp") {
		t.Fatal("first request of a new address dropped")
	}
	if p.floodAllowed(src, req, "udp") {
		t.Fatal("request over the threshold passed with a full table")
	}
	if p.floodAllowed(src, []byte("SIP/2.0 200 OK\r\n"), "udp") {
		t.Fatal("a banned address's response passed")
	}
	g.stop()
}

// BenchmarkFloodAllowed is the per-message cost of flood protection for
// an address under its threshold.
func BenchmarkFloodAllowed(b *testing.B) {
	g := newFloodGuard(Flood{Threshold: 1 << 30, Window: time.Minute, Ban: time.Hour, MaxSources: 1 << 16})
	p := &Proxy{cfg: Config{guards: &guards{flood: g}}}
	p.m, _ = newMetrics(nil)
	p.log = testLogger()
	p.table.Store(&admission{})
	src := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5060}
	msg := []byte("INVITE sip:x SIP/2.0\r\n")
	b.ReportAllocs()
	for b.Loop() {
		p.floodAllowed(src, msg, "udp")
	}
}
