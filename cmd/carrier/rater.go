package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/rating"
)

func newRaterCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rater",
		Short: "Price finished calls: CDRs from the log become rated CDRs",
	}
	cmd.AddCommand(newRaterRunCmd(a))
	return cmd
}

func newRaterRunCmd(a *app) *cobra.Command {
	var (
		nats    natsSettings
		node    nodeSettings
		metrics metricsSettings
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the rater: call.ended and call.failed in, call.rated out, on the CDR stream",
		Long: `Consume the finished CDRs of the CDR stream (durable consumer "rater") and
publish one rated CDR (call.rated, subject cdr.rated.<partition>) per call:
the sell price on the account's sell plan, the buy price on the plan
"buy-<supplier>" (or "buy-<gateway>") when one is imported, and the margin.
A CDR that cannot be priced is published as unrated with the reason; a call
that never connected is rated at zero. A CDR is acked only once its rated
CDR is stored, and a redelivered CDR gets the same event id, so nothing is
lost or counted twice. Rate plan imports and account changes take effect
without a restart.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConsumerProcess(cmd.Context(), a, nats.url, "rater", metrics.listen,
				fmt.Sprintf("carrier rater: stream CDR -> rated CDRs on %s", nats.url),
				func(ctx context.Context, js jetstream.JetStream, reg prometheus.Registerer) error {
					return runRater(ctx, a.log, js, reg, node.node)
				})
		},
	}
	nats.addFlags(cmd)
	node.addFlags(cmd)
	metrics.addFlags(cmd, "127.0.0.1:9468")
	return cmd
}

// runRater follows the provisioning and the rate plans, and rates once
// both are loaded: before that every CDR would be unrated for want of them.
func runRater(ctx context.Context, log *slog.Logger, js jetstream.JetStream, reg prometheus.Registerer, node string) error {
	provisioning, err := waitProvisionStore(ctx, log, js)
	if err != nil {
		return fmt.Errorf("rater: %w", err)
	}
	watch, err := provisioning.Watch(ctx)
	if err != nil {
		return fmt.Errorf("rater: %w", err)
	}
	defer watch.Stop()
	select {
	case <-watch.Ready():
	case <-ctx.Done():
		return ctx.Err()
	}
	store, err := rating.NewStore(ctx, js)
	if err != nil {
		return fmt.Errorf("rater: %w", err)
	}
	book, err := store.Follow(ctx, log)
	if err != nil {
		return fmt.Errorf("rater: %w", err)
	}
	r, err := rating.NewRater(js, rating.RaterConfig{Book: book, Store: store, Accounts: watch, Node: node, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	return r.Run(ctx)
}
