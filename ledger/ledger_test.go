package ledger_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

func money(s string) schema.Money { return schema.MustParseMoney(s) }

func newLedger(t testing.TB, n *testkit.NATS) (*ledger.Ledger, jetstream.JetStream) {
	t.Helper()
	_, js := n.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := ledger.New(ctx, js, ledger.Config{Node: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	return l, js
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// must fails the test on a write's error: must(t)(l.Credit(...)).
func must(t testing.TB) func(ledger.Receipt, error) ledger.Receipt {
	return func(r ledger.Receipt, err error) ledger.Receipt {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
}

// checkAgree fails unless the projection, the fold of the log and a
// rebuilt projection all say want.
func checkAgree(t *testing.T, ctx context.Context, l *ledger.Ledger, account string, want schema.Money) ledger.Balance {
	t.Helper()
	proj, err := l.Balance(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	fold, err := l.Fold(ctx, account)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(proj, fold) {
		t.Fatalf("projection %+v\n!= fold %+v", proj, fold)
	}
	if proj.Balance != want {
		t.Fatalf("balance %s, want %s", proj.Balance, want)
	}
	return proj
}

func TestFoldAndProjectionAgree(t *testing.T) {
	n := testkit.StartNATS(t)
	l, js := newLedger(t, n)
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(1, 2))

	must(t)(l.Open(ctx, "pre", schema.Prepaid, "EUR", 0))
	must(t)(l.Open(ctx, "post", schema.Postpaid, "USD", money("50")))
	want := map[string]schema.Money{}
	held := map[string]map[string]schema.Money{"pre": {}, "post": {}}
	for i := range 300 {
		acct := []string{"pre", "post"}[rng.IntN(2)]
		amount := schema.Money(rng.Int64N(int64(5*schema.Unit))) + 1
		switch op := rng.IntN(6); op {
		case 0:
			must(t)(l.Credit(ctx, acct, amount, fmt.Sprintf("pay-%d", i)))
			want[acct] += amount
		case 1:
			cdr := fmt.Sprintf("cdr-%d", rng.IntN(40)) // repeats: debited once
			r := must(t)(l.Debit(ctx, acct, amount, cdr))
			if !r.Duplicate {
				want[acct] -= amount
			}
		case 2:
			if rng.IntN(2) == 0 {
				amount = -amount
			}
			must(t)(l.Adjust(ctx, acct, amount, "test"))
			want[acct] += amount
		case 3:
			call := fmt.Sprintf("call-%d", rng.IntN(5))
			if _, err := l.Reserve(ctx, acct, call, amount); err == nil {
				held[acct][call] += amount
			} else if !errors.Is(err, ledger.ErrInsufficientFunds) {
				t.Fatal(err)
			}
		case 4:
			call := fmt.Sprintf("call-%d", rng.IntN(5))
			must(t)(l.Release(ctx, acct, call))
			delete(held[acct], call)
		case 5:
			if acct == "post" {
				must(t)(l.SetCreditLimit(ctx, acct, amount*10))
			}
		}
	}
	for acct, w := range want {
		b := checkAgree(t, ctx, l, acct, w)
		var reserved schema.Money
		for _, h := range held[acct] {
			reserved += h
		}
		if b.Reserved != reserved || len(b.Reservations) != len(held[acct]) {
			t.Errorf("%s: reserved %s in %d calls, want %s in %d", acct, b.Reserved, len(b.Reservations), reserved, len(held[acct]))
		}
		avail := b.Balance - b.Reserved
		if acct == "post" {
			avail += b.CreditLimit
		}
		if b.Available != avail {
			t.Errorf("%s: available %s, want %s", acct, b.Available, avail)
		}
	}

	// Rebuilt from nothing, the projection is what it was.
	before, err := l.Balances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, ledger.BucketBalances)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "pre", []byte(`{"account":"pre","balance":"1000000"}`)); err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "post"); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "ghost", []byte(`{"account":"ghost"}`)); err != nil {
		t.Fatal(err)
	}
	if got, err := l.Rebuild(ctx); err != nil || got != 2 {
		t.Fatalf("rebuild: %d accounts, %v", got, err)
	}
	after, err := l.Balances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("rebuilt projection differs:\n%+v\n%+v", before, after)
	}
	// Reads leave no consumers behind on the stream.
	stream, err := js.Stream(ctx, schema.StreamLedger)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Errorf("%d consumers left on %s", info.State.Consumers, schema.StreamLedger)
	}
}

