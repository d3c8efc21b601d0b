package analytics

import (
	"fmt"
	"math"
	"strings"

	"github.com/carrier-core/carrier/schema"
)

// Table names; the DDL is in schema.ClickHouseDDL.
const (
	TableTransactions = "sip_transactions"
	TableCDRs         = "cdrs"
)

// VersionUnrated is the version of a CDR as the correlator finished it.
// Rating writes the same CDR again with a higher version (VersionRated),
// and the cdrs table keeps the highest.
const VersionUnrated uint64 = 1

// CDRRecord is a row of the cdrs table: a CDR, its version and, once
// rated, its price.
type CDRRecord struct {
	schema.CDR
	Version uint64
	Rating  Rating
}

// TransactionRecord is a row of the sip_transactions table: a transaction
// event with its envelope's id, time (epoch ms) and node.
type TransactionRecord struct {
	EventID string
	EventAt int64
	Node    string
	schema.Transaction
}

// field is one column and where its value lives in a row struct. A single
// list per table drives the INSERT column list, the values appended, the
// SELECT list and the scan targets, so they cannot drift apart.
type field struct {
	name string
	ptr  any
}

func columnList(fs []field) string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.name
	}
	return strings.Join(names, ", ")
}

func scanTargets(fs []field) []any {
	ptrs := make([]any, len(fs))
	for i, f := range fs {
		ptrs[i] = f.ptr
	}
	return ptrs
}

// values dereferences the fields for Batch.Append, which takes slices on a
// reflection-free path only as values.
func values(fs []field) ([]any, error) {
	vs := make([]any, len(fs))
	for i, f := range fs {
		switch p := f.ptr.(type) {
		case *string:
			vs[i] = *p
		case *int8:
			vs[i] = *p
		case *uint8:
			vs[i] = *p
		case *uint16:
			vs[i] = *p
		case *uint32:
			vs[i] = *p
		case *uint64:
			vs[i] = *p
		case *int64:
			vs[i] = *p
		case *[]string:
			vs[i] = *p
		case *[]uint16:
			vs[i] = *p
		case *[]uint64:
			vs[i] = *p
		default:
			return nil, fmt.Errorf("column %s: unsupported Go type %T", f.name, f.ptr)
		}
	}
	return vs, nil
}

// attemptColumns are schema.Attempts as parallel arrays.
type attemptColumns struct {
	gateway, supplier, dst, reason  []string
	status, q850                    []uint16
	startAt, provisionalAt, finalAt []uint64
}

func (a *attemptColumns) fields() []field {
	return []field{
		{"attempt_gateway", &a.gateway},
		{"attempt_supplier", &a.supplier},
		{"attempt_dst", &a.dst},
		{"attempt_status", &a.status},
		{"attempt_reason", &a.reason},
		{"attempt_q850", &a.q850},
		{"attempt_start_at", &a.startAt},
		{"attempt_provisional_at", &a.provisionalAt},
		{"attempt_final_at", &a.finalAt},
	}
}

func fromAttempts(as []schema.Attempt) attemptColumns {
	n := len(as)
	c := attemptColumns{
		gateway: make([]string, n), supplier: make([]string, n), dst: make([]string, n), reason: make([]string, n),
		status: make([]uint16, n), q850: make([]uint16, n),
		startAt: make([]uint64, n), provisionalAt: make([]uint64, n), finalAt: make([]uint64, n),
	}
	for i, a := range as {
		c.gateway[i], c.supplier[i], c.dst[i], c.reason[i] = a.Gateway, a.Supplier, a.Destination, a.Reason
		c.status[i], c.q850[i] = u16(a.Status), u16(a.Q850)
		c.startAt[i], c.provisionalAt[i], c.finalAt[i] = ms(a.StartAt), ms(a.ProvisionalAt), ms(a.FinalAt)
	}
	return c
}

func (c *attemptColumns) attempts() ([]schema.Attempt, error) {
	n := len(c.dst)
	for _, l := range []int{len(c.gateway), len(c.supplier), len(c.reason), len(c.status), len(c.q850), len(c.startAt), len(c.provisionalAt), len(c.finalAt)} {
		if l != n {
			return nil, fmt.Errorf("attempt arrays of different lengths (%d and %d)", n, l)
		}
	}
	if n == 0 {
		return nil, nil
	}
	as := make([]schema.Attempt, n)
	for i := range as {
		as[i] = schema.Attempt{
			Gateway: c.gateway[i], Supplier: c.supplier[i], Destination: c.dst[i],
			Status: int(c.status[i]), Reason: c.reason[i], Q850: int(c.q850[i]),
			StartAt: int64(c.startAt[i]), ProvisionalAt: int64(c.provisionalAt[i]), FinalAt: int64(c.finalAt[i]),
		}
	}
	return as, nil
}

