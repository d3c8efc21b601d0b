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
//   - call.failed when the INVITE got a final answer of 300 or more.
//     401, 407 and 422 are challenges the caller answers by sending the
//     INVITE again with the same Call-ID and From tag, so they are not the
//     call's outcome and make no CDR.
//
// # Dispositions
//
// The final answer the caller got decides: 2xx answered; 486 and 600 busy;
// 408 and 480 no-answer; 487 (the caller cancelled) no-answer when the
// call was ringing (an 18x had come: the callee could have picked up) and
// cancelled when nothing had rung yet; 503 congestion (the proxy answers
// 503 when no gateway is left; a gateway's 503 followed by another
// attempt is only an attempt); anything else, rejections such as 403,
// 404, 484 or 402 and an INVITE without any final answer, failed. The CDR
// keeps the code, reason and Q.850 cause, so reports can split further.
//
// Every attempt is kept. The call is accounted on one of them, whose
// gateway and supplier the CDR names: the answered attempt, the first 2xx
// in time when parallel forks answered more than once; for an unanswered
// call the last attempt, the failure the caller got. PDD is from the
// INVITE to the first 18x relayed to the caller; a 183 there marks the
// call as having had early media.
//
// # Who and which way
//
// The CDR keeps the INVITE's subscriber (who placed the call), the dial
// plan's class and the DID an inbound call was for, and works out the
// call's direction from them (schema.CDR.Direction): inbound for a DID,
// outbound when an attempt went to a gateway, onnet when it went, or was
// on its way, to a registered subscriber's contact.
//
// # Calls without a BYE
//
// A BYE the proxy sent itself ends the call with hangup_by "proxy" and
// its Note as the reason (credit_exhausted, max_duration, or no_bye when
// it closed a dialog that timed out). When the proxy died with the call,
// no BYE ever comes: the correlator ends an answered call itself at
// answer + Config.MaxCallDuration (default 4h), hangup_by "proxy", reason
// no_bye, and counts it in carrier_cdrgen_expired_calls_total. A BYE later
// than that gives the very same CDR, so whichever comes first, and a
// replay, agree. When the sweep runs depends on the log's time, the
// latest event time seen, a SweepLag (1m) behind so that a BYE that is
// only a little late still counts; only when no event has come for a
// SweepInterval and the consumer has nothing pending (so a JetStream
// outage does not pass for an idle log) does the wall clock stand in for
// it. The one case a
// replay can tell apart is a BYE held back (a proxy's spool) for longer
// than the lag after the sweep: the live run has already ended the call
// without it.
//
// # Rebuilds
//
// Rebuild replays the SIP stream of a time range into CDRs again with
// its own ephemeral consumer and state buckets. The ids are the live
// ones, so JetStream's dedupe window and downstream consumers drop what
// they already have.
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
