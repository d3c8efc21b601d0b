package eventlog

import "github.com/nats-io/nats.go/jetstream"

// NewPublisherWithSegmentSize is NewPublisher with spool segments of the
// given size, so that tests see segments rotate and go.
func NewPublisherWithSegmentSize(js jetstream.JetStream, cfg PublisherConfig, size int64) (*Publisher, error) {
	return newPublisher(js, cfg, size)
}
