package main

import (
	"context"
	"fmt"

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
			js, closeConn, err := connect(a.log, nats.url, "carrier-correlator-"+node.node)
			if err != nil {
				return err
			}
			defer closeConn()
			if err := ensureStreams(cmd.Context(), a.log, js); err != nil {
				return err
			}
			reg := newRegistry()
			fmt.Fprintf(a.out, "carrier correlator: stream SIP -> stream CDR on %s\n", nats.url)
			return runComponents(cmd.Context(), a.log,
				component{"correlator", func(ctx context.Context) error { return runCorrelator(ctx, a.log, js, reg, node.node) }},
				component{"metrics", func(ctx context.Context) error { return serveMetrics(ctx, a.log, metrics.listen, reg) }},
			)
		},
	}
	nats.addFlags(cmd)
	node.addFlags(cmd)
	metrics.addFlags(cmd, "127.0.0.1:9465")
	return cmd
}
