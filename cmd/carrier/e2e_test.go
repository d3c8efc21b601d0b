package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// The walking skeleton end to end: sipp calls through `carrier up` become
// transaction events, CDRs and ClickHouse rows.
func TestUpCarriesSippCallsIntoClickHouse(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	ch := testkit.StartClickHouse(t)
	conn := ch.Conn()

	// One `carrier up` per gateway behaviour, as the skeleton has one
	// gateway, each loading its own database.
	run := func(t *testing.T, db string, uas *testkit.SippUAS, calls, pauseMs int) (proxyAddr string) {
		sip := hostPort(testkit.FreePort(t))
		up := startCommand(t, "up",
			"--data-dir", t.TempDir(),
			"--nats-listen", hostPort(testkit.FreeTCPPort(t)),
			"--sip-listen", sip,
			"--gateway", uas.Addr(),
			"--trunk-cidr", "127.0.0.1/32", // sipp calls from here; no open relay
			"--metrics-listen", hostPort(testkit.FreeTCPPort(t)),
			"--clickhouse", ch.Addr(), "--clickhouse-db", db,
		)
		up.waitListening(t, sip)
		res := testkit.SippCallThrough(t, sip, uas, testkit.SippCalls{Calls: calls, Rate: 50, PauseMs: pauseMs})
		if res.Successful != calls || res.Failed != 0 {
			t.Fatalf("sipp through the proxy: %s", res)
		}
		return sip
	}

	t.Run("answered", func(t *testing.T) {
		const calls, pauseMs, db = 200, 500, "carrier_answered"
		from := time.Now().Add(-time.Minute)
		uas := testkit.StartSippUAS(t, testkit.SippScenarioUAS)
		sip := run(t, db, uas, calls, pauseMs)

		// Garbage at the running proxy must not disturb it.
		sendGarbage(t, sip)

		var cdrs []schema.CDR
		eventually(t, 60*time.Second, func() error {
			var err error
			cdrs, err = analytics.ListCDRs(context.Background(), conn, db, analytics.CDRFilter{From: from, To: time.Now().Add(time.Minute), Limit: 10 * calls})
			if err != nil {
				return err
			}
			if answered := countDisposition(cdrs, schema.Answered); answered != calls {
				return fmt.Errorf("%d answered CDRs in ClickHouse, want %d", answered, calls)
			}
			return nil
		})
		if len(cdrs) != calls {
			t.Fatalf("%d CDRs, want %d", len(cdrs), calls)
		}
		perCall := map[string]int{}
		for _, c := range cdrs {
			perCall[c.CallID]++
			if c.Status != 200 || c.HangupBy != schema.HangupCaller || c.AnswerAt == 0 || c.EndAt < c.AnswerAt {
				t.Errorf("CDR %s: status %d hangup %q answer %d end %d", c.CallID, c.Status, c.HangupBy, c.AnswerAt, c.EndAt)
			}
			// The UAC hangs up after its pause; ACK and BYE add little.
			// Times are truncated to ms at both ends and sipp's timer
			// can fire a tick early, hence a little slack below.
			if c.DurationMs < pauseMs-20 || c.DurationMs > pauseMs+3000 {
				t.Errorf("CDR %s lasted %d ms, the scenario pauses %d ms", c.CallID, c.DurationMs, pauseMs)
			}
			if c.Account != "local" || c.Trunk != "local" {
				t.Errorf("CDR %s: account %q trunk %q, want the --trunk-cidr trunk", c.CallID, c.Account, c.Trunk)
			}
			if c.BillableSec != schema.BillableSeconds(c.DurationMs) || c.Callee != testkit.SippDefaultCallee {
				t.Errorf("CDR %s: billable %d for %d ms, callee %q", c.CallID, c.BillableSec, c.DurationMs, c.Callee)
			}
			if len(c.Attempts) != 1 || c.Attempts[0].Destination != uas.Addr() || c.Attempts[0].Status != 200 {
				t.Errorf("CDR %s attempts %+v", c.CallID, c.Attempts)
			}
		}
		if len(perCall) != calls {
			t.Fatalf("%d distinct calls among %d CDRs", len(perCall), len(cdrs))
		}
		// Every call's INVITE, ACK and BYE reached ClickHouse too.
		eventually(t, 30*time.Second, func() error {
			n, err := analytics.CountTransactions(context.Background(), conn, db, from, time.Now().Add(time.Minute))
			if err != nil {
				return err
			}
			if n < 3*calls {
				return fmt.Errorf("%d transactions in ClickHouse, want at least %d", n, 3*calls)
			}
			return nil
		})
	})

	t.Run("busy", func(t *testing.T) {
		const calls, db = 50, "carrier_busy"
		from := time.Now().Add(-time.Minute)
		uas := testkit.StartSippUAS(t, testkit.SippScenarioUASBusy)
		run(t, db, uas, calls, 0)
		eventually(t, 60*time.Second, func() error {
			cdrs, err := analytics.ListCDRs(context.Background(), conn, db, analytics.CDRFilter{From: from, To: time.Now().Add(time.Minute), Limit: 1000})
			if err != nil {
				return err
			}
			if busy := countDisposition(cdrs, schema.Busy); busy != calls || len(cdrs) != calls {
				return fmt.Errorf("%d busy among %d CDRs, want %d busy", busy, len(cdrs), calls)
			}
			for _, c := range cdrs {
				if c.Status != 486 || c.AnswerAt != 0 || c.DurationMs != 0 {
					return fmt.Errorf("busy CDR %s: status %d answer %d duration %d", c.CallID, c.Status, c.AnswerAt, c.DurationMs)
				}
			}
			return nil
		})
	})
}

