package cdrgen

import (
	"cmp"
	"slices"
	"strconv"

	"github.com/carrier-core/carrier/schema"
)

// This file is the correlation logic without any I/O: which call a
// transaction belongs to, how it moves the call along, and which lifecycle
// events come out. The JetStream plumbing (correlator.go, store.go) feeds
// it and makes its results durable.

// phase is where a call is in its life, as the correlator keeps it.
type phase string

const (
	// phaseEarly: a BYE arrived before the INVITE that set up its dialog
	// (redelivery or spool replay can reorder them); it waits for the
	// INVITE, which then starts and ends the call at once.
	phaseEarly phase = "early"
	// phaseOpen: the call was answered and has not ended yet.
	phaseOpen phase = "open"
	// phaseEnded and phaseFailed are tombstones: the CDR is out, and any
	// later event of the call is a duplicate.
	phaseEnded  phase = "ended"
	phaseFailed phase = "failed"
)

// stateVersion is the format of callState in the KV buckets.
const stateVersion = 1

// callState is what the correlator keeps about one call. It is immutable
// once built: the logic replaces states, it never edits them, so the cache
// and a batch being retried can share them.
type callState struct {
	V     int   `json:"v"`
	Phase phase `json:"phase"`
	// CSeq of the INVITE that decided the call, to tell a redelivered
	// INVITE (same CSeq) from a new INVITE reusing Call-ID and From tag.
	CSeq uint32 `json:"cseq,omitempty"`
	// CDR so far, for open calls only: tombstones stay small.
	CDR *schema.CDR `json:"cdr,omitempty"`
	// Bye is the BYE waiting for its INVITE (phaseEarly).
	Bye *schema.Transaction `json:"bye,omitempty"`
}

// book is where the logic finds and leaves the state of calls, by call key.
// get returns nil for a call it knows nothing about.
type book interface {
	get(key string) *callState
	put(key string, s *callState)
}

// callKey identifies a call (Call-ID and the caller's From tag). It is the
// KV key of its state: the partition first, so a correlator loads only its
// partitions' calls, then the CDR id, which is safe in a KV key whatever
// characters the Call-ID has.
func callKey(callID, fromTag string) string {
	return strconv.Itoa(schema.Partition(callID)) + "." + schema.CDRID(callID, fromTag)
}

// kind is what a transaction means to the correlator.
type kind int

const (
	kindOther  kind = iota // no effect on calls: ACK, CANCEL, re-INVITE, OPTIONS, ...
	kindInvite             // the caller's initial INVITE with its final answer
	kindBye                // a BYE inside a dialog
)

// event is one transaction prepared for correlation: its kind and the keys
// of the calls it may belong to, computed once for the prefetch and the
// logic.
type event struct {
	tx schema.Transaction
	// node is the proxy that saw the transaction (the envelope's node).
	node string
	kind kind
	// keys: for an INVITE its call; for a BYE first the call it ends when
	// sent by the caller (From tag), then when sent by the callee (To tag,
	// as tags swap direction).
	keys []string
}

func newEvent(tx schema.Transaction, node string) event {
	ev := event{tx: tx, node: node, kind: classify(&tx)}
	switch ev.kind {
	case kindInvite:
		ev.keys = []string{callKey(tx.CallID, tx.FromTag)}
	case kindBye:
		ev.keys = []string{callKey(tx.CallID, tx.FromTag)}
		if tx.ToTag != tx.FromTag {
			ev.keys = append(ev.keys, callKey(tx.CallID, tx.ToTag))
		}
	}
	return ev
}

func classify(tx *schema.Transaction) kind {
	switch tx.Method {
	case "INVITE":
		if tx.InDialog || challenge(tx.Status) {
			return kindOther
		}
		return kindInvite
	case "BYE":
		return kindBye
	}
	return kindOther
}

// challenge reports final answers after which the caller sends the same
// call again with the same Call-ID and From tag (credentials, a longer
// session interval). They are a step of the call, not its outcome: a CDR
// for them would take the call's id and hide the real outcome.
func challenge(status int) bool {
	return status == 401 || status == 407 || status == 422
}

// outcome is what a transaction did, for metrics and logs.
type outcome string

