package rating

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/carrier-core/carrier/schema"
)

// chargeSeconds prices secs seconds at perMinute: perMinute·secs/60,
// computed in 128 bits and rounded up to the nano-unit (the segment
// rounding). Both operands are non-negative.
func chargeSeconds(perMinute schema.Money, secs int64) (schema.Money, error) {
	if perMinute < 0 || secs < 0 {
		return 0, fmt.Errorf("negative rate or duration: %w", schema.ErrOverflow)
	}
	hi, lo := bits.Mul64(uint64(perMinute), uint64(secs))
	if hi >= 60 {
		return 0, schema.ErrOverflow
	}
	q, r := bits.Div64(hi, lo, 60)
	if r != 0 {
		q++
	}
	if q > math.MaxInt64 {
		return 0, schema.ErrOverflow
	}
	return schema.Money(q), nil
}
