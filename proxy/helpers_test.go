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
	h := newHarness(t)
	cfg := h.config(gateway)
	cfg.GatewayTransport = gatewayTransport
	if tune != nil {
		tune(&cfg)
	}
	h.run(t, cfg, h.ev)
	return h
}

// newHarness picks the port of a proxy to be run.
func newHarness(t testing.TB) *harness {
	port := testkit.FreePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	return &harness{ev: newCollector(), reg: prometheus.NewRegistry(), addr: addr, host: "127.0.0.1", port: port}
}

// config is the tests' proxy: UDP and TCP on the harness's port, the
// local trunk (the phones call from 127.0.0.1; there is no open relay).
func (h *harness) config(gateway string) Config {
	return Config{
		Node:         "test-node",
		Listeners:    []Listener{{Transport: "udp", Addr: h.addr}, {Transport: "tcp", Addr: h.addr}},
		Gateway:      gateway,
		Logger:       testLogger(),
		Registerer:   h.reg,
		Provisioning: FixedProvisioning(localProvisioning()),
	}
}

// run starts the proxy of cfg and waits until it serves; stop ends it
// (once; the test's end calls it too).
func (h *harness) run(t testing.TB, cfg Config, events EventPublisher) (stop func()) {
	t.Helper()
	p, err := New(cfg, events)
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
	var once sync.Once
	stop = func() {
		once.Do(func() {
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
	}
	t.Cleanup(stop)
	return stop
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

func topVia(req *sip.Request) *sip.ViaHeader { return req.Via() }