const (
	outcomeApplied   outcome = "applied"   // started, ended or failed a call
	outcomeEarly     outcome = "early"     // a BYE waits for its INVITE
	outcomeDuplicate outcome = "duplicate" // already accounted for
	outcomeConflict  outcome = "conflict"  // a new INVITE for a call already decided
	outcomeIgnored   outcome = "ignored"   // not about a call's start or end
	outcomeMalformed outcome = "malformed" // not a readable transaction
)

// emission is a lifecycle event to publish.
type emission struct {
	Type string // schema.TypeCallStarted, TypeCallEnded or TypeCallFailed
	ID   string // envelope id: deterministic, so replays dedupe
	At   int64  // event time, ms
	CDR  schema.CDR
	// key is the call whose state change this event announces; the
	// plumbing publishes it before it stores that state.
	key string
}

// rules are the settings of the correlation logic. A replay must use the
// same rules as the live run to produce the same CDRs.
type rules struct {
	// maxCallMs caps the duration of an answered call (Config.MaxCallDuration);
	// 0: no cap.
	maxCallMs int64
	// lagMs is how far behind the log's time the sweep stays
	// (Config.SweepLag). It changes when a call is swept, not its CDR.
	lagMs int64
}

// correlate applies one transaction to the calls in b and returns the
// events it causes. Applying the same transaction again changes nothing.
func (r rules) correlate(b book, ev *event) ([]emission, outcome) {
	switch ev.kind {
	case kindInvite:
		return r.invite(b, ev)
	case kindBye:
		return r.bye(b, ev)
	}
	return nil, outcomeIgnored
}

func (r rules) invite(b book, ev *event) ([]emission, outcome) {
	tx := &ev.tx
	key := ev.keys[0]
	cur := b.get(key)
	if cur != nil && cur.Phase != phaseEarly {
		if cur.CSeq != tx.CSeq {
			return nil, outcomeConflict
		}
		return nil, outcomeDuplicate
	}
	cdr := newCDR(tx, ev.node)
	if cdr.Disposition != schema.Answered {
		// A BYE waiting for a failed INVITE cannot belong to it; the
		// failure is the call's outcome.
		b.put(key, &callState{V: stateVersion, Phase: phaseFailed, CSeq: tx.CSeq})
		return []emission{{Type: schema.TypeCallFailed, ID: cdr.ID, At: cdr.EndAt, CDR: cdr, key: key}}, outcomeApplied
	}
	out := []emission{{Type: schema.TypeCallStarted, ID: schema.StartedID(cdr.ID), At: cdr.AnswerAt, CDR: cdr, key: key}}
	if cur != nil {
		ended := r.endCDR(cdr, cur.Bye)
		b.put(key, &callState{V: stateVersion, Phase: phaseEnded, CSeq: tx.CSeq})
		return append(out, emission{Type: schema.TypeCallEnded, ID: cdr.ID, At: ended.EndAt, CDR: ended, key: key}), outcomeApplied
	}
	b.put(key, &callState{V: stateVersion, Phase: phaseOpen, CSeq: tx.CSeq, CDR: &cdr})
	return out, outcomeApplied
}

func (r rules) bye(b book, ev *event) ([]emission, outcome) {
	states := make([]*callState, len(ev.keys))
	for i, key := range ev.keys {
		states[i] = b.get(key)
		if s := states[i]; s != nil && s.Phase == phaseOpen {
			ended := r.endCDR(*s.CDR, &ev.tx)
			b.put(key, &callState{V: stateVersion, Phase: phaseEnded, CSeq: s.CSeq})
			return []emission{{Type: schema.TypeCallEnded, ID: ended.ID, At: ended.EndAt, CDR: ended, key: key}}, outcomeApplied
		}
	}
	for _, s := range states {
		if s != nil {
			// The call has ended or failed already, or this BYE (or the
			// other party's) is already waiting for the INVITE.
			return nil, outcomeDuplicate
		}
	}
	// The INVITE has not been seen yet. Whether the caller or the callee
	// sent this BYE is only known once it is, so it waits under both keys.
	tx := ev.tx
	early := &callState{V: stateVersion, Phase: phaseEarly, Bye: &tx}
	for _, key := range ev.keys {
		b.put(key, early)
	}
	return nil, outcomeEarly
}

