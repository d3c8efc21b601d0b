package analytics

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/carrier-core/carrier/schema"
)

// Tables of the hourly aggregates (migration 0006_cdr_hourly).
const (
	tableChanges = "cdr_changes"
	tableCounted = "cdr_counted"
	TableHourly  = "cdr_hourly"
)

// HourlyDestinationDigits is how many digits of the callee's E.164 number
// the hourly aggregates keep as the destination.
const HourlyDestinationDigits = 4

// lookupChunk bounds the ids in one IN list, well under the server's
// max_query_size (256 KiB) with 36-character ids.
const lookupChunk = 1000

// counted is what a CDR contributes to cdr_hourly.
type counted struct {
	id                      string
	version                 uint64
	hourAt                  uint64
	account, destination    string
	supplier, gateway       string
	answered                uint8
	durationMs, billableSec int64
	pddMs                   int64
	rang                    uint8
	// The money of a rated CDR (0008_cdr_hourly_rated): its currency,
	// sell leg's destination, and the amounts; a CDR not rated yet
	// counts '' and 0.
	currency, ratedDestination string
	rated                      uint8
	sell, buy, margin          int64
}

func countedOf(rec CDRRecord) counted {
	c := rec.CDR
	k := counted{
		id: c.ID, version: rec.Version,
		hourAt:  ms(c.InviteAt) / 3600000 * 3600000,
		account: c.Account, destination: c.CalleeE164[:min(len(c.CalleeE164), HourlyDestinationDigits)],
		supplier: c.Supplier, gateway: c.Gateway,
		durationMs: c.DurationMs, billableSec: c.BillableSec,
	}
	if c.Disposition == schema.Answered {
		k.answered = 1
	}
	if c.PDDMs > 0 {
		k.pddMs, k.rang = c.PDDMs, 1
	}
	if r := rec.Rating; r.Status != "" {
		k.currency = r.Currency
		k.sell, k.buy, k.margin = int64(r.Sell), int64(r.Buy), int64(r.Margin)
		if r.Rated() {
			k.rated, k.ratedDestination = 1, r.destination()
		}
	}
	return k
}

// same reports whether a and b count the same, versions aside.
func (a counted) same(b counted) bool {
	a.version, b.version = 0, 0
	return a == b
}

// fields lists counted's columns in cdr_counted; cdr_changes has sign first.
func (k *counted) fields() []field {
	return []field{
		{"id", &k.id}, {"version", &k.version}, {"hour_at", &k.hourAt},
		{"account", &k.account}, {"destination", &k.destination}, {"supplier", &k.supplier}, {"gateway", &k.gateway},
		{"answered", &k.answered}, {"duration_ms", &k.durationMs}, {"billable_sec", &k.billableSec},
		{"pdd_ms", &k.pddMs}, {"rang", &k.rang},
		{"currency", &k.currency}, {"rated_destination", &k.ratedDestination}, {"rated", &k.rated},
		{"sell_nano", &k.sell}, {"buy_nano", &k.buy}, {"margin_nano", &k.margin},
	}
}

type change struct {
	sign int8
	counted
}

// countCDRs brings cdr_hourly up to date with recs, which are already in
// cdrs. Each CDR is compared with what it was last counted as: a new one
// adds +1, a newer version (or the same version written again with other
// values, which the cdrs table also keeps) replaces the old count with a
// -1 and a +1, and anything else (a redelivery, a late older version)
// changes nothing. It runs after the cdrs insert so that a failure here
// leaves the batch unacked and redelivered: cdr_counted, not cdrs, says
// what is counted, so the retry counts exactly what is missing.
//
// Two writers counting the same CDR at the same moment could both count
// it; the sink is one durable consumer, whose redeliveries come after its
// ack wait, long after a batch's inserts.
func countCDRs(ctx context.Context, conn driver.Conn, database string, recs []CDRRecord) error {
	// The batch's own last word per id, as the table will keep it.
	latest := map[string]counted{}
	var order []string // ids in the batch's order, for repeatable changes
	for _, r := range recs {
		k := countedOf(r)
		prev, seen := latest[k.id]
		if !seen {
			order = append(order, k.id)
		}
		if !seen || k.version >= prev.version {
			latest[k.id] = k
		}
	}
	ks := make([]counted, len(order))
	for i, id := range order {
		ks[i] = latest[id]
	}
	before, err := countedNow(ctx, conn, database, ks)
	if err != nil {
		return err
	}
	var changes []change
	for _, id := range order {
		k := latest[id]
		old, ok := before[id]
		switch {
		case !ok:
			changes = append(changes, change{1, k})
		case k.version < old.version || (k.version == old.version && k.same(old)):
			continue
		default:
			changes = append(changes, change{-1, old}, change{1, k})
		}
	}
	if len(changes) == 0 {
		return nil
	}
	var row change
	fields := append([]field{{"sign", &row.sign}}, row.counted.fields()...)
	return insert(ctx, conn, database, tableChanges, fields, len(changes), func(i int) { row = changes[i] })
}

