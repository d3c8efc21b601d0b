package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/rating"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// restartNet is a proxy that can be stopped and started again on the same
// addresses, keeping its calls in a real JetStream KV, with a gateway
// phone that answers.
type restartNet struct {
	nats  *testkit.NATS
	js    jetstream.JetStream
	store *KVDialogs
	gw    *testkit.SIPPhone
	port  int
}

func newRestartNet(t *testing.T) *restartNet {
	t.Helper()
	n := &restartNet{nats: testkit.StartNATS(t), gw: testkit.NewSIPPhone(t, "gw"), port: testkit.FreePort(t)}
	_, n.js = n.nats.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	store, err := OpenDialogs(ctx, n.js, "test-node", DialogsMaxAge(0))
	if err != nil {
		t.Fatal(err)
	}
	n.store = store
	n.gw.SetUAS(n.gw.Answer(false))
	return n
}

// proxy starts a proxy of the network, on its addresses, with its store.
func (n *restartNet) proxy(t *testing.T, tune func(*Config)) (*harness, func()) {
	t.Helper()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port))
	h := &harness{ev: newCollector(), reg: prometheus.NewRegistry(), addr: addr, host: "127.0.0.1", port: n.port}
	cfg := h.config(n.gw.Addr)
	cfg.Dialogs = n.store
	if tune != nil {
		tune(&cfg)
	}
	stop := h.run(t, cfg, h.ev)
	return h, stop
}

// stored waits until the stored calls satisfy ok and returns them.
func (n *restartNet) stored(t *testing.T, what string, ok func([]DialogRecord) bool) []DialogRecord {
	t.Helper()
	var recs []DialogRecord
	testkit.Eventually(t, patience, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		var err error
		if recs, err = n.store.List(ctx); err != nil {
			return err
		}
		if !ok(recs) {
			return fmt.Errorf("stored calls %+v: want %s", recs, what)
		}
		return nil
	})
	return recs
}

// answered places a call from ph through the proxy at addr until it is
// answered, and acknowledges it.
func answered(t *testing.T, ph *testkit.SIPPhone, addr string) *testkit.SIPCall {
	t.Helper()
	c := ph.Invite(t, addr, "UDP", nil)
	if res := c.WaitFinal(); res.StatusCode != 200 {
		t.Fatalf("call answered %d", res.StatusCode)
	}
	c.Ack()
	return c
}

// byeEvents waits for the two BYE events of the proxy's hang-up of a call.
func byeEvents(t *testing.T, h *harness, callID string) []schema.Transaction {
	t.Helper()
	var byes []schema.Transaction
	testkit.Eventually(t, patience, func() error {
		byes = byes[:0]
		for _, e := range h.ev.all() {
			if e.tx.CallID == callID && e.tx.Method == "BYE" {
				byes = append(byes, e.tx)
			}
		}
		if len(byes) != 2 {
			return fmt.Errorf("%d BYE events, want 2 (one per side)", len(byes))
		}
		return nil
	})
	return byes
}

