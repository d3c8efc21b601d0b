package rating

import (
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/carrier-core/carrier/schema"
)

// Validation errors; a *DeckError wraps them line by line, so
// errors.Is(err, ErrDuplicatePrefix) tells what was wrong with a file.
var (
	ErrBadHeader        = errors.New("bad header")
	ErrBadPrefix        = errors.New("bad prefix")
	ErrNegativePrice    = errors.New("negative price")
	ErrBadPrice         = errors.New("bad price")
	ErrBadIncrement     = errors.New("bad increment")
	ErrBadDate          = errors.New("bad effective date")
	ErrOverlappingDates = errors.New("overlapping effective dates")
	ErrDuplicatePrefix  = errors.New("duplicate prefix")
	ErrBadTier          = errors.New("bad tier")
	ErrEmptyDeck        = errors.New("deck has no rates")
)

// Deck columns. Names are a contract with operators' files: keep them.
const (
	ColPrefix         = "prefix"
	ColDestination    = "destination"
	ColRate           = "rate"
	ColConnectFee     = "connect_fee"
	ColFirstIncrement = "first_increment"
	ColNextIncrement  = "next_increment"
	ColMinDuration    = "min_duration"
	ColBand           = "band"
	ColTierAfter      = "tier_after"
	ColTierRate       = "tier_rate"
	ColEffectiveFrom  = "effective_from"
	ColEffectiveTo    = "effective_to"
)

var (
	allColumns      = []string{ColPrefix, ColDestination, ColRate, ColConnectFee, ColFirstIncrement, ColNextIncrement, ColMinDuration, ColBand, ColTierAfter, ColTierRate, ColEffectiveFrom, ColEffectiveTo}
	requiredColumns = []string{ColPrefix, ColDestination, ColRate, ColFirstIncrement, ColNextIncrement}
)

// Limits a row must respect. Increments and minimums are a day at most:
// a longer one is a typo, not a tariff.
const (
	MaxPrefixDigits = 16
	MaxIncrement    = 86400
	maxErrors       = 100
	chunkRows       = 1 << 15
	openEnd         = math.MaxInt64
)

// LineError is one problem at one line of a deck file.
type LineError struct {
	Line   int
	Column string
	Err    error
}

func (e LineError) Error() string {
	if e.Column == "" {
		return fmt.Sprintf("line %d: %v", e.Line, e.Err)
	}
	return fmt.Sprintf("line %d: %s: %v", e.Line, e.Column, e.Err)
}

func (e LineError) Unwrap() error { return e.Err }

// DeckError rejects a whole file: the first problems found, in line
// order, and how many there were in all.
type DeckError struct {
	Errors []LineError
	Total  int
}

func (e *DeckError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "deck rejected: %d error(s)", e.Total)
	for _, le := range e.Errors {
		b.WriteString("\n  ")
		b.WriteString(le.Error())
	}
	if e.Total > len(e.Errors) {
		fmt.Fprintf(&b, "\n  ... and %d more", e.Total-len(e.Errors))
	}
	return b.String()
}

// Unwrap lets errors.Is find the sentinel of any listed problem.
func (e *DeckError) Unwrap() []error {
	errs := make([]error, len(e.Errors))
	for i, le := range e.Errors {
		errs[i] = le
	}
	return errs
}

func (e *DeckError) add(line int, col string, err error) {
	e.Total++
	if len(e.Errors) < maxErrors {
		e.Errors = append(e.Errors, LineError{Line: line, Column: col, Err: err})
	}
}

// Rounding is how a call's exact charge becomes the amount billed.
type Rounding struct {
	Decimals int                 `json:"decimals"` // 0..9
	Mode     schema.RoundingMode `json:"mode"`
}

// DefaultRounding bills to 4 decimals, rounding up: the precision
// wholesale invoices use, and no call is ever billed below its exact price.
var DefaultRounding = Rounding{Decimals: 4, Mode: schema.RoundUp}

// Config is how a deck file is read.
type Config struct {
	// Timetable defines the bands the band column may name and the zone
	// date-only effective dates are read in. Nil: default band only, UTC.
	Timetable *Timetable
	// Rounding of call totals; nil is DefaultRounding.
	Rounding *Rounding
}

// row is one rate as the index stores it: 80 bytes, strings interned.
// What a lookup reads (key, dates, band, rate) comes first, so that it
// mostly touches one cache line.
type row struct {
	key       uint64       // prefixKey
	from, to  int64        // effective [from, to) in Unix seconds
	rate      schema.Money // per minute
	band      uint8
	first     uint32 // seconds
	next      uint32
	min       uint32
	tierAfter uint32       // seconds; 0 = no tier
	dest      uint32       // index into Deck.dests
	fee       schema.Money // connection fee
	tierRate  schema.Money // per minute from tierAfter on
	line      uint32
}

// prefixKey packs a digit string into a uint64: length in the top byte,
// value below. "44" and "044" differ by length.
func prefixKey(v uint64, n int) uint64 { return uint64(n)<<56 | v }