// expired reports whether an open call has outlived the maximum call
// duration by the log's time (watermark, ms) with the sweep's lag to spare.
// Whenever it is found so, its CDR is the same (closeExpired), which is
// what keeps a replay's CDRs equal to the live run's.
func (r rules) expired(s *callState, watermark int64) bool {
	return r.maxCallMs > 0 && s.Phase == phaseOpen && s.CDR != nil &&
		watermark-r.lagMs > s.CDR.AnswerAt+r.maxCallMs
}

// closeExpired ends an open call whose BYE never came.
func (r rules) closeExpired(b book, key string, s *callState) emission {
	ended := r.capCDR(*s.CDR)
	b.put(key, &callState{V: stateVersion, Phase: phaseEnded, CSeq: s.CSeq})
	return emission{Type: schema.TypeCallEnded, ID: ended.ID, At: ended.EndAt, CDR: ended, key: key}
}

// capCDR ends an answered call at the maximum call duration: the proxy
// that carried it is gone or lost its BYE, and nothing tells when it
// really ended.
func (r rules) capCDR(cdr schema.CDR) schema.CDR {
	cdr.EndAt = cdr.AnswerAt + r.maxCallMs
	cdr.DurationMs = r.maxCallMs
	cdr.BillableSec = schema.BillableSeconds(cdr.DurationMs)
	cdr.HangupBy, cdr.HangupReason = schema.HangupProxy, schema.EndNoBye
	return cdr
}

// newCDR is the CDR of a call as its INVITE transaction tells it.
func newCDR(tx *schema.Transaction, node string) schema.CDR {
	cdr := schema.CDR{
		ID:            schema.CDRID(tx.CallID, tx.FromTag),
		CallID:        tx.CallID,
		FromTag:       tx.FromTag,
		ToTag:         tx.ToTag,
		Account:       tx.Account,
		Trunk:         tx.Trunk,
		Subscriber:    tx.Subscriber,
		Source:        tx.Source,
		Transport:     tx.Transport,
		Caller:        userPart(tx.FromURI),
		Callee:        userPart(tx.RequestURI),
		Class:         tx.Class,
		DID:           tx.DID,
		Direction:     direction(tx),
		Attempts:      slices.Clone(tx.Attempts),
		Disposition:   disposition(tx.Status, tx.ProvisionalAt > 0),
		Status:        tx.Status,
		Reason:        tx.Reason,
		Q850:          tx.Q850,
		InviteAt:      tx.RequestAt,
		ProvisionalAt: tx.ProvisionalAt,
		Node:          node,
	}
	// As the trunk's dial plan normalised them, when it has one.
	cdr.CallerE164 = e164(cmp.Or(tx.CallerE164, cdr.Caller))
	cdr.CalleeE164 = e164(cmp.Or(tx.CalleeE164, cdr.Callee))
	// The proxy notes the first provisional after 100 Trying only, so a
	// 183 that follows a 180 goes unseen.
	cdr.EarlyMedia = tx.ProvisionalStatus == 183
	if i := accountedAttempt(tx.Attempts, cdr.Disposition == schema.Answered); i >= 0 {
		cdr.Gateway, cdr.Supplier = tx.Attempts[i].Gateway, tx.Attempts[i].Supplier
	}
	if cdr.ProvisionalAt > 0 {
		cdr.PDDMs = max(0, cdr.ProvisionalAt-cdr.InviteAt)
	}
	final := tx.FinalAt
	if final == 0 {
		final = tx.RequestAt
	}
	if cdr.Disposition == schema.Answered {
		cdr.AnswerAt = final
		cdr.SetupMs = max(0, cdr.AnswerAt-cdr.InviteAt)
	} else {
		cdr.EndAt = final
	}
	return cdr
}

