package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/radius"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

const radiusDictionary = "../../radius/dictionary.carrier"

// radiusBacklog is how many call events the radius consumer has not
// acked yet.
func radiusBacklog(js jetstream.JetStream) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, schema.StreamCDR, radius.DefaultDurable)
	if err != nil {
		return 0, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

func waitRadiusAcked(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	eventually(t, 90*time.Second, func() error {
		n, err := radiusBacklog(js)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("radius consumer: %d events not acked", n)
		}
		return nil
	})
}

// recordsPerCall counts detail records by Acct-Session-Id and status.
func recordsPerCall(recs []testkit.DetailRecord) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, r := range recs {
		id := r.Value("Acct-Session-Id")
		if out[id] == nil {
			out[id] = map[string]int{}
		}
		out[id][r.Value("Acct-Status-Type")]++
	}
	return out
}

func TestRadiusAccountsCallsThroughTheProxy(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	fr := testkit.StartFreeRADIUS(t, testkit.WithDictionary(radiusDictionary))
	uas := testkit.StartSippUAS(t, testkit.SippScenarioUAS)
	s := startSeparate(t, uas.Addr())
	startCommand(t, "radius", "run", "--nats-url", s.natsURL, "--metrics-listen", "",
		"--radius-server", fr.AcctAddr(), "--radius-secret", testkit.FreeRADIUSSecret,
		"--radius-timeout", "300ms", "--radius-retries", "1", "--nas-id", "e2e", "--nas-ip", "127.0.0.1")

	// Answered calls, with FreeRADIUS down for a while in the middle.
	const calls = 60
	done := s.placeCalls(t, calls)
	eventually(t, 60*time.Second, func() error {
		recs, err := fr.Records()
		if err != nil {
			return err
		}
		if len(recs) == 0 {
			return errors.New("no record yet")
		}
		return nil
	})
	fr.Stop()
	eventually(t, 60*time.Second, func() error {
		n, err := radiusBacklog(s.js)
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("no call event waiting for the server")
		}
		return nil
	})
	fr.Start()
	if res := <-done; res.Successful != calls {
		t.Fatalf("sipp: %s", res)
	}
	wantCDRsOnce(t, s.js, calls)
	waitRadiusAcked(t, s.js)
	recs, err := fr.Records()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2*calls {
		t.Fatalf("%d detail records, want a Start and a Stop for each of %d calls", len(recs), calls)
	}
	for _, r := range recs {
		id := r.Value("Acct-Session-Id")
		if r.Value("Acct-Status-Type") == "Stop" {
			if secs, err := strconv.Atoi(r.Value("Acct-Session-Time")); err != nil || secs < 1 {
				t.Errorf("call %s: Acct-Session-Time %q, want at least the 1 s sipp held the call", id, r.Value("Acct-Session-Time"))
			}
		}
		if r.Value("Sip-From-Tag") == "" || r.Value("Sip-To-Tag") == "" || r.Value("NAS-Identifier") != "e2e" {
			t.Errorf("call %s: record without tags or NAS-Identifier: %+v", id, r.Attrs)
		}
		if r.Value("Calling-Station-Id") != testkit.SippDefaultCaller || r.Value("Called-Station-Id") != testkit.SippDefaultCallee {
			t.Errorf("call %s: numbers %q -> %q, want %s -> %s", id, r.Value("Calling-Station-Id"), r.Value("Called-Station-Id"), testkit.SippDefaultCaller, testkit.SippDefaultCallee)
		}
	}
	perCall := recordsPerCall(recs)
	if len(perCall) != calls {
		t.Fatalf("records for %d calls, want %d", len(perCall), calls)
	}
	for id, c := range perCall {
		if c["Start"] != 1 || c["Stop"] != 1 || len(c) != 2 {
			t.Errorf("call %s: records %v, want one Start and one Stop", id, c)
		}
	}

	// Busy calls: the proxy now sends calls to a gateway that rejects them.
	busy := testkit.StartSippUAS(t, testkit.SippScenarioUASBusy)
	s.proxy.stop(t)
	s.proxy = startCommand(t, "proxy", "--nats-url", s.natsURL, "--sip-listen", s.sip, "--gateway", busy.Addr(),
		"--spool-dir", filepath.Join(s.dataDir, "spool"), "--metrics-listen", "")
	s.proxy.waitListening(t, s.sip)
	const busyCalls = 10
	if res := testkit.SippCallThrough(t, s.sip, busy, testkit.SippCalls{Calls: busyCalls, Rate: 20}); res.Successful != busyCalls {
		t.Fatalf("sipp busy calls: %s", res)
	}
	wantCDRsOnce(t, s.js, calls+busyCalls)
	waitRadiusAcked(t, s.js)
	if recs, err = fr.Records(); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for _, r := range recs {
		if r.Value("Acct-Status-Type") != "Failed" {
			continue
		}
		failed++
		if r.Value("Sip-Response-Code") != "486" || r.Value("Sip-From-Tag") == "" {
			t.Errorf("failed record %+v: want Sip-Response-Code 486 and the From tag", r.Attrs)
		}
	}
	if failed != busyCalls || len(recs) != 2*calls+busyCalls {
		t.Fatalf("%d Failed records among %d, want %d among %d", failed, len(recs), busyCalls, 2*calls+busyCalls)
	}
}

func TestRadiusTestCommand(t *testing.T) {
	fr := testkit.StartFreeRADIUS(t, testkit.WithDictionary(radiusDictionary))
	var out syncBuffer
	root := newRootCmd(&out, &out, nil)
	root.SetArgs([]string{"radius", "test", "--radius-server", fr.AcctAddr(), "--radius-secret", testkit.FreeRADIUSSecret,
		"--callee", "4930555", "--duration", "42s"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := root.ExecuteContext(ctx); err != nil {
		t.Fatalf("radius test: %v\n%s", err, out.String())
	}
	if got := strings.Count(out.String(), "Accounting-Response"); got != 2 {
		t.Fatalf("output shows %d responses, want 2:\n%s", got, out.String())
	}
	recs, err := fr.Records()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Value("Acct-Status-Type") != "Start" || recs[1].Value("Acct-Status-Type") != "Stop" ||
		recs[1].Value("Acct-Session-Time") != "42" || recs[1].Value("Called-Station-Id") != "4930555" {
		t.Fatalf("detail records %+v, want a Start and a Stop of 42 s to 4930555", recs)
	}

	// A wrong secret: the server drops the requests and the command says so.
	var out2 syncBuffer
	root = newRootCmd(&out2, &out2, nil)
	root.SetArgs([]string{"radius", "test", "--radius-server", fr.AcctAddr(), "--radius-secret", "wrong",
		"--radius-timeout", "200ms", "--radius-retries", "0"})
	if err := root.ExecuteContext(ctx); err == nil || !strings.Contains(err.Error(), "shared secret") {
		t.Fatalf("radius test with a wrong secret: %v, want an error that points at the secret\n%s", err, out2.String())
	}
}

func TestRadiusDictionaryCommandPrintsTheShippedFile(t *testing.T) {
	var out syncBuffer
	root := newRootCmd(&out, &out, nil)
	root.SetArgs([]string{"radius", "dictionary"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(radiusDictionary)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != string(want) {
		t.Fatalf("printed dictionary differs from %s", radiusDictionary)
	}
}
