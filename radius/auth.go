package radius

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"slices"

	layeh "layeh.com/radius"
	"layeh.com/radius/rfc2869"
)

// The library encodes packets and computes the Request and Response
// Authenticators (RFC 2866 §3), but it neither adds nor checks
// Message-Authenticator (RFC 3579 §3.2, RFC 2869 §5.14). Servers with
// require_message_authenticator drop accounting requests without it, so
// it is done here, on the library's packets.

// encodeRequest encodes an Accounting-Request for the wire: with
// messageAuth it first appends a Message-Authenticator, an HMAC-MD5 keyed
// with the secret over the packet with the Request Authenticator and the
// Message-Authenticator set to zeros (the Request Authenticator of an
// Accounting-Request is not known yet: it is a hash over the packet, the
// Message-Authenticator included). The library's Encode then computes the
// Request Authenticator over the final packet; it is copied into
// p.Authenticator, against which the response is checked.
func encodeRequest(p *layeh.Packet, messageAuth bool) ([]byte, error) {
	if messageAuth {
		var zero [16]byte
		mac, err := messageAuthenticator(p, zero)
		if err != nil {
			return nil, err
		}
		p.Set(rfc2869.MessageAuthenticator_Type, mac)
	}
	b, err := p.Encode()
	if err != nil {
		return nil, err
	}
	copy(p.Authenticator[:], b[4:20])
	return b, nil
}

// messageAuthenticator is the Message-Authenticator of p: HMAC-MD5 keyed
// with p.Secret over p encoded with auth in the authenticator field and
// 16 zeros as the Message-Authenticator's value. auth is zeros for an
// Accounting-Request and the request's authenticator for a response.
func messageAuthenticator(p *layeh.Packet, auth [16]byte) (layeh.Attribute, error) {
	q := layeh.Packet{
		Code:          p.Code,
		Identifier:    p.Identifier,
		Authenticator: auth,
		Attributes:    slices.Clone(p.Attributes),
	}
	// Set replaces the attribute where it is, so a received packet
	// encodes to the same octets that were signed.
	q.Set(rfc2869.MessageAuthenticator_Type, make(layeh.Attribute, md5.Size))
	b, err := q.MarshalBinary()
	if err != nil {
		return nil, err
	}
	mac := hmac.New(md5.New, p.Secret)
	mac.Write(b)
	return mac.Sum(nil), nil
}

// checkResponse decodes b and checks that it answers req: an
// Accounting-Response with its identifier, a Response Authenticator made
// with req's authenticator and secret and, when present, a valid
// Message-Authenticator. Errors wrap ErrMalformed or ErrBadAuthenticator
// when b is not a packet or not signed for req.
func checkResponse(b []byte, req *layeh.Packet) (*layeh.Packet, error) {
	resp, err := layeh.Parse(b, req.Secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if resp.Identifier != req.Identifier {
		return nil, fmt.Errorf("radius: response for identifier %d, want %d", resp.Identifier, req.Identifier)
	}
	if resp.Code != layeh.CodeAccountingResponse {
		return nil, fmt.Errorf("radius: answer %v, want Accounting-Response", resp.Code)
	}
	// Octets past the length field are padding (RFC 2865 §3), not
	// signed.
	b = b[:binary.BigEndian.Uint16(b[2:4])]
	// The request's wire form is needed only for its authenticator.
	var reqHeader [20]byte
	copy(reqHeader[4:], req.Authenticator[:])
	if !layeh.IsAuthenticResponse(b, reqHeader[:], req.Secret) {
		return nil, ErrBadAuthenticator
	}
	got, ok := resp.Lookup(rfc2869.MessageAuthenticator_Type)
	if !ok {
		return resp, nil
	}
	want, err := messageAuthenticator(resp, req.Authenticator)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if !hmac.Equal(got, want) {
		return nil, fmt.Errorf("%w: Message-Authenticator", ErrBadAuthenticator)
	}
	return resp, nil
}
