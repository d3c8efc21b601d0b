package analytics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/carrier-core/carrier/schema"
)

// ReportBy is what a traffic report groups calls by.
type ReportBy string

const (
	// ByDestination groups by the first digits of the callee's E.164
	// number (ReportQuery.Digits). Until rated CDRs carry the matched
	// destination, a fixed-length prefix is the destination: two digits
	// separate most countries (1 and 7 stand with their next digit).
	ByDestination ReportBy = "destination"
	ByAccount     ReportBy = "account"
	BySupplier    ReportBy = "supplier"
	ByGateway     ReportBy = "gateway"
	// ByClass groups by the dial plan's class of the call ('' when the
	// plan gave none), ByDirection by outbound, inbound and onnet.
	ByClass     ReportBy = "class"
	ByDirection ReportBy = "direction"
)

// DefaultDestinationDigits is the destination prefix length when
// ReportQuery.Digits is 0.
const DefaultDestinationDigits = 2

// ErrBadReport: a report grouping or prefix length this package does not
// know.
var ErrBadReport = errors.New("invalid report")

// ReportQuery is a traffic report over the CDRs that match Filter (its
// Limit does not apply), grouped by By.
type ReportQuery struct {
	Filter CDRFilter
	By     ReportBy
	// Digits is the destination prefix length for ByDestination (1 to
	// 15, default DefaultDestinationDigits).
	Digits int
}

// ReportRow is one group of a traffic report. It holds sums, so that rows
// can be added up exactly; the ratios are methods.
type ReportRow struct {
	Key string `json:"key"`
	// Calls counts CDRs (call attempts from the customer's side, however
	// many gateways each tried); Answered those answered.
	Calls    uint64 `json:"calls"`
	Answered uint64 `json:"answered"`
	// DurationMs and BillableSec sum the answered calls' durations.
	DurationMs  int64 `json:"duration_ms"`
	BillableSec int64 `json:"billable_sec"`
	// PDDMs sums the post-dial delay of the PDDCalls calls that got a
	// provisional response; calls that never rang have no PDD.
	PDDMs    int64  `json:"pdd_ms"`
	PDDCalls uint64 `json:"pdd_calls"`
}

// ASR is the answer-seizure ratio, answered calls over calls, 0 to 1.
func (r ReportRow) ASR() float64 {
	if r.Calls == 0 {
		return 0
	}
	return float64(r.Answered) / float64(r.Calls)
}

// ACD is the average duration of an answered call.
func (r ReportRow) ACD() time.Duration {
	if r.Answered == 0 {
		return 0
	}
	return time.Duration(r.DurationMs/int64(r.Answered)) * time.Millisecond
}

// PDD is the average post-dial delay of the calls that rang.
func (r ReportRow) PDD() time.Duration {
	if r.PDDCalls == 0 {
		return 0
	}
	return time.Duration(r.PDDMs/int64(r.PDDCalls)) * time.Millisecond
}

// Minutes is the answered duration in minutes.
func (r ReportRow) Minutes() float64 { return float64(r.DurationMs) / 60000 }

// keyExpr is the grouping expression of by; the destination length is
// bound as a parameter.
func (q ReportQuery) keyExpr() (string, []any, error) {
	switch q.By {
	case ByDestination:
		d := q.Digits
		if d == 0 {
			d = DefaultDestinationDigits
		}
		if d < 1 || d > 15 {
			return "", nil, fmt.Errorf("destination digits %d (1 to 15): %w", q.Digits, ErrBadReport)
		}
		return "substring(callee_e164, 1, ?)", []any{d}, nil
	case ByAccount:
		return "account", nil, nil
	case BySupplier:
		return "supplier", nil, nil
	case ByGateway:
		return "gateway", nil, nil
	case ByClass:
		return "class", nil, nil
	case ByDirection:
		return "direction", nil, nil
	default:
		return "", nil, fmt.Errorf("grouping %q (destination, account, supplier, gateway, class or direction): %w", q.By, ErrBadReport)
	}
}

// Report computes q in ClickHouse over the CDRs, each in its latest
// version, and returns a row per group in the order of their keys.
func Report(ctx context.Context, conn driver.Conn, database string, q ReportQuery) ([]ReportRow, error) {
	if err := checkDatabase(database); err != nil {
		return nil, err
	}
	key, args, err := q.keyExpr()
	if err != nil {
		return nil, err
	}
	args = append(args, string(schema.Answered))
	where, wargs := q.Filter.where()
	args = append(args, wargs...)
	sql := "SELECT " + key + " AS k, count(), countIf(disposition = ?), sum(duration_ms), sum(billable_sec), " +
		"sumIf(pdd_ms, pdd_ms > 0), countIf(pdd_ms > 0) FROM " + database + "." + TableCDRs + " FINAL" + where +
		" GROUP BY k ORDER BY k"
	rows, err := conn.Query(queryContext(ctx), sql, args...)
	if err != nil {
		return nil, fmt.Errorf("report by %s: %w", q.By, err)
	}
	defer rows.Close()
	var out []ReportRow
	for rows.Next() {
		var r ReportRow
		if err := rows.Scan(&r.Key, &r.Calls, &r.Answered, &r.DurationMs, &r.BillableSec, &r.PDDMs, &r.PDDCalls); err != nil {
			return nil, fmt.Errorf("report by %s: %w", q.By, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("report by %s: %w", q.By, err)
	}
	return out, nil
}
