package radius

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	layeh "layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"

	"github.com/carrier-core/carrier/schema"
)

// SIP attributes in OpenSIPS's numbering (dictionary.carrier names them;
// the library has no dictionary of them). Setuptime, Created and
// MSDuration are "signed" there: the same four octets as integer.
const (
	AttrSipMethod         layeh.Type = 204
	AttrSipResponseCode   layeh.Type = 205
	AttrSipFromTag        layeh.Type = 206
	AttrSipToTag          layeh.Type = 207
	AttrSipCallDuration   layeh.Type = 227
	AttrSipCallSetuptime  layeh.Type = 228
	AttrSipCallCreated    layeh.Type = 229
	AttrSipCallMSDuration layeh.Type = 230
)

// Sip-Method values: OpenSIPS's bit mask.
const (
	SipMethodInvite = 1
	SipMethodBye    = 8
)

// Cisco VSAs (vendor 9) of the cisco profile, as in FreeRADIUS's
// dictionary.cisco.
const (
	VendorCisco              = 9
	CiscoH323SetupTime       = 25
	CiscoH323ConnectTime     = 28
	CiscoH323DisconnectTime  = 29
	CiscoH323DisconnectCause = 30
	CiscoCallID              = 141
)

// Profile selects the call attributes sent beside the standard ones.
type Profile string

const (
	// ProfileOpenSIPS sends the SIP attributes as OpenSIPS's acc module
	// does (Sip-Method, Sip-Response-Code, tags, call times).
	ProfileOpenSIPS Profile = "opensips"
	// ProfileCisco sends Cisco's h323 VSAs and call-id, for billing
	// systems written for Cisco gateways.
	ProfileCisco Profile = "cisco"
)

// ParseProfile reads a profile name.
func ParseProfile(s string) (Profile, error) {
	switch p := Profile(strings.ToLower(s)); p {
	case ProfileOpenSIPS, ProfileCisco:
		return p, nil
	}
	return "", fmt.Errorf("radius profile %q: want opensips or cisco", s)
}

// NAS is how we name ourselves to the accounting server.
type NAS struct {
	Identifier string
	// IP is sent as NAS-IP-Address when it is an IPv4 address.
	IP netip.Addr
}

// Record is one accounting record of a call.
type Record struct {
	Status StatusType
	CDR    schema.CDR
	// At is when the recorded thing happened: the answer (Start), the
	// end (Stop, Failed) or the time of an Interim-Update.
	At time.Time
}

// SessionTime is Acct-Session-Time: the billed seconds of a finished
// call (a started second counts), the whole seconds so far of a running
// one.
func (r Record) SessionTime() uint32 {
	switch r.Status {
	case StatusStop:
		return uint32(max(r.CDR.BillableSec, schema.BillableSeconds(r.CDR.DurationMs)))
	case StatusInterim:
		if r.CDR.AnswerAt == 0 {
			return 0
		}
		return uint32(max(0, schema.Millis(r.At)-r.CDR.AnswerAt) / 1000)
	}
	return 0
}

// Packet builds the Accounting-Request of the record as sent at sentAt:
// when that is a second or more after At, Acct-Delay-Time says so, and the
// server can tell when the record happened. An attribute that cannot be
// encoded makes Send fail with ErrInvalidPacket.
func (r Record) Packet(profile Profile, nas NAS, sentAt time.Time) *Packet {
	c := &r.CDR
	// The standard attributes go through the library's typed helpers,
	// which build on a library packet; the Client adds what depends on
	// the server.
	lp := &layeh.Packet{Code: layeh.CodeAccountingRequest}
	var errs []error
	add := func(attr string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", attr, err))
		}
	}
	// text leaves out empty values (RFC 2865 allows no empty attribute)
	// and cuts long ones, as Packet.AddString does.
	text := func(attr string, set func(*layeh.Packet, string) error, s string) {
		if s != "" {
			add(attr, set(lp, truncate(s)))
		}
	}
	add("Acct-Status-Type", rfc2866.AcctStatusType_Add(lp, r.Status))
	text("Acct-Session-Id", rfc2866.AcctSessionID_AddString, c.CallID)
	// The CDR id ties the records of a call together, also when two
	// calls share a Call-ID (a new From tag). Acct-Unique-Session-Id is
	// FreeRADIUS's own attribute, not sent on the wire: a server can set
	// it from this one (see the README).
	text("Acct-Multi-Session-Id", rfc2866.AcctMultiSessionID_AddString, c.ID)
	text("User-Name", rfc2865.UserName_AddString, c.Account)
	text("Calling-Station-Id", rfc2865.CallingStationID_AddString, e164(c.CallerE164, c.Caller))
	text("Called-Station-Id", rfc2865.CalledStationID_AddString, e164(c.CalleeE164, c.Callee))
	// NAS-IP-Address holds IPv4 only; an IPv6 NAS is named by
	// NAS-Identifier alone.
	if nas.IP.Is4() {
		add("NAS-IP-Address", rfc2865.NASIPAddress_Add(lp, nas.IP.AsSlice()))
	}
	text("NAS-Identifier", rfc2865.NASIdentifier_AddString, nas.Identifier)
	if !r.At.IsZero() {
		add("Event-Timestamp", rfc2869.EventTimestamp_Add(lp, r.At))
		if d := sentAt.Sub(r.At); d >= time.Second {
			add("Acct-Delay-Time", rfc2866.AcctDelayTime_Add(lp, rfc2866.AcctDelayTime(d/time.Second)))
		}
	}
	if r.Status == StatusStop || r.Status == StatusInterim {
		add("Acct-Session-Time", rfc2866.AcctSessionTime_Add(lp, rfc2866.AcctSessionTime(r.SessionTime())))
	}
	if r.Status == StatusStop {
		add("Acct-Terminate-Cause", rfc2866.AcctTerminateCause_Add(lp, terminateCause(c.HangupReason)))
	}
	p := &Packet{Code: lp.Code, Attributes: lp.Attributes}
	p.fail(errors.Join(errs...))
	switch profile {
	case ProfileCisco:
		r.addCisco(p)
	default:
		r.addOpenSIPS(p)
	}
	return p
}