// TestRestartDialogTimeoutEndsRestoredCall: a call answered through one
// proxy, which stops without ending it, is ended by the proxy started
// after it at its dialog timeout, counted from the answer, with a BYE to
// each side in each side's dialog (the CSeq above a re-INVITE the first
// proxy saw) and the no_bye reason.
func TestRestartDialogTimeoutEndsRestoredCall(t *testing.T) {
	t.Parallel()
	n := newRestartNet(t)
	const timeout = 3 * time.Second
	tune := func(c *Config) { c.DialogTimeout = timeout }
	a, stopA := n.proxy(t, tune)
	alice := testkit.NewSIPPhone(t, "alice")
	before := time.Now()
	c := answered(t, alice, a.addr)
	reinvite := c.InDialog(sip.INVITE, 7)
	reinvite.AppendHeader(alice.Contact("UDP"))
	reinvite.SetBody([]byte(testkit.SDP))
	if res := alice.Do(t, reinvite); res.StatusCode != 200 {
		t.Fatalf("re-INVITE answered %d", res.StatusCode)
	}
	n.stored(t, "the call at the re-INVITE's CSeq", func(recs []DialogRecord) bool {
		return len(recs) == 1 && recs[0].CallID == c.CallID && recs[0].CallerSeq == 7
	})
	stopA()
	if recs := n.stored(t, "one call", func(r []DialogRecord) bool { return true }); len(recs) != 1 {
		t.Fatalf("%d calls stored after the proxy stopped, want the one up", len(recs))
	}

	b, _ := n.proxy(t, tune)
	if got := metricValue(t, b, "carrier_sip_restored_calls_total"); got != 1 {
		t.Errorf("restored calls %v, want 1", got)
	}
	if got := metricValue(t, b, "carrier_sip_active_calls"); got != 1 {
		t.Errorf("active calls %v after the restart, want 1", got)
	}
	wantProxyByes(t, c, n.gw, alice, 7)
	for _, bye := range byeEvents(t, b, c.CallID) {
		if bye.Note != schema.EndNoBye || bye.Status != 200 || bye.Account != "local" || bye.Trunk != "local" {
			t.Errorf("BYE event %+v: want note %s, status 200, account and trunk local", bye, schema.EndNoBye)
		}
		if bye.RequestAt < schema.Millis(before.Add(timeout)) {
			t.Errorf("BYE at %d, before the dialog timeout ran out (%d)", bye.RequestAt, schema.Millis(before.Add(timeout)))
		}
	}
	if got := metricValue(t, b, "carrier_sip_forced_hangups_total", "reason", schema.EndNoBye); got != 1 {
		t.Errorf("forced hangups %v, want 1", got)
	}
	waitMetric(t, b, "carrier_sip_active_calls", 0)
	n.stored(t, "none once the call ended", func(recs []DialogRecord) bool { return len(recs) == 0 })
}

// TestRestartByeEndsRestoredCall: after a restart the restored call holds
// its place under its account's concurrent-calls limit, a party's BYE is
// relayed, and the call's record is deleted.
func TestRestartByeEndsRestoredCall(t *testing.T) {
	t.Parallel()
	n := newRestartNet(t)
	pv := localProvisioning()
	acc := pv.Accounts["local"]
	acc.MaxCalls = 1
	pv.Accounts["local"] = acc
	tune := func(c *Config) { c.Provisioning = FixedProvisioning(pv) }
	a, stopA := n.proxy(t, tune)
	alice := testkit.NewSIPPhone(t, "alice")
	c := answered(t, alice, a.addr)
	recs := n.stored(t, "the call", func(recs []DialogRecord) bool { return len(recs) == 1 })
	if got := recs[0].SlotKeys; len(got) != 1 || got[0] != "account:local" {
		t.Errorf("stored slot keys %q, want [account:local]", got)
	}
	stopA()

	b, _ := n.proxy(t, tune)
	if got := b.p.cfg.guards.limits.calls.inProgress("account:local"); got != 1 {
		t.Fatalf("%d calls in progress for the account after the restart, want the restored one", got)
	}
	if res := alice.Invite(t, b.addr, "UDP", nil).WaitFinal(); res.StatusCode != 503 {
		t.Errorf("second call answered %d while the restored one is up, want 503", res.StatusCode)
	}
	if res := c.Bye(); res.StatusCode != 200 {
		t.Fatalf("BYE after the restart answered %d", res.StatusCode)
	}
	n.gw.WaitRequest(t, sip.BYE, c.CallID, 1)
	waitMetric(t, b, "carrier_sip_active_calls", 0)
	if got := b.p.cfg.guards.limits.calls.inProgress("account:local"); got != 0 {
		t.Errorf("%d calls in progress after the BYE, want 0", got)
	}
	n.stored(t, "none after the BYE", func(recs []DialogRecord) bool { return len(recs) == 0 })
	kv, err := n.js.KeyValue(context.Background(), BucketDialogs)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(context.Background(), n.store.key(c.CallID, c.FromTag())); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the call's key after the BYE: %v, want ErrKeyNotFound", err)
	}
	if got := metricValue(t, b, "carrier_sip_forced_hangups_total", "reason", schema.EndNoBye); got != 0 {
		t.Errorf("forced hangups %v after a party's BYE, want 0", got)
	}
}

