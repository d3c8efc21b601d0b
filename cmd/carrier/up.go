package main

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

func newUpCmd(a *app) *cobra.Command {
	var (
		dataDir    string
		natsListen string
		node       nodeSettings
		metrics    metricsSettings
		px         proxySettings
		ch         clickhouseSettings
		fsync      syncSettings
		credit     creditSettings
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run everything in one process: embedded JetStream, proxy, correlator, rater with credit control, ledger billing and (with --clickhouse) the analytics sink",
		Example: `  carrier up
  carrier up --sip-listen 0.0.0.0:5060 --gateway 203.0.113.10:5060 --clickhouse 127.0.0.1:9000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			listeners, err := parseListeners(px.listen)
			if err != nil {
				return err
			}
			host, port, err := splitHostPort(natsListen)
			if err != nil {
				return fmt.Errorf("--nats-listen %q: %w", natsListen, err)
			}
			storeDir := filepath.Join(dataDir, "jetstream")
			srv, err := eventlog.StartServer(eventlog.ServerConfig{Host: host, Port: port, StoreDir: storeDir, SyncInterval: fsync.interval})
			if err != nil {
				return err
			}
			defer srv.Shutdown()
			js, closeConn, err := connect(a.log, srv.ClientURL(), "carrier-up")
			if err != nil {
				return err
			}
			defer closeConn()
			if err := ensureStreams(ctx, a.log, js); err != nil {
				return err
			}
			if px.spoolDir == "" {
				px.spoolDir = filepath.Join(dataDir, "spool")
			}

			reg := newRegistry()
			components := []component{
				{"proxy", func(ctx context.Context) error { return runProxy(ctx, a.log, js, reg, node.node, listeners, px) }},
				{"correlator", func(ctx context.Context) error { return runCorrelator(ctx, a.log, js, reg, node.node) }},
				// The proxy's --credit-control and --credit-window serve
				// the rating side too.
				{"rater", func(ctx context.Context) error {
					credit.on, credit.window = px.creditControl, px.credit.Window
					return runRater(ctx, a.log, js, reg, node.node, credit)
				}},
				{"ledger", func(ctx context.Context) error { return runBilling(ctx, a.log, js, reg, node.node) }},
				{"metrics", func(ctx context.Context) error { return serveMetrics(ctx, a.log, metrics.listen, reg) }},
			}
			analyticsLine := "off (set --clickhouse to load CDRs into ClickHouse)"
			if ch.addr != "" {
				components = append(components, component{"analytics", func(ctx context.Context) error { return runSink(ctx, a.log, js, reg, ch) }})
				analyticsLine = fmt.Sprintf("ClickHouse %s, database %s", ch.addr, ch.database)
			}
			metricsLine := "off"
			if metrics.listen != "" {
				metricsLine = "http://" + metrics.listen + "/metrics"
			}
			fmt.Fprintf(a.out, "carrier up: node %s\n", node.node)
			fmt.Fprintf(a.out, "  jetstream   %s (data in %s)\n", srv.ClientURL(), storeDir)
			fmt.Fprintf(a.out, "  proxy       %s -> gateway %s (spool %s)\n", describeListeners(listeners), px.gateway, px.spoolDir)
			fmt.Fprintf(a.out, "  correlator  stream SIP -> stream CDR\n")
			fmt.Fprintf(a.out, "  rater       finished CDRs -> rated CDRs (plans: carrier rates import)\n")
			if px.creditControl {
				fmt.Fprintf(a.out, "  credit      prepaid and postpaid calls held on their ledgers (%s)\n", schema.SubjectAuthorize)
			}
			fmt.Fprintf(a.out, "  ledger      rated CDRs -> account debits\n")
			fmt.Fprintf(a.out, "  analytics   %s\n", analyticsLine)
			fmt.Fprintf(a.out, "  metrics     %s\n", metricsLine)
			fmt.Fprintf(a.out, "Press Ctrl-C to stop.\n")
			return runComponents(ctx, a.log, components...)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", defaultDataDir(), "directory for the JetStream store and the event spool")
	cmd.Flags().StringVar(&natsListen, "nats-listen", "127.0.0.1:4222", "address of the embedded NATS server")
	node.addFlags(cmd)
	metrics.addFlags(cmd, "127.0.0.1:9464")
	px.addFlags(cmd, "")
	ch.addFlags(cmd, "")
	fsync.addFlags(cmd)
	credit.addMaxDurationFlag(cmd)
	return cmd
}
