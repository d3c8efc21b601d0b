package schema

// Credit control: the proxy asks the rating service, over NATS
// request/reply, how long a call of a credit-controlled account may last.
// The service is stateless between requests: the money a call holds is a
// ledger reservation keyed by the call's CDR id, and the proxy carries the
// rest (answer time, seconds granted so far) in each request. Several
// rating services share the subject through a queue group, and any of
// them can answer any request of any call.
//
// The exchange for one call:
//
//	INVITE  -> start    reserve the first window (or refuse: 402, no rate)
//	answer, then before the window ends:
//	        -> extend   hold more, up to Granted+Want seconds; Final when
//	                    that is all the money buys; the proxy ends the
//	                    call with a BYE to both sides at Seconds
//	not answered -> release (the ledger consumer releases it too, from
//	                call.failed; both are idempotent)
//
// An answered call's reservation is released by the ledger together with
// the debit of its rated CDR, never by the proxy: released earlier, the
// money would look available again before the call's cost is debited.

// SubjectAuthorize is the request/reply subject of credit control.
const SubjectAuthorize = "rating.authorize"

// QueueAuthorize is the queue group rating services answer it in.
const QueueAuthorize = "rating"

// CreditAction is what a credit request asks.
type CreditAction string

const (
	// CreditStart: an initial INVITE; reserve the first window.
	CreditStart CreditAction = "start"
	// CreditExtend: an answered call wants more time.
	CreditExtend CreditAction = "extend"
	// CreditRelease: the call was not answered; drop what it holds.
	CreditRelease CreditAction = "release"
)

// CreditRequest is the proxy's question. JSON on the wire.
type CreditRequest struct {
	Action CreditAction `json:"action"`
	// CDRID keys the call's reservation (CDRID(CallID, from tag)).
	CDRID   string `json:"cdr_id"`
	CallID  string `json:"call_id"`
	Account string `json:"account"`
	// Callee is the number the call is priced to (the Request-URI user,
	// as routed).
	Callee string `json:"callee"`
	// At (ms since the Unix epoch) prices the call: the INVITE's time on
	// start, the answer time on extend (a call is priced from its answer).
	At int64 `json:"at"`
	// Granted is the talk time, in seconds from answer, the call was
	// granted so far (extend); the new grant is for more than that.
	Granted int64 `json:"granted_s,omitempty"`
	// Want is the window asked for, in seconds: start asks for Want
	// seconds of talk, extend for Granted+Want. 0 lets the service choose.
	Want int64 `json:"want_s,omitempty"`
}

// CreditResult is the kind of answer.
type CreditResult string

const (
	// CreditGranted: the call may last Seconds from answer.
	CreditGranted CreditResult = "granted"
	// CreditInsufficient: the balance does not pay the first increment
	// (start: the proxy answers 402). On extend the service answers
	// CreditGranted with Final set instead.
	CreditInsufficient CreditResult = "insufficient"
	// CreditNoRate: the account's plan has no rate for the callee; the
	// call could not be charged, so it is refused (403).
	CreditNoRate CreditResult = "no_rate"
	// CreditUnknownAccount: no ledger or no sell plan for the account;
	// refused (403).
	CreditUnknownAccount CreditResult = "unknown_account"
	// CreditReleased: the answer to a release.
	CreditReleased CreditResult = "released"
	// CreditError: the service could not decide (ledger unreachable, a
	// bad request); the proxy treats it as no answer.
	CreditError CreditResult = "error"
)

// CreditReply is the rating service's answer.
type CreditReply struct {
	Result CreditResult `json:"result"`
	// Seconds is the talk time, from answer, the call may have in all,
	// on the rate's increment grid.
	Seconds int64 `json:"seconds,omitempty"`
	// Final: no more will be granted (the money is spent, or the grant
	// reached the service's maximum call duration); the call ends at
	// Seconds.
	Final bool `json:"final,omitempty"`
	// Reserved is the amount the call holds after this answer, an exact
	// decimal string.
	Reserved string `json:"reserved,omitempty"`
	// Increment is the rate's next increment in seconds: how precisely a
	// cut at Seconds matches the money.
	Increment int64 `json:"increment_s,omitempty"`
	// Reason explains a refusal or an error, for logs and events.
	Reason string `json:"reason,omitempty"`
}
