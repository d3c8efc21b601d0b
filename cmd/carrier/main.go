// Command carrier is Carrier Core's one binary: the SIP proxy, the log's
// consumers, an embedded JetStream server and the operator's CLI.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/emiago/sipgo/sip"
)

func main() {
	// sipgo refuses UDP messages over UDPMTUSize-200 bytes (1300 by
	// default) to push large ones to TCP. A proxy relays what its peers
	// send, as Kamailio does, so anything its read buffer takes may pass.
	sip.UDPMTUSize = int(sip.TransportBufferReadSize) + 200

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd(os.Stdout, os.Stderr, func(log *slog.Logger) {
		// Libraries that log through the default logger (sipgo, the
		// NATS server) follow the operator's level and format.
		slog.SetDefault(log)
		sip.SetDefaultLogger(log.With("component", "sipgo"))
	})
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "carrier:", err)
		os.Exit(1)
	}
}
