package rating

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/carrier-core/carrier/schema"
)

// bigDeck is a generated deck CSV of a million distinct prefixes of 3 to
// 9 digits under 50,000 destination names, with 60/60, 30/6 and 1/1
// rates; built once per test binary.
var bigDeck = sync.OnceValues(func() ([]byte, numberSets) {
	const n = 1_000_000
	rng := rand.New(rand.NewPCG(1, 2))
	seen := make(map[string]struct{}, n)
	var buf bytes.Buffer
	buf.WriteString("prefix,destination,rate,connect_fee,first_increment,next_increment,min_duration\n")
	incs := []string{"60,60", "30,6", "1,1"}
	prefixes := make([]string, 0, n)
	for len(prefixes) < n {
		l := 3 + rng.IntN(7)
		p := strconv.FormatUint(rng.Uint64N(pow10u(l)-pow10u(l-1))+pow10u(l-1), 10)
		if _, dup := seen[p]; dup {
			continue
		}
		seen[p] = struct{}{}
		prefixes = append(prefixes, p)
		fmt.Fprintf(&buf, "%s,Destination %d,0.%04d,0.%02d,%s,%d\n", p, rng.IntN(50_000), rng.IntN(10_000), rng.IntN(3), incs[rng.IntN(3)], rng.IntN(2)*30)
	}
	// Numbers to look up: a prefix followed by random digits to 12
	// digits, the prefix drawn uniformly (every lookup a cache miss) or
	// Zipf-skewed like real traffic (a few destinations carry most calls).
	number := func(p string) string {
		for len(p) < 12 {
			p += strconv.Itoa(rng.IntN(10))
		}
		return p
	}
	var ns numberSets
	ns.uniform = make([]string, 1<<16)
	ns.skewed = make([]string, 1<<16)
	zipf := rand.NewZipf(rand.New(rand.NewPCG(3, 4)), 1.1, 1, n-1)
	for i := range ns.uniform {
		ns.uniform[i] = number(prefixes[rng.IntN(n)])
		ns.skewed[i] = number(prefixes[zipf.Uint64()])
	}
	return buf.Bytes(), ns
})

type numberSets struct{ uniform, skewed []string }

// perSecond is b's operations per second of its timed loop; integer
// arithmetic, since this package keeps floats out entirely.
func perSecond(b *testing.B) int64 {
	return int64(b.N) * int64(time.Second) / max(int64(b.Elapsed()), 1)
}

func pow10u(n int) uint64 {
	p := uint64(1)
	for range n {
		p *= 10
	}
	return p
}

func loadBig(b *testing.B) (*Deck, []string) {
	b.Helper()
	data, ns := bigDeck()
	d, err := ReadDeck(bytes.NewReader(data), Config{})
	if err != nil {
		b.Fatal(err)
	}
	return d, ns.uniform
}

