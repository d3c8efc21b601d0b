package radius

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Packet codes (RFC 2866).
const (
	CodeAccountingRequest  = 4
	CodeAccountingResponse = 5
)

// Standard attribute types (RFC 2865, 2866, 2869).
const (
	AttrUserName             = 1
	AttrNASIPAddress         = 4
	AttrVendorSpecific       = 26
	AttrCalledStationID      = 30
	AttrCallingStationID     = 31
	AttrNASIdentifier        = 32
	AttrAcctStatusType       = 40
	AttrAcctDelayTime        = 41
	AttrAcctSessionID        = 44
	AttrAcctSessionTime      = 46
	AttrAcctTerminateCause   = 49
	AttrEventTimestamp       = 55
	AttrMessageAuthenticator = 80
	AttrAcctMultiSessionID   = 50
)

// StatusType is Acct-Status-Type.
type StatusType uint32

// Acct-Status-Type values; Failed is 15 (RFC 2866 registry).
const (
	StatusStart   StatusType = 1
	StatusStop    StatusType = 2
	StatusInterim StatusType = 3
	StatusFailed  StatusType = 15
)

func (s StatusType) String() string {
	switch s {
	case StatusStart:
		return "Start"
	case StatusStop:
		return "Stop"
	case StatusInterim:
		return "Interim-Update"
	case StatusFailed:
		return "Failed"
	}
	return fmt.Sprintf("Acct-Status-Type-%d", uint32(s))
}

// Attribute is one attribute of a packet. Vendor is 0 for a standard
// attribute; otherwise it is carried in a Vendor-Specific attribute with
// one-octet vendor type and length, the format of Cisco's VSAs.
type Attribute struct {
	Vendor uint32
	Type   byte
	Value  []byte
}

// Packet is a RADIUS packet, decoded or to be encoded.
type Packet struct {
	Code          byte
	Identifier    byte
	Authenticator [16]byte
	Attributes    []Attribute
}

// Add appends a standard attribute.
func (p *Packet) Add(typ byte, value []byte) {
	p.Attributes = append(p.Attributes, Attribute{Type: typ, Value: value})
}

// AddString appends a text attribute; an empty text is left out, as RFC
// 2865 does not allow empty attributes.
func (p *Packet) AddString(typ byte, s string) {
	if s != "" {
		p.Add(typ, []byte(truncate(s)))
	}
}

// AddInt appends an integer attribute.
func (p *Packet) AddInt(typ byte, v uint32) { p.Add(typ, be32(v)) }

// AddVendorString appends a vendor-specific text attribute.
func (p *Packet) AddVendorString(vendor uint32, typ byte, s string) {
	if s != "" {
		p.Attributes = append(p.Attributes, Attribute{Vendor: vendor, Type: typ, Value: []byte(truncate(s))})
	}
}

// AddAddr appends an IPv4 address attribute; other addresses are left out.
func (p *Packet) AddAddr(typ byte, a netip.Addr) {
	if a.Is4() {
		b := a.As4()
		p.Add(typ, b[:])
	}
}

// Get returns the value of the first standard attribute of the type.
func (p *Packet) Get(typ byte) ([]byte, bool) {
	for _, a := range p.Attributes {
		if a.Vendor == 0 && a.Type == typ {
			return a.Value, true
		}
	}
	return nil, false
}

// maxValue is the most an attribute value can hold (255 minus type and
// length; a VSA's header leaves 247, the bound applied to all text).
const maxValue = 247

func truncate(s string) string {
	if len(s) > maxValue {
		return s[:maxValue]
	}
	return s
}

func be32(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return b[:]
}

// maxPacket is RFC 2865's largest packet.
const maxPacket = 4096

var (
	// ErrMalformed: bytes that are not a RADIUS packet.
	ErrMalformed = errors.New("radius: malformed packet")
	// ErrBadAuthenticator: a response that was not signed with our
	// shared secret for our request, a wrong secret most of the time.
	ErrBadAuthenticator = errors.New("radius: response authenticator does not match (wrong shared secret?)")
)

