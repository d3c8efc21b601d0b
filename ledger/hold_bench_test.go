package ledger_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// BenchmarkHold measures ledger appends through Hold: each op holds money
// for a new call (one conditional append and its projection update) and,
// once 20 calls are up on a writer, releases the oldest (another append).
// It reports appends per second.
//
//	go test -run '^$' -bench BenchmarkHold -benchtime 5000x ./ledger/
func BenchmarkHold(b *testing.B) {
	for _, c := range []struct{ accounts, writers int }{{1, 1}, {1, 8}, {64, 8}} {
		b.Run(fmt.Sprintf("accounts=%d/writers=%d", c.accounts, c.writers), func(b *testing.B) {
			n := testkit.StartNATS(b)
			l, _ := newLedger(b, n)
			ctx := testCtx(b)
			ids := make([]string, c.accounts)
			for i := range ids {
				ids[i] = fmt.Sprintf("acct-%d", i)
				must(b)(l.Open(ctx, ids[i], schema.Prepaid, "EUR", 0))
				must(b)(l.Credit(ctx, ids[i], money("1000000"), "bench"))
			}
			hold := func(ledger.Balance, schema.Money) (schema.Money, error) { return money("0.30"), nil }
			var next, appends atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range c.writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					type call struct{ account, id string }
					var live []call
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						if len(live) == 20 {
							if _, err := l.Release(ctx, live[0].account, live[0].id); err != nil {
								b.Error(err)
								return
							}
							live = live[1:]
							appends.Add(1)
						}
						cl := call{ids[int(i)%len(ids)], fmt.Sprintf("call-%d", i)}
						if _, err := l.Hold(ctx, cl.account, cl.id, hold); err != nil {
							b.Error(err)
							return
						}
						live = append(live, cl)
						appends.Add(1)
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(appends.Load())/b.Elapsed().Seconds(), "appends/s")
		})
	}
}
