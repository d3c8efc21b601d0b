package testkit

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/carrier-core/carrier/radius"
)

func TestFreeRADIUSDetailAndRestart(t *testing.T) {
	dict := filepath.Join(t.TempDir(), "dictionary.test")
	if err := os.WriteFile(dict, []byte("ATTRIBUTE\tTestkit-Tag\t231\tstring\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fr := StartFreeRADIUS(t, WithDictionary(dict))
	client, err := radius.NewClient(radius.ClientConfig{
		Servers: []radius.Server{{Addr: fr.AcctAddr(), Secret: FreeRADIUSSecret}},
		Timeout: 500 * time.Millisecond,
		Retries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	send := func(session string) error {
		p := &radius.Packet{Code: radius.CodeAccountingRequest}
		p.AddInt(radius.AttrAcctStatusType, uint32(radius.StatusStart))
		p.AddString(radius.AttrAcctSessionID, session)
		p.AddString(231, "tag \"quoted\"")
		_, err := client.Send(ctx, p)
		return err
	}
	if err := send("one"); err != nil {
		t.Fatal(err)
	}
	recs, err := fr.Records()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1: %+v", len(recs), recs)
	}
	r := recs[0]
	if r.Value("Acct-Session-Id") != "one" || r.Value("Acct-Status-Type") != "Start" || r.Value("Testkit-Tag") != `tag "quoted"` {
		t.Fatalf("record %+v: want Acct-Session-Id one, Start and Testkit-Tag decoded by name", r)
	}

	fr.Stop()
	if fr.Running() {
		t.Fatal("running after Stop")
	}
	if err := send("lost"); !errors.Is(err, radius.ErrNoAnswer) {
		t.Fatalf("send to a stopped server: %v, want ErrNoAnswer", err)
	}
	fr.Start()
	if err := send("two"); err != nil {
		t.Fatal(err)
	}
	if recs, err = fr.Records(); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[1].Value("Acct-Session-Id") != "two" {
		t.Fatalf("after restart: %+v, want the records one and two", recs)
	}
}

func TestParseDetail(t *testing.T) {
	in := "Mon Nov 23 02:47:58 2026\n\tAcct-Status-Type = Stop\n\tAcct-Session-Id = \"a\\\\b\"\n\tAcct-Session-Time = 7\n\nMon Nov 23 02:47:59 2026\n\tAcct-Status-Type = Start\n"
	recs, err := ParseDetail([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1 (the second is not finished): %+v", len(recs), recs)
	}
	if recs[0].Value("Acct-Session-Id") != `a\b` || recs[0].Value("Acct-Session-Time") != "7" {
		t.Fatalf("record %+v", recs[0])
	}
}