// encodeAttributes writes the attributes; withMA adds a zeroed
// Message-Authenticator and returns its offset in the attribute bytes.
func (p *Packet) encodeAttributes(withMA bool) ([]byte, int, error) {
	var b []byte
	for _, a := range p.Attributes {
		if a.Vendor == 0 {
			if len(a.Value) > 253 {
				return nil, 0, fmt.Errorf("attribute %d: %d octets, at most 253 fit", a.Type, len(a.Value))
			}
			b = append(b, a.Type, byte(2+len(a.Value)))
			b = append(b, a.Value...)
			continue
		}
		if len(a.Value) > maxValue {
			return nil, 0, fmt.Errorf("vendor %d attribute %d: %d octets, at most %d fit", a.Vendor, a.Type, len(a.Value), maxValue)
		}
		b = append(b, AttrVendorSpecific, byte(2+4+2+len(a.Value)))
		b = append(b, be32(a.Vendor)...)
		b = append(b, a.Type, byte(2+len(a.Value)))
		b = append(b, a.Value...)
	}
	maOffset := -1
	if withMA {
		maOffset = len(b)
		b = append(b, AttrMessageAuthenticator, 18)
		b = append(b, make([]byte, 16)...)
	}
	if n := 20 + len(b); n > maxPacket {
		return nil, 0, fmt.Errorf("radius: packet of %d octets, at most %d allowed", n, maxPacket)
	}
	return b, maOffset, nil
}

// EncodeRequest encodes an Accounting-Request: the Request Authenticator
// is MD5 over the packet with a zero authenticator and the secret (RFC
// 2866 §3). With messageAuth a Message-Authenticator is added first,
// computed over the packet with a zero authenticator (RFC 3579 §3.2 as
// FreeRADIUS applies it to accounting).
func (p *Packet) EncodeRequest(secret []byte, messageAuth bool) ([]byte, error) {
	attrs, maOffset, err := p.encodeAttributes(messageAuth)
	if err != nil {
		return nil, err
	}
	n := 20 + len(attrs)
	b := make([]byte, n)
	b[0] = p.Code
	b[1] = p.Identifier
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	copy(b[20:], attrs)
	if maOffset >= 0 {
		mac := hmac.New(md5.New, secret)
		mac.Write(b)
		copy(b[20+maOffset+2:], mac.Sum(nil))
	}
	h := md5.New()
	h.Write(b)
	h.Write(secret)
	copy(b[4:20], h.Sum(nil))
	copy(p.Authenticator[:], b[4:20])
	return b, nil
}

// Parse decodes a packet without checking its authenticator.
func Parse(b []byte) (*Packet, error) {
	if len(b) < 20 {
		return nil, fmt.Errorf("%w: %d octets", ErrMalformed, len(b))
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n < 20 || n > len(b) || n > maxPacket {
		return nil, fmt.Errorf("%w: length field %d, %d octets received", ErrMalformed, n, len(b))
	}
	p := &Packet{Code: b[0], Identifier: b[1]}
	copy(p.Authenticator[:], b[4:20])
	for rest := b[20:n]; len(rest) > 0; {
		if len(rest) < 2 || int(rest[1]) < 2 || int(rest[1]) > len(rest) {
			return nil, fmt.Errorf("%w: attribute runs past the packet", ErrMalformed)
		}
		typ, val := rest[0], rest[2:rest[1]]
		rest = rest[rest[1]:]
		if typ == AttrVendorSpecific && len(val) >= 6 && int(val[5]) == len(val)-4 && val[5] >= 2 {
			p.Attributes = append(p.Attributes, Attribute{Vendor: binary.BigEndian.Uint32(val[:4]), Type: val[4], Value: val[6:]})
			continue
		}
		p.Attributes = append(p.Attributes, Attribute{Type: typ, Value: val})
	}
	return p, nil
}

// verifyResponse checks that b is a response to req (its authenticator
// given) signed with secret: the Response Authenticator (RFC 2866 §3) and,
// when present, the Message-Authenticator.
func verifyResponse(b []byte, reqAuth [16]byte, secret []byte) error {
	n := int(binary.BigEndian.Uint16(b[2:4]))
	resp := append([]byte(nil), b[:n]...)
	got := append([]byte(nil), resp[4:20]...)
	copy(resp[4:20], reqAuth[:])
	h := md5.New()
	h.Write(resp)
	h.Write(secret)
	if subtle.ConstantTimeCompare(got, h.Sum(nil)) != 1 {
		return ErrBadAuthenticator
	}
	// The Message-Authenticator of a response is computed with the
	// request's authenticator in place, as above.
	for off := 20; off+2 <= n; off += int(resp[off+1]) {
		if resp[off+1] < 2 {
			return ErrMalformed
		}
		if resp[off] != AttrMessageAuthenticator || resp[off+1] != 18 {
			continue
		}
		want := append([]byte(nil), resp[off+2:off+18]...)
		clear(resp[off+2 : off+18])
		mac := hmac.New(md5.New, secret)
		mac.Write(resp)
		if !hmac.Equal(want, mac.Sum(nil)) {
			return fmt.Errorf("%w: Message-Authenticator", ErrBadAuthenticator)
		}
		break
	}
	return nil
}