func TestConcurrentWritersLoseNothing(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx := testCtx(t)
	writers := []*ledger.Ledger{}
	reg := prometheus.NewRegistry()
	for i := range 3 {
		_, js := n.Connect()
		l, err := ledger.New(ctx, js, ledger.Config{Node: fmt.Sprint("writer-", i), Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"writer": fmt.Sprint(i)}, reg)})
		if err != nil {
			t.Fatal(err)
		}
		writers = append(writers, l)
	}
	must(t)(writers[0].Open(ctx, "acme", schema.Prepaid, "EUR", 0))

	const perWriter = 60
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total schema.Money
		errs  []error
	)
	for w, l := range writers {
		for g := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), uint64(g)))
				var sum schema.Money
				for i := range perWriter {
					amount := schema.Money(rng.Int64N(int64(schema.Unit))) + 1
					var err error
					if i%2 == 0 {
						_, err = l.Credit(ctx, "acme", amount, fmt.Sprintf("w%d-g%d-%d", w, g, i))
						sum += amount
					} else {
						// Every writer debits the same CDRs at the same
						// price: each is applied once however many race.
						_, err = l.Debit(ctx, "acme", money("0.25"), fmt.Sprintf("cdr-%d", i))
					}
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
				}
				mu.Lock()
				total += sum
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	want := total - money("0.25")*perWriter/2
	for _, l := range writers {
		checkAgree(t, ctx, l, "acme", want)
	}
	// How much the writers raced is up to the scheduler: logged, not checked.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "carrier_ledger_conflicts_total" {
			var conflicts float64
			for _, m := range mf.GetMetric() {
				conflicts += m.GetCounter().GetValue()
			}
			t.Logf("%v conflicting appends retried", conflicts)
		}
	}
}

func TestDebitOnceEvenAfterTheDedupeWindow(t *testing.T) {
	n := testkit.StartNATS(t)
	l, js := newLedger(t, n)
	ctx := testCtx(t)
	must(t)(l.Open(ctx, "acme", schema.Prepaid, "EUR", 0))
	must(t)(l.Credit(ctx, "acme", money("10"), "pay-1"))
	first := must(t)(l.Debit(ctx, "acme", money("1.20"), "cdr-1"))
	if first.Duplicate || first.Balance.Balance != money("8.80") {
		t.Fatalf("first debit: %+v", first)
	}
	if again := must(t)(l.Debit(ctx, "acme", money("1.20"), "cdr-1")); !again.Duplicate || again.EventID != "" {
		t.Fatalf("second debit of cdr-1 appended: %+v", again)
	}

	// Days later: projection gone and rebuilt, a new process, the CDR
	// replayed. JetStream's dedupe window is long over, which a fresh
	// event id stands for.
	kv, err := js.KeyValue(ctx, ledger.BucketBalances)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	later, _ := newLedger(t, n)
	if r := must(t)(later.Debit(ctx, "acme", money("1.20"), "cdr-1")); !r.Duplicate {
		t.Fatalf("replayed debit applied: %+v", r)
	}
	checkAgree(t, ctx, later, "acme", money("8.80"))

	// A duplicate that bypassed the ledger (a foreign writer publishing
	// the debit again with a new id) is skipped by the fold itself.
	ev, err := schema.NewEnvelope(schema.TypeDebited, schema.LedgerVersion, time.Now(), "rogue", schema.Debited{Amount: int64(money("1.20")), CDR: "cdr-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := eventlog.Publish(ctx, js, schema.LedgerSubject("acme"), ev); err != nil {
		t.Fatal(err)
	}
	if _, err := later.Rebuild(ctx); err != nil {
		t.Fatal(err)
	}
	checkAgree(t, ctx, later, "acme", money("8.80"))
	hist, err := later.History(ctx, "acme", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if last := hist[len(hist)-1]; last.ID != ev.ID || !last.Ignored || last.Balance != money("8.80") {
		t.Fatalf("history's last entry: %+v", last)
	}
}

func TestTopUpReferenceUsedOnce(t *testing.T) {
	n := testkit.StartNATS(t)
	l, _ := newLedger(t, n)
	other, _ := newLedger(t, n)
	ctx := testCtx(t)
	must(t)(l.Open(ctx, "acme", schema.Prepaid, "EUR", 0))
	must(t)(l.Credit(ctx, "acme", money("10.50"), "INV-7"))
	// The other instance's cache is cold, then stale: either way refused.
	for _, w := range []*ledger.Ledger{l, other} {
		if _, err := w.Credit(ctx, "acme", money("10.50"), "INV-7"); !errors.Is(err, ledger.ErrDuplicateReference) {
			t.Fatalf("reused reference: %v", err)
		}
	}
	must(t)(l.Credit(ctx, "acme", money("1"), "INV-8"))
	if _, err := other.Credit(ctx, "acme", money("1"), "INV-8"); !errors.Is(err, ledger.ErrDuplicateReference) {
		t.Fatalf("reference used by another writer: %v", err)
	}
	// The same reference on another account is that account's business.
	must(t)(l.Open(ctx, "beta", schema.Prepaid, "EUR", 0))
	must(t)(other.Credit(ctx, "beta", money("2"), "INV-7"))
	checkAgree(t, ctx, l, "acme", money("11.50"))

	if _, err := l.Open(ctx, "acme", schema.Postpaid, "EUR", 0); !errors.Is(err, ledger.ErrAccountExists) {
		t.Errorf("second open: %v", err)
	}
	if _, err := l.Credit(ctx, "nobody", money("1"), "x"); !errors.Is(err, ledger.ErrUnknownAccount) {
		t.Errorf("credit of an unknown account: %v", err)
	}
	if _, err := l.Credit(ctx, "ledger.>", money("1"), "x"); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("credit of a wildcard account: %v", err)
	}
	if _, err := l.Credit(ctx, "acme", money("-1"), "x"); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("negative top-up: %v", err)
	}
}

