package ledger_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

var errBroke = errors.New("not enough for one more")

// upTo holds what the call holds plus up to step more, as far as the
// account's available credit goes; nothing more available is errBroke.
func upTo(step schema.Money) ledger.HoldFunc {
	return func(b ledger.Balance, held schema.Money) (schema.Money, error) {
		if b.Available <= 0 {
			return 0, errBroke
		}
		return held + min(step, b.Available), nil
	}
}

// TestHoldUnderContention: calls of one account hold money from several
// ledgers (as several rating services would) at once; together they hold
// exactly what the account has, never more.
func TestHoldUnderContention(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	ctx := testCtx(t)
	var writers []*ledger.Ledger
	for range 3 {
		l, _ := newLedger(t, n)
		writers = append(writers, l)
	}
	must(t)(writers[0].Open(ctx, "acme", schema.Prepaid, "EUR", 0))
	must(t)(writers[0].Credit(ctx, "acme", money("10"), "pay-1"))

	const calls, rounds = 9, 6 // 9 calls asking 6 times for 0.25: 13.50 wanted, 10 there
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		granted = map[string]schema.Money{}
		errs    []error
	)
	for c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := writers[c%len(writers)]
			call := fmt.Sprintf("call-%d", c)
			for range rounds {
				r, err := l.Hold(ctx, "acme", call, upTo(money("0.25")))
				if errors.Is(err, errBroke) {
					return
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					granted[call] = r.Balance.Reservations[call]
					if r.Balance.Reserved > r.Balance.Balance {
						errs = append(errs, fmt.Errorf("%s: %s held of %s", call, r.Balance.Reserved, r.Balance.Balance))
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	b := checkAgree(t, ctx, writers[1], "acme", money("10"))
	var sum schema.Money
	for call, g := range granted {
		sum += g
		if b.Reservations[call] != g {
			t.Errorf("%s holds %s, its last hold said %s", call, b.Reservations[call], g)
		}
	}
	if b.Reserved != money("10") || b.Available != 0 || sum != money("10") {
		t.Errorf("reserved %s (calls say %s), available %s; want all 10 held, none over", b.Reserved, sum, b.Available)
	}
}

func TestHoldRaisesLowersAndRefuses(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	l, _ := newLedger(t, n)
	ctx := testCtx(t)
	set := func(v string) ledger.HoldFunc {
		return func(ledger.Balance, schema.Money) (schema.Money, error) { return money(v), nil }
	}
	if _, err := l.Hold(ctx, "ghost", "c1", set("1")); !errors.Is(err, ledger.ErrUnknownAccount) {
		t.Fatalf("hold on an account without a ledger: %v", err)
	}
	must(t)(l.Open(ctx, "post", schema.Postpaid, "USD", money("5")))
	must(t)(l.Credit(ctx, "post", money("1"), "pay-1"))

	// The decision sees the credit limit in Available and the call's hold.
	var sawAvail, sawHeld schema.Money
	r := must(t)(l.Hold(ctx, "post", "c1", func(b ledger.Balance, held schema.Money) (schema.Money, error) {
		sawAvail, sawHeld = b.Available, held
		return money("4"), nil
	}))
	if sawAvail != money("6") || sawHeld != 0 || r.Balance.Reservations["c1"] != money("4") || r.Balance.Available != money("2") {
		t.Fatalf("first hold saw %s available, %s held; left %+v", sawAvail, sawHeld, r.Balance)
	}
	r = must(t)(l.Hold(ctx, "post", "c1", func(b ledger.Balance, held schema.Money) (schema.Money, error) {
		sawAvail, sawHeld = b.Available, held
		return held, nil
	}))
	if !r.Duplicate || sawHeld != money("4") || sawAvail != money("2") {
		t.Fatalf("same hold again: duplicate %v, saw %s held, %s available", r.Duplicate, sawHeld, sawAvail)
	}
	r = must(t)(l.Hold(ctx, "post", "c1", set("1.5")))
	if r.Duplicate || r.Balance.Reservations["c1"] != money("1.5") || r.Balance.Reserved != money("1.5") {
		t.Fatalf("lowered hold: %+v", r.Balance)
	}
	if _, err := l.Hold(ctx, "post", "c1", set("-1")); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("negative hold: %v", err)
	}
	if _, err := l.Hold(ctx, "post", "c1", nil); !errors.Is(err, ledger.ErrInvalid) {
		t.Fatalf("no decision: %v", err)
	}
	if _, err := l.Hold(ctx, "post", "c1", func(ledger.Balance, schema.Money) (schema.Money, error) { return 0, errBroke }); !errors.Is(err, errBroke) {
		t.Fatalf("refused by the decision: %v", err)
	}
	must(t)(l.Hold(ctx, "post", "c1", set("0")))
	b := checkAgree(t, ctx, l, "post", money("1"))
	if b.Reserved != 0 || len(b.Reservations) != 0 || b.Available != money("6") {
		t.Fatalf("hold of 0 leaves %+v", b)
	}
}
