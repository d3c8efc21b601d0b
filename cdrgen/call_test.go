package cdrgen

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/carrier-core/carrier/schema"
)

// jsonBook keeps states the way KV does, as JSON, so the tests also check
// that nothing is lost in a state's round trip through the buckets.
type jsonBook map[string][]byte

func (b jsonBook) get(key string) *callState {
	data, ok := b[key]
	if !ok {
		return nil
	}
	var st callState
	if err := json.Unmarshal(data, &st); err != nil {
		panic(err)
	}
	return &st
}

func (b jsonBook) put(key string, st *callState) {
	data, err := json.Marshal(st)
	if err != nil {
		panic(err)
	}
	b[key] = data
}

func apply(b book, txs []schema.Transaction) ([]emission, []outcome) {
	var out []emission
	var outcomes []outcome
	for _, tx := range txs {
		ev := newEvent(tx, proxyNode)
		em, o := correlate(b, &ev)
		out = append(out, em...)
		outcomes = append(outcomes, o)
	}
	return out, outcomes
}

func startedEv(c testCall) emission {
	cdr := c.startedCDR()
	return emission{Type: schema.TypeCallStarted, ID: schema.StartedID(cdr.ID), At: cdr.AnswerAt, CDR: cdr, key: callKey(c.id, c.from)}
}

func endedEv(c testCall, cdr schema.CDR) emission {
	return emission{Type: schema.TypeCallEnded, ID: cdr.ID, At: cdr.EndAt, CDR: cdr, key: callKey(c.id, c.from)}
}

func failedEv(c testCall, cdr schema.CDR) emission {
	return emission{Type: schema.TypeCallFailed, ID: cdr.ID, At: cdr.EndAt, CDR: cdr, key: callKey(c.id, c.from)}
}

type scenario struct {
	name string
	txs  []schema.Transaction
	want []emission
	// byeFirst: the outcome must not change when the BYEs come first.
	byeFirst bool
}

