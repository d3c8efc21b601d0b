package rating

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// creditDeck: Berlin 0.60/min in whole minutes, Hamburg 0.60/min per
// second (0.01 a second), a free number, nothing outside Germany.
const creditDeck = header +
	"4930,Germany Berlin,0.6,,60,60,,,,,,\n" +
	"4940,Germany Hamburg,0.6,,1,1,,,,,,\n" +
	"49800,Germany Freephone,0,,1,1,,,,,,\n"

const (
	berlin   = "4930123456"
	hamburg  = "4940123456"
	freecall = "49800123"
)

var callAt = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

// creditFixture is credit control answering on a real NATS server, with a
// deck imported through the Store, accounts provisioned and ledgers open.
type creditFixture struct {
	t      *testing.T
	ctx    context.Context
	n      *testkit.NATS
	nc     *nats.Conn
	js     jetstream.JetStream
	book   *Book
	watch  *eventlog.ProvisionWatcher
	ledger *ledger.Ledger
	ps     *eventlog.ProvisionStore
}

func newCreditFixture(t *testing.T) *creditFixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	n := testkit.StartNATS(t)
	nc, js := n.Connect()
	store, err := NewStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Import(ctx, "credit", strings.NewReader(creditDeck), PlanSpec{}); err != nil {
		t.Fatal(err)
	}
	ps, err := eventlog.OpenProvisionStore(ctx, js, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(ctx, js, ledger.Config{Node: "test", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	f := &creditFixture{t: t, ctx: ctx, n: n, nc: nc, js: js, ledger: l, ps: ps}
	f.account(schema.Account{ID: "plain", Currency: "EUR", SellPlan: "credit"}, "")
	f.account(schema.Account{ID: "noplan", Currency: "EUR", Kind: schema.Prepaid}, "1")
	f.account(schema.Account{ID: "noledger", Currency: "EUR", SellPlan: "credit", Kind: schema.Prepaid}, "")
	f.watch, err = ps.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.watch.Stop)
	if f.book, err = store.Follow(ctx, quiet); err != nil {
		t.Fatal(err)
	}
	return f
}

// account provisions a; with a kind and an amount it also opens its
// ledger and tops it up (prepaid) or sets it as the credit limit (postpaid).
func (f *creditFixture) account(a schema.Account, amount string) {
	f.t.Helper()
	if _, err := f.ps.Accounts().Put(f.ctx, a); err != nil {
		f.t.Fatal(err)
	}
	if f.watch != nil {
		// Credit control reads the watched snapshot: wait for the change.
		testkit.Eventually(f.t, 5*time.Second, func() error {
			if p := f.watch.Snapshot(); p == nil || p.Accounts[a.ID] != a {
				return fmt.Errorf("account %s not in the provisioning snapshot yet", a.ID)
			}
			return nil
		})
	}
	if a.Kind == "" || amount == "" {
		return
	}
	limit := schema.Money(0)
	if a.Kind == schema.Postpaid {
		limit = schema.MustParseMoney(amount)
	}
	if _, err := f.ledger.Open(f.ctx, a.ID, a.Kind, a.Currency, limit); err != nil {
		f.t.Fatal(err)
	}
	if a.Kind == schema.Prepaid {
		f.topUp(a.ID, amount, "initial")
	}
}

func (f *creditFixture) topUp(account, amount, ref string) {
	f.t.Helper()
	if _, err := f.ledger.Credit(f.ctx, account, schema.MustParseMoney(amount), ref); err != nil {
		f.t.Fatal(err)
	}
}

// serve runs a credit control until the test ends; it waits for the
// provisioning first, as the commands do.
func (f *creditFixture) serve(cfg CreditConfig) *CreditControl {
	f.t.Helper()
	<-f.watch.Ready()
	cfg.Book, cfg.Accounts, cfg.Logger = f.book, f.watch, quiet
	if cfg.Ledger == nil {
		cfg.Ledger = f.ledger
	}
	nc, _ := f.n.Connect()
	cc, err := NewCreditControl(nc, cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- cc.Run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			f.t.Errorf("credit control: %v", err)
		}
	})
	// Subscribed once a request gets an answer.
	testkit.Eventually(f.t, 5*time.Second, func() error {
		_, err := f.nc.Request(schema.SubjectAuthorize, []byte("{}"), time.Second)
		return err
	})
	return cc
}

func (f *creditFixture) ask(req schema.CreditRequest) schema.CreditReply {
	f.t.Helper()
	data, err := json.Marshal(req)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.raw(data)
}

func (f *creditFixture) raw(data []byte) schema.CreditReply {
	f.t.Helper()
	msg, err := f.nc.Request(schema.SubjectAuthorize, data, 5*time.Second)
	if err != nil {
		f.t.Fatal(err)
	}
	var r schema.CreditReply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		f.t.Fatalf("reply %q: %v", msg.Data, err)
	}
	return r
}