// BenchmarkReadDeck1M loads the million-prefix deck: parse, validate,
// sort and index. bytes/prefix is the heap the loaded deck keeps.
func BenchmarkReadDeck1M(b *testing.B) {
	data, _ := bigDeck()
	b.SetBytes(int64(len(data)))
	var d *Deck
	for b.Loop() {
		var err error
		if d, err = ReadDeck(bytes.NewReader(data), Config{}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	var before, after runtime.MemStats
	d = nil
	runtime.GC()
	runtime.ReadMemStats(&before)
	// Sample the live heap while loading to see the peak: streaming means
	// the peak stays near what the deck keeps, whatever the file size.
	stop, peakc := make(chan struct{}), make(chan uint64)
	go func() {
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-stop:
				peakc <- peak
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	d, _ = ReadDeck(bytes.NewReader(data), Config{})
	close(stop)
	peak := <-peakc
	runtime.GC()
	runtime.ReadMemStats(&after)
	kept := after.HeapAlloc - before.HeapAlloc
	b.Logf("%d prefixes from %d MB of CSV: deck keeps %d MB (%d bytes/prefix: rows, index, filter, names); heap peak while loading %d MB above the start",
		d.Prefixes(), len(data)>>20, kept>>20, kept/uint64(d.Prefixes()), (peak-min(peak, before.HeapAlloc))>>20)
	runtime.KeepAlive(d)
}

// BenchmarkLookup is longest-prefix lookups of 12-digit numbers on one
// core against the million-prefix deck.
func BenchmarkLookup(b *testing.B) {
	d, numbers := loadBig(b)
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	i := 0
	for b.Loop() {
		if _, _, err := d.LookupPrefix(numbers[i&(len(numbers)-1)], at); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.Logf("%d lookups/s on one goroutine", perSecond(b))
}

// BenchmarkLookupSkewed is BenchmarkLookup with Zipf-distributed
// destinations (s=1.1), closer to real traffic.
func BenchmarkLookupSkewed(b *testing.B) {
	d, _ := loadBig(b)
	_, ns := bigDeck()
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	i := 0
	for b.Loop() {
		if _, _, err := d.LookupPrefix(ns.skewed[i&(len(ns.skewed)-1)], at); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.Logf("%d lookups/s on one goroutine", perSecond(b))
}

// BenchmarkLookupSmallDeck is lookups on a 10,000-prefix deck (a retail
// plan), whose index stays in the CPU caches: the cost of the code itself.
func BenchmarkLookupSmallDeck(b *testing.B) {
	data, _ := bigDeck()
	cut := 0
	for range 10_001 { // header and 10,000 rows
		cut += bytes.IndexByte(data[cut:], '\n') + 1
	}
	d, err := ReadDeck(bytes.NewReader(data[:cut]), Config{})
	if err != nil {
		b.Fatal(err)
	}
	numbers := make([]string, 0, 1<<12)
	d.Rates(func(r Rate) bool {
		numbers = append(numbers, r.Prefix+"0123456789"[:12-min(12, len(r.Prefix))])
		return len(numbers) < cap(numbers)
	})
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	i := 0
	for b.Loop() {
		if _, _, err := d.LookupPrefix(numbers[i&(len(numbers)-1)], at); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.Logf("%d lookups/s on one goroutine", perSecond(b))
}

// BenchmarkLookupRate is Lookup, which also builds the Rate an operator sees.
func BenchmarkLookupRate(b *testing.B) {
	d, numbers := loadBig(b)
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	i := 0
	for b.Loop() {
		if _, err := d.Lookup(numbers[i&(len(numbers)-1)], at); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.Logf("%d lookups/s on one goroutine", perSecond(b))
}

// BenchmarkQuote prices 3-minute calls on the million-prefix deck.
func BenchmarkQuote(b *testing.B) {
	d, numbers := loadBig(b)
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	i := 0
	for b.Loop() {
		if _, err := d.Quote(numbers[i&(len(numbers)-1)], at, 183*time.Second); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.Logf("%d quotes/s on one goroutine", perSecond(b))
}

// BenchmarkQuoteBands prices a 16-hour call across three band changes
// (the golden deck's peak/off-peak prefix).
func BenchmarkQuoteBands(b *testing.B) {
	d := goldenDeck(b, DefaultRounding)
	at := time.Date(2026, 11, 23, 17, 0, 0, 0, d.Timetable().Location())
	for b.Loop() {
		if _, err := d.Quote("49701", at, 16*time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthorize is the prepaid admission question on the call path.
func BenchmarkAuthorize(b *testing.B) {
	d, numbers := loadBig(b)
	at := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	amount := schema.MustParseMoney("5.00")
	i := 0
	for b.Loop() {
		if _, err := d.Authorize(numbers[i&(len(numbers)-1)], at, amount, 4*time.Hour); err != nil && !errors.Is(err, ErrInsufficientCredit) {
			b.Fatal(err)
		}
		i++
	}
	b.Logf("%d authorizations/s on one goroutine", perSecond(b))
}