// scenarios are the calls of the pure tests, each with its golden events.
func scenarios() []scenario {
	c := newTestCall(1)
	ok := c.invite(200, "OK")

	calleeEnded := c.answeredCDR(schema.HangupCallee)

	creditBye := c.bye(false)
	creditBye.Note = schema.EndCreditExhausted
	creditBye.Source = "198.51.100.1:5060"
	creditEnded := c.answeredCDR(schema.HangupProxy)
	creditEnded.HangupReason = schema.EndCreditExhausted

	unansweredBye := c.bye(true)
	unansweredBye.Status, unansweredBye.FinalAt = 0, 0

	cancel := schema.Transaction{Method: "CANCEL", CallID: c.id, FromTag: c.from, CSeq: 1, Source: "192.0.2.10:5060", Status: 200, RequestAt: c.at + 4000, FinalAt: c.at + 4001}
	cancelled := c.invite(487, "Request Terminated")
	cancelled.FinalAt = c.at + 4010
	cancelled.Attempts[1].FinalAt = c.at + 4010
	cancelledCDR := c.failedCDR(487, "Request Terminated", 0, schema.Cancelled)
	cancelledCDR.Attempts[1].FinalAt = c.at + 4010
	cancelledCDR.EndAt = c.at + 4010

	congestion := c.invite(503, "Service Unavailable")
	congestion.Q850 = 34

	notFound := c.invite(404, "Not Found")
	notFound.Q850 = 1
	notFound.ProvisionalAt, notFound.ProvisionalStatus = 0, 0
	notFound.Attempts[1].ProvisionalAt = 0
	notFoundCDR := c.failedCDR(404, "Not Found", 1, schema.Failed)
	notFoundCDR.ProvisionalAt, notFoundCDR.PDDMs = 0, 0
	notFoundCDR.Attempts[1].ProvisionalAt = 0

	noFinal := c.invite(0, "")
	noFinal.FinalAt = 0
	noFinalCDR := c.failedCDR(0, "", 0, schema.Failed)
	noFinalCDR.EndAt = c.at

	challenge := c.invite(407, "Proxy Authentication Required")
	retried := ok
	retried.CSeq = 2

	reinvite := c.inDialog("INVITE", true, 30000, 200)
	outOfDialogOptions := schema.Transaction{Method: "OPTIONS", CallID: "keepalive-1@192.0.2.10", FromTag: "k1", Status: 200, RequestAt: c.at}

	return []scenario{
		{name: "answered, caller hangs up", txs: []schema.Transaction{ok, c.ack(), c.bye(false)},
			want: []emission{startedEv(c), endedEv(c, c.answeredCDR(schema.HangupCaller))}, byeFirst: true},
		{name: "callee hangs up", txs: []schema.Transaction{ok, c.ack(), c.bye(true)},
			want: []emission{startedEv(c), endedEv(c, calleeEnded)}, byeFirst: true},
		{name: "proxy hangs up, credit exhausted", txs: []schema.Transaction{ok, c.ack(), creditBye},
			want: []emission{startedEv(c), endedEv(c, creditEnded)}, byeFirst: true},
		{name: "BYE without a final response still ends the call", txs: []schema.Transaction{ok, c.ack(), unansweredBye},
			want: []emission{startedEv(c), endedEv(c, calleeEnded)}, byeFirst: true},
		{name: "requests inside the call do not disturb it", txs: []schema.Transaction{
			ok, c.ack(), reinvite, c.inDialog("ACK", true, 30100, 0),
			c.inDialog("UPDATE", false, 31000, 200), c.inDialog("INFO", true, 32000, 200),
			c.inDialog("OPTIONS", false, 33000, 200), c.inDialog("INVITE", false, 34000, 491),
			outOfDialogOptions, c.bye(false), c.inDialog("OPTIONS", true, byeAfter+10, 481),
		}, want: []emission{startedEv(c), endedEv(c, c.answeredCDR(schema.HangupCaller))}, byeFirst: true},
		{name: "both sides hang up: the first BYE counts", txs: []schema.Transaction{ok, c.ack(), c.bye(true), c.bye(false)},
			want: []emission{startedEv(c), endedEv(c, calleeEnded)}},
		{name: "challenge then answered", txs: []schema.Transaction{challenge, c.inDialog("ACK", false, answerAfter+1, 0), retried, c.ack(), c.bye(false)},
			want: []emission{startedEv(c), endedEv(c, c.answeredCDR(schema.HangupCaller))}},
		{name: "busy 486", txs: []schema.Transaction{c.invite(486, "Busy Here"), c.inDialog("ACK", false, answerAfter+1, 0)},
			want: []emission{failedEv(c, c.failedCDR(486, "Busy Here", 0, schema.Busy))}},
		{name: "busy 600", txs: []schema.Transaction{c.invite(600, "Busy Everywhere")},
			want: []emission{failedEv(c, c.failedCDR(600, "Busy Everywhere", 0, schema.Busy))}},
		{name: "no answer 408", txs: []schema.Transaction{c.invite(408, "Request Timeout")},
			want: []emission{failedEv(c, c.failedCDR(408, "Request Timeout", 0, schema.NoAnswer))}},
		{name: "no answer 480", txs: []schema.Transaction{c.invite(480, "Temporarily Unavailable")},
			want: []emission{failedEv(c, c.failedCDR(480, "Temporarily Unavailable", 0, schema.NoAnswer))}},
		{name: "cancelled while ringing", txs: []schema.Transaction{cancel, cancelled},
			want: []emission{failedEv(c, cancelledCDR)}},
		{name: "congestion", txs: []schema.Transaction{congestion},
			want: []emission{failedEv(c, c.failedCDR(503, "Service Unavailable", 34, schema.Congestion))}},
		{name: "failed with a Q.850 cause", txs: []schema.Transaction{notFound},
			want: []emission{failedEv(c, notFoundCDR)}},
		{name: "rejected 403", txs: []schema.Transaction{c.invite(403, "Forbidden")},
			want: []emission{failedEv(c, c.failedCDR(403, "Forbidden", 0, schema.Failed))}},
		{name: "INVITE without a final answer", txs: []schema.Transaction{noFinal},
			want: []emission{failedEv(c, noFinalCDR)}},
		{name: "a BYE does not end a failed call", txs: []schema.Transaction{c.invite(486, "Busy Here"), c.bye(false)},
			want: []emission{failedEv(c, c.failedCDR(486, "Busy Here", 0, schema.Busy))}},
	}
}

func TestCorrelate(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			got, _ := apply(jsonBook{}, sc.txs)
			assertEmissions(t, got, sc.want)
		})
	}
}

// TestCorrelateIsIdempotent: duplicated events, a replay of the whole call
// and, where it can happen, BYEs ahead of their INVITE give the same events.
func TestCorrelateIsIdempotent(t *testing.T) {
	for _, sc := range scenarios() {
		t.Run(sc.name, func(t *testing.T) {
			var twice []schema.Transaction
			for _, tx := range sc.txs {
				twice = append(twice, tx, tx)
			}
			got, _ := apply(jsonBook{}, twice)
			assertEmissions(t, got, sc.want)

			b := jsonBook{}
			first, _ := apply(b, sc.txs)
			again, outcomes := apply(b, sc.txs)
			assertEmissions(t, first, sc.want)
			if len(again) != 0 {
				t.Errorf("replay emitted %d events: %+v", len(again), again)
			}
			for i, o := range outcomes {
				if o != outcomeDuplicate && o != outcomeIgnored {
					t.Errorf("replay of %s: outcome %s", sc.txs[i].Method, o)
				}
			}

			if !sc.byeFirst {
				return
			}
			var byes, rest []schema.Transaction
			for _, tx := range sc.txs {
				if tx.Method == "BYE" {
					byes = append(byes, tx)
				} else {
					rest = append(rest, tx)
				}
			}
			got, outcomes = apply(jsonBook{}, append(byes, rest...))
			if outcomes[0] != outcomeEarly {
				t.Errorf("BYE before INVITE: outcome %s, want %s", outcomes[0], outcomeEarly)
			}
			assertEmissions(t, got, sc.want)
		})
	}
}

