package rating

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// BenchmarkCreditStart measures credit control end to end: a proxy's
// start request over NATS request/reply (embedded server, loopback), the
// account lookup, the authorization on the deck and the conditional
// ledger append of the call's hold, then the reply. Each op is the start
// of a new call, so it appends one reservation; each caller keeps
// liveCalls calls up and releases its oldest before it starts another
// (releases are not timed). It reports starts per second and the p50/p99
// round trip of a start as the requester sees it.
//
//	go test -run '^$' -bench BenchmarkCreditStart -benchtime 5000x ./rating/
func BenchmarkCreditStart(b *testing.B) {
	for _, c := range []struct{ accounts, callers int }{{1, 1}, {1, 32}, {64, 1}, {64, 32}} {
		b.Run(fmt.Sprintf("accounts=%d/callers=%d", c.accounts, c.callers), func(b *testing.B) { benchCreditStart(b, c.accounts, c.callers) })
	}
}

// liveCalls is how many calls each benchmark caller keeps up at once.
const liveCalls = 20

func benchCreditStart(b *testing.B, accounts, callers int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := testkit.StartNATS(b)
	nc, js := n.Connect()
	store, err := NewStore(ctx, js)
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := store.Import(ctx, "credit", strings.NewReader(creditDeck), PlanSpec{}); err != nil {
		b.Fatal(err)
	}
	ps, err := eventlog.OpenProvisionStore(ctx, js, nil)
	if err != nil {
		b.Fatal(err)
	}
	l, err := ledger.New(ctx, js, ledger.Config{Node: "bench", Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, accounts)
	for i := range ids {
		ids[i] = fmt.Sprintf("acct-%d", i)
		if _, err := ps.Accounts().Put(ctx, schema.Account{ID: ids[i], Currency: "EUR", SellPlan: "credit", Kind: schema.Prepaid}); err != nil {
			b.Fatal(err)
		}
		if _, err := l.Open(ctx, ids[i], schema.Prepaid, "EUR", 0); err != nil {
			b.Fatal(err)
		}
		if _, err := l.Credit(ctx, ids[i], schema.MustParseMoney("1000000"), "bench"); err != nil {
			b.Fatal(err)
		}
	}
	watch, err := ps.Watch(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer watch.Stop()
	<-watch.Ready()
	book, err := store.Follow(ctx, quiet)
	if err != nil {
		b.Fatal(err)
	}
	cc, err := NewCreditControl(nc, CreditConfig{Book: book, Accounts: watch, Ledger: l, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cc.Run(ctx) }()
	defer func() { cancel(); <-done }()
	client, _ := n.Connect()
	testkit.Eventually(b, 5*time.Second, func() error {
		_, err := client.Request(schema.SubjectAuthorize, []byte("{}"), time.Second)
		return err
	})

	var (
		next     atomic.Int64
		releases atomic.Int64
		mu       sync.Mutex
		lat      []time.Duration
	)
	b.ResetTimer()
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			defer func() {
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
			var live []schema.CreditRequest
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if len(live) == liveCalls {
					// The oldest call ends: its hold goes, as the ledger's
					// billing would release it.
					rel := live[0]
					rel.Action = schema.CreditRelease
					data, _ := json.Marshal(rel)
					if _, err := client.Request(schema.SubjectAuthorize, data, 10*time.Second); err != nil {
						b.Error(err)
						return
					}
					live = live[1:]
					releases.Add(1)
				}
				call := fmt.Sprintf("bench-%d", i)
				req := start(call, ids[int(i)%accounts], hamburg, 0)
				live = append(live, req)
				data, _ := json.Marshal(req)
				t0 := time.Now()
				msg, err := client.Request(schema.SubjectAuthorize, data, 10*time.Second)
				mine = append(mine, time.Since(t0))
				if err != nil {
					b.Error(err)
					return
				}
				var r schema.CreditReply
				if err := json.Unmarshal(msg.Data, &r); err != nil || r.Result != schema.CreditGranted {
					b.Errorf("%s: %+v, %v", call, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "auth/s")
	b.ReportMetric(float64(int64(b.N)+releases.Load())/b.Elapsed().Seconds(), "req/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
