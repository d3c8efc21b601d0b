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

// testRules are the live defaults.
var testRules = rules{maxCallMs: DefaultMaxCallDuration.Milliseconds(), lagMs: DefaultSweepLag.Milliseconds()}

func apply(b book, txs []schema.Transaction) ([]emission, []outcome) {
	var out []emission
	var outcomes []outcome
	for _, tx := range txs {
		ev := newEvent(tx, proxyNode)
		em, o := testRules.correlate(b, &ev)
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
	// orderMatters: reordering the transactions changes the outcome (two
	// BYEs: the first one handled counts), so the property tests leave
	// the scenario out.
	orderMatters bool
}

// scenarios are the calls of the pure tests, each with its golden events.
func scenarios() []scenario { return scenariosOf(newTestCall(1)) }

// scenariosOf are the scenarios as call c.
func scenariosOf(c testCall) []scenario {
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
	cancelledCDR := c.failedCDR(487, "Request Terminated", 0, schema.NoAnswer)
	cancelledCDR.Attempts[1].FinalAt = c.at + 4010
	cancelledCDR.EndAt = c.at + 4010

	// Cancelled before anything rang: the caller gave up on the network.
	early := schema.Transaction{Method: "CANCEL", CallID: c.id, FromTag: c.from, CSeq: 1, Source: "192.0.2.10:5060", Status: 200, RequestAt: c.at + 800, FinalAt: c.at + 801}
	cancelledEarly := c.invite(487, "Request Terminated")
	cancelledEarly.ProvisionalAt, cancelledEarly.ProvisionalStatus = 0, 0
	cancelledEarly.FinalAt = c.at + 810
	cancelledEarly.Attempts[1].ProvisionalAt, cancelledEarly.Attempts[1].FinalAt = 0, c.at+810
	cancelledEarlyCDR := c.failedCDR(487, "Request Terminated", 0, schema.Cancelled)
	cancelledEarlyCDR.ProvisionalAt, cancelledEarlyCDR.PDDMs = 0, 0
	cancelledEarlyCDR.Attempts[1].ProvisionalAt, cancelledEarlyCDR.Attempts[1].FinalAt = 0, c.at+810
	cancelledEarlyCDR.EndAt = c.at + 810

	// 183 Session Progress first: early media, and PDD from it.
	progress := c.invite(200, "OK")
	progress.ProvisionalStatus = 183
	progressCDR := c.answeredCDR(schema.HangupCaller)
	progressCDR.EarlyMedia = true
	progressStarted := startedEv(c)
	progressStarted.CDR.EarlyMedia = true

	// Parallel forks both answered; the second one tried answered first
	// and is the call's leg.
	forked := c.invite(200, "OK")
	forked.Attempts[0].Status, forked.Attempts[0].Reason, forked.Attempts[0].Q850 = 200, "OK", 0
	forked.Attempts[0].FinalAt = c.at + answerAfter + 30
	forkedCDR := c.answeredCDR(schema.HangupCaller)
	forkedCDR.Attempts[0] = forked.Attempts[0]
	forkedStarted := startedEv(c)
	forkedStarted.CDR.Attempts[0] = forked.Attempts[0]

	// Hunted over both gateways without an answer: the last failure counts.
	exhausted := c.invite(503, "Service Unavailable")
	exhausted.Attempts[1].Gateway, exhausted.Attempts[1].Supplier = "gw-c", "sup-c"
	exhaustedCDR := c.failedCDR(503, "Service Unavailable", 0, schema.Congestion)
	exhaustedCDR.Attempts[1].Gateway, exhaustedCDR.Attempts[1].Supplier = "gw-c", "sup-c"
	exhaustedCDR.Gateway, exhaustedCDR.Supplier = "gw-c", "sup-c"

	// The proxy closed a dialog that timed out.
	noBye := c.bye(false)
	noBye.Note = schema.EndNoBye
	noBye.Source = "198.51.100.1:5060"
	noByeCDR := c.answeredCDR(schema.HangupProxy)
	noByeCDR.HangupReason = schema.EndNoBye

	// A BYE after the maximum call duration: the CDR the sweep would give.
	lateBye := c.inDialog("BYE", true, answerAfter+testRules.maxCallMs+5000, 200)
	lateCDR := c.answeredCDR(schema.HangupProxy)
	lateCDR.HangupReason = schema.EndNoBye
	lateCDR.EndAt = c.at + answerAfter + testRules.maxCallMs
	lateCDR.DurationMs = testRules.maxCallMs
	lateCDR.BillableSec = testRules.maxCallMs / 1000

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
			want: []emission{startedEv(c), endedEv(c, calleeEnded)}, orderMatters: true},
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
		{name: "cancelled while ringing is no answer", txs: []schema.Transaction{cancel, cancelled},
			want: []emission{failedEv(c, cancelledCDR)}},
		{name: "cancelled before ringing", txs: []schema.Transaction{early, cancelledEarly},
			want: []emission{failedEv(c, cancelledEarlyCDR)}},
		{name: "early media", txs: []schema.Transaction{progress, c.ack(), c.bye(false)},
			want: []emission{progressStarted, endedEv(c, progressCDR)}, byeFirst: true},
		{name: "parallel forks: the first 2xx is the leg", txs: []schema.Transaction{forked, c.ack(), c.bye(false)},
			want: []emission{forkedStarted, endedEv(c, forkedCDR)}, byeFirst: true},
		{name: "failover exhausted", txs: []schema.Transaction{exhausted},
			want: []emission{failedEv(c, exhaustedCDR)}},
		{name: "proxy closes a dialog without BYE", txs: []schema.Transaction{ok, c.ack(), noBye},
			want: []emission{startedEv(c), endedEv(c, noByeCDR)}, byeFirst: true},
		{name: "BYE after the maximum duration", txs: []schema.Transaction{ok, c.ack(), lateBye},
			want: []emission{startedEv(c), endedEv(c, lateCDR)}, byeFirst: true},
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

// TestCorrelateDirections: the CDR carries the INVITE's subscriber, class
// and DID, and its direction follows from them and the attempts
// (schema.CDR.Direction).
func TestCorrelateDirections(t *testing.T) {
	c := newTestCall(3)

	// A subscriber of ours calling out through the gateways.
	subOut := c.invite(200, "OK")
	subOut.Trunk, subOut.Subscriber = "", "alice"
	subOutCDR := c.startedCDR()
	subOutCDR.Trunk, subOutCDR.Subscriber = "", "alice"

	// A supplier's gateway brings a call for DID 442079460000, delivered
	// to the trunk that owns it: no customer account, no gateway.
	inbound := c.invite(200, "OK")
	inbound.Source, inbound.Account, inbound.Trunk, inbound.Class = "203.0.113.5:5060", "", "", ""
	inbound.DID = "442079460000"
	inbound.Attempts = []schema.Attempt{{Destination: "192.0.2.80:5060", Status: 200, Reason: "OK", StartAt: c.at + 2, ProvisionalAt: c.at + ringAfter, FinalAt: c.at + answerAfter}}
	inboundCDR := c.startedCDR()
	inboundCDR.Source, inboundCDR.Account, inboundCDR.Trunk, inboundCDR.Class = "203.0.113.5:5060", "", "", ""
	inboundCDR.DID, inboundCDR.Direction = "442079460000", schema.Inbound
	inboundCDR.Attempts = inbound.Attempts
	inboundCDR.Gateway, inboundCDR.Supplier = "", ""

	// Subscriber to subscriber: relayed to the callee's contact.
	onnet := c.invite(200, "OK")
	onnet.Trunk, onnet.Subscriber, onnet.Class = "", "alice", ""
	onnet.RequestURI = "sip:bob@carrier.example"
	onnet.Attempts = []schema.Attempt{{Destination: "198.51.100.77:49152", Status: 200, Reason: "OK", StartAt: c.at + 2, ProvisionalAt: c.at + ringAfter, FinalAt: c.at + answerAfter}}
	onnetCDR := c.startedCDR()
	onnetCDR.Trunk, onnetCDR.Subscriber, onnetCDR.Class = "", "alice", ""
	onnetCDR.Callee, onnetCDR.CalleeE164, onnetCDR.Direction = "bob", "", schema.OnNet
	onnetCDR.Attempts = onnet.Attempts
	onnetCDR.Gateway, onnetCDR.Supplier = "", ""

	// To a subscriber with no live registration: the proxy answers 480
	// itself, nothing is relayed.
	unregistered := onnet
	unregistered.Status, unregistered.Reason, unregistered.Note = 480, "Temporarily Unavailable", noteSubscriberNotRegistered
	unregistered.ProvisionalAt, unregistered.ProvisionalStatus, unregistered.Attempts = 0, 0, nil
	unregisteredCDR := onnetCDR
	unregisteredCDR.Attempts = nil
	unregisteredCDR.Disposition, unregisteredCDR.Status, unregisteredCDR.Reason = schema.NoAnswer, 480, "Temporarily Unavailable"
	unregisteredCDR.ProvisionalAt, unregisteredCDR.PDDMs, unregisteredCDR.AnswerAt, unregisteredCDR.SetupMs = 0, 0, 0, 0
	unregisteredCDR.EndAt = c.at + answerAfter

	// A trunk's call refused before routing (no credit): outbound.
	refused := c.invite(402, "Payment Required")
	refused.Note, refused.Attempts = "insufficient_credit", nil
	refused.ProvisionalAt, refused.ProvisionalStatus = 0, 0
	refusedCDR := c.failedCDR(402, "Payment Required", 0, schema.Failed)
	refusedCDR.Attempts, refusedCDR.Gateway, refusedCDR.Supplier = nil, "", ""
	refusedCDR.ProvisionalAt, refusedCDR.PDDMs = 0, 0

	// A DID call that failed at its owner is still inbound.
	inboundBusy := inbound
	inboundBusy.Status, inboundBusy.Reason = 486, "Busy Here"
	inboundBusy.Attempts = []schema.Attempt{{Destination: "192.0.2.80:5060", Status: 486, Reason: "Busy Here", StartAt: c.at + 2, FinalAt: c.at + answerAfter}}
	inboundBusyCDR := inboundCDR
	inboundBusyCDR.Attempts = inboundBusy.Attempts
	inboundBusyCDR.Disposition, inboundBusyCDR.Status, inboundBusyCDR.Reason = schema.Busy, 486, "Busy Here"
	inboundBusyCDR.AnswerAt, inboundBusyCDR.SetupMs, inboundBusyCDR.EndAt = 0, 0, c.at+answerAfter

	for _, tc := range []struct {
		name    string
		tx      schema.Transaction
		typ     string
		want    schema.CDR
		wantDir schema.Direction
	}{
		{"trunk to gateways", c.invite(200, "OK"), schema.TypeCallStarted, c.startedCDR(), schema.Outbound},
		{"subscriber to gateways", subOut, schema.TypeCallStarted, subOutCDR, schema.Outbound},
		{"DID delivered to its trunk", inbound, schema.TypeCallStarted, inboundCDR, schema.Inbound},
		{"DID busy at its trunk", inboundBusy, schema.TypeCallFailed, inboundBusyCDR, schema.Inbound},
		{"subscriber to subscriber", onnet, schema.TypeCallStarted, onnetCDR, schema.OnNet},
		{"subscriber not registered", unregistered, schema.TypeCallFailed, unregisteredCDR, schema.OnNet},
		{"refused before routing", refused, schema.TypeCallFailed, refusedCDR, schema.Outbound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _ := apply(jsonBook{}, []schema.Transaction{tc.tx})
			if len(got) != 1 || got[0].Type != tc.typ {
				t.Fatalf("got %d events (%+v), want one %s", len(got), got, tc.typ)
			}
			if got[0].CDR.Direction != tc.wantDir {
				t.Errorf("direction %q, want %q", got[0].CDR.Direction, tc.wantDir)
			}
			assertCDR(t, tc.typ, got[0].CDR, tc.want)
		})
	}

	// The fields survive the open call's state in KV and end up in the
	// call.ended CDR.
	got, _ := apply(jsonBook{}, []schema.Transaction{inbound, c.ack(), c.bye(true)})
	if len(got) != 2 {
		t.Fatalf("%d events, want call.started and call.ended", len(got))
	}
	if e := got[1].CDR; e.DID != "442079460000" || e.Direction != schema.Inbound || e.HangupBy != schema.HangupCallee {
		t.Errorf("call.ended: did %q, direction %q, hangup by %q", e.DID, e.Direction, e.HangupBy)
	}
	got, _ = apply(jsonBook{}, []schema.Transaction{onnet, c.bye(false)})
	if e := got[1].CDR; e.Subscriber != "alice" || e.Direction != schema.OnNet {
		t.Errorf("call.ended: subscriber %q, direction %q", e.Subscriber, e.Direction)
	}
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
		if got := disposition(status, false); got != want {
			t.Errorf("disposition(%d) = %s, want %s", status, got, want)
		}
		ringing := want
		if status == 487 {
			ringing = schema.NoAnswer
		}
		if got := disposition(status, true); got != ringing {
			t.Errorf("disposition(%d) while ringing = %s, want %s", status, got, ringing)
		}
	}
}
