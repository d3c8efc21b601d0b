package rating

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/carrier-core/carrier/schema"
)

func TestAuthorize(t *testing.T) {
	d := goldenDeck(t, DefaultRounding)
	berlin := d.Timetable().Location()
	off := time.Date(2026, 11, 23, 20, 0, 0, 0, berlin)
	for _, c := range []struct {
		number string
		at     time.Time
		amount string
		limit  time.Duration
		secs   int64
		cost   string
	}{
		{"496012345", off, "0.10", 0, 60, "0.06"},                                          // 120 s would cost 0.12
		{"496012345", off, "0.12", 0, 120, "0.12"},                                         // exactly enough
		{"49301", off, "0.10", 0, 48, "0.096"},                                             // 30+6n <= 50 s at 0.002/s: n=3
		{"4920777", off, "1.00", 0, 840, "0.99"},                                           // 0.15 fee + 840 s at 0.001
		{"4940", off, "0.0305", 0, 30, "0.03"},                                             // minimum 30 s, then 1/1: 30.5 s is 30
		{"4940", off, "0.0310", 0, 31, "0.031"},                                            // 31 s
		{"49501", off, "0.90", 0, 600, "0.9"},                                              // tier: 300*0.002 + 300*0.001
		{"49701", off.Add(-12*time.Hour - time.Minute), "0.12", 0, 120, "0.12"},            // 07:59: 60 s off-peak 0.03 + 60 s peak 0.09
		{"49001", time.Date(2026, 12, 25, 10, 0, 0, 0, berlin), "0", time.Hour, 3600, "0"}, // free: the limit ends it
		{"496012345", off, "1000", 10 * time.Minute, 600, "0.6"},
	} {
		a, err := d.Authorize(c.number, c.at, schema.MustParseMoney(c.amount), c.limit)
		if err != nil || a.Seconds != c.secs || a.Cost != schema.MustParseMoney(c.cost) {
			t.Errorf("Authorize(%s, %s, %s) = %d s for %s, %v; want %d s for %s", c.number, c.at, c.amount, a.Seconds, a.Cost, err, c.secs, c.cost)
		}
	}
	if _, err := d.Authorize("496012345", off, schema.MustParseMoney("0.05"), 0); !errors.Is(err, ErrInsufficientCredit) {
		t.Errorf("0.05 for a 0.06 first increment: %v", err)
	}
	if _, err := d.Authorize("4920777", off, schema.MustParseMoney("0.20"), 0); !errors.Is(err, ErrInsufficientCredit) {
		t.Errorf("0.20 for fee 0.15 + first minute 0.06: %v", err)
	}
	if _, err := d.Authorize("33", off, schema.MustParseMoney("1"), 0); !errors.Is(err, ErrNoRate) {
		t.Errorf("no rate: %v", err)
	}
}

// TestAuthorizeIsTight checks the contract on many amounts: the answer
// is affordable, and one more increment is not.
func TestAuthorizeIsTight(t *testing.T) {
	d := goldenDeck(t, DefaultRounding)
	rng := rand.New(rand.NewPCG(5, 5))
	numbers := []string{"496012345", "49301", "4911555", "4920777", "4940", "49251", "49501", "49701", "49901"}
	start := time.Date(2026, 11, 23, 0, 0, 0, 0, d.Timetable().Location())
	for range 500 {
		number := numbers[rng.IntN(len(numbers))]
		at := start.Add(time.Duration(rng.Int64N(7*24*3600)) * time.Second)
		amount := schema.Money(rng.Int64N(int64(20 * schema.Unit)))
		a, err := d.Authorize(number, at, amount, 0)
		if errors.Is(err, ErrInsufficientCredit) {
			q, _ := d.Quote(number, at, time.Second)
			if q.Total <= amount {
				t.Fatalf("%s at %s: %s refused but 1 s costs %s", number, at, amount, q.Total)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		q, err := d.Quote(number, at, time.Duration(a.Seconds)*time.Second)
		if err != nil || q.Billed != a.Seconds || q.Total != a.Cost || q.Total > amount {
			t.Fatalf("%s at %s for %s: authorized %d s at %s, quote %d s at %s, %v", number, at, amount, a.Seconds, a.Cost, q.Billed, q.Total, err)
		}
		if a.Seconds >= 24*3600 {
			continue
		}
		more, err := d.Quote(number, at, time.Duration(a.Seconds+1)*time.Second)
		if err != nil || more.Total <= amount {
			t.Fatalf("%s at %s for %s: %d s authorized but %d s cost only %s", number, at, amount, a.Seconds, more.Billed, more.Total)
		}
	}
}
