package rating

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/carrier-core/carrier/schema"
)

var (
	// ErrBadNumber: the dialled number is not digits (an optional leading + aside).
	ErrBadNumber = errors.New("bad number")
	// ErrNoRate: no prefix of the number has a rate in force at that time.
	ErrNoRate = errors.New("no rate")
)

// Deck is a validated rate deck with its longest-prefix index. It is
// immutable once read, so any number of goroutines may use it; a new
// version is a new Deck swapped in whole.
type Deck struct {
	tt       *Timetable
	rounding Rounding
	rows     []row    // sorted by prefix, band, effective_from
	dests    []string // interned destination names
	// index maps a prefixKey to its first row; lengths says which
	// prefix lengths exist, so a lookup probes only those.
	index   prefixTable
	lengths uint32
	// filter is a one-word-per-key Bloom filter over the index keys
	// (~16 bits a prefix, in cache): most candidate lengths of a number
	// are not prefixes, and the filter answers that without the cache
	// miss a map probe into a million entries costs.
	filter    []uint64
	filterLog uint8
}

func (d *Deck) buildIndex() {
	n := 0
	for i := range d.rows {
		if i == 0 || d.rows[i-1].key != d.rows[i].key {
			n++
		}
	}
	d.index = newPrefixTable(n)
	words := 1
	for words*64 < n*16 {
		words *= 2
		d.filterLog++
	}
	d.filter = make([]uint64, words)
	for i := range d.rows {
		k := d.rows[i].key
		if i > 0 && d.rows[i-1].key == k {
			continue
		}
		d.index.put(k, uint32(i))
		d.lengths |= 1 << (k >> 56)
		w, m := d.filterSlot(k)
		d.filter[w] |= m
	}
}

// prefixTable is an open-addressing hash table from prefixKey to row,
// at most half full: one 16-byte slot, usually one cache line, per
// probe, where a Go map takes a directory, a control word and a slot.
// Key 0 marks an empty slot (a real key has its length in the top byte).
type prefixTable struct {
	slots []prefixSlot
	shift uint8
	n     int
}

type prefixSlot struct {
	key uint64
	row uint32
}

func newPrefixTable(n int) prefixTable {
	size, shift := 2, uint8(63)
	for size < 2*n {
		size *= 2
		shift--
	}
	return prefixTable{slots: make([]prefixSlot, size), shift: shift}
}

func (t *prefixTable) home(k uint64) uint64 { return (k * 0x9e3779b97f4a7c15) >> t.shift }

func (t *prefixTable) put(k uint64, row uint32) {
	mask := uint64(len(t.slots) - 1)
	for i := t.home(k); ; i = (i + 1) & mask {
		if t.slots[i].key == 0 {
			t.slots[i] = prefixSlot{key: k, row: row}
			t.n++
			return
		}
	}
}

func (t *prefixTable) get(k uint64) (uint32, bool) {
	mask := uint64(len(t.slots) - 1)
	for i := t.home(k); ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.key == k {
			return s.row, true
		}
		if s.key == 0 {
			return 0, false
		}
	}
}

// filterSlot is the word and the three bits of key k in the filter.
func (d *Deck) filterSlot(k uint64) (int, uint64) {
	h := k * 0x9e3779b97f4a7c15
	h ^= h >> 29
	h *= 0xbf58476d1ce4e5b9
	w := 0
	if d.filterLog > 0 {
		w = int(h >> (64 - d.filterLog))
	}
	return w, 1<<(h&63) | 1<<(h>>6&63) | 1<<(h>>12&63)
}

func (d *Deck) mayHave(k uint64) bool {
	w, m := d.filterSlot(k)
	return d.filter[w]&m == m
}

// Len is the number of rates (rows) in the deck.
func (d *Deck) Len() int { return len(d.rows) }

// Prefixes is the number of distinct prefixes.
func (d *Deck) Prefixes() int { return d.index.n }

// Timetable is the deck's band timetable.
func (d *Deck) Timetable() *Timetable { return d.tt }

// Rounding is how the deck bills a call's exact charge.
func (d *Deck) Rounding() Rounding { return d.rounding }

