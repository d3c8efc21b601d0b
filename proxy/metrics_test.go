package proxy

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// answerRatio reads carrier_sip_gateway_answer_ratio{gateway} from reg;
// ok is false when the gateway has no series.
func answerRatio(t testing.TB, reg prometheus.Gatherer, gateway string) (v float64, ok bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "carrier_sip_gateway_answer_ratio" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "gateway" && lp.GetValue() == gateway {
					return m.GetGauge().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func wantRatio(t testing.TB, reg prometheus.Gatherer, gateway string, want float64) {
	t.Helper()
	got, ok := answerRatio(t, reg, gateway)
	if !ok {
		t.Fatalf("no answer ratio for %s, want %v", gateway, want)
	}
	if got != want {
		t.Fatalf("answer ratio of %s = %v, want %v", gateway, got, want)
	}
}

// TestGatewayAnswerRatio: through the proxy, a gateway that answers every
// other call with 503 has half its attempts answered, the gateway behind
// it every one, and a gateway never tried has no series.
func TestGatewayAnswerRatio(t *testing.T) {
	flaky := testkit.NewSIPPhone(t, "gw1")
	var invites atomic.Int32
	busy, answer := flaky.Reject(503, "Service Unavailable"), flaky.Answer(false)
	flaky.SetUAS(func(req *sip.Request, tx sip.ServerTransaction) {
		if invites.Add(1)%2 == 1 {
			busy(req, tx)
			return
		}
		answer(req, tx)
	})
	good := testkit.NewSIPPhone(t, "gw2")
	spare := testkit.NewSIPPhone(t, "gw3")
	h := routedProxy(t, []string{flaky.Addr, good.Addr, spare.Addr},
		[]schema.Route{{ID: "r", Gateways: []string{"g1", "g2"}}},
		// No hold-down: g1 is tried first on every call.
		func(c *Config) { c.Health.HoldDown = -1 })
	alice := testkit.NewSIPPhone(t, "alice")

	const calls = 6
	for i := range calls {
		c := alice.Invite(t, h.addr, "UDP", nil)
		if res := c.WaitFinal(); res.StatusCode != 200 {
			t.Fatalf("call %d answered %d", i, res.StatusCode)
		}
		c.Ack()
		want := []string{"g1:200"}
		if i%2 == 0 {
			want = []string{"g1:503", "g2:200"}
		}
		wantAttempts(t, h.ev.wait(t, "INVITE", of(c.CallID, sip.INVITE)).tx, want...)
	}
	wantRatio(t, h.reg, "g1", 0.5)
	wantRatio(t, h.reg, "g2", 1)
	if v, ok := answerRatio(t, h.reg, "g3"); ok {
		t.Errorf("g3, never tried, has an answer ratio %v", v)
	}
	// The counter the ratio sits beside still counts every attempt.
	if got := metricValue(t, h, "carrier_sip_gateway_attempts_total", "gateway", "g1", "code", "503"); got != calls/2 {
		t.Errorf("g1 503 attempts %v, want %d", got, calls/2)
	}
}

// TestAnswerRatioWindow: the ratio is over the last answerWindow attempts
// only, and prune drops the series of gateways no longer provisioned.
func TestAnswerRatioWindow(t *testing.T) {
	a := newAnswerRatios()
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.ratio)
	book := func(gateway string, code, n int) {
		for range n {
			a.attempt(gateway, code)
		}
	}

	if _, ok := answerRatio(t, reg, "g1"); ok {
		t.Fatal("series before any attempt")
	}
	book("g1", 200, 1)
	wantRatio(t, reg, "g1", 1)
	book("g1", 408, 3)
	wantRatio(t, reg, "g1", 0.25)

	// A full window of answers pushes the failures out.
	book("g1", 200, answerWindow)
	wantRatio(t, reg, "g1", 1)
	book("g1", 503, answerWindow/4)
	wantRatio(t, reg, "g1", 0.75)
	book("g1", 487, answerWindow)
	wantRatio(t, reg, "g1", 0)
	// 1xx never reach here; 6xx and 3xx are not answers either.
	book("g1", 603, 1)
	book("g1", 302, 1)
	book("g1", 299, 2)
	wantRatio(t, reg, "g1", 0.02)

	book("g2", 200, 1)
	a.prune(map[string]bool{"g2": true})
	if v, ok := answerRatio(t, reg, "g1"); ok {
		t.Errorf("pruned g1 still reports %v", v)
	}
	wantRatio(t, reg, "g2", 1)
	// A gateway provisioned again starts a new window.
	book("g1", 503, 1)
	wantRatio(t, reg, "g1", 0)
}

// TestProxyReadyCheck: CheckReady fails before Run serves, passes while
// it serves with provisioning, fails without provisioning and once
// stopped.
func TestProxyReadyCheck(t *testing.T) {
	h := newHarness(t)
	p, err := New(h.config("127.0.0.1:5070"), h.ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckReady(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("before Run: %v, want ErrNotReady", err)
	}

	h = newHarness(t)
	stop := h.run(t, h.config("127.0.0.1:5070"), h.ev)
	if err := h.p.CheckReady(); err != nil {
		t.Fatalf("serving: %v", err)
	}
	stop()
	if err := h.p.CheckReady(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("stopped: %v, want ErrNotReady", err)
	}

	h = newHarness(t)
	cfg := h.config("127.0.0.1:5070")
	cfg.Provisioning = FixedProvisioning(nil)
	h.run(t, cfg, h.ev)
	if err := h.p.CheckReady(); !errors.Is(err, ErrNotReady) {
		t.Fatalf("without provisioning: %v, want ErrNotReady", err)
	}
}
