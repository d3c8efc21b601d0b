package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/ledger"
)

func newLedgerCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Bill rated calls to the accounts' ledgers",
	}
	cmd.AddCommand(newLedgerRunCmd(a))
	return cmd
}

func newLedgerRunCmd(a *app) *cobra.Command {
	var (
		nats    natsSettings
		node    nodeSettings
		metrics metricsSettings
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run billing: rated CDRs in, debits and releases on the LEDGER stream",
		Long: `Consume the rated CDRs and failed calls of the CDR stream (durable consumer
"billing") and charge them to the accounts' ledgers: a rated call's sell
cost is debited, naming its CDR, and what the call held under credit
control is released; a rerate's correction debits its difference, or
credits it back, naming the correction; unrated and failed calls only
release their hold. A CDR or a correction is applied once however often it
is delivered, so a replay changes no balance. Calls of accounts without a
ledger are skipped (carrier_billing_skipped_total).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConsumerProcess(cmd.Context(), a, nats.url, "ledger", metrics.listen,
				fmt.Sprintf("carrier ledger: rated CDRs -> account ledgers on %s", nats.url),
				func(ctx context.Context, js jetstream.JetStream, reg prometheus.Registerer) error {
					return runBilling(ctx, a.log, js, reg, node.node)
				})
		},
	}
	nats.addFlags(cmd)
	node.addFlags(cmd)
	metrics.addFlags(cmd, "127.0.0.1:9469")
	return cmd
}

// runBilling debits rated calls until ctx is done.
func runBilling(ctx context.Context, log *slog.Logger, js jetstream.JetStream, reg prometheus.Registerer, node string) error {
	// Its own Ledger, told apart from credit control's in `carrier up`.
	l, err := ledger.New(ctx, js, ledger.Config{Node: node, Logger: log,
		Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"component": "billing"}, reg)})
	if err != nil {
		return fmt.Errorf("billing: %w", err)
	}
	b, err := ledger.NewBilling(js, l, ledger.BillingConfig{Logger: log, Registerer: reg})
	if err != nil {
		return fmt.Errorf("billing: %w", err)
	}
	return b.Run(ctx)
}
