package schema

import (
	"errors"
	"testing"
	"time"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 123e6, time.UTC)
	tx := Transaction{Method: "INVITE", CallID: "abc@host", FromTag: "f1", Status: 200, RequestAt: Millis(at)}
	env, err := NewEnvelope(TypeTransaction, TransactionVersion, at, "node-1", tx)
	if err != nil {
		t.Fatal(err)
	}
	if env.Time != 1795428000123 {
		t.Fatalf("time = %d", env.Time)
	}
	b, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseEnvelope(b)
	if err != nil {
		t.Fatal(err)
	}
	var back Transaction
	if err := got.Decode(TypeTransaction, TransactionVersion, &back); err != nil {
		t.Fatal(err)
	}
	if back.CallID != tx.CallID || back.Status != 200 || got.ID != env.ID || got.Node != "node-1" {
		t.Fatalf("round trip changed the event: %+v %+v", got, back)
	}
	if err := got.Decode(TypeCallEnded, CDRVersion, &back); !errors.Is(err, ErrWrongType) {
		t.Fatalf("decode as wrong type: %v", err)
	}
	got.Version = 99
	if err := got.Decode(TypeTransaction, TransactionVersion, &back); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("decode newer version: %v", err)
	}
	if _, err := ParseEnvelope([]byte(`{"data":{}}`)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("parse without id: %v", err)
	}
}

func TestEnvelopeIDsSortByTime(t *testing.T) {
	a, _ := NewEnvelope(TypeTransaction, 1, time.Now(), "n", struct{}{})
	time.Sleep(2 * time.Millisecond)
	b, _ := NewEnvelope(TypeTransaction, 1, time.Now(), "n", struct{}{})
	if !(a.ID < b.ID) {
		t.Fatalf("ids do not sort by creation: %s then %s", a.ID, b.ID)
	}
}

func TestCDRIDIsDeterministic(t *testing.T) {
	if CDRID("c1", "t1") != CDRID("c1", "t1") {
		t.Fatal("same call, different ids")
	}
	// The separator keeps "ab"+"c" apart from "a"+"bc".
	if CDRID("ab", "c") == CDRID("a", "bc") {
		t.Fatal("ids collide across the Call-ID/tag boundary")
	}
	if StartedID(CDRID("c1", "t1")) == CDRID("c1", "t1") {
		t.Fatal("started event shares the CDR id")
	}
}

func TestPartitionsAreStableAndSpread(t *testing.T) {
	if Partition("call-1@10.0.0.1") != Partition("call-1@10.0.0.1") {
		t.Fatal("partition not stable")
	}
	seen := map[int]bool{}
	for i := 0; i < 1000; i++ {
		p := Partition(time.Unix(int64(i), 0).String())
		if p < 0 || p >= Partitions {
			t.Fatalf("partition %d out of range", p)
		}
		seen[p] = true
	}
	if len(seen) != Partitions {
		t.Fatalf("1000 Call-IDs used %d of %d partitions", len(seen), Partitions)
	}
	if got := TransactionSubject("x"); got != TransactionPartitionSubject(Partition("x")) {
		t.Fatalf("subject %s", got)
	}
	if got := CDRSubject(TypeCallFailed, "x"); got[:11] != "cdr.failed." {
		t.Fatalf("failed subject %s", got)
	}
}

func TestBillableSeconds(t *testing.T) {
	for _, c := range []struct{ ms, want int64 }{{0, 0}, {-5, 0}, {1, 1}, {999, 1}, {1000, 1}, {1001, 2}, {60000, 60}} {
		if got := BillableSeconds(c.ms); got != c.want {
			t.Errorf("BillableSeconds(%d) = %d, want %d", c.ms, got, c.want)
		}
	}
}