func parsePrefix(s string) (uint64, error) {
	if s == "" || len(s) > MaxPrefixDigits {
		return 0, fmt.Errorf("%q: want 1 to %d digits: %w", s, MaxPrefixDigits, ErrBadPrefix)
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q: want digits only (no +, spaces or letters): %w", s, ErrBadPrefix)
		}
		v = v*10 + uint64(c-'0')
	}
	return prefixKey(v, len(s)), nil
}

func keyString(k uint64) string {
	n := int(k >> 56)
	v := k & (1<<56 - 1)
	b := make([]byte, n)
	for i := n - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return string(b)
}

// ReadDeck reads and validates a deck CSV (see the package doc for the
// format). It streams: memory is the parsed rows (about 80 bytes each)
// plus the index, never the file. Any invalid row rejects the whole file
// with a *DeckError listing line-numbered problems.
func ReadDeck(r io.Reader, cfg Config) (*Deck, error) {
	tt := cfg.Timetable
	if tt == nil {
		tt = NewTimetable(nil)
	}
	rounding := DefaultRounding
	if cfg.Rounding != nil {
		rounding = *cfg.Rounding
	}
	if rounding.Decimals < 0 || rounding.Decimals > schema.MoneyDecimals {
		return nil, fmt.Errorf("rounding to %d decimals: want 0 to 9", rounding.Decimals)
	}
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	cr.Comment = '#'
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("deck header: %w", err)
	}
	col := map[string]int{}
	for i, h := range head {
		if i == 0 {
			h = strings.TrimPrefix(h, "\ufeff") // spreadsheets save UTF-8 with a BOM
		}
		h = strings.ToLower(strings.TrimSpace(h))
		if !slices.Contains(allColumns, h) {
			return nil, fmt.Errorf("deck header: unknown column %q (columns: %s): %w", h, strings.Join(allColumns, ","), ErrBadHeader)
		}
		if _, dup := col[h]; dup {
			return nil, fmt.Errorf("deck header: column %q twice: %w", h, ErrBadHeader)
		}
		col[h] = i
	}
	for _, c := range requiredColumns {
		if _, ok := col[c]; !ok {
			return nil, fmt.Errorf("deck header: column %q missing (required: %s): %w", c, strings.Join(requiredColumns, ","), ErrBadHeader)
		}
	}
	idx := func(name string) int {
		if i, ok := col[name]; ok {
			return i
		}
		return -1
	}
	p := rowParser{
		tt:      tt,
		cPrefix: idx(ColPrefix), cDest: idx(ColDestination), cRate: idx(ColRate), cFee: idx(ColConnectFee),
		cFirst: idx(ColFirstIncrement), cNext: idx(ColNextIncrement), cMin: idx(ColMinDuration), cBand: idx(ColBand),
		cTierAfter: idx(ColTierAfter), cTierRate: idx(ColTierRate), cFrom: idx(ColEffectiveFrom), cTo: idx(ColEffectiveTo),
		destIdx: map[string]uint32{},
	}
	d := &Deck{tt: tt, rounding: rounding}
	derr := &DeckError{}
	// Rows collect in fixed chunks and are copied once into an exact-size
	// slice: a growing slice would hold up to three times the rows while
	// it doubles.
	var chunks [][]row
	cur := make([]row, 0, chunkRows)
	total := 0
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				derr.add(pe.Line, "", pe.Err)
				if errors.Is(pe.Err, csv.ErrFieldCount) {
					continue
				}
			} else {
				return nil, fmt.Errorf("read deck: %w", err)
			}
			break // quoting errors leave the reader out of step
		}
		line, _ := cr.FieldPos(0)
		rw, ok := p.parse(rec, line, derr)
		if !ok {
			continue
		}
		if len(cur) == cap(cur) {
			chunks = append(chunks, cur)
			cur = make([]row, 0, chunkRows)
		}
		cur = append(cur, rw)
		total++
	}
	chunks = append(chunks, cur)
	d.rows = make([]row, 0, total)
	for i := range chunks {
		d.rows = append(d.rows, chunks[i]...)
		chunks[i] = nil
	}
	d.dests = p.dests
	if derr.Total == 0 && len(d.rows) == 0 {
		return nil, ErrEmptyDeck
	}
	// Sort by prefix, band, start so duplicates and overlaps are
	// neighbours, then check them.
	slices.SortFunc(d.rows, func(a, b row) int {
		if c := cmp.Compare(a.key, b.key); c != 0 {
			return c
		}
		if c := cmp.Compare(a.band, b.band); c != 0 {
			return c
		}
		return cmp.Compare(a.from, b.from)
	})
	for i := 1; i < len(d.rows); i++ {
		a, b := &d.rows[i-1], &d.rows[i]
		if a.key != b.key || a.band != b.band || a.to <= b.from {
			continue
		}
		what := fmt.Errorf("prefix %s band %q also on line %d: %w", keyString(b.key), tt.bands[b.band], a.line, ErrOverlappingDates)
		if a.from == b.from && a.to == b.to {
			what = fmt.Errorf("prefix %s band %q also on line %d: %w", keyString(b.key), tt.bands[b.band], a.line, ErrDuplicatePrefix)
		}
		derr.add(int(max(a.line, b.line)), ColPrefix, what)
	}
	if derr.Total > 0 {
		slices.SortStableFunc(derr.Errors, func(a, b LineError) int { return cmp.Compare(a.Line, b.Line) })
		return nil, derr
	}
	d.buildIndex()
	return d, nil
}

