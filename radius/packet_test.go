package radius

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"errors"
	"slices"
	"testing"
	"time"

	layeh "layeh.com/radius"
)

// response builds an Accounting-Response to a request with the given
// authenticator, signed as a server does, octet by octet rather than with
// the code under test.
func response(id byte, reqAuth [16]byte, secret []byte, withMA bool) []byte {
	b := []byte{byte(CodeAccountingResponse), id, 0, 20}
	b = append(b, reqAuth[:]...)
	if withMA {
		b = append(b, byte(AttrMessageAuthenticator), 18)
		b = append(b, make([]byte, 16)...)
		b[3] = byte(len(b))
		mac := hmac.New(md5.New, secret)
		mac.Write(b)
		copy(b[22:38], mac.Sum(nil))
	}
	h := md5.New()
	h.Write(b)
	h.Write(secret)
	copy(b[4:20], h.Sum(nil))
	return b
}

// request is p as the Client sends it to a server with secret.
func request(t *testing.T, p *Packet, id byte, secret []byte, withMA bool) (*layeh.Packet, []byte) {
	t.Helper()
	req := layeh.New(p.Code, secret)
	req.Identifier = id
	req.Attributes = slices.Clone(p.Attributes)
	b, err := encodeRequest(req, withMA)
	if err != nil {
		t.Fatal(err)
	}
	return req, b
}

func TestEncodeRequest(t *testing.T) {
	secret := []byte("s3cret")
	p := &Packet{Code: CodeAccountingRequest}
	p.AddInt(AttrAcctStatusType, uint32(StatusStop))
	p.AddString(AttrAcctSessionID, "abc@host")
	p.AddString(AttrUserName, "")
	p.AddVendorString(VendorCisco, CiscoCallID, "abc@host")
	if p.err != nil {
		t.Fatal(p.err)
	}
	req, b := request(t, p, 7, secret, true)

	// The octets on the wire, after the header: status, session id, the
	// Cisco VSA (vendor 9, type 141, one-octet length) and the
	// Message-Authenticator last.
	var want []byte
	want = append(want, 40, 6, 0, 0, 0, 2)
	want = append(want, 44, 10)
	want = append(want, "abc@host"...)
	want = append(want, 26, 16, 0, 0, 0, 9, 141, 10)
	want = append(want, "abc@host"...)
	want = append(want, 80, 18)
	if len(b) != 20+len(want)+16 || !bytes.Equal(b[20:20+len(want)], want) {
		t.Fatalf("attributes on the wire:\n% x\nwant\n% x and 16 octets", b[20:], want)
	}
	if b[0] != 4 || b[1] != 7 || int(b[2])<<8|int(b[3]) != len(b) {
		t.Fatalf("header % x: want code 4, identifier 7, length %d", b[:4], len(b))
	}
	if len(p.Attributes) != 3 {
		t.Fatalf("the caller's packet has %d attributes after encoding, want its 3", len(p.Attributes))
	}

	// The Message-Authenticator is HMAC-MD5 over the packet with zeros
	// in the Request Authenticator and in its own value (RFC 3579 §3.2
	// as FreeRADIUS checks it on accounting).
	zeroed := bytes.Clone(b)
	clear(zeroed[4:20])
	clear(zeroed[len(zeroed)-16:])
	mac := hmac.New(md5.New, secret)
	mac.Write(zeroed)
	if !bytes.Equal(mac.Sum(nil), b[len(b)-16:]) {
		t.Fatal("Message-Authenticator does not verify")
	}
	// The Request Authenticator is MD5 over the final packet, the
	// Message-Authenticator included, with zeros in its place and the
	// secret (RFC 2866 §3).
	zeroed = bytes.Clone(b)
	clear(zeroed[4:20])
	h := md5.New()
	h.Write(zeroed)
	h.Write(secret)
	if !bytes.Equal(h.Sum(nil), b[4:20]) || !bytes.Equal(req.Authenticator[:], b[4:20]) {
		t.Fatal("request authenticator does not verify or was not kept for the response check")
	}

	_, plain := request(t, p, 7, secret, false)
	if len(plain) != 20+len(want)-2 || !bytes.Equal(plain[20:], want[:len(want)-2]) {
		t.Fatalf("without Message-Authenticator:\n% x\nwant\n% x", plain[20:], want[:len(want)-2])
	}
	if !layeh.IsAuthenticRequest(plain, secret) {
		t.Fatal("request authenticator without Message-Authenticator does not verify")
	}
}

