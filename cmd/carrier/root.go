package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
)

// app carries what every command needs: where to write and how to log.
type app struct {
	out    io.Writer
	errOut io.Writer
	log    *slog.Logger
}

// newRootCmd builds the command tree. onLogger, when not nil, is told the
// logger once flags are parsed: main uses it to set process-wide
// defaults, which tests running several commands in one process must not.
func newRootCmd(out, errOut io.Writer, onLogger func(*slog.Logger)) *cobra.Command {
	a := &app{out: out, errOut: errOut, log: slog.New(slog.NewTextHandler(errOut, nil))}
	var configFile, logLevel, logFormat string
	root := &cobra.Command{
		Use:   "carrier",
		Short: "Carrier Core: SIP proxy, CDRs, rating and billing over an event log",
		Long: `Carrier Core carries a voice carrier's calls through a SIP proxy, writes every
SIP transaction to a NATS JetStream log, and turns that log into CDRs and
ClickHouse analytics.

Settings come from flags, then CARRIER_<FLAG> environment variables
(CARRIER_NATS_URL for --nats-url), then the --config file (YAML, flag
names as keys).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfig(cmd, configFile); err != nil {
				return err
			}
			log, err := newLogger(a.errOut, logLevel, logFormat)
			if err != nil {
				return err
			}
			a.log = log
			if onLogger != nil {
				onLogger(log)
			}
			return nil
		},
	}
	root.SetOut(out)
	root.SetErr(errOut)
	pf := root.PersistentFlags()
	pf.StringVar(&configFile, "config", "", "YAML config file: flag names as keys (env CARRIER_CONFIG)")
	pf.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&logFormat, "log-format", "text", "log format: text or json")

	root.AddCommand(
		newUpCmd(a),
		newNATSCmd(a),
		newProxyCmd(a),
		newCorrelatorCmd(a),
		newAnalyticsCmd(a),
		newCDRCmd(a),
		newReportCmd(a),
		newRadiusCmd(a),
		newTrunkCmd(a),
		newGatewayCmd(a),
		newSupplierCmd(a),
		newRouteCmd(a),
		newSubscriberCmd(a),
		newDialPlanCmd(a),
		newDIDCmd(a),
		newProvisionCmd(a),
		newRatesCmd(a),
		newRaterCmd(a),
		newLedgerCmd(a),
		newAccountCmd(a),
		newBalanceCmd(a),
	)
	return root
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}
