package radius

import (
	"errors"
	"fmt"

	layeh "layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
)

// Packet codes (RFC 2866).
const (
	CodeAccountingRequest  = layeh.CodeAccountingRequest
	CodeAccountingResponse = layeh.CodeAccountingResponse
)

// Standard attribute types (RFC 2865, 2866, 2869), for requests built by
// hand; records use the library's typed helpers.
const (
	AttrUserName             = rfc2865.UserName_Type
	AttrNASIPAddress         = rfc2865.NASIPAddress_Type
	AttrVendorSpecific       = rfc2865.VendorSpecific_Type
	AttrCalledStationID      = rfc2865.CalledStationID_Type
	AttrCallingStationID     = rfc2865.CallingStationID_Type
	AttrNASIdentifier        = rfc2865.NASIdentifier_Type
	AttrAcctStatusType       = rfc2866.AcctStatusType_Type
	AttrAcctDelayTime        = rfc2866.AcctDelayTime_Type
	AttrAcctSessionID        = rfc2866.AcctSessionID_Type
	AttrAcctSessionTime      = rfc2866.AcctSessionTime_Type
	AttrAcctTerminateCause   = rfc2866.AcctTerminateCause_Type
	AttrAcctMultiSessionID   = rfc2866.AcctMultiSessionID_Type
	AttrEventTimestamp       = rfc2869.EventTimestamp_Type
	AttrMessageAuthenticator = rfc2869.MessageAuthenticator_Type
)

// StatusType is Acct-Status-Type; its String is the dictionary name
// (Start, Stop, Interim-Update, Failed).
type StatusType = rfc2866.AcctStatusType

// Acct-Status-Type values; Failed is 15 (RFC 2866 registry).
const (
	StatusStart   = rfc2866.AcctStatusType_Value_Start
	StatusStop    = rfc2866.AcctStatusType_Value_Stop
	StatusInterim = rfc2866.AcctStatusType_Value_InterimUpdate
	StatusFailed  = rfc2866.AcctStatusType_Value_Failed
)

// Packet is an Accounting-Request to send: its code and attributes. The
// Identifier, the authenticators and the Message-Authenticator depend on
// the server (its secret) and the attempt, so the Client sets them.
type Packet struct {
	Code layeh.Code
	layeh.Attributes

	// err is the first attribute that could not be encoded; Send
	// reports it as ErrInvalidPacket rather than send a request with
	// the attribute silently missing.
	err error
}

// maxText is the most text an attribute carries: 255 octets minus type
// and length leave 253, a Vendor-Specific header 6 more; the VSA bound
// applies to all text so that every field is cut in the same place.
const maxText = 247

// truncate cuts text that would not fit an attribute: a record with a
// shortened value is worth more to billing than no record.
func truncate(s string) string {
	if len(s) > maxText {
		return s[:maxText]
	}
	return s
}

func (p *Packet) fail(err error) {
	if err != nil && p.err == nil {
		p.err = err
	}
}

// AddString appends a text attribute, cut to 247 octets; an empty text is
// left out, as RFC 2865 does not allow empty attributes.
func (p *Packet) AddString(typ layeh.Type, s string) {
	if s == "" {
		return
	}
	a, err := layeh.NewString(truncate(s))
	if err != nil {
		p.fail(fmt.Errorf("attribute %d: %w", typ, err))
		return
	}
	p.Add(typ, a)
}

// AddInt appends an integer attribute.
func (p *Packet) AddInt(typ layeh.Type, v uint32) { p.Add(typ, layeh.NewInteger(v)) }

// AddVendorString appends a vendor-specific text attribute in the format
// of RFC 2865 §5.26 with one-octet vendor type and length, the format of
// Cisco's VSAs; the library wraps the vendor id but leaves the inner
// format to the vendor. An empty text is left out.
func (p *Packet) AddVendorString(vendor uint32, typ byte, s string) {
	if s == "" {
		return
	}
	s = truncate(s)
	inner := make(layeh.Attribute, 0, 2+len(s))
	inner = append(inner, typ, byte(2+len(s)))
	inner = append(inner, s...)
	a, err := layeh.NewVendorSpecific(vendor, inner)
	if err != nil {
		p.fail(fmt.Errorf("vendor %d attribute %d: %w", vendor, typ, err))
		return
	}
	p.Add(AttrVendorSpecific, a)
}

var (
	// ErrMalformed: an answer that is not a RADIUS packet.
	ErrMalformed = errors.New("radius: malformed packet")
	// ErrBadAuthenticator: a response that was not signed with our
	// shared secret for our request, a wrong secret most of the time.
	ErrBadAuthenticator = errors.New("radius: response authenticator does not match (wrong shared secret?)")
)