func TestReservations(t *testing.T) {
	n := testkit.StartNATS(t)
	l, _ := newLedger(t, n)
	other, _ := newLedger(t, n)
	ctx := testCtx(t)

	// Prepaid: calls share the available credit.
	must(t)(l.Open(ctx, "pre", schema.Prepaid, "EUR", 0))
	must(t)(l.Credit(ctx, "pre", money("1.00"), "pay-1"))
	must(t)(l.Reserve(ctx, "pre", "call-a", money("0.60")))
	if _, err := other.Reserve(ctx, "pre", "call-b", money("0.50")); !errors.Is(err, ledger.ErrInsufficientFunds) {
		t.Fatalf("reservation beyond available: %v", err)
	}
	r := must(t)(other.Reserve(ctx, "pre", "call-b", money("0.40")))
	if r.Balance.Available != 0 || r.Balance.Reserved != money("1") {
		t.Fatalf("after two reservations: %+v", r.Balance)
	}
	// A top-up elsewhere is seen by the next reservation, not refused on a stale view.
	must(t)(other.Credit(ctx, "pre", money("0.10"), "pay-2"))
	must(t)(l.Reserve(ctx, "pre", "call-a", money("0.10")))
	// The call ends: its rated CDR is debited and its hold released.
	must(t)(l.Debit(ctx, "pre", money("0.55"), "cdr-a"))
	r = must(t)(l.Release(ctx, "pre", "call-a"))
	if r.Balance.Balance != money("0.55") || r.Balance.Reserved != money("0.40") || r.Balance.Available != money("0.15") {
		t.Fatalf("after the end of call-a: %+v", r.Balance)
	}
	if again := must(t)(l.Release(ctx, "pre", "call-a")); !again.Duplicate {
		t.Errorf("second release appended: %+v", again)
	}
	// A call the other writer has not seen yet is still released by it.
	must(t)(l.Reserve(ctx, "pre", "call-e", money("0.05")))
	if r := must(t)(other.Release(ctx, "pre", "call-e")); r.Duplicate || r.Balance.Reserved != money("0.40") {
		t.Fatalf("release through a stale writer: %+v", r)
	}

	// Postpaid: down to minus the credit limit.
	must(t)(l.Open(ctx, "post", schema.Postpaid, "EUR", money("5")))
	must(t)(l.Debit(ctx, "post", money("3"), "cdr-p1"))
	must(t)(l.Reserve(ctx, "post", "call-c", money("2")))
	if _, err := l.Reserve(ctx, "post", "call-d", money("0.01")); !errors.Is(err, ledger.ErrInsufficientFunds) {
		t.Fatalf("reservation beyond the credit limit: %v", err)
	}
	must(t)(other.SetCreditLimit(ctx, "post", money("6")))
	r = must(t)(l.Reserve(ctx, "post", "call-d", money("1")))
	if r.Balance.Available != 0 || r.Balance.Balance != money("-3") {
		t.Fatalf("postpaid after reservations: %+v", r.Balance)
	}
	if _, err := l.SetCreditLimit(ctx, "pre", money("1")); !errors.Is(err, ledger.ErrNotPostpaid) {
		t.Errorf("credit limit on prepaid: %v", err)
	}
	checkAgree(t, ctx, l, "post", money("-3"))
	checkAgree(t, ctx, other, "pre", money("0.55"))
	must(t)(other.Release(ctx, "pre", "call-b"))
	if b := checkAgree(t, ctx, l, "pre", money("0.55")); b.Reserved != 0 || b.Available != money("0.55") {
		t.Fatalf("all calls ended: %+v", b)
	}
}

