package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/analytics"
)

func newAnalyticsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "analytics",
		Short: "Load the log into ClickHouse and manage its schema",
	}
	cmd.AddCommand(newAnalyticsSinkCmd(a), newAnalyticsMigrateCmd(a))
	return cmd
}

func newAnalyticsSinkCmd(a *app) *cobra.Command {
	var (
		nats    natsSettings
		metrics metricsSettings
		ch      clickhouseSettings
	)
	cmd := &cobra.Command{
		Use:   "sink",
		Short: "Run the ClickHouse sink: transactions, CDRs, rated CDRs and ledger movements from the log, in batches, acked only once stored",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConsumerProcess(cmd.Context(), a, nats.url, "analytics", metrics.listen,
				fmt.Sprintf("carrier analytics sink: streams SIP, CDR and LEDGER on %s -> ClickHouse %s, database %s", nats.url, ch.addr, ch.database),
				func(ctx context.Context, js jetstream.JetStream, reg prometheus.Registerer) error {
					return runSink(ctx, a.log, js, reg, ch)
				})
		},
	}
	nats.addFlags(cmd)
	metrics.addFlags(cmd, "127.0.0.1:9466")
	ch.addFlags(cmd, "127.0.0.1:9000")
	return cmd
}

func newAnalyticsMigrateCmd(a *app) *cobra.Command {
	var ch clickhouseSettings
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create the ClickHouse database and apply pending schema migrations",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			conn, err := analytics.Open(cmd.Context(), ch.addr, ch.database)
			if err != nil {
				return err
			}
			defer conn.Close()
			applied, err := analytics.Migrate(cmd.Context(), conn, ch.database)
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				fmt.Fprintf(a.out, "database %s is up to date\n", ch.database)
				return nil
			}
			fmt.Fprintf(a.out, "database %s: applied %s\n", ch.database, strings.Join(applied, ", "))
			return nil
		},
	}
	ch.addFlags(cmd, "127.0.0.1:9000")
	return cmd
}