// e164 prefers the normalised number; the server gets what was received
// when normalisation did not yield one.
func e164(normalised, received string) string {
	if normalised != "" {
		return normalised
	}
	return received
}

func terminateCause(reason string) rfc2866.AcctTerminateCause {
	switch reason {
	case schema.EndCreditExhausted, schema.EndMaxDuration:
		return rfc2866.AcctTerminateCause_Value_SessionTimeout
	case schema.EndNoBye:
		return rfc2866.AcctTerminateCause_Value_LostService
	case "", schema.EndNormal:
		return rfc2866.AcctTerminateCause_Value_UserRequest
	}
	return rfc2866.AcctTerminateCause_Value_AdminReset
}

func (r Record) addOpenSIPS(p *Packet) {
	c := &r.CDR
	method, code := uint32(SipMethodInvite), c.Status
	if r.Status == StatusStop {
		// OpenSIPS accounts a Stop on the BYE and its 200.
		method, code = SipMethodBye, 200
	}
	p.AddInt(AttrSipMethod, method)
	if code > 0 {
		p.AddInt(AttrSipResponseCode, uint32(code))
	}
	p.AddString(AttrSipFromTag, c.FromTag)
	p.AddString(AttrSipToTag, c.ToTag)
	if c.InviteAt > 0 {
		p.AddInt(AttrSipCallCreated, uint32(c.InviteAt/1000))
	}
	if c.AnswerAt > 0 {
		p.AddInt(AttrSipCallSetuptime, uint32(max(0, c.SetupMs)/1000))
	}
	if r.Status == StatusStop {
		p.AddInt(AttrSipCallDuration, r.SessionTime())
		p.AddInt(AttrSipCallMSDuration, uint32(max(0, c.DurationMs)))
	}
}

// ciscoTime is the time format of Cisco's h323 VSAs.
const ciscoTime = "15:04:05.000 MST Mon Jan 2 2006"

func (r Record) addCisco(p *Packet) {
	c := &r.CDR
	// Cisco gateways send these VSAs as "name=value".
	vsa := func(typ byte, name, value string) {
		p.AddVendorString(VendorCisco, typ, name+"="+value)
	}
	ms := func(v int64) string { return schema.FromMillis(v).Format(ciscoTime) }
	p.AddVendorString(VendorCisco, CiscoCallID, c.CallID)
	if c.InviteAt > 0 {
		vsa(CiscoH323SetupTime, "h323-setup-time", ms(c.InviteAt))
	}
	if c.AnswerAt > 0 {
		vsa(CiscoH323ConnectTime, "h323-connect-time", ms(c.AnswerAt))
	}
	if r.Status == StatusStop || r.Status == StatusFailed {
		if c.EndAt > 0 {
			vsa(CiscoH323DisconnectTime, "h323-disconnect-time", ms(c.EndAt))
		}
		vsa(CiscoH323DisconnectCause, "h323-disconnect-cause", strconv.FormatInt(int64(q850(c)), 16))
	}
}

// q850 is the call's Q.850 cause: the one a Reason header gave, or the
// usual mapping of its SIP status (RFC 3398).
func q850(c *schema.CDR) int {
	if c.Q850 > 0 {
		return c.Q850
	}
	switch {
	case c.Disposition == schema.Answered:
		return 16
	case c.Status == 486 || c.Status == 600:
		return 17
	case c.Status == 480 || c.Status == 408:
		return 18
	case c.Status == 404 || c.Status == 604:
		return 1
	case c.Status == 487:
		return 16
	case c.Status == 403 || c.Status == 603:
		return 21
	case c.Status == 503:
		return 34
	}
	return 31
}