// separate starts the skeleton as separate processes would run it: an
// embedded JetStream server, a proxy and a correlator, each its own
// command, so each can be stopped on its own.
type separate struct {
	dataDir, natsAddr, natsURL, sip string
	nats, proxy, correlator         *running
	js                              jetstream.JetStream
}

func startSeparate(t *testing.T, gateway string) *separate {
	s := &separate{dataDir: t.TempDir(), natsAddr: hostPort(testkit.FreeTCPPort(t)), sip: hostPort(testkit.FreePort(t))}
	s.natsURL = "nats://" + s.natsAddr
	s.startNATS(t)
	s.proxy = startCommand(t, "proxy", "--nats-url", s.natsURL, "--sip-listen", s.sip, "--gateway", gateway, "--trunk-cidr", "127.0.0.1/32",
		"--spool-dir", filepath.Join(s.dataDir, "spool"), "--metrics-listen", "")
	s.proxy.waitListening(t, s.sip)
	s.startCorrelator(t)
	nc, js, err := eventlog.Connect(s.natsURL, "e2e-check", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s.js = js
	return s
}

func (s *separate) startNATS(t *testing.T) {
	s.nats = startCommand(t, "nats", "--listen", s.natsAddr, "--data-dir", filepath.Join(s.dataDir, "jetstream"))
	s.nats.waitListening(t, s.natsAddr)
}

func (s *separate) startCorrelator(t *testing.T) {
	s.correlator = startCommand(t, "correlator", "--nats-url", s.natsURL, "--metrics-listen", "")
}

// placeCalls runs 20 calls/s of one second each through the proxy in the
// background; the channel gives sipp's counts when all have ended.
func (s *separate) placeCalls(t *testing.T, calls int) <-chan testkit.SippResult {
	done := make(chan testkit.SippResult, 1)
	go func() {
		res, err := testkit.RunSippUAC(t, s.sip, testkit.SippScenarioUAC, testkit.SippCalls{Calls: calls, Rate: 20, PauseMs: 1000})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	return done
}

// finishedCalls counts the finished-call events per CDR id on the CDR stream.
func finishedCalls(ctx context.Context, js jetstream.JetStream) (map[string]int, error) {
	cons, err := js.OrderedConsumer(ctx, schema.StreamCDR, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{schema.FinishedCallsEnded, schema.FinishedCallsFailed},
	})
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	ids := map[string]int{}
	for remaining := info.NumPending; remaining > 0; {
		batch, err := cons.Fetch(int(min(remaining, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			env, err := schema.ParseEnvelope(m.Data())
			if err != nil {
				return nil, err
			}
			var cdr schema.CDR
			if err := env.Decode(env.Type, schema.CDRVersion, &cdr); err != nil {
				return nil, err
			}
			ids[cdr.ID]++
			got++
		}
		if got == 0 {
			return nil, fmt.Errorf("fetch returned nothing with %d pending: %v", remaining, batch.Error())
		}
		remaining -= uint64(got)
	}
	return ids, nil
}

// wantCDRsOnce waits until the CDR stream holds n finished calls and
// checks that none is there twice.
func wantCDRsOnce(t *testing.T, js jetstream.JetStream, n int) {
	t.Helper()
	var ids map[string]int
	eventually(t, 90*time.Second, func() error {
		var err error
		ids, err = finishedCalls(context.Background(), js)
		if err != nil {
			return err
		}
		if len(ids) != n {
			return fmt.Errorf("%d CDRs on the log, want %d", len(ids), n)
		}
		return nil
	})
	for id, times := range ids {
		if times != 1 {
			t.Errorf("CDR %s is on the log %d times", id, times)
		}
	}
}

func TestCorrelatorRestartMidRunLosesAndDuplicatesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	uas := testkit.StartSippUAS(t, testkit.SippScenarioUAS)
	s := startSeparate(t, uas.Addr())
	const calls = 200

	done := s.placeCalls(t, calls)
	// Kill the correlator while calls are open and being set up, and
	// bring it back while they still go on.
	time.Sleep(3 * time.Second)
	s.correlator.stop(t)
	time.Sleep(2 * time.Second)
	s.startCorrelator(t)

	res := <-done
	if res.Successful != calls {
		t.Fatalf("sipp: %s", res)
	}
	wantCDRsOnce(t, s.js, calls)
}

func TestJetStreamOutageMidRunSpoolsAndDeliversEveryEvent(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	uas := testkit.StartSippUAS(t, testkit.SippScenarioUAS)
	s := startSeparate(t, uas.Addr())
	const calls = 200

	done := s.placeCalls(t, calls)
	time.Sleep(3 * time.Second)
	s.nats.stop(t)
	time.Sleep(3 * time.Second)
	s.startNATS(t)

	// Calls kept flowing through the proxy while the log was away.
	res := <-done
	if res.Successful != calls || res.Failed != 0 {
		t.Fatalf("sipp during the outage: %s", res)
	}
	wantCDRsOnce(t, s.js, calls)
}

func countDisposition(cdrs []schema.CDR, d schema.Disposition) int {
	n := 0
	for _, c := range cdrs {
		if c.Disposition == d {
			n++
		}
	}
	return n
}

// sendGarbage sends datagrams that are not SIP, or broken SIP, to addr.
func sendGarbage(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, b := range [][]byte{
		[]byte("\x00\x01\x02 not sip at all"),
		[]byte("INVITE sip:1@x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bK1\r\n\r\n"),
		[]byte("SIP/2.0 200 OK\r\n\r\n"),
	} {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
}
