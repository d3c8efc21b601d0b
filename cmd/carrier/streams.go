package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

// ensureStreams creates or updates the log's streams, waiting for the
// server when it is not up yet: consumer processes may start first.
func ensureStreams(ctx context.Context, log *slog.Logger, js jetstream.JetStream) error {
	wait := 250 * time.Millisecond
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := eventlog.EnsureStreams(attempt, js, schema.DefaultStreamOptions())
		cancel()
		if err == nil {
			return nil
		}
		log.Warn("waiting for JetStream", "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}
