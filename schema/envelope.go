package schema

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Envelope wraps every event on the log. It is JSON on the wire so that an
// operator can read the log with `nats sub` or `nats stream view`.
type Envelope struct {
	// ID is unique and sortable by creation time (UUIDv7). Publishers set it
	// as Nats-Msg-Id so JetStream drops duplicates inside its window;
	// consumers still treat it as their idempotency key.
	ID      string `json:"id"`
	Type    string `json:"type"`
	Version int    `json:"v"`
	// Time is when the event happened, in milliseconds since the Unix epoch, UTC.
	Time int64 `json:"ts"`
	// Node names the process that wrote the event (the proxy's node name).
	Node string          `json:"node"`
	Data json.RawMessage `json:"data"`
}

// NewEnvelope wraps payload in an envelope with a fresh UUIDv7 id.
func NewEnvelope(typ string, version int, at time.Time, node string, payload any) (Envelope, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return Envelope{}, fmt.Errorf("new event id: %w", err)
	}
	return NewEnvelopeWithID(id.String(), typ, version, at, node, payload)
}

// NewEnvelopeWithID wraps payload with a caller-chosen id. Derived events
// (CDRs) use deterministic ids so that a replay produces the same ids.
func NewEnvelopeWithID(id, typ string, version int, at time.Time, node string, payload any) (Envelope, error) {
	data, err := json.Marshal(payload)
	if err != nil {
		return Envelope{}, fmt.Errorf("encode %s payload: %w", typ, err)
	}
	return Envelope{ID: id, Type: typ, Version: version, Time: Millis(at), Node: node, Data: data}, nil
}

// Decode unmarshals the payload into v after checking the event type and
// that the version is one this build understands (1..maxVersion).
func (e Envelope) Decode(typ string, maxVersion int, v any) error {
	if e.Type != typ {
		return fmt.Errorf("event %s: type %q, want %q: %w", e.ID, e.Type, typ, ErrWrongType)
	}
	if e.Version < 1 || e.Version > maxVersion {
		return fmt.Errorf("event %s: %s version %d, this build reads up to %d: %w", e.ID, typ, e.Version, maxVersion, ErrUnknownVersion)
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("event %s: decode %s: %w", e.ID, typ, err)
	}
	return nil
}

// Marshal encodes the envelope for the wire.
func (e Envelope) Marshal() ([]byte, error) { return json.Marshal(e) }

// ParseEnvelope decodes an envelope from the wire.
func ParseEnvelope(b []byte) (Envelope, error) {
	var e Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return Envelope{}, fmt.Errorf("decode event envelope: %w", err)
	}
	if e.ID == "" || e.Type == "" {
		return Envelope{}, fmt.Errorf("decode event envelope: missing id or type: %w", ErrMalformed)
	}
	return e, nil
}

// Millis is t as milliseconds since the Unix epoch; the zero time is 0.
func Millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// FromMillis is the inverse of Millis; 0 is the zero time.
func FromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