type rowParser struct {
	tt *Timetable

	cPrefix, cDest, cRate, cFee, cFirst, cNext, cMin, cBand, cTierAfter, cTierRate, cFrom, cTo int

	destIdx  map[string]uint32
	dests    []string
	lastDest string // decks list a destination's prefixes together
	lastIdx  uint32
}

func field(rec []string, i int) string {
	if i < 0 || i >= len(rec) {
		return ""
	}
	return strings.TrimSpace(rec[i])
}

func (p *rowParser) parse(rec []string, line int, derr *DeckError) (row, bool) {
	before := derr.Total
	bad := func(col string, err error) { derr.add(line, col, err) }
	rw := row{line: uint32(line)}
	var err error
	if rw.key, err = parsePrefix(field(rec, p.cPrefix)); err != nil {
		bad(ColPrefix, err)
	}
	dest := field(rec, p.cDest)
	if dest == "" {
		bad(ColDestination, errors.New("empty destination name"))
	}
	price := func(col string, i int, required bool) schema.Money {
		s := field(rec, i)
		if s == "" {
			if required {
				bad(col, fmt.Errorf("empty: %w", ErrBadPrice))
			}
			return 0
		}
		m, err := schema.ParseMoney(s)
		switch {
		case err != nil:
			bad(col, fmt.Errorf("%w: %w", ErrBadPrice, err))
		case m < 0:
			bad(col, fmt.Errorf("%s: %w", s, ErrNegativePrice))
		}
		return m
	}
	seconds := func(col string, i int, def, lo uint32) uint32 {
		s := field(rec, i)
		if s == "" {
			if i >= 0 && lo > 0 {
				bad(col, fmt.Errorf("empty: %w", ErrBadIncrement))
			}
			return def
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < int64(lo) || n > MaxIncrement {
			bad(col, fmt.Errorf("%q: want whole seconds from %d to %d: %w", s, lo, MaxIncrement, ErrBadIncrement))
			return def
		}
		return uint32(n)
	}
	rw.rate = price(ColRate, p.cRate, true)
	rw.fee = price(ColConnectFee, p.cFee, false)
	rw.first = seconds(ColFirstIncrement, p.cFirst, 1, 1)
	rw.next = seconds(ColNextIncrement, p.cNext, 1, 1)
	rw.min = seconds(ColMinDuration, p.cMin, 0, 0)
	if b := field(rec, p.cBand); b != "" {
		bi, ok := p.tt.bandIndex(b)
		if !ok || bi == 0 {
			known := "it defines none"
			if len(p.tt.bands) > 1 {
				known = "bands: " + strings.Join(p.tt.bands[1:], ", ")
			}
			bad(ColBand, fmt.Errorf("%q is not in the timetable (%s): %w", b, known, ErrBadBand))
		}
		rw.band = bi
	}
	ta, tr := field(rec, p.cTierAfter), field(rec, p.cTierRate)
	if (ta == "") != (tr == "") {
		bad(ColTierAfter, fmt.Errorf("tier_after and tier_rate go together: %w", ErrBadTier))
	} else if ta != "" {
		n, err := strconv.ParseInt(ta, 10, 64)
		if err != nil || n < 1 || n > math.MaxUint32 {
			bad(ColTierAfter, fmt.Errorf("%q: want whole seconds > 0: %w", ta, ErrBadTier))
		}
		rw.tierAfter = uint32(max(n, 0))
		rw.tierRate = price(ColTierRate, p.cTierRate, true)
	}
	rw.from, rw.to = math.MinInt64, openEnd
	if s := field(rec, p.cFrom); s != "" {
		t, err := parseWhen(s, p.tt.loc)
		if err != nil {
			bad(ColEffectiveFrom, err)
		}
		rw.from = t.Unix()
	}
	if s := field(rec, p.cTo); s != "" {
		t, err := parseWhen(s, p.tt.loc)
		if err != nil {
			bad(ColEffectiveTo, err)
		}
		rw.to = t.Unix()
	}
	if rw.from >= rw.to {
		bad(ColEffectiveTo, fmt.Errorf("effective_to is not after effective_from: %w", ErrBadDate))
	}
	if derr.Total != before {
		return row{}, false
	}
	if dest != p.lastDest || len(p.dests) == 0 {
		i, ok := p.destIdx[dest]
		if !ok {
			i = uint32(len(p.dests))
			p.dests = append(p.dests, dest)
			p.destIdx[dest] = i
		}
		p.lastDest, p.lastIdx = dest, i
	}
	rw.dest = p.lastIdx
	return rw, true
}

// parseWhen reads RFC 3339 ("2026-03-01T00:00:00Z") or a date
// ("2026-03-01", midnight in the timetable's zone).
func parseWhen(s string, loc *time.Location) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, loc); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want YYYY-MM-DD or RFC 3339: %w", s, ErrBadDate)
}
