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
	"time"

	"github.com/emiago/sipgo/sip"
)

func main() {
	// sipgo refuses UDP messages over UDPMTUSize-200 bytes (1300 by
	// default) to push large ones to TCP. A proxy relays what its peers
	// send, as Kamailio does, so anything its read buffer takes may pass.
	sip.UDPMTUSize = int(sip.TransportBufferReadSize) + 200
	// sipgo keeps an answered INVITE's transactions for Timer L/M (32 s) to
	// absorb 2xx retransmissions, and memory grows with the call rate for
	// it. The proxy forwards a stray 2xx statelessly (RFC 3261 16.7), so a
	// 5 s window, Kamailio's wait timer, is enough.
	sip.Timer_L, sip.Timer_M = 5*time.Second, 5*time.Second

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
