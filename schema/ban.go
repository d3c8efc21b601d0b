package schema

// Ban events: the proxy's flood protection stopped (or resumed) taking
// messages from a source address. They are on the SIP stream, under a
// subject of their own outside the transaction subjects, so that the
// correlator and the analytics sink, which consume sip.tx.>, never see
// them.
const (
	// TypeSourceBanned: a source sent more requests within the window
	// than the threshold allows; its messages are dropped until Until.
	TypeSourceBanned = "sip.banned"
	// TypeSourceUnbanned: a ban ended; Dropped says what it cost the
	// source.
	TypeSourceUnbanned = "sip.unbanned"
	BanVersion         = 1

	// SubjectBans is the subject of both ban event types.
	SubjectBans = "sip.ban"
)

// SourceBan is the payload of the ban events.
type SourceBan struct {
	// Source is the banned IP address; a ban covers every port and
	// transport of it.
	Source string `json:"src"`
	// Transport is the transport of the request that crossed the threshold.
	Transport string `json:"transport,omitempty"`
	// Requests were counted within WindowMs against Threshold.
	Requests  int   `json:"requests"`
	Threshold int   `json:"threshold"`
	WindowMs  int64 `json:"window_ms"`
	// BannedAt and Until are when the ban began and ends, in milliseconds
	// since the Unix epoch, UTC.
	BannedAt int64 `json:"banned_at"`
	Until    int64 `json:"until"`
	// Dropped counts the messages dropped during the ban (on the unban
	// event only).
	Dropped uint64 `json:"dropped,omitempty"`
}