func start(call, account, callee string, want int64) schema.CreditRequest {
	return schema.CreditRequest{Action: schema.CreditStart, CDRID: schema.CDRID(call, "tag"), CallID: call, Account: account,
		Callee: callee, At: schema.Millis(callAt), Want: want}
}

func extend(call, account, callee string, granted, want int64) schema.CreditRequest {
	r := start(call, account, callee, want)
	r.Action, r.Granted, r.At = schema.CreditExtend, granted, schema.Millis(callAt.Add(3*time.Second))
	return r
}

func (f *creditFixture) held(account string) ledger.Balance {
	f.t.Helper()
	b, err := f.ledger.Fold(f.ctx, account)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func checkReply(t *testing.T, what string, got, want schema.CreditReply) {
	t.Helper()
	if want.Result != schema.CreditGranted && want.Result != schema.CreditReleased {
		if got.Result != want.Result || got.Reason == "" {
			t.Errorf("%s: %+v, want %s with a reason", what, got, want.Result)
		}
		return
	}
	if got != want {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, want)
	}
}

func TestCreditStart(t *testing.T) {
	t.Parallel()
	f := newCreditFixture(t)
	f.account(schema.Account{ID: "pre", Currency: "EUR", SellPlan: "credit", Kind: schema.Prepaid}, "5")
	f.account(schema.Account{ID: "poor", Currency: "EUR", SellPlan: "credit", Kind: schema.Prepaid}, "0.50")
	reg := prometheus.NewRegistry()
	f.serve(CreditConfig{Registerer: reg})

	for _, c := range []struct {
		what string
		req  schema.CreditRequest
		want schema.CreditReply
	}{
		// Berlin bills whole minutes: a 30 s window is a first minute.
		{"window on a minute grid", start("c1", "pre", berlin, 0),
			schema.CreditReply{Result: schema.CreditGranted, Seconds: 60, Reserved: "0.60", Increment: 60}},
		{"window per second", start("c2", "pre", hamburg, 45),
			schema.CreditReply{Result: schema.CreditGranted, Seconds: 45, Reserved: "0.45", Increment: 1}},
		// 0.50 buys 50 s of the 60 asked: the money ends the call.
		{"money-limited is final", start("c3", "poor", hamburg, 60),
			schema.CreditReply{Result: schema.CreditGranted, Seconds: 50, Final: true, Reserved: "0.50", Increment: 1}},
		{"first minute not paid", start("c4", "poor", berlin, 0), schema.CreditReply{Result: schema.CreditInsufficient}},
		{"no rate", start("c5", "pre", "15551234567", 0), schema.CreditReply{Result: schema.CreditNoRate}},
		{"not a number", start("c6", "pre", "anonymous", 0), schema.CreditReply{Result: schema.CreditNoRate}},
		{"not provisioned", start("c7", "ghost", berlin, 0), schema.CreditReply{Result: schema.CreditUnknownAccount}},
		{"no kind", start("c8", "plain", berlin, 0), schema.CreditReply{Result: schema.CreditUnknownAccount}},
		{"no sell plan", start("c9", "noplan", berlin, 0), schema.CreditReply{Result: schema.CreditUnknownAccount}},
		{"no ledger", start("c10", "noledger", berlin, 0), schema.CreditReply{Result: schema.CreditUnknownAccount}},
		{"no CDR id", schema.CreditRequest{Action: schema.CreditStart, Account: "pre", Callee: berlin, At: 1}, schema.CreditReply{Result: schema.CreditError}},
		{"no time", schema.CreditRequest{Action: schema.CreditStart, CDRID: "x", Account: "pre", Callee: berlin}, schema.CreditReply{Result: schema.CreditError}},
		{"unknown action", schema.CreditRequest{Action: "stop", CDRID: "x", Account: "pre"}, schema.CreditReply{Result: schema.CreditError}},
	} {
		checkReply(t, c.what, f.ask(c.req), c.want)
	}
	checkReply(t, "not JSON", f.raw([]byte("start please")), schema.CreditReply{Result: schema.CreditError})

	// A start asked again (the proxy retried) holds no more.
	checkReply(t, "start again", f.ask(start("c1", "pre", berlin, 0)),
		schema.CreditReply{Result: schema.CreditGranted, Seconds: 60, Reserved: "0.60", Increment: 60})
	if b := f.held("pre"); b.Reserved != schema.MustParseMoney("1.05") || len(b.Reservations) != 2 {
		t.Errorf("pre holds %s in %d calls, want 1.05 in 2", b.Reserved, len(b.Reservations))
	}
	if b := f.held("poor"); b.Available != 0 {
		t.Errorf("poor has %s available after a money-limited grant", b.Available)
	}
	granted := creditRequests(t, reg, "start", "granted")
	if granted != 4 {
		t.Errorf("carrier_credit_requests_total{start,granted} = %v, want 4", granted)
	}
}

