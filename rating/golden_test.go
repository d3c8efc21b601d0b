package rating

import (
	"encoding/csv"
	"errors"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/carrier-core/carrier/schema"
)

// goldenDeck reads testdata/golden_deck.csv once per rounding.
func goldenDeck(t testing.TB, rounding Rounding) *Deck {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	tf, err := os.Open("testdata/golden_timetable.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	tt, err := ReadTimetable(tf, loc)
	if err != nil {
		t.Fatal(err)
	}
	df, err := os.Open("testdata/golden_deck.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	d, err := ReadDeck(df, Config{Timetable: tt, Rounding: &rounding})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func parseRounding(t *testing.T, s string) Rounding {
	t.Helper()
	dec, mode, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(dec)
	m, err2 := schema.ParseRoundingMode(mode)
	if !ok || err != nil || err2 != nil {
		t.Fatalf("rounding %q", s)
	}
	return Rounding{Decimals: n, Mode: m}
}

func TestGolden(t *testing.T) {
	f, err := os.Open("testdata/golden.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.Comment = '#'
	recs, err := cr.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	decks := map[string]*Deck{}
	cases := recs[1:]
	if len(cases) < 60 {
		t.Fatalf("%d golden cases, want at least 60", len(cases))
	}
	for _, rec := range cases {
		get := func(name string) string { return rec[col[name]] }
		t.Run(get("case"), func(t *testing.T) {
			d, ok := decks[get("rounding")]
			if !ok {
				d = goldenDeck(t, parseRounding(t, get("rounding")))
				decks[get("rounding")] = d
			}
			answer, err := time.Parse(time.RFC3339, get("answer"))
			if err != nil {
				t.Fatal(err)
			}
			ms, err := strconv.ParseInt(get("duration_ms"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			q, err := d.Quote(get("number"), answer, time.Duration(ms)*time.Millisecond)
			switch want := get("error"); want {
			case "overflow":
				if !errors.Is(err, schema.ErrOverflow) {
					t.Fatalf("err = %v, want schema.ErrOverflow (%s)", err, get("how"))
				}
				return
			case "no rate":
				if !errors.Is(err, ErrNoRate) {
					t.Fatalf("err = %v, want ErrNoRate (%s)", err, get("how"))
				}
				return
			case "":
				if err != nil {
					t.Fatalf("Quote: %v (%s)", err, get("how"))
				}
			default:
				t.Fatalf("unknown error column %q", want)
			}
			billed, _ := strconv.ParseInt(get("billed_s"), 10, 64)
			exact, total := schema.MustParseMoney(get("exact")), schema.MustParseMoney(get("total"))
			if q.Billed != billed || q.Exact != exact || q.Total != total {
				t.Errorf("billed %d exact %s total %s; want %d %s %s (%s)\nsegments %+v",
					q.Billed, q.Exact, q.Total, billed, exact, total, get("how"), q.Segments)
			}
			// The breakdown adds up to the exact charge.
			sum := q.ConnectFee
			var secs int64
			for _, s := range q.Segments {
				sum += s.Charge
				secs += s.Seconds
			}
			if sum != q.Exact || secs != q.Billed {
				t.Errorf("segments sum to %s over %d s, quote says %s over %d s", sum, secs, q.Exact, q.Billed)
			}
		})
	}
}

// TestQuoteLongestCalls: the longest durations a time.Duration holds give
// an exact price or schema.ErrOverflow, never a wrapped number.
func TestQuoteLongestCalls(t *testing.T) {
	d := goldenDeck(t, DefaultRounding)
	at := time.Date(2026, 11, 23, 20, 0, 0, 0, time.UTC)
	// 4911 is 1/1 at 0.0123/min = 205000 nano/s: 9223372036 s (292 years,
	// the whole seconds a Duration holds) cost 9223372036*205000 nano =
	// 1890791.26738 exactly.
	q, err := d.Quote("4911555", at, 9223372036*time.Second)
	if err != nil || q.Billed != 9223372036 || q.Exact != schema.MustParseMoney("1890791.26738") {
		t.Fatalf("1/1 for 292 years: %d s %s, %v", q.Billed, q.Exact, err)
	}
	// A Duration's last fraction of a second rounds up past that: refused.
	if _, err := d.Quote("4911555", at, time.Duration(math.MaxInt64)); !errors.Is(err, schema.ErrOverflow) {
		t.Fatalf("MaxInt64 ns: %v, want schema.ErrOverflow", err)
	}
}
