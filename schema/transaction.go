package schema

// TypeTransaction is the event the proxy writes for every SIP server
// transaction it handled (and for every ACK it relayed, which has none).
const (
	TypeTransaction    = "sip.transaction"
	TransactionVersion = 1
)

// Transaction is one SIP transaction as the proxy saw it: the request it
// received, where it sent it, and the final response it gave.
type Transaction struct {
	Method  string `json:"method"`
	CallID  string `json:"call_id"`
	FromURI string `json:"from_uri"`
	FromTag string `json:"from_tag"`
	ToURI   string `json:"to_uri"`
	// ToTag is the tag of the final response (or of the request when it was
	// sent inside a dialog).
	ToTag string `json:"to_tag,omitempty"`
	CSeq  uint32 `json:"cseq"`
	// RequestURI is the Request-URI as received.
	RequestURI string `json:"ruri"`
	// InDialog is true when the request carried a To tag.
	InDialog bool `json:"in_dialog,omitempty"`

	// Source is the address the request came from (ip:port), Transport its
	// transport (udp, tcp, tls) and Local the proxy address it arrived on.
	Source    string `json:"src"`
	Local     string `json:"local,omitempty"`
	Transport string `json:"transport"`
	// Destination is where the proxy relayed the request, empty when it
	// answered itself.
	Destination string `json:"dst,omitempty"`

	// Status and Reason are the final response sent upstream; 0 when there
	// was none (ACK, or a request dropped). Q850 is the cause of a Reason
	// header in that response (or in a CANCEL/BYE request), 0 when absent.
	Status int    `json:"status,omitempty"`
	Reason string `json:"reason,omitempty"`
	Q850   int    `json:"q850,omitempty"`

	// Times in milliseconds since the Unix epoch, UTC; 0 when it did not happen.
	RequestAt int64 `json:"request_at"`
	// ProvisionalAt and ProvisionalStatus are the first provisional response
	// other than 100 Trying (180 or 183), which marks post-dial delay.
	ProvisionalAt     int64 `json:"provisional_at,omitempty"`
	ProvisionalStatus int   `json:"provisional_status,omitempty"`
	FinalAt           int64 `json:"final_at,omitempty"`

	// Attempts are the client transactions the proxy started for this
	// request, in order (one per gateway tried on an INVITE).
	Attempts []Attempt `json:"attempts,omitempty"`

	// Account and Trunk identify the customer when the proxy knows them.
	Account string `json:"account,omitempty"`
	Trunk   string `json:"trunk,omitempty"`
	// Subscriber is the subscriber id that authenticated the request
	// (digest); its calls are billed to Account, the subscriber's.
	Subscriber string `json:"subscriber,omitempty"`
	// CallerE164 and CalleeE164 are the caller (From user) and callee
	// (Request-URI user) of an initial INVITE as the trunk's dial plan
	// normalised them, which is what was routed and sent on; empty when
	// the trunk has no dial plan. As received they are in FromURI and
	// RequestURI. Class is the dial plan's label for the call ("mobile").
	CallerE164 string `json:"caller_e164,omitempty"`
	CalleeE164 string `json:"callee_e164,omitempty"`
	Class      string `json:"class,omitempty"`
	// DID is the number of ours an inbound call was delivered to its
	// owner for.
	DID string `json:"did,omitempty"`
	// Skipped are the route's gateways an initial INVITE was not sent to
	// because they were at a limit, in the order the hunt met them.
	Skipped []SkippedGateway `json:"skipped,omitempty"`
	// Note says why the proxy answered itself or ended a dialog, in a
	// machine-readable word (max_forwards, malformed, no_route, ...).
	Note string `json:"note,omitempty"`
}

// SkippedGateway is a gateway a call passed over and why: its calls per
// second (SkipCPS) or its calls in progress (SkipCalls), or its
// supplier's (SkipSupplierCPS, SkipSupplierCalls).
type SkippedGateway struct {
	Gateway  string `json:"gateway"`
	Supplier string `json:"supplier,omitempty"`
	Reason   string `json:"reason"`
}

// Reasons a gateway is skipped.
const (
	SkipCPS           = "cps"
	SkipCalls         = "max_calls"
	SkipSupplierCPS   = "supplier_cps"
	SkipSupplierCalls = "supplier_max_calls"
)

// Attempt is one relay of a request towards a gateway or contact.
type Attempt struct {
	Gateway     string `json:"gateway,omitempty"`
	Supplier    string `json:"supplier,omitempty"`
	Destination string `json:"dst"`
	Status      int    `json:"status,omitempty"`
	Reason      string `json:"reason,omitempty"`
	Q850        int    `json:"q850,omitempty"`
	StartAt     int64  `json:"start_at"`
	// ProvisionalAt is the first provisional response other than 100.
	ProvisionalAt int64 `json:"provisional_at,omitempty"`
	FinalAt       int64 `json:"final_at,omitempty"`
}
