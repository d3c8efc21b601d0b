package radius_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/radius"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// base is the time of the calls of a test, in the past so that records
// carry an Acct-Delay-Time.
var base = time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)

// answered is call i as cdrgen writes it at its end: answered after 1.5 s,
// lasting 10.2 s + i.
func answered(i int) schema.CDR {
	callID := fmt.Sprintf("call-%d@test.example", i)
	invite := base.Add(time.Duration(i) * time.Minute)
	answer := invite.Add(1500 * time.Millisecond)
	duration := 10200*time.Millisecond + time.Duration(i)*time.Second
	c := schema.CDR{
		ID:           schema.CDRID(callID, "ft"+strconv.Itoa(i)),
		CallID:       callID,
		FromTag:      "ft" + strconv.Itoa(i),
		ToTag:        "tt" + strconv.Itoa(i),
		Account:      "acme",
		Source:       "127.0.0.1:5062",
		Caller:       "0301234567",
		Callee:       "00441632960" + fmt.Sprintf("%03d", i),
		CallerE164:   "49301234567",
		CalleeE164:   "441632960" + fmt.Sprintf("%03d", i),
		Disposition:  schema.Answered,
		Status:       200,
		InviteAt:     schema.Millis(invite),
		AnswerAt:     schema.Millis(answer),
		EndAt:        schema.Millis(answer.Add(duration)),
		SetupMs:      1500,
		DurationMs:   duration.Milliseconds(),
		BillableSec:  schema.BillableSeconds(duration.Milliseconds()),
		HangupBy:     schema.HangupCaller,
		HangupReason: schema.EndNormal,
	}
	return c
}

// startedOf is the CDR of the call.started event: the call so far.
func startedOf(c schema.CDR) schema.CDR {
	c.EndAt, c.DurationMs, c.BillableSec, c.HangupBy, c.HangupReason = 0, 0, 0, "", ""
	return c
}

func failedCall(i int) schema.CDR {
	callID := fmt.Sprintf("failed-%d@test.example", i)
	invite := base.Add(time.Duration(i) * time.Minute)
	return schema.CDR{
		ID:          schema.CDRID(callID, "ff"+strconv.Itoa(i)),
		CallID:      callID,
		FromTag:     "ff" + strconv.Itoa(i),
		Caller:      "0301234567",
		Callee:      "0049302222",
		CallerE164:  "49301234567",
		CalleeE164:  "49302222",
		Disposition: schema.Busy,
		Status:      486,
		Reason:      "Busy Here",
		Q850:        17,
		InviteAt:    schema.Millis(invite),
		EndAt:       schema.Millis(invite.Add(3 * time.Second)),
	}
}

// publish writes a call event as cdrgen does: deterministic ids, the
// subject of its type and call.
func publish(t *testing.T, js jetstream.JetStream, typ string, c schema.CDR) {
	t.Helper()
	id, at := c.ID, schema.FromMillis(c.EndAt)
	if typ == schema.TypeCallStarted {
		id, at = schema.StartedID(c.ID), schema.FromMillis(c.AnswerAt)
	}
	env, err := schema.NewEnvelopeWithID(id, typ, schema.CDRVersion, at, "test-node", c)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := eventlog.Publish(ctx, js, schema.CDRSubject(typ, c.CallID), env); err != nil {
		t.Fatal(err)
	}
}

func publishCall(t *testing.T, js jetstream.JetStream, c schema.CDR) {
	t.Helper()
	publish(t, js, schema.TypeCallStarted, startedOf(c))
	publish(t, js, schema.TypeCallEnded, c)
}

