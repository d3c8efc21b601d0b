package rating

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/carrier-core/carrier/schema"
)

// ErrInsufficientCredit: the amount does not buy the call's first billed
// increment (nor its connection fee).
var ErrInsufficientCredit = errors.New("insufficient credit")

// Segment is a stretch of billed seconds priced at one rate.
type Segment struct {
	Offset    int64        `json:"offset_s"`       // first billed second, counted from answer
	Seconds   int64        `json:"seconds"`        // billed seconds in the segment
	Band      string       `json:"band,omitempty"` // band in force ("" default)
	Prefix    string       `json:"prefix"`         // prefix whose rate priced it
	Tier      bool         `json:"tier,omitempty"` // priced at the rate's tier rate
	PerMinute schema.Money `json:"rate"`
	Charge    schema.Money `json:"charge"` // PerMinute·Seconds/60, rounded up to the nano-unit
}

// Quote is the exact price of one call and how it was reached.
type Quote struct {
	Number      string        `json:"number"`
	Prefix      string        `json:"prefix"` // prefix matched at answer
	Destination string        `json:"destination"`
	Band        string        `json:"band,omitempty"` // band in force at answer
	Answer      time.Time     `json:"answer"`
	Duration    time.Duration `json:"duration_ns"`
	Seconds     int64         `json:"seconds"`  // Duration rounded up to whole seconds
	Billed      int64         `json:"billed_s"` // Seconds after minimum and increments
	ConnectFee  schema.Money  `json:"connect_fee"`
	First       int           `json:"first_increment"` // increments and minimum of the rate at answer
	Next        int           `json:"next_increment"`
	MinDuration int           `json:"min_duration"`
	Segments    []Segment     `json:"segments"`
	Exact       schema.Money  `json:"exact"` // ConnectFee + Σ Segment.Charge
	Total       schema.Money  `json:"total"` // Exact rounded per Rounding: what is billed
	Rounding    Rounding      `json:"rounding"`
}

// BilledSeconds applies a rate's increments and minimum to a call's
// whole seconds: 0 stays 0; otherwise the first increment is billed
// whole, the rest rounded up to next increments, and the result raised
// to the minimum duration.
func BilledSeconds(seconds int64, first, next, minimum int) int64 {
	if seconds <= 0 {
		return 0
	}
	b := int64(first)
	if seconds > b {
		n := int64(next)
		b += (seconds - b + n - 1) / n * n
	}
	return max(b, int64(minimum))
}

// wholeSeconds rounds a duration up: a started second is a billed second.
func wholeSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return s
}

// maxBilled is the longest billed time a quote walks: offsets from the
// answer time must fit in a time.Duration (292 years).
const maxBilled = int64(math.MaxInt64 / int64(time.Second))

// Quote prices a call to number answered at answer that lasted dur. See
// the package documentation for the rules; every step is in the Quote.
func (d *Deck) Quote(number string, answer time.Time, dur time.Duration) (Quote, error) {
	if dur < 0 {
		return Quote{}, fmt.Errorf("duration %s is negative", dur)
	}
	nk, err := parseNumber(number)
	if err != nil {
		return Quote{}, err
	}
	start, ok := d.find(&nk, d.tt.bandAt(answer), answer.Unix())
	if !ok {
		return Quote{}, fmt.Errorf("%s at %s: %w", number, answer.UTC().Format(time.RFC3339), ErrNoRate)
	}
	q := Quote{
		Number: number, Answer: answer, Duration: dur, Seconds: wholeSeconds(dur),
		Rounding: d.rounding,
	}
	q.Billed = BilledSeconds(q.Seconds, int(start.first), int(start.next), int(start.min))
	if err := d.price(&q, &nk, start, q.Billed); err != nil {
		return Quote{}, err
	}
	return q, nil
}

