package cdrgen

import (
	"fmt"
	"time"

	"github.com/carrier-core/carrier/schema"
)

// t0 is when the fixture calls begin.
var t0 = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC).UnixMilli()

const proxyNode = "proxy-1"

// testCall builds the transactions of one call as the proxy logs them.
type testCall struct {
	id, from, to string
	at           int64 // INVITE received
}

func newTestCall(n int) testCall {
	return testCall{
		id:   fmt.Sprintf("%d-a84b4c76e66710@192.0.2.10", n),
		from: fmt.Sprintf("f%d", n),
		to:   fmt.Sprintf("t%d", n),
		at:   t0 + int64(n)*10,
	}
}

// Times of the fixture call, relative to its INVITE.
const (
	ringAfter   = 1200  // 180 Ringing
	answerAfter = 5300  // final answer
	byeAfter    = 65550 // BYE from either side
)

// invite is the caller's INVITE with its final answer: a first gateway
// fails with 503, the second gives the final answer.
func (c testCall) invite(status int, reason string) schema.Transaction {
	return schema.Transaction{
		Method:            "INVITE",
		CallID:            c.id,
		FromURI:           "sip:+4930123456@192.0.2.10",
		FromTag:           c.from,
		ToURI:             "sip:00442079460000@carrier.example",
		ToTag:             c.to,
		CSeq:              1,
		RequestURI:        "sip:00442079460000@carrier.example;user=phone",
		Source:            "192.0.2.10:5060",
		Local:             "198.51.100.1:5060",
		Transport:         "udp",
		Destination:       "203.0.113.6:5060",
		Status:            status,
		Reason:            reason,
		RequestAt:         c.at,
		ProvisionalAt:     c.at + ringAfter,
		ProvisionalStatus: 180,
		FinalAt:           c.at + answerAfter,
		Attempts: []schema.Attempt{
			{Gateway: "gw-a", Supplier: "sup-a", Destination: "203.0.113.5:5060", Status: 503, Reason: "Service Unavailable", Q850: 34, StartAt: c.at + 2, FinalAt: c.at + 40},
			{Gateway: "gw-b", Supplier: "sup-b", Destination: "203.0.113.6:5060", Status: status, Reason: reason, StartAt: c.at + 41, ProvisionalAt: c.at + ringAfter, FinalAt: c.at + answerAfter},
		},
		Account: "acme",
		Trunk:   "acme-sip",
		Class:   "international",
	}
}

// inDialog is a request inside the call's dialog, from the caller or (tags
// swapped) from the callee.
func (c testCall) inDialog(method string, fromCallee bool, after int64, status int) schema.Transaction {
	tx := schema.Transaction{
		Method:     method,
		CallID:     c.id,
		FromURI:    "sip:+4930123456@192.0.2.10",
		FromTag:    c.from,
		ToURI:      "sip:00442079460000@carrier.example",
		ToTag:      c.to,
		CSeq:       2,
		RequestURI: "sip:00442079460000@203.0.113.6:5060",
		InDialog:   true,
		Source:     "192.0.2.10:5060",
		Transport:  "udp",
		Status:     status,
		RequestAt:  c.at + after,
	}
	if status != 0 {
		tx.FinalAt = tx.RequestAt + 20
	}
	if fromCallee {
		tx.FromURI, tx.ToURI = tx.ToURI, tx.FromURI
		tx.FromTag, tx.ToTag = c.to, c.from
		tx.RequestURI = "sip:+4930123456@192.0.2.10:5060"
		tx.Source = "203.0.113.6:5060"
		tx.CSeq = 1
	}
	return tx
}

func (c testCall) ack() schema.Transaction {
	return c.inDialog("ACK", false, answerAfter+50, 0)
}

func (c testCall) bye(fromCallee bool) schema.Transaction {
	return c.inDialog("BYE", fromCallee, byeAfter, 200)
}

// answeredCDR is the golden CDR of a fixture call answered with 200 and
// ended by a BYE.
func (c testCall) answeredCDR(hangupBy string) schema.CDR {
	cdr := c.startedCDR()
	cdr.EndAt = c.at + byeAfter
	cdr.DurationMs = byeAfter - answerAfter
	cdr.BillableSec = 61
	cdr.HangupBy = hangupBy
	cdr.HangupReason = schema.EndNormal
	return cdr
}

// startedCDR is the golden CDR of the call.started event.
func (c testCall) startedCDR() schema.CDR {
	return schema.CDR{
		ID:         schema.CDRID(c.id, c.from),
		CallID:     c.id,
		FromTag:    c.from,
		ToTag:      c.to,
		Account:    "acme",
		Trunk:      "acme-sip",
		Source:     "192.0.2.10:5060",
		Transport:  "udp",
		Caller:     "+4930123456",
		Callee:     "00442079460000",
		CallerE164: "4930123456",
		CalleeE164: "442079460000",
		Class:      "international",
		Direction:  schema.Outbound,
		Attempts: []schema.Attempt{
			{Gateway: "gw-a", Supplier: "sup-a", Destination: "203.0.113.5:5060", Status: 503, Reason: "Service Unavailable", Q850: 34, StartAt: c.at + 2, FinalAt: c.at + 40},
			{Gateway: "gw-b", Supplier: "sup-b", Destination: "203.0.113.6:5060", Status: 200, Reason: "OK", StartAt: c.at + 41, ProvisionalAt: c.at + ringAfter, FinalAt: c.at + answerAfter},
		},
		Gateway:       "gw-b",
		Supplier:      "sup-b",
		Disposition:   schema.Answered,
		Status:        200,
		Reason:        "OK",
		InviteAt:      c.at,
		ProvisionalAt: c.at + ringAfter,
		AnswerAt:      c.at + answerAfter,
		SetupMs:       answerAfter,
		PDDMs:         ringAfter,
		Node:          proxyNode,
	}
}

// failedCDR is the golden CDR of a fixture call whose INVITE failed.
func (c testCall) failedCDR(status int, reason string, q850 int, d schema.Disposition) schema.CDR {
	cdr := c.startedCDR()
	cdr.Attempts[1].Status, cdr.Attempts[1].Reason = status, reason
	cdr.Disposition, cdr.Status, cdr.Reason, cdr.Q850 = d, status, reason, q850
	cdr.AnswerAt, cdr.SetupMs = 0, 0
	cdr.EndAt = c.at + answerAfter
	return cdr
}
