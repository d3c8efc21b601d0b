package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// getHealth fetches path from the metrics endpoint at addr.
func getHealth(addr, path string) (int, healthReport, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, healthReport{}, "", err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, healthReport{}, "", err
	}
	var rep healthReport
	if path == "/healthz" {
		if ct := res.Header.Get("Content-Type"); ct != "application/json" {
			return 0, rep, string(body), fmt.Errorf("content type %q", ct)
		}
		if err := json.Unmarshal(body, &rep); err != nil {
			return 0, rep, string(body), fmt.Errorf("decode %q: %w", body, err)
		}
	}
	return res.StatusCode, rep, string(body), nil
}

// waitHealth polls /healthz until it answers code with the checks in
// want: name to "ok", or to a part of the failing check's error.
func waitHealth(t *testing.T, addr string, code int, want map[string]string) healthReport {
	t.Helper()
	var rep healthReport
	eventually(t, 30*time.Second, func() error {
		got, r, body, err := getHealth(addr, "/healthz")
		if err != nil {
			return err
		}
		rep = r
		if got != code {
			return fmt.Errorf("/healthz answered %d, want %d: %s", got, code, body)
		}
		for name, w := range want {
			msg, ok := r.Checks[name]
			if !ok {
				return fmt.Errorf("no check %s in %s", name, body)
			}
			if w == "ok" && msg != "ok" || w != "ok" && !strings.Contains(msg, w) {
				return fmt.Errorf("check %s: %q, want %q", name, msg, w)
			}
		}
		return nil
	})
	wantStatus := "ok"
	if code != http.StatusOK {
		wantStatus = "unavailable"
	}
	if rep.Status != wantStatus {
		t.Fatalf("status %q with %d, want %q", rep.Status, code, wantStatus)
	}
	return rep
}

// TestHealthChecks: /healthz is 200 while the NATS connection is up and
// the spool is short, 503 naming the check while either is not; /livez
// stays 200 throughout.
func TestHealthChecks(t *testing.T) {
	n := testkit.StartNATS(t)
	nc, js := n.Connect()
	reg := newRegistry()
	pub, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: t.TempDir(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close(context.Background()) })
	const maxSpooled = 10
	reg.checks.add("nats", natsCheck(nc))
	reg.checks.add("event_spool", spoolCheck(pub, maxSpooled))

	addr := hostPort(testkit.FreeTCPPort(t))
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serveMetrics(ctx, slog.New(slog.DiscardHandler), addr, reg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serveMetrics: %v", err)
		}
	})

	waitHealth(t, addr, http.StatusOK, map[string]string{"nats": "ok", "event_spool": "ok"})
	if code, _, body, err := getHealth(addr, "/metrics"); err != nil || code != http.StatusOK || !strings.Contains(body, "carrier_eventlog_spool_oldest_seconds") {
		t.Fatalf("/metrics: %d %v, spool age missing", code, err)
	}

	n.Stop()
	rep := waitHealth(t, addr, http.StatusServiceUnavailable, map[string]string{"nats": "nats connection", "event_spool": "ok"})
	t.Logf("nats down: %+v", rep)
	if code, _, body, err := getHealth(addr, "/livez"); err != nil || code != http.StatusOK {
		t.Fatalf("/livez while nats is down: %d %q %v", code, body, err)
	}
	for i := range maxSpooled + 1 {
		call := fmt.Sprintf("call-%d@test", i)
		ev, err := schema.NewEnvelope("test.event", 1, time.Now(), "test-node", map[string]int{"i": i})
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Publish(schema.TransactionSubject(call), ev); err != nil {
			t.Fatal(err)
		}
	}
	waitHealth(t, addr, http.StatusServiceUnavailable, map[string]string{"event_spool": "11 events spooled, over 10"})

	n.Start()
	waitHealth(t, addr, http.StatusOK, map[string]string{"nats": "ok", "event_spool": "ok"})
}

// TestHealthProxyCommand: `carrier proxy` reports its NATS connection, its
// readiness and its spool on /healthz.
func TestHealthProxyCommand(t *testing.T) {
	n := testkit.StartNATS(t)
	metrics := hostPort(testkit.FreeTCPPort(t))
	sip := hostPort(testkit.FreePort(t))
	px := startCommand(t, "proxy", "--nats-url", n.URL, "--sip-listen", sip, "--metrics-listen", metrics,
		"--trunk-cidr", "127.0.0.1/32", "--spool-dir", t.TempDir())
	px.waitListening(t, sip)
	waitHealth(t, metrics, http.StatusOK, map[string]string{"nats": "ok", "proxy": "ok", "event_spool": "ok"})

	n.Stop()
	waitHealth(t, metrics, http.StatusServiceUnavailable, map[string]string{"nats": "nats connection", "proxy": "ok"})
	if code, _, body, err := getHealth(metrics, "/livez"); err != nil || code != http.StatusOK {
		t.Fatalf("/livez while nats is down: %d %q %v", code, body, err)
	}
	n.Start()
	waitHealth(t, metrics, http.StatusOK, map[string]string{"nats": "ok", "proxy": "ok"})
}

// TestHealthNoChecks: a process that registered no check is ready.
func TestHealthNoChecks(t *testing.T) {
	rep, ok := newRegistry().checks.run(context.Background())
	if !ok || rep.Status != "ok" || len(rep.Checks) != 0 {
		t.Fatalf("no checks: %+v %v", rep, ok)
	}
}
