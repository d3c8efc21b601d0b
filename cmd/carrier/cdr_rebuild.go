package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/cdrgen"
)

func newCDRRebuildCmd(a *app) *cobra.Command {
	var (
		nats     natsSettings
		node     nodeSettings
		from, to string
		maxCall  time.Duration
		batch    int
	)
	cmd := &cobra.Command{
		Use:   "rebuild",
		Short: "Replay the SIP log of a time range into CDRs again",
		Long: `Replays the SIP transactions of a time range (by event time, --to excluded)
through the correlator into call.started, call.ended and call.failed events
on the CDR stream. The events have the ids the live correlator gave them,
so consumers that already have a CDR recognise it; missing ones are filled
in. The live correlator and its state are left alone.

A call is rebuilt when its transactions are all in the range: give the
range some margin around the calls you care about. --max-call-duration
must be the live correlator's for calls without a BYE to come out the same.`,
		Example: `  carrier cdr rebuild --from 2026-11-22 --to 2026-11-23
  carrier cdr rebuild --from 2026-11-22T10:00:00Z --to 2026-11-22T11:00:00Z --nats-url nats://10.0.0.5:4222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" {
				return errors.New("--from is required: the start of the range to rebuild, e.g. --from 2026-11-22")
			}
			start, end, err := timeRange(from, to, 0, time.Now())
			if err != nil {
				return err
			}
			js, closeConn, err := connect(a.log, nats.url, "carrier-cdr-rebuild-"+node.node)
			if err != nil {
				return err
			}
			defer closeConn()
			if err := ensureStreams(cmd.Context(), a.log, js); err != nil {
				return err
			}
			fmt.Fprintf(a.errOut, "rebuilding CDRs of %s to %s from %s\n", start.Format(time.RFC3339), end.Format(time.RFC3339), nats.url)
			var shown time.Time
			p, err := cdrgen.Rebuild(cmd.Context(), js, cdrgen.RebuildConfig{
				From: start, To: end, MaxCallDuration: maxCall, Node: node.node, MaxBatch: batch, Logger: a.log,
				Progress: func(p cdrgen.RebuildProgress) {
					// At most once a second: a rebuild runs many batches.
					if time.Since(shown) < time.Second {
						return
					}
					shown = time.Now()
					fmt.Fprintf(a.errOut, "  %s\n", progressLine(p))
				},
			})
			if err != nil {
				return fmt.Errorf("rebuild CDRs of %s to %s: %w", start.Format(time.RFC3339), end.Format(time.RFC3339), err)
			}
			fmt.Fprintf(a.out, "rebuilt: %s\n", progressLine(p))
			return nil
		},
	}
	nats.addFlags(cmd)
	node.addFlags(cmd)
	cmd.Flags().StringVar(&from, "from", "", "start of the range: RFC 3339 time or YYYY-MM-DD (UTC); required")
	cmd.Flags().StringVar(&to, "to", "", "end of the range, exclusive (default now)")
	cmd.Flags().DurationVar(&maxCall, "max-call-duration", cdrgen.DefaultMaxCallDuration, "longest call: ends a call whose BYE never came (the live correlator's value)")
	cmd.Flags().IntVar(&batch, "batch", 500, "events correlated at once")
	return cmd
}

func progressLine(p cdrgen.RebuildProgress) string {
	return fmt.Sprintf("%d events read (seq %d of %d), %d in range, %d CDRs published", p.Read, p.Seq, p.LastSeq, p.Replayed, p.CDRs)
}
