package rating

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

func TestStoreImportVersionsAndRejects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, js := testkit.StartNATS(t).Connect()
	s, err := NewStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	tt, err := os.ReadFile("testdata/golden_timetable.csv")
	if err != nil {
		t.Fatal(err)
	}
	spec := PlanSpec{Zone: "Europe/Berlin", Timetable: string(tt)}
	f, err := os.Open("testdata/golden_deck.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	v1, deck, err := s.Import(ctx, "retail", f, spec)
	if err != nil {
		t.Fatal(err)
	}
	if v1.Version == 0 || v1.Rates != 17 || v1.Prefixes != 14 || deck.Len() != 17 || len(v1.SHA256) != 64 {
		t.Fatalf("v1 = %+v", v1)
	}

	// A bad file is rejected whole and the plan keeps its version.
	bad := header + "44,UK,0.01,,60,60,,,,,,\n44,UK,0.02,,60,60,,,,,,\n"
	if _, _, err := s.Import(ctx, "retail", strings.NewReader(bad), spec); !errors.Is(err, ErrDuplicatePrefix) {
		t.Fatalf("bad import: %v", err)
	}
	cur, err := s.Info(ctx, "retail", 0)
	if err != nil || cur.Version != v1.Version || cur.Object != v1.Object {
		t.Fatalf("after a rejected import: %+v, %v", cur, err)
	}
	obs, err := js.ObjectStore(ctx, DeckBucket)
	if err != nil {
		t.Fatal(err)
	}
	if list, err := obs.List(ctx); err != nil || len(list) != 1 {
		t.Fatalf("objects after a rejected import: %d, %v (the rejected file must not stay)", len(list), err)
	}

	// A new version replaces the plan; the old one stays readable.
	v2, _, err := s.Import(ctx, "retail", strings.NewReader(header+"49,Germany,0.05,,60,60,,,,,,\n"), PlanSpec{Rounding: &Rounding{Decimals: 2, Mode: schema.RoundHalfEven}})
	if err != nil || v2.Version <= v1.Version {
		t.Fatalf("v2 = %+v, %v", v2, err)
	}
	at := time.Date(2026, 11, 23, 19, 0, 0, 0, time.UTC)
	d2, info, err := s.Load(ctx, "retail", 0)
	if err != nil || info.Version != v2.Version || d2.Rounding() != (Rounding{2, schema.RoundHalfEven}) {
		t.Fatalf("load current: %+v, %v", info, err)
	}
	if r, err := d2.Lookup("4960123", at); err != nil || r.Prefix != "49" {
		t.Fatalf("v2 lookup: %+v, %v", r, err)
	}
	d1, info, err := s.Load(ctx, "retail", v1.Version)
	if err != nil || info.Version != v1.Version || d1.Timetable().Location().String() != "Europe/Berlin" {
		t.Fatalf("load v1: %+v, %v", info, err)
	}
	q, err := d1.Quote("49701", time.Date(2026, 11, 23, 6, 59, 0, 0, time.UTC), 90*time.Second)
	if err != nil || q.Total != schema.MustParseMoney("0.075") {
		t.Fatalf("v1 quote (golden G45): %+v, %v", q, err)
	}

	if _, _, err := s.Import(ctx, "wholesale", strings.NewReader(header+"1,NANP,0.001,,6,6,,,,,,\n"), PlanSpec{}); err != nil {
		t.Fatal(err)
	}
	plans, err := s.Plans(ctx)
	if err != nil || len(plans) != 2 || plans[0].Plan != "retail" || plans[1].Plan != "wholesale" {
		t.Fatalf("plans = %+v, %v", plans, err)
	}
	// Export gives back the imported file byte for byte.
	var exported strings.Builder
	if info, err := s.Export(ctx, "retail", v1.Version, &exported); err != nil || info.Version != v1.Version {
		t.Fatalf("export: %+v, %v", info, err)
	}
	if orig, _ := os.ReadFile("testdata/golden_deck.csv"); exported.String() != string(orig) {
		t.Fatalf("exported deck differs from the imported file")
	}
	// Delete takes the plan out of use; a new import starts it again.
	if err := s.Delete(ctx, "wholesale"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Info(ctx, "wholesale", 0); !errors.Is(err, ErrUnknownPlan) {
		t.Fatalf("deleted plan: %v", err)
	}
	if _, err := s.Versions(ctx, "wholesale"); !errors.Is(err, ErrUnknownPlan) {
		t.Fatalf("deleted plan versions: %v", err)
	}
	if plans, err := s.Plans(ctx); err != nil || len(plans) != 1 {
		t.Fatalf("plans after delete: %+v, %v", plans, err)
	}
	if err := s.Delete(ctx, "wholesale"); !errors.Is(err, ErrUnknownPlan) {
		t.Fatalf("second delete: %v", err)
	}
	if _, _, err := s.Load(ctx, "nope", 0); !errors.Is(err, ErrUnknownPlan) {
		t.Fatalf("unknown plan: %v", err)
	}
	if _, _, err := s.Import(ctx, "bad name", strings.NewReader(bad), spec); !errors.Is(err, ErrBadPlanName) {
		t.Fatalf("bad plan name: %v", err)
	}
}

func TestBookFollowsImports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, js := testkit.StartNATS(t).Connect()
	s, err := NewStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	v1, _, err := s.Import(ctx, "retail", strings.NewReader(header+"49,Germany,0.05,,60,60,,,,,,\n"), PlanSpec{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Follow(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, info, ok := b.Deck("retail")
	if !ok || info.Version != v1.Version || d.Len() != 1 {
		t.Fatalf("initial book: %+v %v", info, ok)
	}
	v2, _, err := s.Import(ctx, "retail", strings.NewReader(header+"49,Germany,0.04,,60,60,,,,,,\n4930,Berlin,0.01,,60,60,,,,,,\n"), PlanSpec{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, info, _ := b.Deck("retail"); info.Version == v2.Version {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("the book never saw version", v2.Version)
		case <-time.After(10 * time.Millisecond):
		}
	}
	d, _, _ = b.Deck("retail")
	if r, err := d.Lookup("4930123", time.Now()); err != nil || r.Prefix != "4930" {
		t.Fatalf("lookup on the new version: %+v, %v", r, err)
	}
	if _, _, ok := b.Deck("nope"); ok {
		t.Fatal("unknown plan found")
	}
	// 4930 at 0.01/min, 60/60: 0.05 buys 5 minutes.
	a, info, err := b.Authorize("retail", "4930123", time.Now(), schema.MustParseMoney("0.05"), 0)
	if err != nil || a.Seconds != 300 || a.Cost != schema.MustParseMoney("0.05") || info.Version != v2.Version {
		t.Fatalf("authorize: %+v %+v, %v", a, info, err)
	}
	if q, _, err := b.Quote("retail", "4930123", time.Now(), 61*time.Second); err != nil || q.Total != schema.MustParseMoney("0.02") {
		t.Fatalf("quote: %+v, %v", q, err)
	}
	if _, _, err := b.Authorize("nope", "4930123", time.Now(), schema.Unit, 0); !errors.Is(err, ErrUnknownPlan) {
		t.Fatalf("unknown plan: %v", err)
	}
}

func TestScheduledVersions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, js := testkit.StartNATS(t).Connect()
	s, err := NewStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	switchAt := now.Add(time.Hour).Truncate(time.Second)
	deck := func(rate string) *strings.Reader {
		return strings.NewReader(header + "49,Germany," + rate + ",,60,60,,,,,,\n")
	}
	// Only a scheduled version: nothing is in force before it.
	if _, _, err := s.Import(ctx, "future", deck("0.01"), PlanSpec{Effective: switchAt}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.LoadAt(ctx, "future", now); !errors.Is(err, ErrNotInForce) {
		t.Fatalf("before the first version: %v", err)
	}

	v1, _, err := s.Import(ctx, "retail", deck("0.05"), PlanSpec{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Follow(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	v2, _, err := s.Import(ctx, "retail", deck("0.04"), PlanSpec{Effective: switchAt})
	if err != nil {
		t.Fatal(err)
	}
	rateAt := func(d *Deck, at time.Time) schema.Money {
		t.Helper()
		r, err := d.Lookup("4930", at)
		if err != nil {
			t.Fatal(err)
		}
		return r.PerMinute
	}
	for _, c := range []struct {
		at      time.Time
		version uint64
		rate    string
	}{
		{now, v1.Version, "0.05"},
		{switchAt.Add(-time.Second), v1.Version, "0.05"},
		{switchAt, v2.Version, "0.04"},
	} {
		d, info, err := s.LoadAt(ctx, "retail", c.at)
		if err != nil || info.Version != c.version || rateAt(d, c.at) != schema.MustParseMoney(c.rate) {
			t.Fatalf("LoadAt(%s) = version %d, %v; want %d", c.at, info.Version, err, c.version)
		}
		for {
			if _, info, ok := b.DeckAt("retail", c.at); ok && info.Version == c.version {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("the book never had version %d at %s", c.version, c.at)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	// An unscheduled import is in force at once and for any time.
	v3, _, err := s.Import(ctx, "retail", deck("0.03"), PlanSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if _, info, err := s.LoadAt(ctx, "retail", switchAt.Add(time.Hour)); err != nil || info.Version != v3.Version {
		t.Fatalf("after a correction: version %d, %v; want %d", info.Version, err, v3.Version)
	}
	if vs, err := s.Versions(ctx, "retail"); err != nil || len(vs) != 3 || vs[0].Version != v3.Version {
		t.Fatalf("versions: %+v, %v", vs, err)
	}
}
