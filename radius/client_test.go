package radius_test

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/carrier-core/carrier/radius"
	"github.com/carrier-core/carrier/tools/testkit"
)

// TestMessageAuthenticatorAgainstFreeRADIUS proves our HMAC the way
// FreeRADIUS computes it. FreeRADIUS 3.2 enforces
// require_message_authenticator (set on the test client) on
// Access-Requests only and takes accounting without one, but it checks
// one that is present and drops the request when it does not verify: a
// request with a made-up Message-Authenticator (and a valid Request
// Authenticator) is dropped, ours is recorded.
func TestMessageAuthenticatorAgainstFreeRADIUS(t *testing.T) {
	fr := startRADIUS(t)
	server := radius.Server{Addr: fr.AcctAddr(), Secret: testkit.FreeRADIUSSecret}
	send := func(p *radius.Packet, noMA bool) error {
		t.Helper()
		client, err := radius.NewClient(radius.ClientConfig{
			Servers:                []radius.Server{server},
			Timeout:                300 * time.Millisecond,
			Retries:                1,
			NoMessageAuthenticator: noMA,
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.Send(t.Context(), p)
		return err
	}
	forged := radius.Record{Status: radius.StatusStart, CDR: startedOf(answered(1)), At: base}.Packet(radius.ProfileOpenSIPS, nas, time.Now())
	forged.Add(radius.AttrMessageAuthenticator, bytes.Repeat([]byte{0x5a}, 16))
	if err := send(forged, true); !errors.Is(err, radius.ErrNoAnswer) {
		t.Fatalf("request with a made-up Message-Authenticator: %v, want ErrNoAnswer (the server must drop it)", err)
	}
	c := answered(2)
	signed := radius.Record{Status: radius.StatusStart, CDR: startedOf(c), At: base}.Packet(radius.ProfileOpenSIPS, nas, time.Now())
	if err := send(signed, false); err != nil {
		t.Fatalf("request with our Message-Authenticator: %v", err)
	}
	recs, err := fr.Records()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Value("Acct-Session-Id") != c.CallID || recs[0].Value("Acct-Status-Type") != "Start" {
		t.Fatalf("records %+v, want the one signed Start", recs)
	}
	log, err := os.ReadFile(fr.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(log, []byte("invalid Message-Authenticator")) {
		t.Fatalf("the server's log does not say it dropped the made-up Message-Authenticator; see %s", fr.LogPath())
	}
}