// TestRestartCreditCutsRestoredCall: a prepaid call whose money lasts 5 s
// is restored by the proxy started after the first one stopped, which goes
// on asking the rating service and cuts it when the money runs out
// (credit_exhausted) within the last increment, as if nothing happened.
func TestRestartCreditCutsRestoredCall(t *testing.T) {
	t.Parallel()
	n := newRestartNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)

	// The rating service: 0.01 a second to 1555 on 1/1 increments, and a
	// prepaid account holding 0.05.
	plans, err := rating.NewStore(ctx, n.js)
	if err != nil {
		t.Fatal(err)
	}
	deck := "prefix,destination,rate,connect_fee,first_increment,next_increment\n1555,US Test,0.60,0,1,1\n"
	if _, _, err := plans.Import(ctx, "retail", strings.NewReader(deck), rating.PlanSpec{}); err != nil {
		t.Fatal(err)
	}
	book, err := plans.Follow(ctx, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	led, err := ledger.New(ctx, n.js, ledger.Config{Node: "test", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := led.Open(ctx, "local", schema.Prepaid, "EUR", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := led.Credit(ctx, "local", schema.MustParseMoney("0.05"), "first"); err != nil {
		t.Fatal(err)
	}
	pv := localProvisioning()
	acc := pv.Accounts["local"]
	acc.Kind, acc.SellPlan = schema.Prepaid, "retail"
	pv.Accounts["local"] = acc
	nc, _ := n.nats.Connect()
	cc, err := rating.NewCreditControl(nc, rating.CreditConfig{Book: book, Accounts: FixedProvisioning(pv), Ledger: led, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	ccCtx, stopCC := context.WithCancel(ctx)
	ccDone := make(chan error, 1)
	go func() { ccDone <- cc.Run(ccCtx) }()
	t.Cleanup(func() { stopCC(); <-ccDone })
	testkit.Eventually(t, patience, func() error {
		_, err := nc.Request(schema.SubjectAuthorize, []byte("{}"), time.Second)
		return err
	})

	tune := func(c *Config) {
		c.Provisioning = FixedProvisioning(pv)
		c.Credit = Credit{Control: NewNATSCredit(nc), Window: time.Second}
	}
	a, stopA := n.proxy(t, tune)
	alice := testkit.NewSIPPhone(t, "alice")
	var c *testkit.SIPCall
	// Until the Book has the plan the call gets 403 no_rate, which costs
	// nothing.
	testkit.Eventually(t, patience, func() error {
		c = alice.Invite(t, a.addr, "UDP", nil)
		if res := c.WaitFinal(); res.StatusCode != 200 {
			return fmt.Errorf("INVITE answered %d", res.StatusCode)
		}
		return nil
	})
	c.Ack()
	// Stopped after a grant beyond the first, so that the second proxy
	// goes on from a stored extension.
	recs := n.stored(t, "the call with an extended grant", func(recs []DialogRecord) bool {
		return len(recs) == 1 && recs[0].Credit != nil && recs[0].Credit.Granted >= 2
	})
	if cr := recs[0].Credit; cr.Kind != schema.Prepaid || cr.CDRID != schema.CDRID(c.CallID, c.FromTag()) || cr.GrantEnd != recs[0].AnsweredAt+cr.Granted*1000 {
		t.Errorf("stored credit %+v: want prepaid, the call's CDR id and its grant's end", cr)
	}
	stopA()
	if len(byeEventsNow(a, c.CallID)) != 0 || len(alice.Received(c.CallID)) != 0 {
		t.Fatal("the stopping proxy ended the call")
	}

	b, _ := n.proxy(t, tune)
	if got := metricValue(t, b, "carrier_sip_restored_calls_total"); got != 1 {
		t.Errorf("restored calls %v, want 1", got)
	}
	alice.WaitRequest(t, sip.BYE, c.CallID, 1)
	n.gw.WaitRequest(t, sip.BYE, c.CallID, 1)
	answeredAt := recs[0].AnsweredAt
	for _, bye := range byeEvents(t, b, c.CallID) {
		if bye.Note != schema.EndCreditExhausted {
			t.Errorf("BYE event note %q, want %s", bye.Note, schema.EndCreditExhausted)
		}
		if talk := bye.RequestAt - answeredAt; talk <= 4000 || talk > 5000 {
			t.Errorf("call cut after %d ms, want within the last paid increment (4 s, 5 s]", talk)
		}
	}
	if got := metricValue(t, b, "carrier_sip_credit_requests_total", "action", "extend", "result", "granted"); got == 0 {
		t.Error("the restarted proxy asked for no extension")
	}
	n.stored(t, "none once the call was cut", func(recs []DialogRecord) bool { return len(recs) == 0 })
}

// byeEventsNow are the BYE events of a call the proxy has written so far.
func byeEventsNow(h *harness, callID string) []schema.Transaction {
	var out []schema.Transaction
	for _, e := range h.ev.all() {
		if e.tx.CallID == callID && e.tx.Method == "BYE" {
			out = append(out, e.tx)
		}
	}
	return out
}

// TestDialogStoreKV: records round-trip through the bucket, each node
// lists only its own, a delete removes one, an undecodable record is
// reported with ErrCorruptDialog beside the others, and a bucket created
// with a shorter max age is given the longer one asked for.
func TestDialogStoreKV(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	a, err := OpenDialogs(ctx, js, "node-a.example.com", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenDialogs(ctx, js, "node-b", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, BucketDialogs)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := kv.Status(ctx); err != nil || st.TTL() != 2*time.Hour {
		t.Fatalf("bucket max age %v (%v), want raised to 2h", st.TTL(), err)
	}
	rec := DialogRecord{CallID: "c1@x", CallerTag: "t1", CalleeTag: "t2", Account: "acc", AnsweredAt: 1700000000000,
		Caller:   LegRecord{Target: "sip:alice@127.0.0.1:5062", Dest: "127.0.0.1:5062", Transport: "UDP", Listener: "127.0.0.1:5060", From: "<sip:bob@h>;tag=t2", To: "<sip:alice@h>;tag=t1"},
		SlotKeys: []string{"account:acc"}, Credit: &CreditRecord{Kind: schema.Postpaid, CDRID: "x", Granted: 30}}
	if err := a.Put(ctx, rec); err != nil {
		t.Fatal(err)
	}
	other := rec
	other.CallID = "c2@x"
	if err := b.Put(ctx, other); err != nil {
		t.Fatal(err)
	}
	got, err := a.List(ctx)
	if err != nil || len(got) != 1 || got[0].CallID != "c1@x" || got[0].Credit.Granted != 30 || got[0].Caller.From != rec.Caller.From || got[0].V != dialogRecordVersion {
		t.Fatalf("node a lists %+v (%v), want its one call as stored", got, err)
	}
	if _, err := kv.Put(ctx, b.prefix+"junk", []byte("{")); err != nil {
		t.Fatal(err)
	}
	got, err = b.List(ctx)
	if !errors.Is(err, ErrCorruptDialog) || len(got) != 1 || got[0].CallID != "c2@x" {
		t.Fatalf("node b lists %+v (%v), want its good call and ErrCorruptDialog", got, err)
	}
	if err := a.Delete(ctx, "c1@x", "t1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Delete(ctx, "never@x", "t1"); err != nil {
		t.Errorf("delete of a call never stored: %v", err)
	}
	if got, err := a.List(ctx); err != nil || len(got) != 0 {
		t.Fatalf("node a lists %+v (%v) after the delete, want none", got, err)
	}
}
