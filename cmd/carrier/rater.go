package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/rating"
)

func newRaterCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rater",
		Short: "Price finished calls (CDRs from the log become rated CDRs) and answer credit control",
	}
	cmd.AddCommand(newRaterRunCmd(a))
	return cmd
}

func newRaterRunCmd(a *app) *cobra.Command {
	var (
		nats    natsSettings
		node    nodeSettings
		metrics metricsSettings
		credit  creditSettings
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
without a restart.

It also answers the proxies' credit control (NATS request/reply on
rating.authorize, queue group "rating"; --credit-control=false turns it
off): how long a call of a prepaid or postpaid account may last, holding
its cost on the account's ledger. Run as many raters as you like; any of
them answers any request.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConsumerProcess(cmd.Context(), a, nats.url, "rater", metrics.listen,
				fmt.Sprintf("carrier rater: stream CDR -> rated CDRs on %s", nats.url),
				func(ctx context.Context, js jetstream.JetStream, reg prometheus.Registerer) error {
					return runRater(ctx, a.log, js, reg, node.node, credit)
				})
		},
	}
	nats.addFlags(cmd)
	node.addFlags(cmd)
	credit.addFlags(cmd)
	metrics.addFlags(cmd, "127.0.0.1:9468")
	return cmd
}

// creditSettings configure the credit control the rater answers.
type creditSettings struct {
	on          bool
	window      time.Duration
	maxDuration time.Duration
}

func (s *creditSettings) addFlags(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&s.on, "credit-control", true, "answer credit control requests (rating.authorize) for the calls of prepaid and postpaid accounts")
	cmd.Flags().DurationVar(&s.window, "credit-window", rating.DefaultCreditWindow, "talk time granted at a time when a request asks for none")
	s.addMaxDurationFlag(cmd)
}

// addMaxDurationFlag is the one credit flag of `carrier up`, whose proxy
// flags already say whether credit control runs and its window.
func (s *creditSettings) addMaxDurationFlag(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&s.maxDuration, "credit-max-duration", rating.DefaultMaxCallDuration, "longest talk time credit control grants a call, whatever the money")
}

// runRater follows the provisioning and the rate plans, and rates once
// both are loaded: before that every CDR would be unrated for want of them.
// With credit.on it answers credit control beside, with the same
// provisioning and decks.
func runRater(ctx context.Context, log *slog.Logger, js jetstream.JetStream, reg prometheus.Registerer, node string, credit creditSettings) error {
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
	if !credit.on {
		return r.Run(ctx)
	}
	// Its own Ledger, told apart from the billing's in `carrier up`.
	l, err := ledger.New(ctx, js, ledger.Config{Node: node, Logger: log,
		Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"component": "credit-control"}, reg)})
	if err != nil {
		return fmt.Errorf("credit control: %w", err)
	}
	cc, err := rating.NewCreditControl(js.Conn(), rating.CreditConfig{
		Book: book, Accounts: watch, Ledger: l, Window: credit.window, MaxDuration: credit.maxDuration, Logger: log, Registerer: reg,
	})
	if err != nil {
		return fmt.Errorf("credit control: %w", err)
	}
	return runComponents(ctx, log,
		component{"rater", r.Run},
		component{"credit-control", cc.Run},
	)
}
