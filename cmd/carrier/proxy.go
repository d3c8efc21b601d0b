package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

func newProxyCmd(a *app) *cobra.Command {
	var (
		nats    natsSettings
		node    nodeSettings
		metrics metricsSettings
		px      proxySettings
	)
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run the SIP proxy against a NATS server; its events are spooled while JetStream is unreachable",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			listeners, err := parseListeners(px.listen)
			if err != nil {
				return err
			}
			js, closeConn, err := connect(a.log, nats.url, "carrier-proxy-"+node.node)
			if err != nil {
				return err
			}
			defer closeConn()
			reg := newRegistry()
			fmt.Fprintf(a.out, "carrier proxy: %s -> gateway %s, events to %s (spool %s)\n", describeListeners(listeners), px.gateway, nats.url, px.spoolDir)
			return runComponents(cmd.Context(), a.log,
				component{"proxy", func(ctx context.Context) error { return runProxy(ctx, a.log, js, reg, node.node, listeners, px) }},
				component{"metrics", func(ctx context.Context) error { return serveMetrics(ctx, a.log, metrics.listen, reg) }},
			)
		},
	}
	nats.addFlags(cmd)
	node.addFlags(cmd)
	metrics.addFlags(cmd, "127.0.0.1:9464")
	px.addFlags(cmd, "./carrier-data/spool")
	return cmd
}
