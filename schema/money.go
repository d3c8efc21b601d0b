package schema

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
)

// Money is an exact amount of currency in nano-units: 1 Money is 10⁻⁹ of
// the currency's main unit (euro, dollar). Nine decimals hold any sub-cent
// per-minute rate a deck quotes (0.0000123/min is 12,300 nano-units) and
// still leave ±9.2 billion units of range in an int64. There is no float
// anywhere on the money path: amounts are parsed from and printed as
// decimal strings.
type Money int64

// Nano and Unit name the two ends of the scale.
const (
	Nano Money = 1
	Unit Money = 1_000_000_000

	// MoneyDecimals is the number of decimals a Money holds exactly.
	MoneyDecimals = 9
)

var (
	// ErrBadAmount: the text is not a plain decimal number.
	ErrBadAmount = errors.New("not a decimal amount")
	// ErrTooPrecise: the amount has more than nine significant decimals.
	ErrTooPrecise = errors.New("more than 9 decimals")
	// ErrOverflow: the amount or a price computed from it does not fit in a Money.
	ErrOverflow = errors.New("amount out of range")
)

// ParseMoney reads an exact decimal such as "10.50", "0.0123" or "-3".
// Trailing zeros beyond nine decimals are accepted; any other digit there
// is ErrTooPrecise, because silently dropping it would change the price.
func ParseMoney(s string) (Money, error) {
	in := s
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	intPart, frac, _ := strings.Cut(s, ".")
	if intPart == "" && frac == "" { // "", ".", "-"
		return 0, fmt.Errorf("%q: %w", in, ErrBadAmount)
	}
	var v uint64
	for i := 0; i < len(intPart); i++ {
		c := intPart[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q: %w", in, ErrBadAmount)
		}
		hi, lo := bits.Mul64(v, 10)
		lo, carry := bits.Add64(lo, uint64(c-'0'), 0)
		if hi != 0 || carry != 0 {
			return 0, fmt.Errorf("%q: %w", in, ErrOverflow)
		}
		v = lo
	}
	// Scale the integer part, then add the fraction digit by digit.
	hi, v := bits.Mul64(v, uint64(Unit))
	if hi != 0 {
		return 0, fmt.Errorf("%q: %w", in, ErrOverflow)
	}
	place := uint64(Unit)
	for i := 0; i < len(frac); i++ {
		c := frac[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q: %w", in, ErrBadAmount)
		}
		place /= 10
		if place == 0 {
			if c != '0' {
				return 0, fmt.Errorf("%q: %w", in, ErrTooPrecise)
			}
			continue
		}
		v += uint64(c-'0') * place
	}
	if v > math.MaxInt64 {
		return 0, fmt.Errorf("%q: %w", in, ErrOverflow)
	}
	if neg {
		return -Money(v), nil
	}
	return Money(v), nil
}

// MustParseMoney is ParseMoney for constants in code and tests.
func MustParseMoney(s string) Money {
	m, err := ParseMoney(s)
	if err != nil {
		panic(err)
	}
	return m
}

// String prints the exact amount with at least two decimals: "10.50",
// "0.0123", "0.000000001".
func (m Money) String() string { return m.Format(2) }

// Format prints the exact amount with at least minDecimals decimals and more when
// the amount needs them: it never hides a fraction. Round first to print
// at a fixed precision.
func (m Money) Format(minDecimals int) string {
	minDecimals = max(0, min(minDecimals, MoneyDecimals))
	var u uint64
	sign := ""
	if m < 0 {
		sign = "-"
		u = uint64(-(m + 1)) + 1 // MinInt64 safe
	} else {
		u = uint64(m)
	}
	whole, frac := u/uint64(Unit), u%uint64(Unit)
	digits := fmt.Sprintf("%09d", frac)
	digits = strings.TrimRight(digits, "0")
	if len(digits) < minDecimals {
		digits += strings.Repeat("0", minDecimals-len(digits))
	}
	if digits == "" {
		return fmt.Sprintf("%s%d", sign, whole)
	}
	return fmt.Sprintf("%s%d.%s", sign, whole, digits)
}

// MarshalText writes the exact decimal, so JSON carries "0.0123" and not
// a float.
func (m Money) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText reads what MarshalText wrote.
func (m *Money) UnmarshalText(b []byte) error {
	v, err := ParseMoney(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// Add returns m+o, or ErrOverflow.
func (m Money) Add(o Money) (Money, error) {
	s := m + o
	if (o > 0 && s < m) || (o < 0 && s > m) {
		return 0, ErrOverflow
	}
	return s, nil
}

// RoundingMode says which way a discarded fraction goes.
type RoundingMode uint8

const (
	// RoundUp goes toward +∞ (ceiling): a started cent is a charged
	// cent. Carriers expect it on what they sell, because a rounding
	// can then never turn into revenue lost on every call.
	RoundUp RoundingMode = iota
	// RoundHalfUp goes to the nearest, halves away from zero: the
	// commercial rounding invoices and most spreadsheets use.
	RoundHalfUp
	// RoundHalfEven goes to the nearest, halves to the even digit
	// (banker's rounding): unbiased over many amounts.
	RoundHalfEven
	// RoundDown goes toward zero (truncation).
	RoundDown
)

var roundingNames = [...]string{"up", "half-up", "half-even", "down"}

func (r RoundingMode) String() string {
	if int(r) < len(roundingNames) {
		return roundingNames[r]
	}
	return fmt.Sprintf("RoundingMode(%d)", uint8(r))
}

// MarshalText writes the mode's name.
func (r RoundingMode) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads a mode's name.
func (r *RoundingMode) UnmarshalText(b []byte) error {
	m, err := ParseRoundingMode(string(b))
	if err != nil {
		return err
	}
	*r = m
	return nil
}

// ParseRoundingMode reads "up", "half-up", "half-even" or "down".
func ParseRoundingMode(s string) (RoundingMode, error) {
	for i, n := range roundingNames {
		if strings.EqualFold(s, n) {
			return RoundingMode(i), nil
		}
	}
	return 0, fmt.Errorf("rounding mode %q: want up, half-up, half-even or down", s)
}

// Round returns m rounded to decimals places (0..9) with mode.
func (m Money) Round(decimals int, mode RoundingMode) (Money, error) {
	if decimals >= MoneyDecimals {
		return m, nil
	}
	decimals = max(decimals, 0)
	step := Money(pow10(MoneyDecimals - decimals))
	q, r := m/step, m%step // Go truncates toward zero
	if r == 0 {
		return m, nil
	}
	switch mode {
	case RoundUp:
		if r > 0 {
			q++
		}
	case RoundDown:
	case RoundHalfUp, RoundHalfEven:
		ar := r
		if ar < 0 {
			ar = -ar
		}
		twice := 2 * ar // ar < step <= 1e9, no overflow
		away := twice > step || twice == step && (mode == RoundHalfUp || q%2 != 0)
		if away {
			if r > 0 {
				q++
			} else {
				q--
			}
		}
	default:
		return 0, fmt.Errorf("rounding mode %d unknown", mode)
	}
	hi, lo := bits.Mul64(uint64(absInt(int64(q))), uint64(step))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, ErrOverflow
	}
	if q < 0 {
		return -Money(lo), nil
	}
	return Money(lo), nil
}

func absInt(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

func pow10(n int) int64 {
	p := int64(1)
	for range n {
		p *= 10
	}
	return p
}