func newClient(t *testing.T, servers ...radius.Server) *radius.Client {
	t.Helper()
	c, err := radius.NewClient(radius.ClientConfig{
		Servers:  servers,
		Timeout:  300 * time.Millisecond,
		Retries:  1,
		HoldDown: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var nas = radius.NAS{Identifier: "carrier-test", IP: netip.MustParseAddr("127.0.0.1")}

// runAccounter runs an Accounter until the returned stop is called or
// the test ends.
func runAccounter(t *testing.T, js jetstream.JetStream, sender radius.Sender, cfg radius.Config) (stop func()) {
	t.Helper()
	if cfg.NAS.Identifier == "" {
		cfg.NAS = nas
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	} else {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a, err := radius.New(js, sender, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("accounter: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("accounter did not stop within 30s")
		}
	}
	t.Cleanup(stop)
	return stop
}

// eventually polls cond until it holds, failing the test after a minute.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached after a minute; last state: %s", what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAcked waits until the durable consumer has acked everything in the
// CDR stream: from then on the detail file is final.
func waitAcked(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	eventually(t, "consumer radius acked every event", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := js.Consumer(ctx, schema.StreamCDR, radius.DefaultDurable)
		if err != nil {
			return false, err.Error()
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.NumPending == 0 && info.NumAckPending == 0, fmt.Sprintf("pending %d, ack pending %d", info.NumPending, info.NumAckPending)
	})
}

func waitRecords(t *testing.T, fr *testkit.FreeRADIUS, n int) []testkit.DetailRecord {
	t.Helper()
	var recs []testkit.DetailRecord
	eventually(t, fmt.Sprintf("%d detail records", n), func() (bool, string) {
		var err error
		recs, err = fr.Records()
		if err != nil {
			return false, err.Error()
		}
		return len(recs) >= n, fmt.Sprintf("%d records", len(recs))
	})
	return recs
}

// byCall indexes records by Acct-Session-Id and Acct-Status-Type.
func byCall(recs []testkit.DetailRecord) map[string]map[string][]testkit.DetailRecord {
	out := make(map[string]map[string][]testkit.DetailRecord)
	for _, r := range recs {
		id := r.Value("Acct-Session-Id")
		if out[id] == nil {
			out[id] = make(map[string][]testkit.DetailRecord)
		}
		st := r.Value("Acct-Status-Type")
		out[id][st] = append(out[id][st], r)
	}
	return out
}

func startRADIUS(t *testing.T) *testkit.FreeRADIUS {
	return testkit.StartFreeRADIUS(t, testkit.WithDictionary("dictionary.carrier"))
}

// checkNamed fails on attributes FreeRADIUS could not name.
func checkNamed(t *testing.T, recs []testkit.DetailRecord) {
	t.Helper()
	for _, r := range recs {
		for _, a := range r.Attrs {
			if len(a.Name) > 5 && a.Name[:5] == "Attr-" {
				t.Errorf("record of %s: attribute %s = %s has no name in the dictionary", r.Value("Acct-Session-Id"), a.Name, a.Value)
			}
		}
	}
}

func TestAnsweredAndFailedCalls(t *testing.T) {
	fr := startRADIUS(t)
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	const calls = 4
	for i := range calls {
		publishCall(t, js, answered(i))
	}
	publish(t, js, schema.TypeCallFailed, failedCall(0))
	runAccounter(t, js, newClient(t, radius.Server{Addr: fr.AcctAddr(), Secret: testkit.FreeRADIUSSecret}), radius.Config{})
	waitAcked(t, js)
	recs := waitRecords(t, fr, 2*calls+1)
	if len(recs) != 2*calls+1 {
		t.Fatalf("%d records, want %d", len(recs), 2*calls+1)
	}
	checkNamed(t, recs)
	idx := byCall(recs)
	for i := range calls {
		c := answered(i)
		got := idx[c.CallID]
		if len(got["Start"]) != 1 || len(got["Stop"]) != 1 || len(got) != 2 {
			t.Fatalf("call %s: records %v, want one Start and one Stop", c.CallID, got)
		}
		start, stop := got["Start"][0], got["Stop"][0]
		for _, r := range []testkit.DetailRecord{start, stop} {
			want := map[string]string{
				"Acct-Multi-Session-Id": c.ID,
				"Sip-From-Tag":          c.FromTag,
				"Sip-To-Tag":            c.ToTag,
				"Calling-Station-Id":    c.CallerE164,
				"Called-Station-Id":     c.CalleeE164,
				"NAS-Identifier":        "carrier-test",
				"NAS-IP-Address":        "127.0.0.1",
				"User-Name":             "acme",
				"Sip-Call-Setuptime":    "1",
				"Sip-Call-Created":      strconv.FormatInt(c.InviteAt/1000, 10),
			}
			for name, v := range want {
				if got := r.Value(name); got != v {
					t.Errorf("call %s %s: %s = %q, want %q", c.CallID, r.Value("Acct-Status-Type"), name, got, v)
				}
			}
			if _, ok := r.Get("Acct-Delay-Time"); !ok {
				t.Errorf("call %s %s: no Acct-Delay-Time for a record sent late", c.CallID, r.Value("Acct-Status-Type"))
			}
		}
		if start.Value("Sip-Method-Mask") != "Invite" || start.Value("Sip-Response-Code") != "200" {
			t.Errorf("start of %s: %+v, want Sip-Method-Mask Invite, Sip-Response-Code 200", c.CallID, start.Attrs)
		}
		wantSecs := strconv.FormatInt(c.BillableSec, 10)
		if stop.Value("Acct-Session-Time") != wantSecs || stop.Value("Sip-Call-Duration") != wantSecs ||
			stop.Value("Sip-Call-MSDuration") != strconv.FormatInt(c.DurationMs, 10) || stop.Value("Sip-Method-Mask") != "Bye" ||
			stop.Value("Acct-Terminate-Cause") != "User-Request" {
			t.Errorf("stop of %s: %+v, want session time %s s (%d ms), Sip-Method-Mask Bye, User-Request", c.CallID, stop.Attrs, wantSecs, c.DurationMs)
		}
		if _, ok := start.Get("Acct-Session-Time"); ok {
			t.Errorf("start of %s has an Acct-Session-Time", c.CallID)
		}
	}
	f := failedCall(0)
	got := idx[f.CallID]
	if len(got["Failed"]) != 1 || len(got) != 1 {
		t.Fatalf("failed call: records %v, want one Failed", got)
	}
	if r := got["Failed"][0]; r.Value("Sip-Response-Code") != "486" || r.Value("Sip-From-Tag") != f.FromTag || r.Value("Called-Station-Id") != f.CalleeE164 {
		t.Errorf("failed record %+v: want Sip-Response-Code 486, tag and callee", r.Attrs)
	}
}

func TestCiscoProfile(t *testing.T) {
	fr := startRADIUS(t)
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	c := answered(1)
	publishCall(t, js, c)
	publish(t, js, schema.TypeCallFailed, failedCall(1))
	runAccounter(t, js, newClient(t, radius.Server{Addr: fr.AcctAddr(), Secret: testkit.FreeRADIUSSecret}), radius.Config{Profile: radius.ProfileCisco})
	waitAcked(t, js)
	recs := waitRecords(t, fr, 3)
	checkNamed(t, recs)
	idx := byCall(recs)
	stop := idx[c.CallID]["Stop"]
	if len(stop) != 1 {
		t.Fatalf("records %v, want one Stop", idx)
	}
	want := map[string]string{
		"call-id":               c.CallID,
		"h323-setup-time":       "h323-setup-time=10:01:00.000 UTC Mon Jan 5 2026",
		"h323-connect-time":     "h323-connect-time=10:01:01.500 UTC Mon Jan 5 2026",
		"h323-disconnect-time":  "h323-disconnect-time=10:01:12.700 UTC Mon Jan 5 2026",
		"h323-disconnect-cause": "h323-disconnect-cause=10",
		"Acct-Session-Time":     "12",
	}
	for name, v := range want {
		if got := stop[0].Value(name); got != v {
			t.Errorf("stop: %s = %q, want %q (record %+v)", name, got, v, stop[0].Attrs)
		}
	}
	failed := idx[failedCall(1).CallID]["Failed"]
	if len(failed) != 1 || failed[0].Value("h323-disconnect-cause") != "h323-disconnect-cause=11" {
		t.Errorf("failed records %+v, want one with cause 0x11 (user busy)", failed)
	}
}

func TestServerOutageLosesNothing(t *testing.T) {
	fr := startRADIUS(t)
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	runAccounter(t, js, newClient(t, radius.Server{Addr: fr.AcctAddr(), Secret: testkit.FreeRADIUSSecret}), radius.Config{})
	for i := range 3 {
		publishCall(t, js, answered(i))
	}
	waitRecords(t, fr, 6)
	waitAcked(t, js)

	fr.Stop()
	for i := 3; i < 8; i++ {
		publishCall(t, js, answered(i))
	}
	publish(t, js, schema.TypeCallFailed, failedCall(0))
	// The accounter holds the new events unacked while no server answers.
	eventually(t, "events delivered and held unacked", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		cons, err := js.Consumer(ctx, schema.StreamCDR, radius.DefaultDurable)
		if err != nil {
			return false, err.Error()
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.NumAckPending > 0, fmt.Sprintf("ack pending %d", info.NumAckPending)
	})
	fr.Start()
	waitAcked(t, js)
	recs := waitRecords(t, fr, 17)
	if len(recs) != 17 {
		t.Fatalf("%d records, want 17", len(recs))
	}
	idx := byCall(recs)
	for i := range 8 {
		got := idx[answered(i).CallID]
		if len(got["Start"]) != 1 || len(got["Stop"]) != 1 || len(got) != 2 {
			t.Errorf("call %d: %d Start, %d Stop records, want one of each", i, len(got["Start"]), len(got["Stop"]))
		}
	}
	if got := idx[failedCall(0).CallID]; len(got["Failed"]) != 1 {
		t.Errorf("failed call: %d Failed records, want 1", len(got["Failed"]))
	}
}

// blackHole is a primary that takes requests and never answers.
func blackHole(t *testing.T) (addr string, received *atomic.Int64) {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	received = new(atomic.Int64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			if _, _, err := conn.ReadFrom(buf); err != nil {
				return
			}
			received.Add(1)
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return conn.LocalAddr().String(), received
}

func TestSecondaryWhenPrimaryDoesNotAnswer(t *testing.T) {
	fr := startRADIUS(t)
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	primary, received := blackHole(t)
	client := newClient(t,
		radius.Server{Addr: primary, Secret: testkit.FreeRADIUSSecret},
		radius.Server{Addr: fr.AcctAddr(), Secret: testkit.FreeRADIUSSecret})
	runAccounter(t, js, client, radius.Config{})
	for i := range 5 {
		publishCall(t, js, answered(i))
	}
	waitAcked(t, js)
	recs := waitRecords(t, fr, 10)
	if len(recs) != 10 {
		t.Fatalf("%d records at the secondary, want 10", len(recs))
	}
	idx := byCall(recs)
	for i := range 5 {
		if got := idx[answered(i).CallID]; len(got["Start"]) != 1 || len(got["Stop"]) != 1 {
			t.Errorf("call %d at the secondary: %v, want one Start and one Stop", i, got)
		}
	}
	if received.Load() == 0 {
		t.Error("the primary was never tried")
	}
}

func TestInterimUpdatesSurviveRestart(t *testing.T) {
	fr := startRADIUS(t)
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	server := radius.Server{Addr: fr.AcctAddr(), Secret: testkit.FreeRADIUSSecret}
	// A call that is going on now.
	c := answered(1)
	now := time.Now().UTC()
	c.InviteAt, c.AnswerAt = schema.Millis(now.Add(-2*time.Second)), schema.Millis(now.Add(-500*time.Millisecond))
	cfg := radius.Config{InterimInterval: 700 * time.Millisecond}
	stop := runAccounter(t, js, newClient(t, server), cfg)
	publish(t, js, schema.TypeCallStarted, startedOf(c))
	interims := func(min int) func() (bool, string) {
		return func() (bool, string) {
			recs, err := fr.Records()
			if err != nil {
				return false, err.Error()
			}
			got := byCall(recs)[c.CallID]["Interim-Update"]
			return len(got) >= min, fmt.Sprintf("%d interim updates", len(got))
		}
	}
	eventually(t, "an interim update", interims(1))
	stop()

	// A new accounter knows the call from the bucket and goes on.
	runAccounter(t, js, newClient(t, server), cfg)
	eventually(t, "an interim update after the restart", interims(2))
	c.EndAt = schema.Millis(time.Now())
	c.DurationMs = c.EndAt - c.AnswerAt
	c.BillableSec = schema.BillableSeconds(c.DurationMs)
	publish(t, js, schema.TypeCallEnded, c)
	waitAcked(t, js)

	recs, err := fr.Records()
	if err != nil {
		t.Fatal(err)
	}
	checkNamed(t, recs)
	var seq []string
	for _, r := range recs {
		if r.Value("Acct-Session-Id") != c.CallID {
			continue
		}
		st := r.Value("Acct-Status-Type")
		seq = append(seq, st)
		if st == "Interim-Update" {
			secs, err := strconv.Atoi(r.Value("Acct-Session-Time"))
			if err != nil || secs < 0 {
				t.Errorf("interim update with Acct-Session-Time %q", r.Value("Acct-Session-Time"))
			}
			if r.Value("Acct-Multi-Session-Id") != c.ID {
				t.Errorf("interim update with Acct-Multi-Session-Id %q, want %q", r.Value("Acct-Multi-Session-Id"), c.ID)
			}
		}
	}
	if len(seq) < 4 || seq[0] != "Start" || seq[len(seq)-1] != "Stop" {
		t.Fatalf("records of the call: %v, want Start, interim updates, Stop", seq)
	}
	for _, st := range seq[1 : len(seq)-1] {
		if st != "Interim-Update" {
			t.Fatalf("records of the call: %v, want Start, interim updates, Stop", seq)
		}
	}
}