// creditRequests is carrier_credit_requests_total{action, result}.
func creditRequests(t *testing.T, reg *prometheus.Registry, action, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "carrier_credit_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["action"] == action && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestCreditConcurrentCallsShareOnePool: calls of one account asking at
// once, through two services on two ledgers, never hold more than the
// account has, and what they hold is what they were told.
func TestCreditConcurrentCallsShareOnePool(t *testing.T) {
	t.Parallel()
	f := newCreditFixture(t)
	f.account(schema.Account{ID: "shared", Currency: "EUR", SellPlan: "credit", Kind: schema.Prepaid}, "1")
	other, err := ledger.New(f.ctx, f.js, ledger.Config{Node: "other", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	f.serve(CreditConfig{})
	f.serve(CreditConfig{Ledger: other})

	const calls = 5 // 60 s each at 0.01/s: 3.00 asked, 1.00 there
	replies := make([]schema.CreditReply, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i] = f.ask(start(fmt.Sprintf("call-%d", i), "shared", hamburg, 60))
		}()
	}
	wg.Wait()
	var sum schema.Money
	var seconds int64
	b := f.held("shared")
	for i, r := range replies {
		id := schema.CDRID(fmt.Sprintf("call-%d", i), "tag")
		switch r.Result {
		case schema.CreditGranted:
			held := schema.MustParseMoney(r.Reserved)
			sum += held
			seconds += r.Seconds
			if b.Reservations[id] != held || held != schema.Money(r.Seconds)*schema.MustParseMoney("0.01") {
				t.Errorf("call %d: told %d s holding %s, ledger holds %s", i, r.Seconds, r.Reserved, b.Reservations[id])
			}
		case schema.CreditInsufficient:
			if _, ok := b.Reservations[id]; ok {
				t.Errorf("call %d refused but holds %s", i, b.Reservations[id])
			}
		default:
			t.Errorf("call %d: %+v", i, r)
		}
	}
	// Per second, the whole 1.00 is handed out and not a cent more.
	if sum != schema.MustParseMoney("1") || b.Reserved != sum || b.Available != 0 || seconds != 100 {
		t.Errorf("calls hold %s for %d s, ledger %s reserved, %s available; want 1.00 for 100 s, none left", sum, seconds, b.Reserved, b.Available)
	}
}

func TestCreditExtendReleaseAndTopUp(t *testing.T) {
	t.Parallel()
	f := newCreditFixture(t)
	f.account(schema.Account{ID: "pre", Currency: "EUR", SellPlan: "credit", Kind: schema.Prepaid}, "1")
	f.serve(CreditConfig{})

	steps := []struct {
		what string
		req  schema.CreditRequest
		want schema.CreditReply
	}{
		{"start", start("c1", "pre", hamburg, 30),
			schema.CreditReply{Result: schema.CreditGranted, Seconds: 30, Reserved: "0.30", Increment: 1}},
		{"extend", extend("c1", "pre", hamburg, 30, 30),
			schema.CreditReply{Result: schema.CreditGranted, Seconds: 60, Reserved: "0.60", Increment: 1}},
		{"extend past the money", extend("c1", "pre", hamburg, 60, 60),
			schema.CreditReply{Result: schema.CreditGranted, Seconds: 100, Final: true, Reserved: "1.00", Increment: 1}},
		{"nothing left", extend("c1", "pre", hamburg, 100, 30),
			schema.CreditReply{Result: schema.CreditGranted, Seconds: 100, Final: true, Reserved: "1.00", Increment: 1}},
	}
	for _, s := range steps {
		checkReply(t, s.what, f.ask(s.req), s.want)
	}
	f.topUp("pre", "0.50", "more")
	checkReply(t, "extend after a top-up", f.ask(extend("c1", "pre", hamburg, 100, 30)),
		schema.CreditReply{Result: schema.CreditGranted, Seconds: 130, Reserved: "1.30", Increment: 1})
	checkReply(t, "start of another call with what is left", f.ask(start("c2", "pre", hamburg, 60)),
		schema.CreditReply{Result: schema.CreditGranted, Seconds: 20, Final: true, Reserved: "0.20", Increment: 1})

	release := schema.CreditRequest{Action: schema.CreditRelease, CDRID: schema.CDRID("c2", "tag"), CallID: "c2", Account: "pre"}
	checkReply(t, "release", f.ask(release), schema.CreditReply{Result: schema.CreditReleased, Reserved: "0.00"})
	checkReply(t, "release again", f.ask(release), schema.CreditReply{Result: schema.CreditReleased, Reserved: "0.00"})
	if b := f.held("pre"); b.Reserved != schema.MustParseMoney("1.30") || b.Available != schema.MustParseMoney("0.20") {
		t.Errorf("after release: %s reserved, %s available; want 1.30 and 0.20", b.Reserved, b.Available)
	}
	release.Account = "ghost"
	checkReply(t, "release on an account without a ledger", f.ask(release), schema.CreditReply{Result: schema.CreditUnknownAccount})
}

func TestCreditPostpaidAndMaxDuration(t *testing.T) {
	t.Parallel()
	f := newCreditFixture(t)
	f.account(schema.Account{ID: "post", Currency: "EUR", SellPlan: "credit", Kind: schema.Postpaid}, "2")
	f.account(schema.Account{ID: "pre", Currency: "EUR", SellPlan: "credit", Kind: schema.Prepaid}, "1")
	f.serve(CreditConfig{Window: 20 * time.Second, MaxDuration: time.Minute})

	// A postpaid account with nothing paid in calls on its credit limit:
	// 2.00 buys three whole Berlin minutes, capped here at one.
	checkReply(t, "postpaid on its credit limit", f.ask(start("p1", "post", berlin, 0)),
		schema.CreditReply{Result: schema.CreditGranted, Seconds: 60, Final: true, Reserved: "0.60", Increment: 60})
	checkReply(t, "postpaid per second", f.ask(start("p2", "post", hamburg, 0)),
		schema.CreditReply{Result: schema.CreditGranted, Seconds: 20, Reserved: "0.20", Increment: 1})
	checkReply(t, "postpaid at the maximum duration", f.ask(start("p3", "post", hamburg, 500)),
		schema.CreditReply{Result: schema.CreditGranted, Seconds: 60, Final: true, Reserved: "0.60", Increment: 1})
	checkReply(t, "postpaid within its limit", f.ask(start("p4", "post", hamburg, 50)),
		schema.CreditReply{Result: schema.CreditGranted, Seconds: 50, Reserved: "0.50", Increment: 1})
	checkReply(t, "postpaid up to its limit", f.ask(start("p5", "post", hamburg, 50)),
		schema.CreditReply{Result: schema.CreditGranted, Seconds: 10, Final: true, Reserved: "0.10", Increment: 1})
	checkReply(t, "postpaid at its limit", f.ask(start("p6", "post", hamburg, 0)), schema.CreditReply{Result: schema.CreditInsufficient})
	if b := f.held("post"); b.Reserved != schema.MustParseMoney("2") || b.Available != 0 || b.Balance != 0 {
		t.Errorf("post: %s reserved, %s available; want its whole 2.00 limit held", b.Reserved, b.Available)
	}
	// A free call is cut by the maximum duration, not by money.
	checkReply(t, "free call", f.ask(start("f1", "pre", freecall, 0)),
		schema.CreditReply{Result: schema.CreditGranted, Seconds: 20, Reserved: "0.00", Increment: 1})
	checkReply(t, "free call at the maximum", f.ask(extend("f1", "pre", freecall, 20, 300)),
		schema.CreditReply{Result: schema.CreditGranted, Seconds: 60, Final: true, Reserved: "0.00", Increment: 1})
	checkReply(t, "free call past the maximum", f.ask(extend("f1", "pre", freecall, 60, 20)),
		schema.CreditReply{Result: schema.CreditGranted, Seconds: 60, Final: true, Reserved: "0.00", Increment: 1})
}

func TestCreditConfigAndStop(t *testing.T) {
	t.Parallel()
	f := newCreditFixture(t)
	if _, err := NewCreditControl(f.nc, CreditConfig{Book: f.book, Accounts: f.watch}); !errors.Is(err, ErrInvalidCreditConfig) {
		t.Errorf("no ledger: %v", err)
	}
	if _, err := NewCreditControl(f.nc, CreditConfig{Book: f.book, Accounts: f.watch, Ledger: f.ledger, Window: time.Minute, MaxDuration: time.Second}); !errors.Is(err, ErrInvalidCreditConfig) {
		t.Errorf("max duration under the window: %v", err)
	}
	cc, err := NewCreditControl(f.nc, CreditConfig{Book: f.book, Accounts: f.watch, Ledger: f.ledger, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- cc.Run(ctx) }()
	testkit.Eventually(t, 5*time.Second, func() error {
		_, err := f.nc.Request(schema.SubjectAuthorize, []byte("{}"), time.Second)
		return err
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v", err)
	}
	if _, err := f.nc.Request(schema.SubjectAuthorize, []byte("{}"), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("a request after Run stopped: %v, want no responders", err)
	}
}
