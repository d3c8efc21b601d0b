package proxy

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/tools/testkit"
)

func TestMain(m *testing.M) {
	// sipgo logs some connection bookkeeping through slog's default
	// logger; keep test output readable unless asked.
	if os.Getenv("PROXY_TEST_LOG") == "" {
		slog.SetDefault(testLogger())
	}
	os.Exit(m.Run())
}

func TestNewRejectsBadConfig(t *testing.T) {
	ok := Config{Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}}, Gateway: "127.0.0.1:5070"}
	for name, mod := range map[string]func(*Config){
		"no listeners":                func(c *Config) { c.Listeners = nil },
		"bad transport":               func(c *Config) { c.Listeners[0].Transport = "sctp" },
		"bad address":                 func(c *Config) { c.Listeners[0].Addr = "localhost" },
		"no gateway":                  func(c *Config) { c.Gateway = "" },
		"bad gateway transport":       func(c *Config) { c.GatewayTransport = "tls" },
		"no listener for the gateway": func(c *Config) { c.GatewayTransport = "tcp" },
		"bad advertised address":      func(c *Config) { c.Listeners[0].Advertise = "a b:x" },
		"metrics registered twice":    func(c *Config) { c.Registerer = twiceRegistered(t) },
	} {
		t.Run(name, func(t *testing.T) {
			c := ok
			c.Listeners = append([]Listener(nil), ok.Listeners...)
			mod(&c)
			if _, err := New(c, newCollector()); !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("New: %v, want ErrInvalidConfig", err)
			}
		})
	}
	if _, err := New(ok, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New without a publisher: %v", err)
	}
	if _, err := New(ok, newCollector()); err != nil {
		t.Errorf("New with a good config: %v", err)
	}
}

// twiceRegistered is a registry that already holds the proxy's metrics.
func twiceRegistered(t *testing.T) prometheus.Registerer {
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestRunTwiceAndPortZero(t *testing.T) {
	p, err := New(Config{
		Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}, {Transport: "tcp", Addr: "127.0.0.1:0", Advertise: "sip.example.net:5080"}},
		Gateway:   "127.0.0.1:5070",
	}, newCollector())
	if err != nil {
		t.Fatal(err)
	}
	if p.Addrs() != nil {
		t.Errorf("Addrs before Ready: %v", p.Addrs())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	<-p.Ready()
	addrs := p.Addrs()
	if len(addrs) != 2 || !strings.HasPrefix(addrs[0], "udp:127.0.0.1:") || strings.HasSuffix(addrs[0], ":0") {
		t.Errorf("Addrs %v", addrs)
	}
	if rr := p.listeners[1].rr.Value(); rr != "<sip:sip.example.net:5080;transport=tcp;lr>" {
		t.Errorf("advertised Record-Route %s", rr)
	}
	if err := p.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestRunFailsOnBusyPort(t *testing.T) {
	h := startProxy(t, "127.0.0.1:5070", "udp", nil)
	p, err := New(Config{Listeners: []Listener{{Transport: "udp", Addr: h.addr}}, Gateway: "127.0.0.1:5070"}, newCollector())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "listen udp") {
		t.Errorf("Run on a busy port: %v", err)
	}
}

// TestStopLeavesNothingRunning stops the proxy with a call ringing and one
// answered, and checks that Run returns and every goroutine it started
// ends.
func TestStopLeavesNothingRunning(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("calls", func(t *testing.T) {
		gw := testkit.NewSIPPhone(t, "gw")
		h := startProxy(t, gw.Addr, "tcp", nil)
		alice := testkit.NewSIPPhone(t, "alice")

		c := alice.Invite(t, h.addr, "UDP", nil)
		if res := c.WaitFinal(); res.StatusCode != 200 {
			t.Fatalf("answered %d", res.StatusCode)
		}
		c.Ack()
		gw.SetUAS(gw.RingForever())
		ringing := alice.Invite(t, h.addr, "TCP", nil)
		ringing.WaitFor(180)
		// The subtest's cleanup stops the proxy, then the phones.
	})
	deadline := time.Now().Add(patience)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		var b bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Errorf("%d goroutines left running (%d before):\n%s", n-before, before, b.String())
	}
}
