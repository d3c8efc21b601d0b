package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/schema"
)

func newCDRCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cdr",
		Short: "Query CDRs in ClickHouse, or rebuild them from the log",
	}
	cmd.AddCommand(newCDRListCmd(a), newCDRShowCmd(a), newCDRExportCmd(a), newCDRRebuildCmd(a))
	return cmd
}

func newCDRListCmd(a *app) *cobra.Command {
	var (
		ch     clickhouseSettings
		flt    cdrFilterFlags
		limit  int
		format string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List CDRs in a time range (by INVITE time), newest last",
		Long: `Lists the CDRs whose INVITE falls in the range and that match every filter
given, each once in its latest version (rated, rerated). Rated CDRs show
their latest price: what the customer pays (SELL), what the supplier is
owed (BUY) and the MARGIN, in the account's CURRENCY; "-" until rated.`,
		Example: `  carrier cdr list --since 1h
  carrier cdr list --from 2026-11-01 --to 2026-11-02 --account acme --output csv
  carrier cdr list --callee 44 --disposition busy,no-answer --gateway gw-b1
  carrier cdr list --supplier sup-alpha --min-duration 10m
  carrier cdr list --direction inbound --did +442079460000
  carrier cdr list --class premium --direction outbound,onnet`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := flt.filter(time.Now())
			if err != nil {
				return err
			}
			if limit < 0 {
				return fmt.Errorf("--limit %d is negative (0 lists all)", limit)
			}
			f.Limit = limit
			conn, err := analytics.Open(cmd.Context(), ch.addr, ch.database)
			if err != nil {
				return err
			}
			defer conn.Close()
			cdrs, err := analytics.ListCDRRecords(cmd.Context(), conn, ch.database, f)
			if err != nil {
				return err
			}
			return writeTable(a.out, format, cdrTable(cdrs))
		},
	}
	ch.addFlags(cmd, "127.0.0.1:9000")
	flt.addFlags(cmd)
	cmd.Flags().IntVar(&limit, "limit", 1000, "at most this many CDRs (0: all; for many, cdr export streams)")
	addOutputFlag(cmd, &format)
	return cmd
}

// timeRange resolves --from/--to/--since into a half-open range.
func timeRange(from, to string, since time.Duration, now time.Time) (time.Time, time.Time, error) {
	end := now
	if to != "" {
		t, err := parseTime(to)
		if err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("--to: %w", err)
		}
		end = t
	}
	start := end.Add(-since)
	if from != "" {
		t, err := parseTime(from)
		if err != nil {
			return time.Time{}, time.Time{}, fmt.Errorf("--from: %w", err)
		}
		start = t
	}
	if !start.Before(end) {
		return time.Time{}, time.Time{}, fmt.Errorf("empty time range: from %s is not before to %s", start.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	return start, end, nil
}

func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time: use RFC 3339 (2026-11-23T10:00:00Z) or a date (2026-11-23)", s)
}

// cdrListJSON is a CDR in cdr list's JSON: the CDR's own fields, and its
// rating once rated.
type cdrListJSON struct {
	schema.CDR
	Rating *analytics.Rating `json:"rating,omitempty"`
}

// ratingOf is a CDR's rating for JSON: nil until it is rated.
func ratingOf(r analytics.CDRRecord) *analytics.Rating {
	if r.Rating.Status == "" {
		return nil
	}
	return &r.Rating
}

// priceCells are the CURRENCY, SELL, BUY and MARGIN cells of a CDR.
func priceCells(r analytics.Rating) []string {
	if !r.Rated() {
		return []string{orDash(r.Currency), "-", "-", "-"}
	}
	return []string{orDash(r.Currency), r.Sell.String(), r.Buy.String(), r.Margin.String()}
}

func cdrTable(recs []analytics.CDRRecord) table {
	t := table{
		header: []string{"INVITE (UTC)", "CALL-ID", "ACCOUNT", "CALLER", "CALLEE", "DISPOSITION", "CODE", "DURATION", "BILLSEC", "HANGUP",
			"CURRENCY", "SELL", "BUY", "MARGIN"},
	}
	out := []cdrListJSON{}
	for _, r := range recs {
		c := r.CDR
		out = append(out, cdrListJSON{CDR: c, Rating: ratingOf(r)})
		t.rows = append(t.rows, append([]string{
			schema.FromMillis(c.InviteAt).Format("2006-01-02 15:04:05.000"),
			c.CallID,
			c.Account,
			c.Caller,
			c.Callee,
			string(c.Disposition),
			strconv.Itoa(c.Status),
			(time.Duration(c.DurationMs) * time.Millisecond).String(),
			strconv.FormatInt(c.BillableSec, 10),
			c.HangupBy,
		}, priceCells(r.Rating)...))
	}
	t.records = out
	return t
}
