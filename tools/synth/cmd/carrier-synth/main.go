// Command carrier-synth loads synthetic CDRs into ClickHouse for load and
// query tests:
//
//	go run ./tools/synth/cmd/carrier-synth -n 1000000 -days 30 -seed 1
//
// It applies the analytics migrations first, so an empty server works.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/tools/synth"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "carrier-synth:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("clickhouse", "127.0.0.1:9000", "ClickHouse native address host:port")
	database := flag.String("clickhouse-db", analytics.DefaultDatabase, "ClickHouse database")
	n := flag.Int("n", 100000, "number of CDRs")
	seed := flag.Uint64("seed", 1, "seed; the same seed and flags give the same CDRs")
	from := flag.String("from", "2026-11-01", "first day of the INVITE times (UTC, YYYY-MM-DD)")
	days := flag.Int("days", 30, "days the INVITE times spread over")
	accounts := flag.Int("accounts", 20, "number of accounts")
	batch := flag.Int("batch", 50000, "CDRs per insert")
	flag.Parse()

	start, err := time.Parse("2006-01-02", *from)
	if err != nil {
		return fmt.Errorf("-from: %w", err)
	}
	if *days <= 0 || *n <= 0 {
		return fmt.Errorf("-n and -days must be positive")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	conn, err := analytics.Open(ctx, *addr, *database)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := analytics.Migrate(ctx, conn, *database); err != nil {
		return err
	}
	g := synth.New(synth.Config{Seed: *seed, Start: start, Span: time.Duration(*days) * 24 * time.Hour, Accounts: *accounts})
	began := time.Now()
	err = synth.Load(ctx, conn, *database, g, *n, *batch, func(done int) {
		fmt.Fprintf(os.Stderr, "\r%d/%d CDRs", done, *n)
	})
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return err
	}
	el := time.Since(began)
	fmt.Printf("loaded %d CDRs in %s (%.0f CDRs/s)\n", *n, el.Round(time.Millisecond), float64(*n)/el.Seconds())
	return nil
}
