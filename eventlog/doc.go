// Package eventlog is the plumbing between the components and NATS
// JetStream: connecting (or starting an embedded server), creating the
// streams, publishing events (synchronously for derived events, or
// asynchronously with a local spool for the proxy) and consuming them with
// durable pull consumers that ack only after the handler succeeded.
package eventlog