// Rate is one deck row as an operator reads it.
type Rate struct {
	Prefix         string       `json:"prefix"`
	Destination    string       `json:"destination"`
	Band           string       `json:"band,omitempty"` // "" is the default band
	PerMinute      schema.Money `json:"rate"`
	ConnectFee     schema.Money `json:"connect_fee"`
	FirstIncrement int          `json:"first_increment"` // seconds
	NextIncrement  int          `json:"next_increment"`
	MinDuration    int          `json:"min_duration"`
	TierAfter      int          `json:"tier_after,omitempty"` // seconds; 0 when the rate has no tier
	TierRate       schema.Money `json:"tier_rate,omitzero"`   // per minute from TierAfter on
	EffectiveFrom  time.Time    `json:"effective_from,omitzero"`
	EffectiveTo    time.Time    `json:"effective_to,omitzero"` // zero: open-ended
	Line           int          `json:"line"`                  // line in the imported file
}

func (d *Deck) rate(r *row) Rate {
	rt := Rate{
		Prefix: keyString(r.key), Destination: d.dests[r.dest], Band: d.tt.bands[r.band],
		PerMinute: r.rate, ConnectFee: r.fee, FirstIncrement: int(r.first), NextIncrement: int(r.next),
		MinDuration: int(r.min), TierAfter: int(r.tierAfter), TierRate: r.tierRate, Line: int(r.line),
	}
	if r.from != math.MinInt64 {
		rt.EffectiveFrom = time.Unix(r.from, 0).UTC()
	}
	if r.to != openEnd {
		rt.EffectiveTo = time.Unix(r.to, 0).UTC()
	}
	return rt
}

// Rates calls fn for every rate in prefix order until fn returns false.
func (d *Deck) Rates(fn func(Rate) bool) {
	for i := range d.rows {
		if !fn(d.rate(&d.rows[i])) {
			return
		}
	}
}

// numberKeys holds the prefixKey of every leading substring of a number.
type numberKeys struct {
	n    int
	keys [MaxPrefixDigits + 1]uint64
}

func parseNumber(number string) (numberKeys, error) {
	var nk numberKeys
	s := number
	if s != "" && s[0] == '+' {
		s = s[1:]
	}
	if s == "" {
		return nk, fmt.Errorf("%q: %w", number, ErrBadNumber)
	}
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return nk, fmt.Errorf("%q: want digits: %w", number, ErrBadNumber)
		}
		if i < MaxPrefixDigits {
			v = v*10 + uint64(c-'0')
			nk.keys[i+1] = prefixKey(v, i+1)
			nk.n = i + 1
		}
	}
	return nk, nil
}

// find returns the row of the longest prefix that has a rate in force
// at eff for band (or, failing that, for the default band).
func (d *Deck) find(nk *numberKeys, band uint8, eff int64) (*row, bool) {
	for l := nk.n; l > 0; l-- {
		if d.lengths&(1<<l) == 0 || !d.mayHave(nk.keys[l]) {
			continue
		}
		start, ok := d.index.get(nk.keys[l])
		if !ok {
			continue
		}
		var def *row
		for i := int(start); i < len(d.rows) && d.rows[i].key == nk.keys[l]; i++ {
			r := &d.rows[i]
			if eff < r.from || eff >= r.to {
				continue
			}
			if r.band == band {
				return r, true
			}
			if r.band == 0 {
				def = r
			}
		}
		if def != nil {
			return def, true
		}
	}
	return nil, false
}

// Lookup returns the rate a call to number answered at at would start
// with: the longest prefix with a rate effective at at, for the band in
// force at at (or the prefix's default band).
func (d *Deck) Lookup(number string, at time.Time) (Rate, error) {
	nk, err := parseNumber(number)
	if err != nil {
		return Rate{}, err
	}
	r, ok := d.find(&nk, d.tt.bandAt(at), at.Unix())
	if !ok {
		return Rate{}, fmt.Errorf("%s at %s: %w", number, at.UTC().Format(time.RFC3339), ErrNoRate)
	}
	return d.rate(r), nil
}

// LookupPrefix is the allocation-free core of Lookup for hot paths: the
// matched prefix length and per-minute rate.
func (d *Deck) LookupPrefix(number string, at time.Time) (prefixLen int, perMinute schema.Money, err error) {
	nk, err := parseNumber(number)
	if err != nil {
		return 0, 0, err
	}
	r, ok := d.find(&nk, d.tt.bandAt(at), at.Unix())
	if !ok {
		return 0, 0, ErrNoRate
	}
	return int(r.key >> 56), r.rate, nil
}
