package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/analytics"
)

func newReportCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Traffic, ASR and margin reports computed by ClickHouse over the CDRs",
		Long: `Reports group the CDRs of a time range (by INVITE time) that match the
filters of cdr list, each in its latest version, by destination, account,
supplier, gateway, class (the dial plan's label for the call) or direction
(outbound, inbound, onnet).

A call is one CDR, however many gateways it tried; it is accounted on the
gateway and supplier that answered it, or else on the last one tried.
The destination is the first --digits digits of the callee's E.164
number; in the margin report, a rated call's destination is the one its
sell rate matched (the deck's name for it, else the prefix).

The margin report sums each call's latest price (rerates replace earlier
ones): revenue (sell), cost (buy) and margin, exact, one row per group and
currency. A call not rated (yet) counts in CALLS but adds no money; RATED
counts those priced.

--hourly reads the hourly aggregates ClickHouse keeps as CDRs are written
(each CDR counted once, in its latest version) instead of the CDRs; they
are not kept by class or direction.`,
	}
	traffic := func(header []string, cells func(analytics.ReportRow) []string) func(string, []analytics.ReportRow, bool) table {
		return func(by string, rows []analytics.ReportRow, total bool) table {
			return reportTable(by, header, cells, rows, total)
		}
	}
	cmd.AddCommand(
		newReportKindCmd(a, "traffic", "Calls, answered calls and minutes", analytics.Report, analytics.HourlyReport,
			traffic([]string{"CALLS", "ANSWERED", "MINUTES", "BILLABLE MIN"},
				func(r analytics.ReportRow) []string {
					return []string{u64(r.Calls), u64(r.Answered), minutes(r.DurationMs), minutes(r.BillableSec * 1000)}
				})),
		newReportKindCmd(a, "asr", "Answer-seizure ratio, average call duration and post-dial delay", analytics.Report, analytics.HourlyReport,
			traffic([]string{"CALLS", "ANSWERED", "ASR %", "ACD", "PDD"},
				func(r analytics.ReportRow) []string {
					return []string{u64(r.Calls), u64(r.Answered), strconv.FormatFloat(100*r.ASR(), 'f', 1, 64),
						r.ACD().Round(time.Second).String(), r.PDD().Round(100 * time.Millisecond).String()}
				})),
		newReportKindCmd(a, "margin", "Revenue, cost and margin of the rated calls", analytics.MarginReport, analytics.HourlyMarginReport, marginTable),
	)
	return cmd
}

// reportFunc computes a report of rows R.
type reportFunc[R any] func(context.Context, driver.Conn, string, analytics.ReportQuery) ([]R, error)

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

func minutes(ms int64) string { return strconv.FormatFloat(float64(ms)/60000, 'f', 1, 64) }

// reportJSON is a report row for scripts: the sums, and the ratios worked
// out from them.
type reportJSON struct {
	analytics.ReportRow
	ASR        float64 `json:"asr"`
	ACDSeconds float64 `json:"acd_s"`
	PDDSeconds float64 `json:"pdd_s"`
	Minutes    float64 `json:"minutes"`
}

// newReportKindCmd is a report command: plain computes it over the CDRs,
// hourly over the hourly aggregates, layout lays its rows out (with a
// total when total is set, for people).
func newReportKindCmd[R any](a *app, kind, short string, plain, hourlyReport reportFunc[R], layout func(by string, rows []R, total bool) table) *cobra.Command {
	var (
		ch     clickhouseSettings
		flt    cdrFilterFlags
		by     string
		digits int
		hourly bool
		format string
	)
	cmd := &cobra.Command{
		Use:   kind,
		Short: short,
		Example: fmt.Sprintf(`  carrier report %[1]s --by destination --from 2026-11-01 --to 2026-12-01
  carrier report %[1]s --by supplier --since 1h --callee 44 --output csv
  carrier report %[1]s --by account --from 2026-01-01 --to 2026-12-01 --hourly
  carrier report %[1]s --by class --since 24h --direction outbound`, kind),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := flt.filter(time.Now())
			if err != nil {
				return err
			}
			q := analytics.ReportQuery{Filter: f, By: analytics.ReportBy(by), Digits: digits}
			conn, err := analytics.Open(cmd.Context(), ch.addr, ch.database)
			if err != nil {
				return err
			}
			defer conn.Close()
			report := plain
			if hourly {
				// The aggregates hold whole hours: a range from "now"
				// (the default) covers the hours started in it.
				f.From, f.To = f.From.Truncate(time.Hour), f.To.Truncate(time.Hour)
				if !f.From.Before(f.To) {
					return fmt.Errorf("--hourly: the range holds no whole hour (%s to %s)", f.From.Format(time.RFC3339), f.To.Format(time.RFC3339))
				}
				q.Filter = f
				report = hourlyReport
			}
			rows, err := report(cmd.Context(), conn, ch.database, q)
			if errors.Is(err, analytics.ErrBadReport) {
				return fmt.Errorf("--by %s --digits %d --hourly=%t: %w", by, digits, hourly, err)
			}
			if err != nil {
				return err
			}
			return writeTable(a.out, format, layout(by, rows, format == "table" || format == ""))
		},
	}
	ch.addFlags(cmd, "127.0.0.1:9000")
	flt.addFlags(cmd)
	cmd.Flags().StringVar(&by, "by", string(analytics.ByDestination), "group by destination, account, supplier, gateway, class or direction")
	cmd.Flags().IntVar(&digits, "digits", analytics.DefaultDestinationDigits, "--by destination: digits of the callee's E.164 number that make a destination")
	cmd.Flags().BoolVar(&hourly, "hourly", false, "read the hourly aggregates instead of the CDRs: faster over months; the range is cut to whole hours (UTC), no other filters, at most 4 destination digits")
	addOutputFlag(cmd, &format)
	return cmd
}

