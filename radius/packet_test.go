package radius

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"errors"
	"testing"
)

// response builds an Accounting-Response to a request with the given
// authenticator, signed as a server does.
func response(id byte, reqAuth [16]byte, secret []byte, withMA bool) []byte {
	b := []byte{CodeAccountingResponse, id, 0, 20}
	b = append(b, reqAuth[:]...)
	if withMA {
		b = append(b, AttrMessageAuthenticator, 18)
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

func TestEncodeParseAndVerify(t *testing.T) {
	secret := []byte("s3cret")
	p := &Packet{Code: CodeAccountingRequest, Identifier: 7}
	p.AddInt(AttrAcctStatusType, uint32(StatusStop))
	p.AddString(AttrAcctSessionID, "abc@host")
	p.AddString(AttrUserName, "")
	p.AddVendorString(VendorCisco, CiscoCallID, "abc@host")
	b, err := p.EncodeRequest(secret, true)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Code != CodeAccountingRequest || got.Identifier != 7 || len(got.Attributes) != 4 {
		t.Fatalf("parsed %+v: want 4 attributes (the empty User-Name left out, Message-Authenticator added)", got)
	}
	if v, _ := got.Get(AttrAcctSessionID); string(v) != "abc@host" {
		t.Fatalf("Acct-Session-Id %q", v)
	}
	if a := got.Attributes[2]; a.Vendor != VendorCisco || a.Type != CiscoCallID || string(a.Value) != "abc@host" {
		t.Fatalf("vendor attribute %+v", a)
	}
	// The Request Authenticator is MD5 over the packet with zeros in its
	// place and the secret.
	zeroed := bytes.Clone(b)
	clear(zeroed[4:20])
	h := md5.New()
	h.Write(zeroed)
	h.Write(secret)
	if !bytes.Equal(h.Sum(nil), b[4:20]) {
		t.Fatal("request authenticator does not verify")
	}
	for _, withMA := range []bool{false, true} {
		resp := response(7, p.Authenticator, secret, withMA)
		if err := verifyResponse(resp, p.Authenticator, secret); err != nil {
			t.Fatalf("message authenticator %v: %v", withMA, err)
		}
		if err := verifyResponse(resp, p.Authenticator, []byte("other")); !errors.Is(err, ErrBadAuthenticator) {
			t.Fatalf("wrong secret, message authenticator %v: %v, want ErrBadAuthenticator", withMA, err)
		}
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	for _, b := range [][]byte{
		{4, 1, 0},
		append([]byte{4, 1, 0, 30}, make([]byte, 16)...),
		append(append([]byte{4, 1, 0, 23}, make([]byte, 16)...), 1, 9, 0),
	} {
		if _, err := Parse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(% x): %v, want ErrMalformed", b, err)
		}
	}
}

func TestSendRefusesOversizePacket(t *testing.T) {
	c, err := NewClient(ClientConfig{Servers: []Server{{Addr: "127.0.0.1:9", Secret: "x"}}})
	if err != nil {
		t.Fatal(err)
	}
	p := &Packet{Code: CodeAccountingRequest}
	for range 20 {
		p.AddString(AttrUserName, string(bytes.Repeat([]byte("a"), 300)))
	}
	if _, err := c.Send(t.Context(), p); !errors.Is(err, ErrInvalidPacket) {
		t.Fatalf("Send of a %d-attribute packet: %v, want ErrInvalidPacket", len(p.Attributes), err)
	}
}
