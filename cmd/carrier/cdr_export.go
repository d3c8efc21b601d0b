package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/schema"
)

func newCDRExportCmd(a *app) *cobra.Command {
	var (
		ch   clickhouseSettings
		flt  cdrFilterFlags
		file string
	)
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Write the CDRs that match the filters as CSV, streaming",
		Long: `Writes every CDR that matches the filters (those of cdr list, without a
limit) as CSV with a header line, in INVITE order. Rows are written as
ClickHouse sends them, so an export of millions of CDRs runs in constant
memory. Times are RFC 3339 UTC with milliseconds, durations milliseconds.
After the version come the latest rating's columns: amounts are exact
decimals in the currency, empty until the CDR is rated. The last ones
say who placed the call and what kind it was: subscriber, class (the
dial plan's), did (an inbound call's number of ours) and direction
(outbound, inbound or onnet).`,
		Example: `  carrier cdr export --from 2026-11-01 --to 2026-12-01 --account acme > acme-2026-11.csv
  carrier cdr export --since 24h --disposition answered --file answered.csv`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := flt.filter(time.Now())
			if err != nil {
				return err
			}
			conn, err := analytics.Open(cmd.Context(), ch.addr, ch.database)
			if err != nil {
				return err
			}
			defer conn.Close()
			if file == "" {
				_, err := exportCDRs(cmd, conn, ch.database, f, a.out)
				return err
			}
			out, err := os.Create(file)
			if err != nil {
				return fmt.Errorf("--file: %w", err)
			}
			n, err := exportCDRs(cmd, conn, ch.database, f, out)
			if cerr := out.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("--file: %w", cerr)
			}
			if err != nil {
				return err
			}
			a.log.Info("cdrs exported", "file", file, "cdrs", n)
			return nil
		},
	}
	ch.addFlags(cmd, "127.0.0.1:9000")
	flt.addFlags(cmd)
	cmd.Flags().StringVar(&file, "file", "", "write to this file instead of standard output")
	return cmd
}

var exportHeader = []string{
	"id", "call_id", "from_tag", "to_tag", "account", "trunk", "src", "transport",
	"caller", "callee", "caller_e164", "callee_e164",
	"disposition", "status", "reason", "q850",
	"invite_at", "provisional_at", "answer_at", "end_at",
	"setup_ms", "pdd_ms", "duration_ms", "billable_sec",
	"gateway", "supplier", "attempts", "early_media", "hangup_by", "hangup_reason", "node", "version",
	"rating_status", "rating_reason", "rating_run", "currency", "sell", "buy", "margin",
	"rated_destination", "rated_prefix", "sell_plan", "buy_plan",
	"subscriber", "class", "did", "direction",
}

func exportTime(ms int64) string {
	if ms <= 0 {
		return ""
	}
	return schema.FromMillis(ms).Format("2006-01-02T15:04:05.000Z07:00")
}

// exportMoney is an exact amount of a rated CDR, empty until it is rated.
func exportMoney(r analytics.Rating, m schema.Money) string {
	if !r.Rated() {
		return ""
	}
	return m.String()
}

// exportRun is the rating's run, empty until the CDR is rated.
func exportRun(r analytics.Rating) string {
	if r.Status == "" {
		return ""
	}
	return strconv.FormatUint(r.Run, 10)
}

// exportCDRs streams the CDRs of f to w as CSV and returns how many it
// wrote.
func exportCDRs(cmd *cobra.Command, conn driver.Conn, database string, f analytics.CDRFilter, w io.Writer) (int, error) {
	cw := csv.NewWriter(w)
	if err := cw.Write(exportHeader); err != nil {
		return 0, err
	}
	n := 0
	err := analytics.EachCDR(cmd.Context(), conn, database, f, func(r analytics.CDRRecord) error {
		c := r.CDR
		n++
		// csv.Writer buffers and writes through as its buffer fills, and
		// a write error sticks: it is checked here to stop the query when
		// the reader went away.
		if err := cw.Write([]string{
			c.ID, c.CallID, c.FromTag, c.ToTag, c.Account, c.Trunk, c.Source, c.Transport,
			c.Caller, c.Callee, c.CallerE164, c.CalleeE164,
			string(c.Disposition), strconv.Itoa(c.Status), c.Reason, strconv.Itoa(c.Q850),
			exportTime(c.InviteAt), exportTime(c.ProvisionalAt), exportTime(c.AnswerAt), exportTime(c.EndAt),
			strconv.FormatInt(c.SetupMs, 10), strconv.FormatInt(c.PDDMs, 10), strconv.FormatInt(c.DurationMs, 10), strconv.FormatInt(c.BillableSec, 10),
			c.Gateway, c.Supplier, strconv.Itoa(len(c.Attempts)), strconv.FormatBool(c.EarlyMedia), c.HangupBy, c.HangupReason, c.Node,
			strconv.FormatUint(r.Version, 10),
			string(r.Rating.Status), r.Rating.Reason, exportRun(r.Rating), r.Rating.Currency,
			exportMoney(r.Rating, r.Rating.Sell), exportMoney(r.Rating, r.Rating.Buy), exportMoney(r.Rating, r.Rating.Margin),
			r.Rating.Destination, r.Rating.Prefix, r.Rating.SellPlan, r.Rating.BuyPlan,
			c.Subscriber, c.Class, c.DID, string(c.Direction),
		}); err != nil {
			return fmt.Errorf("write csv: %w", err)
		}
		return nil
	})
	cw.Flush()
	if err != nil {
		return n, err
	}
	if err := cw.Error(); err != nil {
		return n, fmt.Errorf("write csv: %w", err)
	}
	return n, nil
}