// cdrRow is a CDRRecord in the column types of the cdrs table.
type cdrRow struct {
	id, callID, fromTag, toTag               string
	account, trunk, src, transport           string
	caller, callee, callerE164, calleeE164   string
	version                                  uint64
	att                                      attemptColumns
	gateway, supplier                        string
	earlyMedia                               uint8
	disposition, reason                      string
	status, q850                             uint16
	inviteAt, provisionalAt, answerAt, endAt uint64
	setupMs, pddMs, durationMs, billableSec  int64
	hangupBy, hangupReason, node             string
	subscriber, class, did, direction        string
	rating                                   ratingColumns
}

func (r *cdrRow) fields() []field {
	fs := []field{
		{"id", &r.id},
		{"version", &r.version},
		{"call_id", &r.callID},
		{"from_tag", &r.fromTag},
		{"to_tag", &r.toTag},
		{"account", &r.account},
		{"trunk", &r.trunk},
		{"src", &r.src},
		{"transport", &r.transport},
		{"caller", &r.caller},
		{"callee", &r.callee},
		{"caller_e164", &r.callerE164},
		{"callee_e164", &r.calleeE164},
	}
	fs = append(fs, r.att.fields()...)
	return append(append(fs,
		field{"disposition", &r.disposition},
		field{"status", &r.status},
		field{"reason", &r.reason},
		field{"q850", &r.q850},
		field{"invite_at", &r.inviteAt},
		field{"provisional_at", &r.provisionalAt},
		field{"answer_at", &r.answerAt},
		field{"end_at", &r.endAt},
		field{"setup_ms", &r.setupMs},
		field{"pdd_ms", &r.pddMs},
		field{"duration_ms", &r.durationMs},
		field{"billable_sec", &r.billableSec},
		field{"hangup_by", &r.hangupBy},
		field{"hangup_reason", &r.hangupReason},
		field{"node", &r.node},
		field{"gateway", &r.gateway},
		field{"supplier", &r.supplier},
		field{"early_media", &r.earlyMedia},
		field{"subscriber", &r.subscriber},
		field{"class", &r.class},
		field{"did", &r.did},
		field{"direction", &r.direction},
	), r.rating.fields()...)
}

func fromCDR(rec CDRRecord) cdrRow {
	c := rec.CDR
	var earlyMedia uint8
	if c.EarlyMedia {
		earlyMedia = 1
	}
	return cdrRow{
		id: c.ID, callID: c.CallID, fromTag: c.FromTag, toTag: c.ToTag,
		account: c.Account, trunk: c.Trunk, src: c.Source, transport: c.Transport,
		caller: c.Caller, callee: c.Callee, callerE164: c.CallerE164, calleeE164: c.CalleeE164,
		version: rec.Version,
		att:     fromAttempts(c.Attempts),
		gateway: c.Gateway, supplier: c.Supplier, earlyMedia: earlyMedia,
		disposition: string(c.Disposition), status: u16(c.Status), reason: c.Reason, q850: u16(c.Q850),
		inviteAt: ms(c.InviteAt), provisionalAt: ms(c.ProvisionalAt), answerAt: ms(c.AnswerAt), endAt: ms(c.EndAt),
		setupMs: c.SetupMs, pddMs: c.PDDMs, durationMs: c.DurationMs, billableSec: c.BillableSec,
		hangupBy: c.HangupBy, hangupReason: c.HangupReason, node: c.Node,
		subscriber: c.Subscriber, class: c.Class, did: c.DID, direction: string(c.Direction),
		rating: fromRating(rec.Rating),
	}
}

func (r *cdrRow) record() (CDRRecord, error) {
	atts, err := r.att.attempts()
	if err != nil {
		return CDRRecord{}, fmt.Errorf("cdr %s: %w", r.id, err)
	}
	return CDRRecord{Version: r.version, Rating: r.rating.rating(), CDR: schema.CDR{
		ID: r.id, CallID: r.callID, FromTag: r.fromTag, ToTag: r.toTag,
		Account: r.account, Trunk: r.trunk, Source: r.src, Transport: r.transport,
		Caller: r.caller, Callee: r.callee, CallerE164: r.callerE164, CalleeE164: r.calleeE164,
		Attempts: atts, Gateway: r.gateway, Supplier: r.supplier, EarlyMedia: r.earlyMedia != 0,
		Disposition: schema.Disposition(r.disposition), Status: int(r.status), Reason: r.reason, Q850: int(r.q850),
		InviteAt: int64(r.inviteAt), ProvisionalAt: int64(r.provisionalAt), AnswerAt: int64(r.answerAt), EndAt: int64(r.endAt),
		SetupMs: r.setupMs, PDDMs: r.pddMs, DurationMs: r.durationMs, BillableSec: r.billableSec,
		HangupBy: r.hangupBy, HangupReason: r.hangupReason, Node: r.node,
		Subscriber: r.subscriber, Class: r.class, DID: r.did, Direction: schema.Direction(r.direction),
	}}, nil
}

