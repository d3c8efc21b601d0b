package rating

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/carrier-core/carrier/schema"
)

const header = "prefix,destination,rate,connect_fee,first_increment,next_increment,min_duration,band,tier_after,tier_rate,effective_from,effective_to\n"

func mustDeck(t *testing.T, csv string, cfg Config) *Deck {
	t.Helper()
	d, err := ReadDeck(strings.NewReader(csv), cfg)
	if err != nil {
		t.Fatalf("ReadDeck: %v", err)
	}
	return d
}

func peakTimetable(t *testing.T) *Timetable {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	tt, err := ReadTimetable(strings.NewReader("band,days,from,to\npeak,mon-fri,08:00,18:00\noffpeak,2026-12-25,00:00,00:00\n"), loc)
	if err != nil {
		t.Fatal(err)
	}
	return tt
}

func TestReadDeckRejectsWithLineNumbers(t *testing.T) {
	tt := peakTimetable(t)
	in := header +
		"44,UK,0.01,,60,60,,,,,,\n" + // 2 ok
		"4x,UK bad,0.01,,60,60,,,,,,\n" + // 3 bad prefix
		"45,Denmark,-0.01,,60,60,,,,,,\n" + // 4 negative
		"46,Sweden,0.01,,0,60,,,,,,\n" + // 5 bad increment
		"44,UK again,0.02,,60,60,,,,,,\n" + // 6 duplicate of 2
		"47,Norway,0.01,,60,60,,,,,2026-01-01,2026-06-01\n" + // 7
		"47,Norway,0.02,,60,60,,,,,2026-05-01,\n" + // 8 overlaps 7
		"48,Poland,0.01,,60,60,,night,,,,\n" + // 9 unknown band
		"49,Germany,0.01,,60,60,,,30,,,\n" + // 10 tier without rate
		"50,X,0.01,,60,60,,,,,2026-02-01,2026-01-01\n" + // 11 to before from
		"51,Y,0.01.2,,60,60,,,,,,\n" + // 12 bad price
		"52,Z,0.01,,60,60\n" + // 13 wrong field count
		"44,UK peak,0.03,,60,60,,peak,,,,\n" // 14 ok: other band
	_, err := ReadDeck(strings.NewReader(in), Config{Timetable: tt})
	var de *DeckError
	if !errors.As(err, &de) {
		t.Fatalf("err = %v, want *DeckError", err)
	}
	want := []struct {
		line int
		err  error
	}{
		{3, ErrBadPrefix}, {4, ErrNegativePrice}, {5, ErrBadIncrement}, {6, ErrDuplicatePrefix},
		{8, ErrOverlappingDates}, {9, ErrBadBand}, {10, ErrBadTier}, {11, ErrBadDate}, {12, ErrBadPrice},
		{13, nil},
	}
	if de.Total != len(want) {
		t.Fatalf("%d errors, want %d:\n%v", de.Total, len(want), err)
	}
	for i, w := range want {
		le := de.Errors[i]
		if le.Line != w.line || w.err != nil && !errors.Is(le, w.err) {
			t.Errorf("error %d = %v, want line %d %v", i, le, w.line, w.err)
		}
	}
	for _, s := range []error{ErrBadPrefix, ErrDuplicatePrefix, ErrOverlappingDates} {
		if !errors.Is(err, s) {
			t.Errorf("errors.Is(err, %v) false", s)
		}
	}
	if !strings.Contains(err.Error(), "line 6: prefix: prefix 44 band \"\" also on line 2") {
		t.Errorf("message:\n%v", err)
	}
}

func TestReadDeckHeader(t *testing.T) {
	for _, in := range []string{
		"prefix,destination,rate,first_increment\n44,UK,0.1,60\n", // next_increment missing
		"prefix,destination,rate,first_increment,next_increment,colour\n",
		"prefix,prefix,destination,rate,first_increment,next_increment\n",
	} {
		if _, err := ReadDeck(strings.NewReader(in), Config{}); !errors.Is(err, ErrBadHeader) {
			t.Errorf("%q: %v, want ErrBadHeader", in, err)
		}
	}
	if _, err := ReadDeck(strings.NewReader("prefix,destination,rate,first_increment,next_increment\n"), Config{}); !errors.Is(err, ErrEmptyDeck) {
		t.Errorf("empty deck: %v", err)
	}
	// A spreadsheet's byte-order mark is not part of the first column name;
	// no Rounding means DefaultRounding.
	bom := mustDeck(t, "\ufeffprefix,destination,rate,first_increment,next_increment\n44,UK,0.1,60,60\n", Config{})
	if bom.Len() != 1 || bom.Rounding() != DefaultRounding {
		t.Errorf("BOM deck: %d rates, rounding %+v", bom.Len(), bom.Rounding())
	}
	// Columns in any order, optional ones absent, comments allowed.
	d := mustDeck(t, "# minimal\nnext_increment,rate,prefix,first_increment,destination\n6,0.0123,4420,30,UK London\n", Config{})
	r, err := d.Lookup("+442071234567", time.Now())
	if err != nil || r.Prefix != "4420" || r.PerMinute != schema.MustParseMoney("0.0123") || r.FirstIncrement != 30 || r.NextIncrement != 6 {
		t.Errorf("lookup = %+v, %v", r, err)
	}
}

