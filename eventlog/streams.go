package eventlog

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/schema"
)

// EnsureStreams creates the log's streams or updates them to the given
// definitions; running it again changes nothing.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, o schema.StreamOptions) error {
	for _, cfg := range schema.Streams(o) {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("create or update stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}
