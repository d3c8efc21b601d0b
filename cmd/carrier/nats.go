package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/eventlog"
)

func newNATSCmd(a *app) *cobra.Command {
	var (
		dataDir string
		listen  string
		monitor int
		fsync   syncSettings
	)
	cmd := &cobra.Command{
		Use:   "nats",
		Short: "Run the embedded NATS server with JetStream alone, and create the log's streams",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			host, port, err := splitHostPort(listen)
			if err != nil {
				return fmt.Errorf("--listen %q: %w", listen, err)
			}
			srv, err := eventlog.StartServer(eventlog.ServerConfig{Host: host, Port: port, StoreDir: dataDir, MonitorPort: monitor, SyncInterval: fsync.interval})
			if err != nil {
				return err
			}
			defer srv.Shutdown()
			js, closeConn, err := connect(a.log, srv.ClientURL(), "carrier-nats")
			if err != nil {
				return err
			}
			defer closeConn()
			if err := ensureStreams(cmd.Context(), a.log, js); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "carrier nats: JetStream at %s, data in %s; streams SIP, CDR, LEDGER ready\n", srv.ClientURL(), dataDir)
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "./carrier-data/jetstream", "JetStream store directory")
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:4222", "client address")
	cmd.Flags().IntVar(&monitor, "monitor-port", 0, "HTTP monitoring port (/varz, /jsz); 0 is off")
	fsync.addFlags(cmd)
	return cmd
}