// countedNow reads what the CDRs ks are counted as. The lookups go in
// chunks of CDRs sorted by hour, each bounded by its hours, so that a
// chunk reads the granules of a few hours rather than the whole table.
func countedNow(ctx context.Context, conn driver.Conn, database string, ks []counted) (map[string]counted, error) {
	ks = slices.Clone(ks)
	slices.SortFunc(ks, func(a, b counted) int {
		if a.hourAt != b.hourAt {
			return cmp.Compare(a.hourAt, b.hourAt)
		}
		return strings.Compare(a.id, b.id)
	})
	out := map[string]counted{}
	for len(ks) > 0 {
		chunk := ks[:min(len(ks), lookupChunk)]
		ks = ks[len(chunk):]
		marks := strings.TrimSuffix(strings.Repeat("?, ", len(chunk)), ", ")
		args := []any{chunk[0].hourAt, chunk[len(chunk)-1].hourAt}
		for _, k := range chunk {
			args = append(args, k.id)
		}
		var k counted
		fields := k.fields()
		q := "SELECT " + columnList(fields) + " FROM " + database + "." + tableCounted +
			" FINAL WHERE hour_at >= ? AND hour_at <= ? AND id IN (" + marks + ")"
		rows, err := conn.Query(queryContext(ctx), q, args...)
		if err != nil {
			return nil, fmt.Errorf("read %s.%s: %w", database, tableCounted, err)
		}
		targets := scanTargets(fields)
		for rows.Next() {
			k = counted{}
			if err := rows.Scan(targets...); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read %s.%s: %w", database, tableCounted, err)
			}
			out[k.id] = k
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s.%s: %w", database, tableCounted, err)
		}
	}
	return out, nil
}

// HourlyReport is Report computed from the hourly aggregates instead of
// the CDRs: far less to read over months, at the price of hour-aligned
// ranges, no filters and destinations of at most HourlyDestinationDigits
// digits.
func HourlyReport(ctx context.Context, conn driver.Conn, database string, q ReportQuery) ([]ReportRow, error) {
	if err := checkDatabase(database); err != nil {
		return nil, err
	}
	key, args, err := q.keyExpr()
	if err != nil {
		return nil, err
	}
	if q.By == ByDestination {
		key = strings.Replace(key, "callee_e164", "destination", 1)
	}
	where, wargs, err := q.hourlyWhere()
	if err != nil {
		return nil, err
	}
	args = append(args, wargs...)
	sql := "SELECT " + key + " AS k, sum(calls), sum(answered), sum(duration_ms), sum(billable_sec), sum(pdd_ms), sum(pdd_calls) FROM " +
		database + "." + TableHourly + where + " GROUP BY k HAVING sum(calls) != 0 ORDER BY k"
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("hourly report by %s: %w", q.By, err)
	}
	defer rows.Close()
	var out []ReportRow
	for rows.Next() {
		var r ReportRow
		var calls, answered, pddCalls int64
		if err := rows.Scan(&r.Key, &calls, &answered, &r.DurationMs, &r.BillableSec, &r.PDDMs, &pddCalls); err != nil {
			return nil, fmt.Errorf("hourly report by %s: %w", q.By, err)
		}
		r.Calls, r.Answered, r.PDDCalls = uint64(calls), uint64(answered), uint64(pddCalls)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("hourly report by %s: %w", q.By, err)
	}
	return out, nil
}

// hourlyWhere checks that q suits the hourly aggregates and returns the
// WHERE clause of its time range.
func (q ReportQuery) hourlyWhere() (string, []any, error) {
	f := q.Filter
	if f.Account != "" || f.Trunk != "" || f.CallerPrefix != "" || f.CalleePrefix != "" || len(f.Dispositions) > 0 ||
		f.Gateway != "" || f.Supplier != "" || f.Class != "" || f.DID != "" || len(f.Directions) > 0 || f.MinDuration != 0 {
		return "", nil, fmt.Errorf("hourly aggregates take a time range only, no other filter: %w", ErrBadReport)
	}
	if !f.From.Equal(f.From.Truncate(time.Hour)) || !f.To.Equal(f.To.Truncate(time.Hour)) {
		return "", nil, fmt.Errorf("hourly aggregates need a range of whole hours: %w", ErrBadReport)
	}
	if q.By == ByClass || q.By == ByDirection {
		// The aggregates' key is hour, account, destination, supplier,
		// gateway and the money's currency and destination.
		return "", nil, fmt.Errorf("hourly aggregates are not kept by %s; report from the CDRs: %w", q.By, ErrBadReport)
	}
	if q.By == ByDestination && q.Digits > HourlyDestinationDigits {
		return "", nil, fmt.Errorf("hourly aggregates keep %d destination digits, not %d: %w", HourlyDestinationDigits, q.Digits, ErrBadReport)
	}
	var conds []string
	var args []any
	if !f.From.IsZero() {
		conds = append(conds, "hour_at >= ?")
		args = append(args, ms(f.From.UnixMilli()))
	}
	if !f.To.IsZero() {
		conds = append(conds, "hour_at < ?")
		args = append(args, ms(f.To.UnixMilli()))
	}
	if len(conds) == 0 {
		return "", nil, nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args, nil
}