func TestCorrelateConflict(t *testing.T) {
	c := newTestCall(1)
	retry := c.invite(200, "OK")
	retry.CSeq = 2
	got, outcomes := apply(jsonBook{}, []schema.Transaction{c.invite(486, "Busy Here"), retry, c.bye(false)})
	assertEmissions(t, got, []emission{failedEv(c, c.failedCDR(486, "Busy Here", 0, schema.Busy))})
	if outcomes[1] != outcomeConflict {
		t.Fatalf("second INVITE with a new CSeq: outcome %s, want %s", outcomes[1], outcomeConflict)
	}
}

// TestCorrelateKeepsCallsApart: calls sharing a Call-ID but not a From tag
// (a second call through a B2BUA that reuses Call-IDs) are different calls.
func TestCorrelateKeepsCallsApart(t *testing.T) {
	a, b := newTestCall(1), newTestCall(1)
	b.from, b.to = "other-from", "other-to"
	bCDR := b.answeredCDR(schema.HangupCallee)
	got, _ := apply(jsonBook{}, []schema.Transaction{
		a.invite(200, "OK"), b.invite(200, "OK"), b.bye(true), a.bye(false),
	})
	assertEmissions(t, got, []emission{
		startedEv(a), startedEv(b), endedEv(b, bCDR), endedEv(a, a.answeredCDR(schema.HangupCaller)),
	})
}

func assertEmissions(t *testing.T, got, want []emission) {
	t.Helper()
	if reflect.DeepEqual(got, want) {
		return
	}
	t.Errorf("got %d events, want %d", len(got), len(want))
	for i := range max(len(got), len(want)) {
		var g, w any = "(none)", "(none)"
		if i < len(got) {
			g = dump(got[i])
		}
		if i < len(want) {
			w = dump(want[i])
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("event %d:\n got  %s\n want %s", i, g, w)
		}
	}
}

func dump(e emission) string {
	b, _ := json.Marshal(struct {
		Type, ID string
		At       int64
		Key      string
		CDR      schema.CDR
	}{e.Type, e.ID, e.At, e.key, e.CDR})
	return string(b)
}

func TestUserPart(t *testing.T) {
	for _, c := range []struct{ uri, want string }{
		{"sip:+4930123456@192.0.2.10", "+4930123456"},
		{"sips:alice@example.com:5061;transport=tls", "alice"},
		{"sip:00442079460000@carrier.example;user=phone", "00442079460000"},
		{"sip:+12125550100;npdi;rn=+12125559999@gw.example;user=phone", "+12125550100"},
		{"tel:+1-212-555-0100;phone-context=example.com", "+1-212-555-0100"},
		{"\"Alice\" <sip:alice:secret@example.com>;tag=1", "alice"},
		{"<sip:%2B4930123@example.com>", "+4930123"},
		{"SIP:Bob@example.com", "Bob"},
		{"sip:example.com", ""},
		{"", ""},
		{"4930123@example.com", "4930123"},
	} {
		if got := userPart(c.uri); got != c.want {
			t.Errorf("userPart(%q) = %q, want %q", c.uri, got, c.want)
		}
	}
}

func TestE164(t *testing.T) {
	for _, c := range []struct{ user, want string }{
		{"+4930123456", "4930123456"},
		{"004930123456", "4930123456"},
		{"+1-212-555-0100", "12125550100"},
		{"+1 (212) 555.0100", "12125550100"},
		{"030123456", "030123456"},
		{"112", "112"},
		{"alice", ""},
		{"+49abc", ""},
		{"+", ""},
		{"00", ""},
		{"", ""},
		{"+1234567890123456", ""},
	} {
		if got := e164(c.user); got != c.want {
			t.Errorf("e164(%q) = %q, want %q", c.user, got, c.want)
		}
	}
}

func TestDisposition(t *testing.T) {
	for status, want := range map[int]schema.Disposition{
		200: schema.Answered, 202: schema.Answered,
		486: schema.Busy, 600: schema.Busy,
		408: schema.NoAnswer, 480: schema.NoAnswer,
		487: schema.Cancelled,
		503: schema.Congestion,
		403: schema.Failed, 404: schema.Failed, 484: schema.Failed, 402: schema.Failed, 500: schema.Failed, 603: schema.Failed, 302: schema.Failed, 0: schema.Failed,
	} {
		if got := disposition(status); got != want {
			t.Errorf("disposition(%d) = %s, want %s", status, got, want)
		}
	}
}