func TestHistoryTimeRange(t *testing.T) {
	n := testkit.StartNATS(t)
	l, _ := newLedger(t, n)
	ctx := testCtx(t)
	must(t)(l.Open(ctx, "acme", schema.Prepaid, "EUR", 0))
	must(t)(l.Credit(ctx, "acme", money("10"), "pay-1"))
	all, err := l.History(ctx, "acme", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Type != schema.TypeAccountOpened || all[1].Amount != money("10") || all[1].Reference != "pay-1" {
		t.Fatalf("history: %+v", all)
	}
	none, err := l.History(ctx, "acme", all[1].Time.Add(time.Millisecond), time.Time{})
	if err != nil || len(none) != 0 {
		t.Fatalf("history after the last event: %+v, %v", none, err)
	}
	if _, err := l.History(ctx, "nobody", time.Time{}, time.Time{}); !errors.Is(err, ledger.ErrUnknownAccount) {
		t.Errorf("history of an unknown account: %v", err)
	}
}

// BenchmarkCredit measures appends: one conditional append and one
// projection update per top-up, on the embedded server.
func BenchmarkCredit(b *testing.B) {
	n := testkit.StartNATS(b)
	l, _ := newLedger(b, n)
	ctx := context.Background()
	must(b)(l.Open(ctx, "bench", schema.Prepaid, "EUR", 0))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := l.Credit(ctx, "bench", money("0.01"), fmt.Sprintf("ref-%d", i)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}

// BenchmarkCreditParallel spreads top-ups over accounts and goroutines,
// as many callers of one ledger service would.
func BenchmarkCreditParallel(b *testing.B) {
	n := testkit.StartNATS(b)
	l, _ := newLedger(b, n)
	ctx := context.Background()
	const accounts = 16
	for a := range accounts {
		must(b)(l.Open(ctx, fmt.Sprintf("bench-%d", a), schema.Prepaid, "EUR", 0))
	}
	var mu sync.Mutex
	next := 0
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		me := next
		next++
		mu.Unlock()
		for i := 0; pb.Next(); i++ {
			if _, err := l.Credit(ctx, fmt.Sprintf("bench-%d", me%accounts), money("0.01"), fmt.Sprintf("ref-%d-%d", me, i)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
}

func TestConcurrentReservationsShareThePool(t *testing.T) {
	n := testkit.StartNATS(t)
	ctx := testCtx(t)
	var writers []*ledger.Ledger
	for range 3 {
		l, _ := newLedger(t, n)
		writers = append(writers, l)
	}
	must(t)(writers[0].Open(ctx, "pre", schema.Prepaid, "EUR", 0))
	must(t)(writers[0].Credit(ctx, "pre", money("1.00"), "pay-1"))
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		granted int
		errs    []error
	)
	for w, l := range writers {
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					_, err := l.Reserve(ctx, "pre", fmt.Sprintf("call-%d-%d-%d", w, g, i), money("0.07"))
					mu.Lock()
					switch {
					case err == nil:
						granted++
					case !errors.Is(err, ledger.ErrInsufficientFunds):
						errs = append(errs, err)
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	// 14 reservations of 0.07 fit in 1.00, and not one more.
	b := checkAgree(t, ctx, writers[1], "pre", money("1.00"))
	if granted != 14 || b.Reserved != money("0.98") || b.Available != money("0.02") || len(b.Reservations) != 14 {
		t.Fatalf("%d reservations granted; balance %+v", granted, b)
	}
}

func TestOpenOnceAcrossWriters(t *testing.T) {
	n := testkit.StartNATS(t)
	a, _ := newLedger(t, n)
	b, _ := newLedger(t, n)
	ctx := testCtx(t)
	// a's view of the account: not there yet.
	if _, err := a.Credit(ctx, "acme", money("1"), "x"); !errors.Is(err, ledger.ErrUnknownAccount) {
		t.Fatal(err)
	}
	must(t)(b.Open(ctx, "acme", schema.Postpaid, "EUR", money("10")))
	// a's append expects an empty subject and is refused by JetStream.
	if _, err := a.Open(ctx, "acme", schema.Prepaid, "EUR", 0); !errors.Is(err, ledger.ErrAccountExists) {
		t.Fatalf("second open through a stale writer: %v", err)
	}
	hist, err := a.History(ctx, "acme", time.Time{}, time.Time{})
	if err != nil || len(hist) != 1 || hist[0].Ignored {
		t.Fatalf("history: %+v, %v", hist, err)
	}
}