// price fills q's rate fields, segments and amounts for billed seconds.
func (d *Deck) price(q *Quote, nk *numberKeys, start *row, billed int64) error {
	q.Prefix, q.Destination, q.Band = keyString(start.key), d.dests[start.dest], d.tt.bands[start.band]
	q.ConnectFee, q.First, q.Next, q.MinDuration = start.fee, int(start.first), int(start.next), int(start.min)
	q.Segments = q.Segments[:0]
	if billed > maxBilled {
		return fmt.Errorf("%s: %d billed seconds is longer than %d: %w", q.Number, billed, maxBilled, schema.ErrOverflow)
	}
	eff := q.Answer.Unix()
	exact := start.fee
	for k := int64(0); k < billed; {
		at := q.Answer.Add(time.Duration(k) * time.Second)
		band := d.tt.bandAt(at)
		r, ok := d.find(nk, band, eff)
		if !ok {
			return fmt.Errorf("%s band %q at %s: %w", q.Number, d.tt.bands[band], at.UTC().Format(time.RFC3339), ErrNoRate)
		}
		end := billed
		if nc := d.tt.nextChange(at); !nc.IsZero() {
			// Billed second k belongs to the band in force at its start.
			if e := int64((nc.Sub(q.Answer) + time.Second - 1) / time.Second); e < end {
				end = max(e, k+1)
			}
		}
		for k < end {
			segEnd, perMin, tier := end, r.rate, false
			if r.tierAfter > 0 {
				if k >= int64(r.tierAfter) {
					perMin, tier = r.tierRate, true
				} else {
					segEnd = min(end, int64(r.tierAfter))
				}
			}
			if err := q.addSeconds(d, r, band, tier, perMin, k, segEnd-k); err != nil {
				return err
			}
			k = segEnd
		}
	}
	for _, s := range q.Segments {
		var err error
		if exact, err = exact.Add(s.Charge); err != nil {
			return fmt.Errorf("price of %s for %d s: %w", q.Number, billed, err)
		}
	}
	q.Exact = exact
	total, err := exact.Round(d.rounding.Decimals, d.rounding.Mode)
	if err != nil {
		return fmt.Errorf("round %s: %w", exact, err)
	}
	q.Total = total
	return nil
}

// addSeconds appends secs billed seconds, merging with the last segment
// when nothing changed (a timetable edge that did not change the band).
func (q *Quote) addSeconds(d *Deck, r *row, band uint8, tier bool, perMin schema.Money, offset, secs int64) error {
	bandName, prefix := d.tt.bands[band], keyString(r.key)
	if n := len(q.Segments); n > 0 {
		last := &q.Segments[n-1]
		if last.Band == bandName && last.Prefix == prefix && last.Tier == tier && last.PerMinute == perMin {
			last.Seconds += secs
			c, err := chargeSeconds(perMin, last.Seconds)
			if err != nil {
				return fmt.Errorf("price of %s for %d s: %w", q.Number, last.Seconds, err)
			}
			last.Charge = c
			return nil
		}
	}
	c, err := chargeSeconds(perMin, secs)
	if err != nil {
		return fmt.Errorf("price of %s for %d s: %w", q.Number, secs, err)
	}
	q.Segments = append(q.Segments, Segment{
		Offset: offset, Seconds: secs, Band: bandName, Prefix: prefix, Tier: tier, PerMinute: perMin, Charge: c,
	})
	return nil
}

// Authorization is what an amount buys on a call.
type Authorization struct {
	Rate    Rate         // the rate at answer
	Seconds int64        // longest billed duration the amount pays for, on the increment grid
	Cost    schema.Money // billed total of a call of Seconds
}

// Authorize says how long a call to number starting at at may last for
// amount: the longest duration on the rate's increment grid (first,
// first+next, first+2·next, ..., never below the minimum) whose billed
// total, connection fee included, is at most amount. A call that ends
// earlier costs no more. limit caps the answer (a free destination would
// otherwise buy for ever); 0 means 24 hours. ErrInsufficientCredit when
// the amount does not buy the first increment.
func (d *Deck) Authorize(number string, at time.Time, amount schema.Money, limit time.Duration) (Authorization, error) {
	if limit <= 0 {
		limit = 24 * time.Hour
	}
	nk, err := parseNumber(number)
	if err != nil {
		return Authorization{}, err
	}
	start, ok := d.find(&nk, d.tt.bandAt(at), at.Unix())
	if !ok {
		return Authorization{}, fmt.Errorf("%s at %s: %w", number, at.UTC().Format(time.RFC3339), ErrNoRate)
	}
	a := Authorization{Rate: d.rate(start)}
	first, next, minimum := int64(start.first), int64(start.next), int64(start.min)
	grid := func(n int64) int64 { return max(first+n*next, minimum) }
	q := Quote{Number: number, Answer: at, Rounding: d.rounding}
	cost := func(billed int64) (schema.Money, error) {
		if err := d.price(&q, &nk, start, billed); err != nil {
			return 0, err
		}
		return q.Total, nil
	}
	capSec := int64(limit / time.Second)
	if capSec < first {
		capSec = first
	}
	// Largest n with grid(n) <= capSec, then binary search the largest
	// affordable n in [0, hi]: cost never falls as seconds grow.
	hi := max((capSec-first)/next, 0)
	c0, err := cost(grid(0))
	if err != nil {
		return Authorization{}, err
	}
	if c0 > amount {
		return a, fmt.Errorf("%s: %s does not pay the first %d s (%s): %w", number, amount, grid(0), c0, ErrInsufficientCredit)
	}
	lo := int64(0)
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		c, err := cost(grid(mid))
		if err != nil {
			return Authorization{}, err
		}
		if c <= amount {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	a.Seconds = grid(lo)
	if a.Cost, err = cost(a.Seconds); err != nil {
		return Authorization{}, err
	}
	return a, nil
}
