// Package schema is the contract of the event log: the envelope every event
// travels in, the event payloads and their versions, the subjects they are
// published on and the JetStream streams that keep them.
//
// Names here are stable: consumers in other processes, ClickHouse tables and
// replays days later depend on them. A payload change that is not purely
// additive gets a new version number, and readers keep accepting the old one.
package schema