func TestCheckResponse(t *testing.T) {
	secret := []byte("s3cret")
	p := &Packet{Code: CodeAccountingRequest}
	p.AddInt(AttrAcctStatusType, uint32(StatusStart))
	req, _ := request(t, p, 7, secret, true)
	other := *req
	other.Secret = []byte("other")
	for _, withMA := range []bool{false, true} {
		resp := response(7, req.Authenticator, secret, withMA)
		got, err := checkResponse(resp, req)
		if err != nil {
			t.Fatalf("message authenticator %v: %v", withMA, err)
		}
		if got.Code != CodeAccountingResponse || got.Identifier != 7 {
			t.Fatalf("decoded %v identifier %d", got.Code, got.Identifier)
		}
		if _, err := checkResponse(resp, &other); !errors.Is(err, ErrBadAuthenticator) {
			t.Fatalf("wrong secret, message authenticator %v: %v, want ErrBadAuthenticator", withMA, err)
		}
		// Padding past the length field is not part of the packet.
		if _, err := checkResponse(append(bytes.Clone(resp), 0, 0), req); err != nil {
			t.Fatalf("padded response, message authenticator %v: %v", withMA, err)
		}
	}

	// A Message-Authenticator that does not verify in a response whose
	// Response Authenticator does: signed by someone who knows the
	// secret but not how to make the HMAC.
	resp := response(7, req.Authenticator, secret, true)
	resp[30] ^= 1
	copy(resp[4:20], req.Authenticator[:])
	h := md5.New()
	h.Write(resp)
	h.Write(secret)
	copy(resp[4:20], h.Sum(nil))
	if _, err := checkResponse(resp, req); !errors.Is(err, ErrBadAuthenticator) {
		t.Fatalf("bad Message-Authenticator: %v, want ErrBadAuthenticator", err)
	}

	if _, err := checkResponse(response(8, req.Authenticator, secret, false), req); err == nil {
		t.Fatal("response with another identifier accepted")
	}
	notAcct := response(7, req.Authenticator, secret, false)
	notAcct[0] = byte(layeh.CodeAccessAccept)
	if _, err := checkResponse(notAcct, req); err == nil {
		t.Fatal("Access-Accept accepted as an accounting response")
	}
}

func TestCheckResponseRejectsMalformed(t *testing.T) {
	req := layeh.New(CodeAccountingRequest, []byte("s3cret"))
	for _, b := range [][]byte{
		{5, 1, 0},
		append([]byte{5, 1, 0, 30}, make([]byte, 16)...),
		append(append([]byte{5, 1, 0, 23}, make([]byte, 16)...), 1, 9, 0),
	} {
		if _, err := checkResponse(b, req); !errors.Is(err, ErrMalformed) {
			t.Errorf("checkResponse(% x): %v, want ErrMalformed", b, err)
		}
	}
}

func TestSendRefusesInvalidPacket(t *testing.T) {
	c, err := NewClient(ClientConfig{Servers: []Server{{Addr: "127.0.0.1:9", Secret: "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	oversize := &Packet{Code: CodeAccountingRequest}
	for range 20 {
		oversize.AddString(AttrUserName, string(bytes.Repeat([]byte("a"), 300)))
	}
	if v := oversize.Get(AttrUserName); len(v) != maxText {
		t.Fatalf("300 octets of text sent as %d, want them cut to %d", len(v), maxText)
	}
	badType := &Packet{Code: CodeAccountingRequest}
	badType.AddString(300, "x")
	access := &Packet{Code: layeh.CodeAccessRequest}
	access.AddString(AttrUserName, "x")
	// Event-Timestamp counts seconds in 32 bits: the library refuses
	// 2200, and the record must fail rather than go without it.
	future := Record{Status: StatusStart, At: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)}.Packet(ProfileOpenSIPS, NAS{}, time.Now())
	for name, p := range map[string]*Packet{
		"a 20-attribute packet over 4096 octets": oversize,
		"attribute type 300":                     badType,
		"an Access-Request":                      access,
		"an Event-Timestamp in 2200":             future,
	} {
		if _, err := c.Send(t.Context(), p); !errors.Is(err, ErrInvalidPacket) {
			t.Errorf("Send of %s: %v, want ErrInvalidPacket", name, err)
		}
	}
}
