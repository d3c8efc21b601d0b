package rating

import (
	"errors"
	"math"
	"testing"

	"github.com/carrier-core/carrier/schema"
)

func TestChargeSeconds(t *testing.T) {
	for _, c := range []struct {
		rate string
		secs int64
		want string
	}{
		{"0.06", 60, "0.06"},
		{"0.06", 1, "0.001"},
		{"0.0123", 30, "0.00615"},
		{"0.000000001", 1, "0.000000001"}, // 1/60 nano rounds up to 1
		{"0.000000060", 1, "0.000000001"},
		{"0.000000061", 1, "0.000000002"},
		{"1", 86400 * 365, "525600"},
	} {
		got, err := chargeSeconds(schema.MustParseMoney(c.rate), c.secs)
		if err != nil || got != schema.MustParseMoney(c.want) {
			t.Errorf("chargeSeconds(%s, %d) = %s, %v; want %s", c.rate, c.secs, got, err, c.want)
		}
	}
	// 10/min for 100 years: the product (3.2e19) needs 128 bits, the price fits.
	if got, err := chargeSeconds(schema.MustParseMoney("10"), 100*365*86400); err != nil || got != schema.MustParseMoney("525600000") {
		t.Errorf("large charge: %v", err)
	}
	if _, err := chargeSeconds(schema.Money(math.MaxInt64), math.MaxInt64); !errors.Is(err, schema.ErrOverflow) {
		t.Errorf("huge charge: %v, want schema.ErrOverflow", err)
	}
	if _, err := schema.Money(math.MaxInt64).Add(1); !errors.Is(err, schema.ErrOverflow) {
		t.Errorf("add overflow: %v", err)
	}
}

// FuzzMoney: whatever parses prints back to the same amount, and
// rounding lands on the grid within one step of the amount.
