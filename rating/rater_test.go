package rating

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// raterFixture is a JetStream with decks imported and accounts
// provisioned, ready to publish CDRs to and read rated CDRs from.
type raterFixture struct {
	t      *testing.T
	ctx    context.Context
	js     jetstream.JetStream
	store  *Store
	book   *Book
	watch  *eventlog.ProvisionWatcher
	retail PlanInfo
}

// retailDeck: Berlin 0.0123/min + 0.05 per call on 30/6; Germany 0.012 on 60/60.
const retailDeck = header +
	"49,Germany,0.012,,60,60,,,,,,\n" +
	"4930,Germany Berlin,0.0123,0.05,30,6,,,,,,\n"

// buyDeck of supplier "carrierA": Germany at 0.008/min, per second.
const buyDeck = header + "49,Germany,0.008,,1,1,,,,,,\n"

var quiet = slog.New(slog.DiscardHandler)

var answerAt = time.Date(2025, 11, 24, 10, 0, 0, 0, time.UTC)

func newRaterFixture(t *testing.T) *raterFixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	_, js := testkit.StartNATS(t).Connect()
	store, err := NewStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	retail, _, err := store.Import(ctx, "retail", strings.NewReader(retailDeck), PlanSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := store.Import(ctx, BuyPlan("carrierA"), strings.NewReader(buyDeck), PlanSpec{}); err != nil {
		t.Fatal(err)
	}
	// A plan whose only version takes effect long after every test call.
	if _, _, err := store.Import(ctx, "future", strings.NewReader(retailDeck), PlanSpec{Effective: answerAt.AddDate(10, 0, 0)}); err != nil {
		t.Fatal(err)
	}
	ps, err := eventlog.OpenProvisionStore(ctx, js, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []schema.Account{
		{ID: "acme", Currency: "EUR", SellPlan: "retail"},
		{ID: "noplan", Currency: "EUR"},
		{ID: "typo", Currency: "EUR", SellPlan: "retial"},
		{ID: "early", Currency: "EUR", SellPlan: "future"},
	} {
		if _, err := ps.Accounts().Put(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	watch, err := ps.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(watch.Stop)
	<-watch.Ready()
	book, err := store.Follow(ctx, quiet)
	if err != nil {
		t.Fatal(err)
	}
	return &raterFixture{t: t, ctx: ctx, js: js, store: store, book: book, watch: watch, retail: retail}
}

func (f *raterFixture) newRater(book *Book, reg prometheus.Registerer) *Rater {
	f.t.Helper()
	r, err := NewRater(f.js, RaterConfig{Book: book, Store: f.store, Accounts: f.watch, MaxWait: 100 * time.Millisecond, Node: "test", Logger: quiet, Registerer: reg})
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// run runs r until the test ends.
func (f *raterFixture) run(r *Rater) (stop func()) {
	ctx, cancel := context.WithCancel(f.ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stop = func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			f.t.Errorf("rater: %v", err)
		}
	}
	f.t.Cleanup(func() {
		if ctx.Err() == nil {
			stop()
		}
	})
	return stop
}

// call is an answered call of account to callee lasting ms, carried by supplier.
func call(id, account, callee string, ms int64, supplier string) schema.CDR {
	c := schema.CDR{
		ID: schema.CDRID(id, "tag"), CallID: id, FromTag: "tag", Account: account, Callee: callee, CalleeE164: callee,
		Disposition: schema.Answered, Status: 200, Supplier: supplier, Gateway: "gw-" + supplier,
		InviteAt: schema.Millis(answerAt.Add(-3 * time.Second)), AnswerAt: schema.Millis(answerAt),
		EndAt: schema.Millis(answerAt) + ms, DurationMs: ms, BillableSec: schema.BillableSeconds(ms),
	}
	return c
}

func (f *raterFixture) publish(cdrs ...schema.CDR) {
	f.t.Helper()
	for _, c := range cdrs {
		typ := schema.TypeCallEnded
		if c.Disposition != schema.Answered {
			typ = schema.TypeCallFailed
		}
		ev, err := schema.NewEnvelopeWithID(c.ID, typ, schema.CDRVersion, schema.FromMillis(c.EndAt), "test", c)
		if err != nil {
			f.t.Fatal(err)
		}
		if err := eventlog.Publish(f.ctx, f.js, schema.CDRSubject(typ, c.CallID), ev); err != nil {
			f.t.Fatal(err)
		}
	}
}

// rated reads every rated CDR event in the stream: the envelopes' ids in
// order and the payloads by CDR id.
func (f *raterFixture) rated() ([]string, map[string]schema.RatedCDR) {
	f.t.Helper()
	cons, err := f.js.OrderedConsumer(f.ctx, schema.StreamCDR, jetstream.OrderedConsumerConfig{FilterSubjects: []string{schema.AllRatedCalls}})
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := cons.Info(f.ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	var ids []string
	out := map[string]schema.RatedCDR{}
	for n := int(info.NumPending); n > 0; {
		b, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			f.t.Fatal(err)
		}
		for m := range b.Messages() {
			n--
			env, err := schema.ParseEnvelope(m.Data())
			if err != nil {
				f.t.Fatal(err)
			}
			var rc schema.RatedCDR
			if err := env.Decode(schema.TypeCallRated, schema.RatedVersion, &rc); err != nil {
				f.t.Fatal(err)
			}
			if want := schema.RatedSubject(rc.CDR.CallID); m.Subject() != want {
				f.t.Errorf("rated CDR %s on %s, want %s", rc.CDR.ID, m.Subject(), want)
			}
			ids = append(ids, env.ID)
			out[rc.CDR.ID] = rc
		}
		if err := b.Error(); err != nil {
			f.t.Fatal(err)
		}
	}
	return ids, out
}

// waitRated waits until n rated CDRs are in the stream.
func (f *raterFixture) waitRated(n int) map[string]schema.RatedCDR {
	f.t.Helper()
	var out map[string]schema.RatedCDR
	testkit.Eventually(f.t, 20*time.Second, func() error {
		var ids []string
		ids, out = f.rated()
		if len(ids) != n {
			return fmt.Errorf("%d rated CDRs, want %d", len(ids), n)
		}
		return nil
	})
	return out
}

// quote is the price rating itself gives, to compare the rater with.
func (f *raterFixture) quote(plan string, version uint64, number string, ms int64) Quote {
	f.t.Helper()
	d, _, err := f.store.Load(f.ctx, plan, version)
	if err != nil {
		f.t.Fatal(err)
	}
	q, err := d.Quote(number, answerAt, time.Duration(ms)*time.Millisecond)
	if err != nil {
		f.t.Fatal(err)
	}
	return q
}

func TestRaterPricesSellBuyAndUnrated(t *testing.T) {
	f := newRaterFixture(t)
	reg := prometheus.NewRegistry()
	r := f.newRater(f.book, reg)
	f.run(r)

	berlin := call("berlin", "acme", "4930123456", 90_001, "carrierA")
	noBuy := call("nobuy", "acme", "4930123456", 90_001, "carrierB")
	zero := call("zero", "acme", "4930123456", 0, "carrierA")
	failed := call("failed", "acme", "4930123456", 0, "carrierA")
	failed.Disposition, failed.Status, failed.AnswerAt, failed.EndAt = schema.Busy, 486, 0, failed.InviteAt
	noPlan := call("noplan", "noplan", "4930123456", 60_000, "")
	noRate := call("norate", "acme", "15551234567", 60_000, "")
	noAccount := call("noaccount", "ghost", "4930123456", 60_000, "")
	unknownPlan := call("unknown", "typo", "4930123456", 60_000, "")
	notInForce := call("early", "early", "4930123456", 60_000, "")
	badNumber := call("badnumber", "acme", "anonymous", 60_000, "")
	all := []schema.CDR{berlin, noBuy, zero, failed, noPlan, noRate, noAccount, unknownPlan, notInForce, badNumber}
	f.publish(all...)
	got := f.waitRated(len(all))

	// 90.001 s → 91 s → 30 + 11×6 = 96 s billed: 0.0123×96/60 = 0.01968
	// + 0.05 fee = 0.06968 → 0.0697 (4 decimals, up). Buy per second:
	// 0.008×91/60 = 0.0121333… → 0.0122. Margin 0.0575.
	b := got[berlin.ID]
	q := f.quote("retail", 0, berlin.CalleeE164, berlin.DurationMs)
	if b.Status != schema.StatusRated || b.SellCost != "0.0697" || b.SellCost != q.Total.String() ||
		b.BuyCost != "0.0122" || b.Margin != "0.0575" || b.Currency != "EUR" || b.Reason != "" {
		t.Errorf("berlin: %+v", b)
	}
	if s := b.Sell; s == nil || s.Plan != "retail" || s.PlanVersion != f.retail.Version || s.Prefix != "4930" ||
		s.Destination != "Germany Berlin" || s.Rate != "0.0123" || s.ConnectFee != "0.05" || s.FirstIncrement != 30 ||
		s.NextIncrement != 6 || s.Seconds != 91 || s.BilledSeconds != 96 || s.Exact != "0.06968" || s.Cost != "0.0697" {
		t.Errorf("berlin sell leg: %+v", b.Sell)
	}
	if l := b.Buy; l == nil || l.Plan != "buy-carrierA" || l.Prefix != "49" || l.BilledSeconds != 91 || l.Cost != "0.0122" {
		t.Errorf("berlin buy leg: %+v", b.Buy)
	}
	if b.CDR.ID != berlin.ID || b.CDR.DurationMs != berlin.DurationMs {
		t.Errorf("berlin CDR not carried: %+v", b.CDR)
	}

	// A supplier without a buy plan (nor its gateway): buy 0, margin = sell.
	if nb := got[noBuy.ID]; nb.Status != schema.StatusRated || nb.Buy != nil || nb.BuyCost != "0.00" || nb.Margin != nb.SellCost || nb.SellCost != "0.0697" {
		t.Errorf("no buy plan: %+v", nb)
	}
	// An answered call of 0 s pays the connection fee alone.
	if z := got[zero.ID]; z.Status != schema.StatusRated || z.SellCost != "0.05" || z.Sell.BilledSeconds != 0 || z.Sell.Rate != "0.0123" || z.BuyCost != "0.00" || z.Margin != "0.05" {
		t.Errorf("zero-length call: %+v %+v", z, z.Sell)
	}
	// A failed call is rated at zero, with its destination.
	if fc := got[failed.ID]; fc.Status != schema.StatusRated || fc.SellCost != "0.00" || fc.Margin != "0.00" || fc.Sell == nil || fc.Sell.Destination != "Germany Berlin" || fc.Sell.Cost != "0.00" {
		t.Errorf("failed call: %+v %+v", fc, fc.Sell)
	}
	for cdr, reason := range map[string]string{
		noPlan.ID:      schema.UnratedNoPlan,
		noRate.ID:      schema.UnratedNoRate,
		noAccount.ID:   schema.UnratedNoAccount,
		unknownPlan.ID: schema.UnratedUnknownPlan,
		notInForce.ID:  schema.UnratedNotInForce,
		badNumber.ID:   schema.UnratedBadNumber,
	} {
		if u := got[cdr]; u.Status != schema.StatusUnrated || u.Reason != reason || u.Detail == "" || u.SellCost != "" || u.Margin != "" {
			t.Errorf("%s: want unrated %s, got %+v", reason, reason, u)
		}
	}
	for metric, want := range map[string]float64{
		`carrier_rater_cdrs_total{status="rated"}`:      4,
		`carrier_rater_cdrs_total{status="unrated"}`:    6,
		`carrier_rater_unrated_total{reason="no_rate"}`: 1,
	} {
		if n := counterValue(t, reg, metric); n != want {
			t.Errorf("%s = %v, want %v", metric, n, want)
		}
	}
}

// counterValue reads one counter from reg, named as Prometheus prints it
// (name{label="value"}, the consumer label left out).
func counterValue(t *testing.T, reg *prometheus.Registry, metric string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() != "consumer" {
					name += fmt.Sprintf("{%s=%q}", l.GetName(), l.GetValue())
				}
			}
			if name == metric {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s", metric)
	return 0
}

func TestRaterRedeliveryPublishesNoDuplicate(t *testing.T) {
	f := newRaterFixture(t)
	cdrs := []schema.CDR{call("a", "acme", "4930123456", 61_000, "carrierA"), call("b", "noplan", "4930123456", 1_000, "")}
	f.publish(cdrs...)

	// A first rater rated the CDRs and died before it acked them: the
	// restarted rater is handed them again.
	var batch []eventlog.Msg
	for _, c := range cdrs {
		ev, err := schema.NewEnvelopeWithID(c.ID, schema.TypeCallEnded, schema.CDRVersion, schema.FromMillis(c.EndAt), "test", c)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, eventlog.Msg{Subject: schema.CDRSubject(schema.TypeCallEnded, c.CallID), Envelope: ev})
	}
	if err := f.newRater(f.book, nil).handle(f.ctx, batch); err != nil {
		t.Fatal(err)
	}
	if ids, _ := f.rated(); len(ids) != len(cdrs) {
		t.Fatalf("first rating: %d events", len(ids))
	}

	// The restarted rater gets them again and rates them again.
	second := f.newRater(f.book, nil)
	f.run(second)
	testkit.Eventually(t, 20*time.Second, func() error {
		cons, err := f.js.Consumer(f.ctx, schema.StreamCDR, DefaultRaterDurable)
		if err != nil {
			return err
		}
		info, err := cons.Info(f.ctx)
		if err != nil {
			return err
		}
		if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream == 0 {
			return fmt.Errorf("consumer: %d pending, %d unacked", info.NumPending, info.NumAckPending)
		}
		return nil
	})
	ids, got := f.rated()
	if len(ids) != len(cdrs) {
		t.Fatalf("%d rated events after a redelivery, want %d: %v", len(ids), len(cdrs), ids)
	}
	for _, c := range cdrs {
		if _, ok := got[c.ID]; !ok {
			t.Errorf("CDR %s not rated", c.ID)
		}
	}
	seen := map[string]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	for _, c := range cdrs {
		if !seen[schema.RatedID(c.ID, 0)] {
			t.Errorf("rated event of %s does not have id RatedID(cdr, 0); ids %v", c.ID, ids)
		}
	}
}

func TestRaterNewDeckVersionAppliesToLaterCDRs(t *testing.T) {
	f := newRaterFixture(t)
	f.run(f.newRater(f.book, nil))
	before := call("before", "acme", "4930123456", 60_000, "")
	f.publish(before)
	got := f.waitRated(1)
	if rc := got[before.ID]; rc.SellCost != f.quote("retail", f.retail.Version, "4930123456", 60_000).Total.String() || rc.Sell.PlanVersion != f.retail.Version {
		t.Fatalf("before the import: %+v", rc)
	}

	v2, _, err := f.store.Import(f.ctx, "retail", strings.NewReader(header+"4930,Germany Berlin,0.0246,0.05,30,6,,,,,,\n"), PlanSpec{})
	if err != nil {
		t.Fatal(err)
	}
	// The running rater's Book picks the version up by itself.
	testkit.Eventually(t, 20*time.Second, func() error {
		if _, info, _ := f.book.DeckAt("retail", answerAt); info.Version != v2.Version {
			return fmt.Errorf("book at version %d, want %d", info.Version, v2.Version)
		}
		return nil
	})
	after := call("after", "acme", "4930123456", 60_000, "")
	f.publish(after)
	got = f.waitRated(2)
	// 60 s → 60 billed (30 + 5×6): 0.0246 + 0.05 = 0.0746.
	rc := got[after.ID]
	if rc.SellCost != "0.0746" || rc.SellCost != f.quote("retail", v2.Version, "4930123456", 60_000).Total.String() || rc.Sell.PlanVersion != v2.Version {
		t.Errorf("after the import: %+v %+v", rc, rc.Sell)
	}
	if rc := got[before.ID]; rc.Sell.PlanVersion != f.retail.Version {
		t.Errorf("the earlier CDR was rated again: %+v", rc.Sell)
	}
}

// A Book that does not hold a plan (a version imported a moment ago, or
// older than the Book keeps) is backed by the Store: same prices.
func TestRaterFallsBackToStore(t *testing.T) {
	f := newRaterFixture(t)
	r := f.newRater(&Book{}, nil)
	rc, err := r.Rate(f.ctx, call("x", "acme", "4930123456", 90_001, "carrierA"))
	if err != nil {
		t.Fatal(err)
	}
	// The empty Book knows no buy plan, so the buy side is not priced.
	if rc.Status != schema.StatusRated || rc.SellCost != "0.0697" || rc.Sell.PlanVersion != f.retail.Version || rc.Buy != nil || rc.Margin != "0.0697" {
		t.Errorf("from the store: %+v", rc)
	}
	if len(r.decks.decks) != 1 {
		t.Errorf("%d decks cached, want 1", len(r.decks.decks))
	}
}

func TestNewRaterRejectsIncompleteConfig(t *testing.T) {
	if _, err := NewRater(nil, RaterConfig{}); !errors.Is(err, ErrInvalidRaterConfig) {
		t.Errorf("no jetstream: %v", err)
	}
}

func TestRerateCorrectsChangedPrices(t *testing.T) {
	f := newRaterFixture(t)
	f.run(f.newRater(f.book, nil))
	berlin := call("berlin", "acme", "4930123456", 90_001, "")
	later := call("later", "noplan", "4930123456", 60_000, "")
	outside := call("outside", "acme", "4930123456", 60_000, "")
	outside.AnswerAt += schema.Millis(answerAt.Add(2*time.Hour)) - schema.Millis(answerAt)
	f.publish(berlin, later, outside)
	f.waitRated(3)

	// Berlin doubles in price and the account without a plan gets one.
	v2, _, err := f.store.Import(f.ctx, "retail", strings.NewReader(header+"4930,Germany Berlin,0.0246,0.05,30,6,,,,,,\n"), PlanSpec{})
	if err != nil {
		t.Fatal(err)
	}
	ps, err := eventlog.OpenProvisionStore(f.ctx, f.js, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Accounts().Put(f.ctx, schema.Account{ID: "noplan", Currency: "EUR", SellPlan: "retail"}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() error {
		if _, info, _ := f.book.DeckAt("retail", answerAt); info.Version != v2.Version {
			return fmt.Errorf("book at version %d", info.Version)
		}
		if f.watch.Snapshot().Accounts["noplan"].SellPlan != "retail" {
			return errors.New("account not updated yet")
		}
		return nil
	})

	r := f.newRater(f.book, nil)
	window := RerateConfig{From: answerAt.Add(-time.Hour), To: answerAt.Add(time.Hour), Run: 1}
	sum, err := r.Rerate(f.ctx, window)
	if err != nil {
		t.Fatal(err)
	}
	// berlin: 96 s at 0.0246 + 0.05 = 0.08936 → 0.0894, was 0.0697: +0.0197.
	// later: was unrated, now 60 s at 0.0246 + 0.05 = 0.0746.
	if sum.Read != 3 || sum.Calls != 2 || sum.Corrected != 2 || sum.Unchanged != 0 || sum.SellDelta != schema.MustParseMoney("0.0943") {
		t.Fatalf("rerate: %+v", sum)
	}
	ids, got := f.rated()
	if len(ids) != 5 {
		t.Fatalf("%d rated events after the rerate, want 5", len(ids))
	}
	if c := got[berlin.ID]; c.Run != 1 || c.Replaces != schema.RatedID(berlin.ID, 0) || c.SellCost != "0.0894" ||
		c.SellDelta != "0.0197" || c.Sell.PlanVersion != v2.Version || !slices.Contains(ids, schema.RatedID(berlin.ID, 1)) {
		t.Errorf("berlin correction: %+v", c)
	}
	if c := got[later.ID]; c.Status != schema.StatusRated || c.SellCost != "0.0746" || c.SellDelta != "0.0746" {
		t.Errorf("later correction: %+v", c)
	}

	// The same rerate again finds the corrected prices.
	window.Run = 2
	if sum, err := r.Rerate(f.ctx, window); err != nil || sum.Calls != 2 || sum.Corrected != 0 || sum.Unchanged != 2 {
		t.Errorf("second rerate: %+v, %v", sum, err)
	}
	window.Account = "ghost"
	if sum, err := r.Rerate(f.ctx, window); err != nil || sum.Calls != 0 {
		t.Errorf("rerate of another account: %+v, %v", sum, err)
	}
	if _, err := r.Rerate(f.ctx, RerateConfig{From: answerAt, To: answerAt, Run: 3}); !errors.Is(err, ErrBadRerate) {
		t.Errorf("empty window: %v", err)
	}
}