func TestLookupLongestPrefixDatesBands(t *testing.T) {
	tt := peakTimetable(t)
	d := mustDeck(t, header+
		"4,World 4,0.5,,60,60,,,,,,\n"+
		"44,UK,0.02,,60,60,,,,,,\n"+
		"447,UK mobile,0.05,,60,60,,,,,,2026-03-01\n"+
		"447,UK mobile,0.04,,60,60,,,,,2026-03-01,\n"+
		"4475,UK mobile X,0.07,,60,60,,peak,,,,\n"+
		"4420,London,0.01,,60,60,,,,,2026-06-01,\n",
		Config{Timetable: tt})
	berlin := tt.Location()
	mon10 := time.Date(2026, 2, 2, 10, 0, 0, 0, berlin) // Monday, peak
	mon20 := time.Date(2026, 2, 2, 20, 0, 0, 0, berlin)
	for _, c := range []struct {
		num    string
		at     time.Time
		prefix string
		rate   string
	}{
		{"4412345", mon10, "44", "0.02"},
		{"4712345", mon10, "4", "0.5"},
		{"447912", mon10, "447", "0.05"},
		{"447912", time.Date(2026, 3, 1, 0, 0, 0, 0, berlin).Add(-time.Second), "447", "0.05"},
		{"447912", time.Date(2026, 3, 1, 0, 0, 0, 0, berlin), "447", "0.04"},
		{"4475123", mon10, "4475", "0.07"}, // peak row
		{"4475123", mon20, "447", "0.05"},  // no off-peak row at 4475: shorter prefix
		{"442071", mon10, "44", "0.02"},    // 4420 not yet effective
		{"442071", time.Date(2026, 7, 1, 10, 0, 0, 0, berlin), "4420", "0.01"},
		{"44123456789012345678", mon10, "44", "0.02"}, // longer than 16 digits
	} {
		r, err := d.Lookup(c.num, c.at)
		if err != nil || r.Prefix != c.prefix || r.PerMinute != schema.MustParseMoney(c.rate) {
			t.Errorf("Lookup(%s, %s) = %s %s, %v; want %s %s", c.num, c.at, r.Prefix, r.PerMinute, err, c.prefix, c.rate)
		}
	}
	if _, err := d.Lookup("33123", mon10); !errors.Is(err, ErrNoRate) {
		t.Errorf("no rate: %v", err)
	}
	if _, err := d.Lookup("44-12", mon10); !errors.Is(err, ErrBadNumber) {
		t.Errorf("bad number: %v", err)
	}
	if d.Len() != 6 || d.Prefixes() != 5 {
		t.Errorf("Len %d Prefixes %d", d.Len(), d.Prefixes())
	}
}

func TestTimetable(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skipf("no tzdata: %v", err)
	}
	tt, err := ReadTimetable(strings.NewReader(`band,days,from,to
peak,mon-fri,08:00,19:00
night,fri+sat,22:00,06:00
weekend,sat+sun,00:00,00:00
holiday,2026-12-25,00:00,00:00
`), loc)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at   time.Time
		band string
	}{
		{time.Date(2026, 11, 23, 7, 59, 59, 0, loc), ""}, // Monday
		{time.Date(2026, 11, 23, 8, 0, 0, 0, loc), "peak"},
		{time.Date(2026, 11, 23, 18, 59, 0, 0, loc), "peak"},
		{time.Date(2026, 11, 23, 19, 0, 0, 0, loc), ""},
		{time.Date(2026, 11, 27, 23, 0, 0, 0, loc), "night"},    // Friday night
		{time.Date(2026, 11, 28, 3, 0, 0, 0, loc), "night"},     // Saturday, Friday's night continues
		{time.Date(2026, 11, 28, 12, 0, 0, 0, loc), "weekend"},  // Saturday noon
		{time.Date(2026, 11, 30, 3, 0, 0, 0, loc), ""},          // Monday: Sunday has no night
		{time.Date(2026, 12, 25, 10, 0, 0, 0, loc), "holiday"},  // a Friday, but Christmas
		{time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC), "peak"}, // 10:00 in Berlin
		{time.Date(2026, 11, 23, 18, 30, 0, 0, time.UTC), ""},   // 19:30 in Berlin
	} {
		if b := tt.BandAt(c.at); b != c.band {
			t.Errorf("BandAt(%s) = %q, want %q", c.at, b, c.band)
		}
	}
	for _, bad := range []string{"band,days,from,to\npeak,mon-frx,08:00,19:00\n", "band,days,from,to\npeak,mon,8,19\n", "band,days,from,to\n,mon,08:00,19:00\n", "a,b,c\n"} {
		if _, err := ReadTimetable(strings.NewReader(bad), loc); !errors.Is(err, ErrBadBand) {
			t.Errorf("%q: %v, want ErrBadBand", bad, err)
		}
	}
}

// FuzzReadDeck: any input is accepted or rejected with an error, never a
// panic; an accepted deck finds each of its rates by its own prefix.
func FuzzReadDeck(f *testing.F) {
	f.Add(header + "44,UK,0.01,,60,60,,,,,,\n447,UK mobile,0.05,0.1,30,6,10,,60,0.01,2026-01-01,2027-01-01\n")
	f.Add("prefix,destination,rate,first_increment,next_increment\n1,NANP,0.001,6,6\n")
	f.Add(header + "44,UK,0.01,,60,60,,peak,,,,\n")
	f.Fuzz(func(t *testing.T, in string) {
		d, err := ReadDeck(strings.NewReader(in), Config{})
		if err != nil {
			return
		}
		d.Rates(func(r Rate) bool {
			at := r.EffectiveFrom
			if at.IsZero() {
				at = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
				if !r.EffectiveTo.IsZero() {
					at = r.EffectiveTo.Add(-time.Second)
				}
			}
			got, err := d.Lookup(r.Prefix, at)
			if err != nil || got.Prefix != r.Prefix {
				t.Fatalf("rate %+v: lookup of its prefix = %+v, %v", r, got, err)
			}
			if _, err := d.Quote(r.Prefix, at, 61*time.Second); err != nil && !errors.Is(err, schema.ErrOverflow) {
				t.Fatalf("quote %s: %v", r.Prefix, err)
			}
			return true
		})
	})
}
