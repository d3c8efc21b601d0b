package schema

import (
	"errors"
	"math"
	"testing"
)

func TestParseFormatMoney(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Money
		out  string
	}{
		{"10.50", 10_500_000_000, "10.50"},
		{"0.0123", 12_300_000, "0.0123"},
		{"0.000000001", 1, "0.000000001"},
		{"3", 3 * Unit, "3.00"},
		{"-3.1", -3_100_000_000, "-3.10"},
		{"+.5", 500_000_000, "0.50"},
		{"7.", 7 * Unit, "7.00"},
		{"0.1000000000000", 100_000_000, "0.10"},
		{"9223372036.854775807", math.MaxInt64, "9223372036.854775807"},
	} {
		got, err := ParseMoney(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseMoney(%q) = %d, %v; want %d", c.in, got, err, c.want)
			continue
		}
		if s := got.String(); s != c.out {
			t.Errorf("%q String = %q, want %q", c.in, s, c.out)
		}
		back, err := ParseMoney(got.String())
		if err != nil || back != got {
			t.Errorf("round trip %q: %d, %v", c.in, back, err)
		}
	}
	for _, c := range []struct {
		in   string
		want error
	}{
		{"", ErrBadAmount}, {".", ErrBadAmount}, {"-", ErrBadAmount}, {"1e3", ErrBadAmount},
		{"1,5", ErrBadAmount}, {"0x10", ErrBadAmount}, {" 1", ErrBadAmount},
		{"0.0000000001", ErrTooPrecise}, {"9223372036.854775808", ErrOverflow},
		{"99999999999999999999", ErrOverflow},
	} {
		if _, err := ParseMoney(c.in); !errors.Is(err, c.want) {
			t.Errorf("ParseMoney(%q) error %v, want %v", c.in, err, c.want)
		}
	}
	if s := Money(math.MinInt64).Format(0); s != "-9223372036.854775808" {
		t.Errorf("MinInt64 = %s", s)
	}
}

func TestRound(t *testing.T) {
	for _, c := range []struct {
		in   string
		dec  int
		mode RoundingMode
		want string
	}{
		{"0.0123", 2, RoundUp, "0.02"},
		{"0.0123", 2, RoundDown, "0.01"},
		{"0.0123", 2, RoundHalfUp, "0.01"},
		{"0.015", 2, RoundHalfUp, "0.02"},
		{"0.025", 2, RoundHalfUp, "0.03"},
		{"0.025", 2, RoundHalfEven, "0.02"},
		{"0.035", 2, RoundHalfEven, "0.04"},
		{"0.0251", 2, RoundHalfEven, "0.03"},
		{"1.00", 2, RoundUp, "1.00"},
		{"-0.0123", 2, RoundUp, "-0.01"},
		{"-0.015", 2, RoundHalfUp, "-0.02"},
		{"-0.0123", 2, RoundDown, "-0.01"},
		{"0.000000001", 4, RoundUp, "0.0001"},
		{"0.000000001", 0, RoundUp, "1.00"},
		{"2.5", 0, RoundHalfEven, "2.00"},
		{"0.123456789", 9, RoundUp, "0.123456789"},
	} {
		got, err := MustParseMoney(c.in).Round(c.dec, c.mode)
		if err != nil || got != MustParseMoney(c.want) {
			t.Errorf("Round(%s, %d, %s) = %s, %v; want %s", c.in, c.dec, c.mode, got, err, c.want)
		}
	}
	if _, err := Money(math.MaxInt64).Round(2, RoundUp); !errors.Is(err, ErrOverflow) {
		t.Errorf("rounding MaxInt64 up: %v, want ErrOverflow", err)
	}
	for _, s := range []string{"up", "half-up", "half-even", "down"} {
		m, err := ParseRoundingMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseRoundingMode(%q) = %v, %v", s, m, err)
		}
	}
}

func FuzzMoney(f *testing.F) {
	for _, s := range []string{"10.50", "0.0123", "-3.1", "0.000000001", "9223372036.854775807", "7."} {
		f.Add(s, uint8(2), uint8(0))
	}
	f.Fuzz(func(t *testing.T, s string, dec, mode uint8) {
		m, err := ParseMoney(s)
		if err != nil {
			return
		}
		back, err := ParseMoney(m.String())
		if err != nil || back != m {
			t.Fatalf("%q -> %d -> %q -> %d, %v", s, m, m.String(), back, err)
		}
		d, md := int(dec%10), RoundingMode(mode%4)
		r, err := m.Round(d, md)
		if err != nil {
			return // beyond the range after rounding
		}
		step := Money(pow10(MoneyDecimals - d))
		diff := r - m
		if r%step != 0 || diff >= step || diff <= -step {
			t.Fatalf("Round(%s, %d, %s) = %s", m, d, md, r)
		}
		if md == RoundUp && r < m || md == RoundDown && (m >= 0 && r > m || m < 0 && r < m) {
			t.Fatalf("Round(%s, %d, %s) = %s goes the wrong way", m, d, md, r)
		}
	})
}
