package cdrgen

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// The property: whatever the order of the transactions of a call and of
// the calls among themselves, and however many times each is delivered,
// the correlator gives the CDRs of the in-order run, field by field.

// shapes are the recorded call shapes of the property tests: every
// scenario whose outcome does not depend on order, as call c.
func shapes(c testCall) []scenario {
	var out []scenario
	for _, sc := range scenariosOf(c) {
		if !sc.orderMatters {
			out = append(out, sc)
		}
	}
	return out
}

// propertySeed is logged, so that a failure can be replayed by setting it.
func propertySeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return seed
}

// mixed picks n calls of random shapes (call numbers from first on) and
// returns their transactions shuffled across and within calls, each one
// delivered up to three times, and the events of the in-order runs.
func mixed(rng *rand.Rand, first, n int) ([]schema.Transaction, map[string]emission) {
	var txs []schema.Transaction
	want := map[string]emission{}
	for i := range n {
		c := newTestCall(first + i)
		all := shapes(c)
		sc := all[rng.IntN(len(all))]
		in, _ := apply(jsonBook{}, sc.txs)
		for _, e := range in {
			want[e.ID] = e
		}
		for _, tx := range sc.txs {
			for range 1 + rng.IntN(3) {
				txs = append(txs, tx)
			}
		}
	}
	rng.Shuffle(len(txs), func(i, j int) { txs[i], txs[j] = txs[j], txs[i] })
	return txs, want
}

func TestPropertyOrderAndDuplicates(t *testing.T) {
	rng := rand.New(rand.NewPCG(propertySeed(t), 1))
	const iterations = 2000
	for it := range iterations {
		txs, want := mixed(rng, 0, 1+rng.IntN(6))
		got, _ := apply(jsonBook{}, txs)
		byID := map[string]emission{}
		for _, e := range got {
			if _, dup := byID[e.ID]; dup {
				t.Fatalf("iteration %d: event %s (%s) emitted twice", it, e.ID, e.Type)
			}
			byID[e.ID] = e
		}
		if len(byID) != len(want) {
			t.Fatalf("iteration %d: %d events, want %d", it, len(byID), len(want))
		}
		for id, w := range want {
			g, ok := byID[id]
			if !ok {
				t.Fatalf("iteration %d: no %s %s for call %s", it, w.Type, id, w.CDR.CallID)
			}
			assertEmissions(t, []emission{g}, []emission{w})
			if t.Failed() {
				t.Fatalf("iteration %d: transactions %+v", it, txs)
			}
		}
	}
}

// TestPropertyThroughJetStream: the same through the log, with batches
// of random size, so that a call's transactions are split over batches in
// every way. Duplicates have their own event ids, as a spool replay after
// the dedupe window leaves them.
func TestPropertyThroughJetStream(t *testing.T) {
	seed := propertySeed(t)
	for round := range 3 {
		rng := rand.New(rand.NewPCG(seed, uint64(round)))
		srv := testkit.StartNATS(t)
		_, js := srv.Connect()
		txs, want := mixed(rng, 0, 60)
		publishTx(t, js, txs...)
		cfg := testConfig(prometheus.NewRegistry())
		cfg.MaxBatch = 1 + rng.IntN(25)
		r := start(t, js, cfg)
		waitCaughtUp(t, js, DefaultDurable)
		r.stop(t)

		msgs := readCDRStream(t, js)
		got := map[string]cdrMsg{}
		for _, m := range msgs {
			if _, dup := got[m.Env.ID]; dup {
				t.Errorf("round %d: event %s (%s) twice on the CDR stream", round, m.Env.ID, m.Env.Type)
			}
			got[m.Env.ID] = m
		}
		if len(got) != len(want) {
			t.Errorf("round %d (batches of %d): %d events on the CDR stream, want %d", round, cfg.MaxBatch, len(got), len(want))
		}
		for id, w := range want {
			m, ok := got[id]
			if !ok {
				t.Errorf("round %d: no %s for call %s", round, w.Type, w.CDR.CallID)
				continue
			}
			if m.Env.Type != w.Type || m.Env.Time != w.At || m.Subject != schema.CDRSubject(w.Type, w.CDR.CallID) {
				t.Errorf("round %d: %s %s at %d on %s, want %s at %d", round, m.Env.Type, id, m.Env.Time, m.Subject, w.Type, w.At)
			}
			assertCDR(t, w.Type+" "+w.CDR.CallID, m.CDR, w.CDR)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
}
