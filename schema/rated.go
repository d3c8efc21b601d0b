package schema

import (
	"strconv"

	"github.com/google/uuid"
)

// Rated CDRs are published by the rater on the CDR stream, one per
// finished call (call.ended and call.failed), under cdr.rated.<partition>
// so that a call's rated CDR shares the partition of its other events.
const (
	TypeCallRated = "call.rated"
	RatedVersion  = 1

	subjectCallRated = "cdr.rated."
	// AllRatedCalls matches every rated CDR.
	AllRatedCalls = "cdr.rated.>"
)

// RatedSubject is the subject of the rated CDR of a call.
func RatedSubject(callID string) string {
	return subjectCallRated + strconv.Itoa(Partition(callID))
}

// RatedID is the event id of a CDR's rating. Run 0 is the rater's own
// rating; a rerate gives its run a number of its own so that its events
// do not collide with the first rating. The id depends on nothing else,
// so rating the same CDR again (a redelivery, a replay days later) gives
// the same id and JetStream or the reader drops the copy.
func RatedID(cdrID string, run uint64) string {
	return uuid.NewSHA1(cdrNamespace, []byte("rated\x00"+cdrID+"\x00"+strconv.FormatUint(run, 10))).String()
}

// RatingStatus says whether a CDR could be priced.
type RatingStatus string

const (
	// StatusRated: the sell side was priced (a call that never connected
	// is rated at zero).
	StatusRated RatingStatus = "rated"
	// StatusUnrated: the call could not be priced; Reason says why. It is
	// published all the same, so that it is seen and can be rerated.
	StatusUnrated RatingStatus = "unrated"
)

// Why a CDR (or its buy side) could not be priced.
const (
	UnratedNoAccount   = "no_account"   // the CDR names no account, or one that is not provisioned
	UnratedNoPlan      = "no_plan"      // the account has no sell plan
	UnratedUnknownPlan = "unknown_plan" // no deck was imported under the plan's name
	UnratedNotInForce  = "not_in_force" // the plan's versions all take effect after the call
	UnratedNoRate      = "no_rate"      // no prefix of the number has a rate in force at answer
	UnratedBadNumber   = "bad_number"   // the callee is not a number
	UnratedOutOfRange  = "out_of_range" // the price does not fit in an amount
	UnratedBadCDR      = "bad_cdr"      // an answered call without an answer time, or with a negative duration
)

// RatedCDR is a finished CDR with its price.
//
// Amounts are exact decimal strings in the account's currency ("0.0123",
// as Money prints them and ParseMoney reads them), never
// JSON numbers: no reader can round them through a float. Empty means
// not known.
type RatedCDR struct {
	CDR CDR `json:"cdr"`
	// Run is 0 for the rater's rating, a rerate's run number otherwise.
	Run uint64 `json:"run,omitempty"`
	// RatedAt is when it was priced, in ms since the Unix epoch.
	RatedAt int64        `json:"rated_at"`
	Status  RatingStatus `json:"status"`
	// Reason (one of the Unrated* codes) and Detail say why an unrated
	// CDR was not priced.
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Currency is the account's, when it is provisioned.
	Currency string `json:"currency,omitempty"`

	// Sell is the customer's price, on the account's sell plan.
	Sell *RatedLeg `json:"sell,omitempty"`
	// Buy is the supplier's price, when a buy plan exists for the
	// supplier or gateway of the billed attempt. BuyReason says why a buy
	// plan that exists did not price the call.
	Buy       *RatedLeg `json:"buy,omitempty"`
	BuyReason string    `json:"buy_reason,omitempty"`

	// SellCost is what the customer pays ("0.00" for a failed call).
	SellCost string `json:"sell_cost,omitempty"`
	// BuyCost is what the supplier is owed; "0.00" when there is no buy plan.
	BuyCost string `json:"buy_cost,omitempty"`
	// Margin is SellCost - BuyCost; empty when either is unknown.
	Margin string `json:"margin,omitempty"`

	// A rerate's correction (Run > 0) names the rating event it replaces
	// and SellDelta, its SellCost minus the replaced one's (the replaced
	// one's counts as 0 when it was unrated): the amount the ledger debits,
	// or credits when negative. The latest rating of a CDR is its price.
	Replaces  string `json:"replaces,omitempty"`
	SellDelta string `json:"sell_delta,omitempty"`
}

// RatedLeg is one side of a call's price: which plan, which rate, how
// many seconds, how much.
type RatedLeg struct {
	Plan        string `json:"plan"`
	PlanVersion uint64 `json:"plan_version"`
	Prefix      string `json:"prefix"`
	Destination string `json:"destination"`
	// Rate is the per-minute price at answer; ConnectFee is charged once
	// per answered call.
	Rate       string `json:"rate"`
	ConnectFee string `json:"connect_fee"`
	// Increments and minimum duration in seconds, of the rate at answer.
	FirstIncrement int `json:"first_increment"`
	NextIncrement  int `json:"next_increment"`
	MinDuration    int `json:"min_duration"`
	// Seconds is the duration rounded up to whole seconds; BilledSeconds
	// is after increments and minimum.
	Seconds       int64 `json:"seconds"`
	BilledSeconds int64 `json:"billed_seconds"`
	// Exact is the unrounded charge, Cost what is billed (Exact rounded
	// once per call as the plan says).
	Exact string `json:"exact"`
	Cost  string `json:"cost"`
	// Segments > 1 when a band boundary or a tier split the call.
	Segments int `json:"segments,omitempty"`
}
