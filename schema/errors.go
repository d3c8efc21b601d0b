package schema

import "errors"

var (
	// ErrWrongType: the envelope holds another event type than the reader asked for.
	ErrWrongType = errors.New("wrong event type")
	// ErrUnknownVersion: the event was written by a newer build than this one.
	ErrUnknownVersion = errors.New("unknown event version")
	// ErrMalformed: the bytes are not an event envelope.
	ErrMalformed = errors.New("malformed event")
)