// txRow is a TransactionRecord in the column types of sip_transactions.
type txRow struct {
	eventID, node, method, callID              string
	fromURI, fromTag, toURI, toTag, ruri       string
	src, local, dst, transport                 string
	reason, account, trunk, note               string
	eventAt, requestAt, provisionalAt, finalAt uint64
	cseq                                       uint32
	inDialog                                   uint8
	status, q850, provisionalStatus            uint16
	att                                        attemptColumns
}

func (r *txRow) fields() []field {
	fs := []field{
		{"event_id", &r.eventID},
		{"event_at", &r.eventAt},
		{"node", &r.node},
		{"method", &r.method},
		{"call_id", &r.callID},
		{"from_uri", &r.fromURI},
		{"from_tag", &r.fromTag},
		{"to_uri", &r.toURI},
		{"to_tag", &r.toTag},
		{"cseq", &r.cseq},
		{"ruri", &r.ruri},
		{"in_dialog", &r.inDialog},
		{"src", &r.src},
		{"local_addr", &r.local},
		{"dst", &r.dst},
		{"transport", &r.transport},
		{"status", &r.status},
		{"reason", &r.reason},
		{"q850", &r.q850},
		{"request_at", &r.requestAt},
		{"provisional_at", &r.provisionalAt},
		{"provisional_status", &r.provisionalStatus},
		{"final_at", &r.finalAt},
		{"account", &r.account},
		{"trunk", &r.trunk},
		{"note", &r.note},
	}
	return append(fs, r.att.fields()...)
}

func fromTransaction(rec TransactionRecord) txRow {
	t := rec.Transaction
	var inDialog uint8
	if t.InDialog {
		inDialog = 1
	}
	return txRow{
		eventID: rec.EventID, eventAt: ms(rec.EventAt), node: rec.Node,
		method: t.Method, callID: t.CallID, fromURI: t.FromURI, fromTag: t.FromTag, toURI: t.ToURI, toTag: t.ToTag,
		cseq: t.CSeq, ruri: t.RequestURI, inDialog: inDialog,
		src: t.Source, local: t.Local, dst: t.Destination, transport: t.Transport,
		status: u16(t.Status), reason: t.Reason, q850: u16(t.Q850),
		requestAt: ms(t.RequestAt), provisionalAt: ms(t.ProvisionalAt), provisionalStatus: u16(t.ProvisionalStatus), finalAt: ms(t.FinalAt),
		account: t.Account, trunk: t.Trunk, note: t.Note,
		att: fromAttempts(t.Attempts),
	}
}

func (r *txRow) record() (TransactionRecord, error) {
	atts, err := r.att.attempts()
	if err != nil {
		return TransactionRecord{}, fmt.Errorf("transaction %s: %w", r.eventID, err)
	}
	return TransactionRecord{EventID: r.eventID, EventAt: int64(r.eventAt), Node: r.node, Transaction: schema.Transaction{
		Method: r.method, CallID: r.callID, FromURI: r.fromURI, FromTag: r.fromTag, ToURI: r.toURI, ToTag: r.toTag,
		CSeq: r.cseq, RequestURI: r.ruri, InDialog: r.inDialog != 0,
		Source: r.src, Local: r.local, Transport: r.transport, Destination: r.dst,
		Status: int(r.status), Reason: r.reason, Q850: int(r.q850),
		RequestAt: int64(r.requestAt), ProvisionalAt: int64(r.provisionalAt), ProvisionalStatus: int(r.provisionalStatus), FinalAt: int64(r.finalAt),
		Attempts: atts,
		Account:  r.account, Trunk: r.trunk, Note: r.note,
	}}, nil
}

// ms stores an epoch-ms time; a negative one is a bug upstream and is kept
// as 0, "did not happen", rather than wrapping around.
func ms(v int64) uint64 { return uint64(max(v, 0)) }

// u16 stores a status code or cause, clamped to the column's range.
func u16(v int) uint16 { return uint16(min(max(v, 0), math.MaxUint16)) }
