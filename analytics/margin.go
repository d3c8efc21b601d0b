package analytics

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/carrier-core/carrier/schema"
)

// MarginRow is one group of a margin report: the calls of one key in one
// currency (amounts of different currencies are never added up). It
// holds sums, exact, so rows add up; the ratios are methods.
type MarginRow struct {
	Key      string `json:"key"`
	Currency string `json:"currency"`
	// Calls counts CDRs, Answered those answered, Rated those priced
	// (schema.StatusRated); a call not rated (yet) adds no money.
	Calls    uint64 `json:"calls"`
	Answered uint64 `json:"answered"`
	Rated    uint64 `json:"rated"`
	// DurationMs and BillableSec sum the answered calls' durations.
	DurationMs  int64 `json:"duration_ms"`
	BillableSec int64 `json:"billable_sec"`
	// Revenue sums what the customers pay (sell), Cost what the suppliers
	// are owed (buy), Margin the calls' margins, each in the latest
	// rating of each call.
	Revenue schema.Money `json:"revenue"`
	Cost    schema.Money `json:"cost"`
	Margin  schema.Money `json:"margin"`
}

// MarginPercent is the margin as a percentage of revenue; 0 without
// revenue. It is for display: the sums are the exact figures.
func (r MarginRow) MarginPercent() float64 {
	if r.Revenue == 0 {
		return 0
	}
	return 100 * float64(r.Margin) / float64(r.Revenue)
}

// Minutes is the answered duration in minutes.
func (r MarginRow) Minutes() float64 { return float64(r.DurationMs) / 60000 }

// marginKeyExpr is the grouping expression of a margin report over table
// cdrs (hourly false) or cdr_hourly. A rated call's destination is its
// sell leg's destination (its name, else its prefix); a call not rated
// has the first digits of its callee, as in Report.
func (q ReportQuery) marginKeyExpr(hourly bool) (string, []any, error) {
	key, args, err := q.keyExpr()
	if err != nil || q.By != ByDestination {
		return key, args, err
	}
	if hourly {
		// cdr_hourly keeps rated_destination already resolved to the
		// name or the prefix, '' for a call not rated.
		return "if(rated_destination != '', rated_destination, substring(destination, 1, ?))", args, nil
	}
	return "multiIf(rating_status != ?, " + key + ", rated_destination != '', rated_destination, rated_prefix != '', rated_prefix, " + key + ")",
		append(append([]any{string(schema.StatusRated)}, args...), args...), nil
}

// MarginReport computes q in ClickHouse over the CDRs, each in its latest
// version (and so with its latest price), and returns a row per group and
// currency in the order of their keys.
func MarginReport(ctx context.Context, conn driver.Conn, database string, q ReportQuery) ([]MarginRow, error) {
	if err := checkDatabase(database); err != nil {
		return nil, err
	}
	key, args, err := q.marginKeyExpr(false)
	if err != nil {
		return nil, err
	}
	args = append(args, string(schema.Answered), string(schema.StatusRated))
	where, wargs := q.Filter.where()
	args = append(args, wargs...)
	sql := "SELECT " + key + " AS k, currency, count(), countIf(disposition = ?), countIf(rating_status = ?), " +
		"sum(duration_ms), sum(billable_sec), sum(sell_nano), sum(buy_nano), sum(margin_nano) FROM " +
		database + "." + TableCDRs + " FINAL" + where + " GROUP BY k, currency ORDER BY k, currency"
	return scanMargin(queryContext(ctx), conn, q, sql, args, false)
}

// HourlyMarginReport is MarginReport computed from the hourly aggregates,
// with the limits of HourlyReport.
func HourlyMarginReport(ctx context.Context, conn driver.Conn, database string, q ReportQuery) ([]MarginRow, error) {
	if err := checkDatabase(database); err != nil {
		return nil, err
	}
	key, args, err := q.marginKeyExpr(true)
	if err != nil {
		return nil, err
	}
	where, wargs, err := q.hourlyWhere()
	if err != nil {
		return nil, err
	}
	args = append(args, wargs...)
	sql := "SELECT " + key + " AS k, currency, sum(calls), sum(answered), sum(rated), " +
		"sum(duration_ms), sum(billable_sec), sum(sell_nano), sum(buy_nano), sum(margin_nano) FROM " +
		database + "." + TableHourly + where + " GROUP BY k, currency HAVING sum(calls) != 0 ORDER BY k, currency"
	return scanMargin(ctx, conn, q, sql, args, true)
}

func scanMargin(ctx context.Context, conn driver.Conn, q ReportQuery, sql string, args []any, hourly bool) ([]MarginRow, error) {
	what := "margin report by " + string(q.By)
	if hourly {
		what = "hourly " + what
	}
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []MarginRow
	for rows.Next() {
		var r MarginRow
		var sell, buy, margin int64
		if hourly {
			// The aggregates are signed sums (Int64).
			var calls, answered, rated int64
			err = rows.Scan(&r.Key, &r.Currency, &calls, &answered, &rated, &r.DurationMs, &r.BillableSec, &sell, &buy, &margin)
			r.Calls, r.Answered, r.Rated = uint64(calls), uint64(answered), uint64(rated)
		} else {
			err = rows.Scan(&r.Key, &r.Currency, &r.Calls, &r.Answered, &r.Rated, &r.DurationMs, &r.BillableSec, &sell, &buy, &margin)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		r.Revenue, r.Cost, r.Margin = schema.Money(sell), schema.Money(buy), schema.Money(margin)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}
