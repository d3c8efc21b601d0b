// Package cdrgen is the CDR correlator: it consumes the SIP transaction
// events of the log and turns them into calls, publishing each call's
// lifecycle on the CDR stream.
//
// A call is the caller's initial INVITE, identified by its Call-ID and From
// tag; its CDR id is schema.CDRID of the two. The events are:
//
//   - call.started when the INVITE was answered (2xx), with the CDR so far;
//     its id is schema.StartedID of the CDR id.
//   - call.ended when a BYE of the dialog was sent, by the caller (same From
//     tag) or the callee (tags swapped), with or without a 200 to it; a BYE
//     the proxy sent itself (Note credit_exhausted, max_duration, no_bye)
//     is a hang-up by the proxy for that reason.
//   - call.failed when the INVITE got a final answer of 300 or more:
//     486/600 busy, 408/480 no-answer, 487 cancelled (ringing or not: the
//     CDR's provisional_at tells), 503 congestion, anything else failed.
//     401, 407 and 422 are challenges the caller answers by sending the
//     INVITE again with the same Call-ID and From tag, so they are not the
//     call's outcome and make no CDR.
//
// call.ended and call.failed carry the finished CDR and use the CDR id as
// event id, so a republished event is dropped by JetStream's dedupe window
// and recognised by consumers after it. ACK, CANCEL, re-INVITE, UPDATE,
// INFO, OPTIONS and other requests do not change a call.
//
// # State and restarts
//
// Open calls live in the KV bucket CDRGEN_CALLS (no TTL: a call may last
// days), tombstones of finished calls in CDRGEN_FINISHED (48h TTL), so that
// redelivered or replayed events of a finished call produce nothing, not a
// second CDR nor a phantom open call. Keys are "<partition>.<cdr id>": a
// correlator loads the open calls of its partitions into memory at start
// and asks KV only about calls it does not hold, concurrently, once per
// batch.
//
// For each batch the correlator applies every event in memory, then for
// every call the batch changed publishes its events and stores its new
// state (once per call per batch), and only then lets the batch be acked.
// A stop at any point is repaired by the redelivery of the unacked batch:
// events published again have the same ids, states written again are the
// same.
//
// A BYE that comes before its INVITE (redelivery can reorder them) waits in
// CDRGEN_FINISHED; the INVITE then starts and ends the call at once. Only
// the first outcome of a call counts: an INVITE with a new CSeq for a call
// already decided is logged and counted as a conflict, since the CDR id
// cannot name two calls.
//
// The correlation logic (call.go) does no I/O; the JetStream plumbing
// (correlator.go, store.go) feeds it and makes its results durable.
package cdrgen