// reportTable lays out a report; a table for people ends with the total
// of all groups, which scripts (CSV, JSON) can add up themselves.
func reportTable(by string, header []string, cells func(analytics.ReportRow) []string, rows []analytics.ReportRow, total bool) table {
	t := table{header: append([]string{byHeader(by)}, header...)}
	recs := []reportJSON{}
	var sum analytics.ReportRow
	for _, r := range rows {
		key := r.Key
		if key == "" {
			key = "(none)"
		}
		t.rows = append(t.rows, append([]string{key}, cells(r)...))
		recs = append(recs, reportJSON{ReportRow: r, ASR: r.ASR(), ACDSeconds: r.ACD().Seconds(), PDDSeconds: r.PDD().Seconds(), Minutes: r.Minutes()})
		sum.Calls += r.Calls
		sum.Answered += r.Answered
		sum.DurationMs += r.DurationMs
		sum.BillableSec += r.BillableSec
		sum.PDDMs += r.PDDMs
		sum.PDDCalls += r.PDDCalls
	}
	if total && len(rows) > 1 {
		t.rows = append(t.rows, append([]string{"TOTAL"}, cells(sum)...))
	}
	t.records = recs
	return t
}

func byHeader(by string) string {
	switch analytics.ReportBy(by) {
	case analytics.ByDestination:
		return "DESTINATION"
	case analytics.ByAccount:
		return "ACCOUNT"
	case analytics.BySupplier:
		return "SUPPLIER"
	case analytics.ByClass:
		return "CLASS"
	case analytics.ByDirection:
		return "DIRECTION"
	default:
		return "GATEWAY"
	}
}

// marginJSON is a margin report row for scripts: the exact sums (amounts
// as decimal strings), and the ratios worked out from them.
type marginJSON struct {
	analytics.MarginRow
	Minutes       float64 `json:"minutes"`
	MarginPercent float64 `json:"margin_pct"`
}

// marginTable lays out a margin report; a table for people ends with the
// total of each currency.
func marginTable(by string, rows []analytics.MarginRow, total bool) table {
	t := table{header: []string{byHeader(by), "CURRENCY", "CALLS", "ANSWERED", "RATED", "MINUTES", "REVENUE", "COST", "MARGIN", "MARGIN %"}}
	cells := func(key string, r analytics.MarginRow) []string {
		return []string{key, orDash(r.Currency), u64(r.Calls), u64(r.Answered), u64(r.Rated), minutes(r.DurationMs),
			r.Revenue.String(), r.Cost.String(), r.Margin.String(), strconv.FormatFloat(r.MarginPercent(), 'f', 1, 64)}
	}
	recs := []marginJSON{}
	sums := map[string]*analytics.MarginRow{}
	var currencies []string
	for _, r := range rows {
		key := r.Key
		if key == "" {
			key = "(none)"
		}
		t.rows = append(t.rows, cells(key, r))
		recs = append(recs, marginJSON{MarginRow: r, Minutes: r.Minutes(), MarginPercent: r.MarginPercent()})
		sum := sums[r.Currency]
		if sum == nil {
			sum = &analytics.MarginRow{Currency: r.Currency}
			sums[r.Currency] = sum
			currencies = append(currencies, r.Currency)
		}
		sum.Calls += r.Calls
		sum.Answered += r.Answered
		sum.Rated += r.Rated
		sum.DurationMs += r.DurationMs
		sum.BillableSec += r.BillableSec
		sum.Revenue += r.Revenue
		sum.Cost += r.Cost
		sum.Margin += r.Margin
	}
	if total && len(rows) > 1 {
		slices.Sort(currencies)
		for _, c := range currencies {
			t.rows = append(t.rows, cells("TOTAL", *sums[c]))
		}
	}
	t.records = recs
	return t
}
