package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// TestCDRRebuild: `carrier cdr rebuild` turns the SIP log of a range into
// CDRs with the ids a live correlator gives them; run again, it adds
// nothing to the CDR stream (same event ids, deduplicated).
func TestCDRRebuild(t *testing.T) {
	srv := testkit.StartNATS(t)
	_, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	start := time.Now().Add(-time.Hour).UnixMilli()
	var ids []string
	for i := range 5 {
		callID, tag := fmt.Sprintf("rebuild-%d@192.0.2.1", i), fmt.Sprintf("f%d", i)
		at := start + int64(i)*1000
		invite := schema.Transaction{Method: "INVITE", CallID: callID, FromURI: "sip:+4930123@192.0.2.1", FromTag: tag, ToTag: "t",
			CSeq: 1, RequestURI: "sip:+4420794600@carrier", Source: "192.0.2.1:5060", Transport: "udp",
			Status: 200, Reason: "OK", RequestAt: at, FinalAt: at + 2000}
		bye := schema.Transaction{Method: "BYE", CallID: callID, FromTag: tag, ToTag: "t", CSeq: 2, InDialog: true,
			Source: "192.0.2.1:5060", Transport: "udp", Status: 200, RequestAt: at + 62000, FinalAt: at + 62010}
		for _, tx := range []schema.Transaction{invite, bye} {
			env, err := schema.NewEnvelope(schema.TypeTransaction, schema.TransactionVersion, schema.FromMillis(tx.RequestAt), "proxy-1", tx)
			if err != nil {
				t.Fatal(err)
			}
			if err := eventlog.Publish(ctx, js, schema.TransactionSubject(callID), env); err != nil {
				t.Fatal(err)
			}
		}
		ids = append(ids, schema.CDRID(callID, tag))
	}

	rebuild := func() string {
		out := &syncBuffer{}
		root := newRootCmd(out, out, nil)
		root.SetArgs([]string{"cdr", "rebuild", "--nats-url", srv.URL, "--node", "rebuilder",
			"--from", time.UnixMilli(start).Add(-time.Minute).UTC().Format(time.RFC3339), "--to", time.Now().UTC().Format(time.RFC3339)})
		if err := root.ExecuteContext(ctx); err != nil {
			t.Fatalf("carrier cdr rebuild: %v\n%s", err, out.String())
		}
		return out.String()
	}
	out := rebuild()
	if !strings.Contains(out, "rebuilt: 10 events read") || !strings.Contains(out, "10 in range, 5 CDRs published") {
		t.Errorf("output:\n%s", out)
	}
	s, err := js.Stream(ctx, schema.StreamCDR)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 10 {
		t.Fatalf("CDR stream has %d events after the rebuild, want 5 call.started and 5 call.ended", info.State.Msgs)
	}
	got := map[string]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		env, err := schema.ParseEnvelope(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if env.Type == schema.TypeCallEnded {
			got[env.ID] = true
		}
	}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("no call.ended with CDR id %s", id)
		}
	}

	rebuild()
	if info, err = s.Info(ctx); err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 10 {
		t.Errorf("a second rebuild left %d events on the CDR stream, want the same 10", info.State.Msgs)
	}
}
