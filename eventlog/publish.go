package eventlog

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/schema"
)

// Publish stores one event and waits for JetStream's acknowledgement. The
// event id is the Nats-Msg-Id, so publishing the same event twice inside
// the stream's duplicate window stores it once. Consumers use it for
// derived events (CDRs) whose source message they ack only afterwards.
func Publish(ctx context.Context, js jetstream.JetStream, subject string, ev schema.Envelope) error {
	msg, err := newMsg(subject, ev)
	if err != nil {
		return err
	}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish %s %s to %s: %w", ev.Type, ev.ID, subject, err)
	}
	return nil
}

// newMsg builds the NATS message of an event, with the event id as its
// dedupe id.
func newMsg(subject string, ev schema.Envelope) (*nats.Msg, error) {
	data, err := ev.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encode %s %s: %w", ev.Type, ev.ID, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
	return msg, nil
}
