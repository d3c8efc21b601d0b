package rating

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/carrier-core/carrier/schema"
)

// ErrBadBand: a timetable row or a band name is not valid.
var ErrBadBand = errors.New("bad time band")

// Timetable says which time band is in force at an instant: weekday and
// time-of-day periods and dated (holiday) periods, read in a named time
// zone so that "peak 08:00-19:00" follows the local clock across DST.
//
// On a date that has dated periods (a holiday) only those apply; on any
// other date the weekday periods apply, first match wins. An instant no
// period covers has the default band "", which is also the band of deck
// rows that leave the band column empty.
type Timetable struct {
	loc     *time.Location
	bands   []string // index 0 is the default band ""
	weekly  []period
	holiday map[civilDate][]period
}

type civilDate struct {
	y int
	m time.Month
	d int
}

// period covers [from, to) minutes of the local day on the days in mask;
// from >= to wraps past midnight: [from, 24:00) and [00:00, to).
type period struct {
	band     uint8
	days     uint8 // bit per time.Weekday; unused for dated periods
	from, to int   // minutes after local midnight
}

// NewTimetable returns a timetable with only the default band, in loc
// (UTC when nil).
func NewTimetable(loc *time.Location) *Timetable {
	if loc == nil {
		loc = time.UTC
	}
	return &Timetable{loc: loc, bands: []string{""}, holiday: map[civilDate][]period{}}
}

// Location is the zone the periods are read in.
func (t *Timetable) Location() *time.Location { return t.loc }

// Bands lists the band names, the default "" first.
func (t *Timetable) Bands() []string { return append([]string(nil), t.bands...) }

func (t *Timetable) bandIndex(name string) (uint8, bool) {
	for i, b := range t.bands {
		if b == name {
			return uint8(i), true
		}
	}
	return 0, false
}

func (t *Timetable) addBand(name string) (uint8, error) {
	if i, ok := t.bandIndex(name); ok {
		return i, nil
	}
	if len(t.bands) == 255 {
		return 0, fmt.Errorf("more than 254 bands: %w", ErrBadBand)
	}
	t.bands = append(t.bands, name)
	return uint8(len(t.bands) - 1), nil
}

// Add adds a period: band is in force on days ("mon-fri", "sat+sun",
// "mon+wed-fri", "all", or a date "2026-12-25" that makes that date a
// holiday) from from to to ("08:00", "19:00"; "00:00"-"00:00" is the whole
// day; from later than to wraps past midnight).
func (t *Timetable) Add(band, days, from, to string) error {
	if band == "" {
		return fmt.Errorf("empty band name: %w", ErrBadBand)
	}
	f, err := parseClock(from)
	if err != nil {
		return err
	}
	e, err := parseClock(to)
	if err != nil {
		return err
	}
	if f == e {
		f, e = 0, 24*60
	}
	bi, err := t.addBand(band)
	if err != nil {
		return err
	}
	if d, err := time.Parse(time.DateOnly, days); err == nil {
		k := civilDate{d.Year(), d.Month(), d.Day()}
		t.holiday[k] = append(t.holiday[k], period{band: bi, from: f, to: e})
		return nil
	}
	mask, err := parseDays(days)
	if err != nil {
		return err
	}
	t.weekly = append(t.weekly, period{band: bi, days: mask, from: f, to: e})
	return nil
}

// ReadTimetable reads periods from CSV with the header band,days,from,to
// (see Add for the values) in zone loc.
func ReadTimetable(r io.Reader, loc *time.Location) (*Timetable, error) {
	t := NewTimetable(loc)
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("timetable header: %w", err)
	}
	want := []string{"band", "days", "from", "to"}
	if len(head) != len(want) || !equalFold(head, want) {
		return nil, fmt.Errorf("timetable header %q: want %q: %w", head, want, ErrBadBand)
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return t, nil
		}
		if err != nil {
			return nil, fmt.Errorf("timetable: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if err := t.Add(rec[0], rec[1], rec[2], rec[3]); err != nil {
			return nil, fmt.Errorf("timetable line %d: %w", line, err)
		}
	}
}

func equalFold(a, b []string) bool {
	for i := range a {
		if !strings.EqualFold(strings.TrimSpace(a[i]), b[i]) {
			return false
		}
	}
	return true
}

func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || hh == 24 && mm != 0 {
		return 0, fmt.Errorf("time of day %q: want HH:MM: %w", s, ErrBadBand)
	}
	return hh*60 + mm, nil
}

func parseDays(s string) (uint8, error) {
	mask, err := schema.ParseWeekdays(s)
	if err != nil {
		return 0, fmt.Errorf("days %q: want mon-fri, sat+sun, all or a date YYYY-MM-DD: %w", s, ErrBadBand)
	}
	return mask, nil
}

// BandAt returns the band in force at instant at.
func (t *Timetable) BandAt(at time.Time) string { return t.bands[t.bandAt(at)] }

func (t *Timetable) bandAt(at time.Time) uint8 {
	if len(t.weekly) == 0 && len(t.holiday) == 0 {
		return 0
	}
	l := at.In(t.loc)
	minute := l.Hour()*60 + l.Minute()
	y, m, d := l.Date()
	if ps, ok := t.holiday[civilDate{y, m, d}]; ok {
		for _, p := range ps {
			if p.covers(minute) {
				return p.band
			}
		}
		return 0
	}
	wd := l.Weekday()
	prev := (wd + 6) % 7
	for _, p := range t.weekly {
		// A wrapping period's morning part belongs to the previous
		// day's entry: "fri 22:00-06:00" covers Saturday 03:00.
		if p.from < p.to {
			if p.days&(1<<wd) != 0 && minute >= p.from && minute < p.to {
				return p.band
			}
			continue
		}
		if p.days&(1<<wd) != 0 && minute >= p.from || p.days&(1<<prev) != 0 && minute < p.to {
			return p.band
		}
	}
	return 0
}

func (p period) covers(minute int) bool {
	if p.from < p.to {
		return minute >= p.from && minute < p.to
	}
	return minute >= p.from || minute < p.to
}

// nextChange returns the first instant after at where the band may
// change: the next period edge or local midnight, whichever is first.
// Bands are constant between consecutive candidates, so walking them
// finds every boundary of a call.
func (t *Timetable) nextChange(at time.Time) time.Time {
	l := at.In(t.loc)
	y, m, d := l.Date()
	next := time.Date(y, m, d+1, 0, 0, 0, 0, t.loc)
	if len(t.weekly) == 0 && len(t.holiday) == 0 {
		return time.Time{} // one band for ever
	}
	consider := func(minute int) {
		if minute <= 0 || minute >= 24*60 {
			return
		}
		c := time.Date(y, m, d, minute/60, minute%60, 0, 0, t.loc)
		if c.After(at) && c.Before(next) {
			next = c
		}
	}
	for _, p := range t.weekly {
		consider(p.from)
		consider(p.to)
	}
	for _, p := range t.holiday[civilDate{y, m, d}] {
		consider(p.from)
		consider(p.to)
	}
	return next
}
