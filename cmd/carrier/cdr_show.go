package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/schema"
)

func newCDRShowCmd(a *app) *cobra.Command {
	var (
		ch     clickhouseSettings
		format string
	)
	cmd := &cobra.Command{
		Use:   "show CALL-ID",
		Short: "Show a call: its CDR, the gateways tried and its SIP transactions",
		Long: `Shows the CDR of a Call-ID in its latest version (a call forked upstream has
one per From tag), every attempt it made on a gateway, and the SIP
transactions the proxy logged for it, in the order of their requests.
A call still in progress has transactions and no CDR yet.`,
		Example: `  carrier cdr show 3848276298220188511@192.0.2.10
  carrier cdr show 3848276298220188511@192.0.2.10 --output json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "table" && format != "json" {
				return fmt.Errorf("--output %q: want table or json", format)
			}
			callID := args[0]
			conn, err := analytics.Open(cmd.Context(), ch.addr, ch.database)
			if err != nil {
				return err
			}
			defer conn.Close()
			cdrs, err := analytics.CDRsOfCall(cmd.Context(), conn, ch.database, callID)
			if err != nil {
				return err
			}
			txs, err := analytics.TransactionsOfCall(cmd.Context(), conn, ch.database, callID)
			if err != nil {
				return err
			}
			if len(cdrs) == 0 && len(txs) == 0 {
				return fmt.Errorf("call %q: no CDR and no SIP transaction in ClickHouse database %s; check the Call-ID (cdr list shows them) and that the analytics sink runs", callID, ch.database)
			}
			if format == "json" {
				return writeCallJSON(a.out, cdrs, txs)
			}
			return writeCall(a.out, cdrs, txs)
		},
	}
	ch.addFlags(cmd, "127.0.0.1:9000")
	cmd.Flags().StringVarP(&format, "output", "o", "table", "output format: table or json")
	return cmd
}

// callJSON is cdr show's JSON: the CDRs with their versions, and the
// transactions as stored.
type callJSON struct {
	CDRs         []cdrJSON                     `json:"cdrs"`
	Transactions []analytics.TransactionRecord `json:"transactions"`
}

type cdrJSON struct {
	schema.CDR
	Version uint64            `json:"version"`
	Rating  *analytics.Rating `json:"rating,omitempty"`
}

func writeCallJSON(w io.Writer, cdrs []analytics.CDRRecord, txs []analytics.TransactionRecord) error {
	out := callJSON{CDRs: []cdrJSON{}, Transactions: txs}
	if txs == nil {
		out.Transactions = []analytics.TransactionRecord{}
	}
	for _, c := range cdrs {
		out.CDRs = append(out.CDRs, cdrJSON{CDR: c.CDR, Version: c.Version, Rating: ratingOf(c)})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// showTime is an epoch-ms time for people, or "-" when it did not happen.
func showTime(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return schema.FromMillis(ms).Format("2006-01-02 15:04:05.000")
}

func showMs(ms int64) string { return (time.Duration(ms) * time.Millisecond).String() }

func writeCall(w io.Writer, cdrs []analytics.CDRRecord, txs []analytics.TransactionRecord) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if len(cdrs) == 0 {
		fmt.Fprintln(tw, "No CDR yet: the call is in progress or was not correlated.")
	}
	for i, rec := range cdrs {
		c := rec.CDR
		if i > 0 {
			fmt.Fprintln(tw)
		}
		for _, kv := range [][2]string{
			{"CDR", c.ID + " (version " + strconv.FormatUint(rec.Version, 10) + ")"},
			{"Call-ID", c.CallID},
			{"Tags", "from " + c.FromTag + ", to " + orDash(c.ToTag)},
			{"Account", c.Account + " (trunk " + orDash(c.Trunk) + ", from " + c.Source + " " + c.Transport + ")"},
			{"Caller", c.Caller + " (E.164 " + orDash(c.CallerE164) + ")"},
			{"Callee", c.Callee + " (E.164 " + orDash(c.CalleeE164) + ")"},
			{"Subscriber", orDash(c.Subscriber)},
			{"Direction", orDash(string(c.Direction)) + did(c.DID)},
			{"Class", orDash(c.Class)},
			{"Disposition", fmt.Sprintf("%s: %d %s", c.Disposition, c.Status, c.Reason) + q850(c.Q850)},
			{"Gateway", orDash(c.Gateway) + " (supplier " + orDash(c.Supplier) + ")"},
			{"INVITE", showTime(c.InviteAt)},
			{"Ringing", showTime(c.ProvisionalAt) + earlyMedia(c.EarlyMedia)},
			{"Answer", showTime(c.AnswerAt)},
			{"End", showTime(c.EndAt)},
			{"PDD / setup", showMs(c.PDDMs) + " / " + showMs(c.SetupMs)},
			{"Duration", showMs(c.DurationMs) + ", billable " + strconv.FormatInt(c.BillableSec, 10) + " s"},
			{"Hangup", orDash(c.HangupBy) + " " + c.HangupReason},
			{"Node", c.Node},
		} {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
		}
		for _, kv := range ratingLines(rec.Rating) {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
		}
		if len(c.Attempts) > 0 {
			fmt.Fprintln(tw, "\nATTEMPT\tGATEWAY\tSUPPLIER\tDESTINATION\tSTART\tRINGING\tFINAL\tCODE\tREASON")
			for j, at := range c.Attempts {
				writeRow(tw, []string{strconv.Itoa(j + 1), at.Gateway, at.Supplier, at.Destination,
					showTime(at.StartAt), showTime(at.ProvisionalAt), showTime(at.FinalAt),
					strconv.Itoa(at.Status), at.Reason + q850(at.Q850)})
			}
		}
	}
	if len(txs) > 0 {
		fmt.Fprintln(tw, "\nREQUEST (UTC)\tMETHOD\tCSEQ\tFROM\tTO\tPROVISIONAL\tFINAL\tCODE\tREASON\tNODE")
		for _, tx := range txs {
			writeRow(tw, []string{showTime(tx.RequestAt), tx.Method, strconv.FormatUint(uint64(tx.CSeq), 10),
				tx.Source, orDash(tx.Destination), provisional(tx), showTime(tx.FinalAt),
				strconv.Itoa(tx.Status), tx.Reason + q850(tx.Q850), tx.Node})
		}
	}
	return tw.Flush()
}

func provisional(tx analytics.TransactionRecord) string {
	if tx.ProvisionalAt <= 0 {
		return "-"
	}
	return showTime(tx.ProvisionalAt) + " (" + strconv.Itoa(tx.ProvisionalStatus) + ")"
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

func q850(cause int) string {
	if cause == 0 {
		return ""
	}
	return " (Q.850 " + strconv.Itoa(cause) + ")"
}

func did(number string) string {
	if number == "" {
		return ""
	}
	return " (DID " + number + ")"
}

func earlyMedia(yes bool) string {
	if yes {
		return " (early media)"
	}
	return ""
}

// ratingLines describe a CDR's latest rating: its status, its price and
// what priced it.
func ratingLines(r analytics.Rating) [][2]string {
	if r.Status == "" {
		return [][2]string{{"Rating", "not rated yet"}}
	}
	status := string(r.Status)
	if r.Reason != "" {
		status += " (" + r.Reason + ")"
	}
	run := "rater"
	if r.Run > 0 {
		run = "rerate run " + strconv.FormatUint(r.Run, 10)
	}
	lines := [][2]string{{"Rating", status + ", by the " + run + " at " + showTime(r.RatedAt)}}
	if !r.Rated() {
		return lines
	}
	buy := r.Buy.String()
	if r.BuyReason != "" {
		buy += " (" + r.BuyReason + ")"
	}
	return append(lines,
		[2]string{"Sell", r.Sell.String() + " " + r.Currency + " (plan " + orDash(r.SellPlan) + ")"},
		[2]string{"Buy", buy + " " + r.Currency + " (plan " + orDash(r.BuyPlan) + ")"},
		[2]string{"Margin", r.Margin.String() + " " + r.Currency},
		[2]string{"Destination", orDash(r.Destination) + " (prefix " + orDash(r.Prefix) + ")"},
	)
}
