package schema

import (
	"github.com/google/uuid"
)

// Call lifecycle events on the CDR stream. CallStarted is written when a
// call is answered; CallEnded (answered calls) and CallFailed (calls that
// never connected) carry the finished CDR.
const (
	TypeCallStarted = "call.started"
	TypeCallEnded   = "call.ended"
	TypeCallFailed  = "call.failed"
	CDRVersion      = 1
)

// Disposition is how a call ended, from the caller's point of view.
type Disposition string

const (
	Answered   Disposition = "answered"
	Busy       Disposition = "busy"
	NoAnswer   Disposition = "no-answer"
	Cancelled  Disposition = "cancelled"
	Failed     Disposition = "failed"
	Congestion Disposition = "congestion"
)

// Who ended an answered call.
const (
	HangupCaller = "caller"
	HangupCallee = "callee"
	HangupProxy  = "proxy"
)

// Why an answered call ended.
const (
	EndNormal          = "normal"
	EndCreditExhausted = "credit_exhausted"
	EndMaxDuration     = "max_duration"
	EndNoBye           = "no_bye"
	// EndCreditUnavailable: a prepaid call reached the end of its grant
	// while the rating service did not answer for more.
	EndCreditUnavailable = "credit_unavailable"
)

// Direction is which way a call went through the network, from the
// carrier's side.
type Direction string

const (
	// Outbound: a customer's call (a trunk's or a subscriber's) routed to
	// supplier gateways.
	Outbound Direction = "outbound"
	// Inbound: a call to one of our DIDs, delivered to the DID's owner.
	Inbound Direction = "inbound"
	// OnNet: a call delivered to a registered subscriber of ours, never
	// leaving the network.
	OnNet Direction = "onnet"
)

// CDR is one call: a caller's INVITE (all its attempts) and, when answered,
// the dialog until its end. It is identified by Call-ID and From tag.
type CDR struct {
	// ID is derived from Call-ID and From tag (CDRID), so a replay of the
	// same transactions yields the same id.
	ID      string `json:"id"`
	CallID  string `json:"call_id"`
	FromTag string `json:"from_tag"`
	ToTag   string `json:"to_tag,omitempty"`

	Account string `json:"account,omitempty"`
	Trunk   string `json:"trunk,omitempty"`
	// Subscriber placed the call (digest-authenticated); its calls are
	// billed to Account, the subscriber's.
	Subscriber string `json:"subscriber,omitempty"`
	Source     string `json:"src"`
	Transport  string `json:"transport,omitempty"`

	// Caller and Callee as received (From user, Request-URI user), and
	// normalised to E.164 digits without '+'.
	Caller     string `json:"caller"`
	Callee     string `json:"callee"`
	CallerE164 string `json:"caller_e164,omitempty"`
	CalleeE164 string `json:"callee_e164,omitempty"`
	// Class is the trunk's dial plan's label for the call ("mobile",
	// "premium"); empty when the plan gave none.
	Class string `json:"class,omitempty"`
	// DID is the number of ours (E.164 digits without '+') an inbound
	// call was delivered to its owner for.
	DID string `json:"did,omitempty"`
	// Direction follows from the INVITE's event: Inbound when it names a
	// DID; else Outbound when an attempt went to a gateway; else OnNet
	// when it was relayed without a gateway (to a registered subscriber's
	// contact) or refused on its way to a subscriber (480 without a live
	// registration, 500 when the registrations could not be read: notes
	// subscriber_not_registered, registrar); else, a call the proxy
	// refused before routing it anywhere, Outbound: a customer's call
	// the routes would have sent to a gateway. A trusted trunk's call
	// with a preloaded Route also goes out without a gateway, and reads
	// OnNet: the event does not tell it from a subscriber's contact.
	// Empty in CDRs made before the field existed.
	Direction Direction `json:"direction,omitempty"`

	Attempts []Attempt `json:"attempts,omitempty"`
	// Gateway and Supplier are those of the attempt the call is accounted
	// on: the answered one (the first 2xx when several answered), or for
	// an unanswered call the last one tried.
	Gateway  string `json:"gateway,omitempty"`
	Supplier string `json:"supplier,omitempty"`

	Disposition Disposition `json:"disposition"`
	// Status, Reason and Q850 are the final answer to the caller's INVITE
	// (200 for answered calls).
	Status int    `json:"status"`
	Reason string `json:"reason,omitempty"`
	Q850   int    `json:"q850,omitempty"`

	// Times in milliseconds since the Unix epoch, UTC; 0 when it did not happen.
	InviteAt      int64 `json:"invite_at"`
	ProvisionalAt int64 `json:"provisional_at,omitempty"`
	AnswerAt      int64 `json:"answer_at,omitempty"`
	EndAt         int64 `json:"end_at"`

	// EarlyMedia: the caller got a 183 Session Progress (announcements or
	// ringback from the far end before any answer).
	EarlyMedia bool `json:"early_media,omitempty"`

	// SetupMs is INVITE to answer, PDDMs INVITE to first 18x.
	SetupMs int64 `json:"setup_ms,omitempty"`
	PDDMs   int64 `json:"pdd_ms,omitempty"`
	// DurationMs is answer to end; BillableSec is DurationMs rounded up to
	// whole seconds (rating applies increments on top of that).
	DurationMs  int64 `json:"duration_ms"`
	BillableSec int64 `json:"billable_sec"`

	HangupBy     string `json:"hangup_by,omitempty"`
	HangupReason string `json:"hangup_reason,omitempty"`
	// Node is the proxy that carried the call.
	Node string `json:"node,omitempty"`
}

// cdrNamespace scopes the name-based UUIDs of CDRs.
var cdrNamespace = uuid.MustParse("6f1c2a60-4f4e-4b8e-9d3e-0c1a7c2d9b10")

// CDRID is the deterministic id of the call identified by Call-ID and
// From tag (a name-based UUID).
func CDRID(callID, fromTag string) string {
	return uuid.NewSHA1(cdrNamespace, []byte(callID+"\x00"+fromTag)).String()
}

// StartedID is the id of the call.started event of a call, derived from its
// CDR id so that replays dedupe.
func StartedID(cdrID string) string {
	return uuid.NewSHA1(cdrNamespace, []byte("started\x00"+cdrID)).String()
}

// BillableSeconds rounds a duration in milliseconds up to whole seconds:
// a started second is a billed second.
func BillableSeconds(durationMs int64) int64 {
	if durationMs <= 0 {
		return 0
	}
	return (durationMs + 999) / 1000
}
