package main

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
)

func newCorrelatorCmd(a *app) *cobra.Command {
	var (
		nats    natsSettings
		node    nodeSettings
		metrics metricsSettings
	)
	cmd := &cobra.Command{
		Use:   "correlator",
		Short: "Run the CDR correlator: SIP transactions from the log become calls and CDRs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConsumerProcess(cmd.Context(), a, nats.url, "correlator", metrics.listen,
				fmt.Sprintf("carrier correlator: stream SIP -> stream CDR on %s", nats.url),
				func(ctx context.Context, js jetstream.JetStream, reg prometheus.Registerer) error {
					return runCorrelator(ctx, a.log, js, reg, node.node)
				})
		},
	}
	nats.addFlags(cmd)
	node.addFlags(cmd)
	metrics.addFlags(cmd, "127.0.0.1:9465")
	return cmd
}