// accountedAttempt is the attempt a call is accounted on, -1 when there
// were none: for an answered call the answered attempt, the first 2xx in
// time when parallel forks answered more than once (the proxy keeps that
// one and hangs up the others); for an unanswered call the last attempt,
// whose failure is the one the caller got after the proxy ran out of
// gateways.
func accountedAttempt(as []schema.Attempt, answered bool) int {
	if answered {
		best := -1
		for i, a := range as {
			if a.Status >= 200 && a.Status < 300 && (best < 0 || a.FinalAt < as[best].FinalAt) {
				best = i
			}
		}
		if best >= 0 {
			return best
		}
	}
	return len(as) - 1
}

// Notes of the proxy (proxy/subscriber.go) for an INVITE it refused on
// its way to a subscriber of ours: no live registration, or the
// registrations could not be read.
const (
	noteSubscriberNotRegistered = "subscriber_not_registered"
	noteRegistrar               = "registrar"
)

// direction is which way the call of an INVITE went, by the rule given
// on schema.CDR.Direction. The proxy marks a call to a DID in the event;
// an attempt with a gateway is a relay to a supplier, one without went
// to a subscriber's contact (the proxy delivers to registered contacts
// before it looks at the routes).
func direction(tx *schema.Transaction) schema.Direction {
	if tx.DID != "" {
		return schema.Inbound
	}
	if slices.ContainsFunc(tx.Attempts, func(a schema.Attempt) bool { return a.Gateway != "" }) {
		return schema.Outbound
	}
	if len(tx.Attempts) > 0 || tx.Note == noteSubscriberNotRegistered || tx.Note == noteRegistrar {
		return schema.OnNet
	}
	return schema.Outbound
}

// disposition maps the final answer to the caller's INVITE to how the call
// ended. ringing says whether the caller had an 18x by then.
//
// A 487 (the caller cancelled) is "no-answer" when the call was ringing:
// the callee had the chance to pick up and did not, which is what a 480 or
// a ring timeout says too. Before any 18x it is "cancelled": the caller gave
// up on the network, not on the callee. The CDR keeps status 487 either
// way. 503 is what the proxy answers when no gateway is left (a gateway's
// 503 with another gateway still to try is an attempt, not the outcome),
// so it is "congestion".
func disposition(status int, ringing bool) schema.Disposition {
	switch {
	case status >= 200 && status < 300:
		return schema.Answered
	case status == 486 || status == 600:
		return schema.Busy
	case status == 408 || status == 480:
		return schema.NoAnswer
	case status == 487 && ringing:
		return schema.NoAnswer
	case status == 487:
		return schema.Cancelled
	case status == 503:
		return schema.Congestion
	}
	// Rejections (403, 404, 484, 402, ...), and an INVITE the proxy logged
	// without any final answer.
	return schema.Failed
}

// endCDR completes the CDR of an answered call with the BYE that ended it.
// The BYE ends the call when it is sent, whether or not it got a 200. A
// BYE later than the maximum call duration gives the CDR the sweep gives
// the call without it (capCDR): whether the sweep or the BYE came first
// must not change the CDR.
func (r rules) endCDR(cdr schema.CDR, bye *schema.Transaction) schema.CDR {
	cdr.EndAt = bye.RequestAt
	if cdr.EndAt == 0 {
		cdr.EndAt = bye.FinalAt
	}
	if r.maxCallMs > 0 && cdr.EndAt-cdr.AnswerAt > r.maxCallMs {
		return r.capCDR(cdr)
	}
	cdr.DurationMs = max(0, cdr.EndAt-cdr.AnswerAt)
	cdr.BillableSec = schema.BillableSeconds(cdr.DurationMs)
	cdr.HangupBy, cdr.HangupReason = hangup(cdr.FromTag, bye)
	return cdr
}

// hangup says who ended the call and why. A BYE the proxy sent itself
// carries the reason in its Note; otherwise the From tag tells the caller
// (same tag as the INVITE) from the callee (tags swapped).
func hangup(callFromTag string, bye *schema.Transaction) (by, reason string) {
	switch bye.Note {
	case schema.EndCreditExhausted, schema.EndCreditUnavailable, schema.EndMaxDuration, schema.EndNoBye:
		return schema.HangupProxy, bye.Note
	}
	if bye.FromTag == callFromTag {
		return schema.HangupCaller, schema.EndNormal
	}
	return schema.HangupCallee, schema.EndNormal
}
