package analytics

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/carrier-core/carrier/schema"
)

// TableLedger holds the LEDGER events (migration 0015_ledger_movements).
const TableLedger = "ledger_movements"

// Movement is one ledger event as the ledger_movements table keeps it.
// Amounts are signed by their effect (see the DDL): Amount on the
// balance, Held on the credit live calls hold, CreditLimit the limit set.
type Movement struct {
	EventID string `json:"event_id"`
	// EventAt is the event's time in epoch ms; Seq its stream sequence.
	EventAt int64  `json:"event_at"`
	Seq     uint64 `json:"seq"`
	Node    string `json:"node"`
	Account string `json:"account"`
	Type    string `json:"type"`

	Amount      schema.Money `json:"amount"`
	Held        schema.Money `json:"held"`
	CreditLimit schema.Money `json:"credit_limit"`

	Currency  string `json:"currency,omitempty"`
	Kind      string `json:"kind,omitempty"`
	Reference string `json:"reference,omitempty"`
	CDR       string `json:"cdr_id,omitempty"`
	CallID    string `json:"call_id,omitempty"`
	Reason    string `json:"reason,omitempty"`
}

// MovementOf reads a LEDGER event on subject into a Movement. An event of
// a type or version this build does not know is an error wrapping
// schema.ErrUnknownVersion or schema.ErrWrongType.
func MovementOf(subject string, seq uint64, env schema.Envelope) (Movement, error) {
	account, ok := schema.LedgerAccount(subject)
	if !ok {
		return Movement{}, fmt.Errorf("event %s on %q: not an account's ledger subject: %w", env.ID, subject, schema.ErrMalformed)
	}
	m := Movement{EventID: env.ID, EventAt: env.Time, Seq: seq, Node: env.Node, Account: account, Type: env.Type}
	decode := func(v any) error { return env.Decode(env.Type, schema.LedgerVersion, v) }
	var err error
	switch env.Type {
	case schema.TypeAccountOpened:
		var p schema.AccountOpened
		if err = decode(&p); err == nil {
			m.Kind, m.Currency, m.CreditLimit = string(p.Kind), p.Currency, schema.Money(p.CreditLimit)
		}
	case schema.TypeCredited:
		var p schema.Credited
		if err = decode(&p); err == nil {
			m.Amount, m.Reference = schema.Money(p.Amount), p.Reference
		}
	case schema.TypeDebited:
		var p schema.Debited
		if err = decode(&p); err == nil {
			m.Amount, m.CDR = -schema.Money(p.Amount), p.CDR
		}
	case schema.TypeAdjusted:
		var p schema.Adjusted
		if err = decode(&p); err == nil {
			m.Amount, m.Reason = schema.Money(p.Amount), p.Reason
		}
	case schema.TypeReserved:
		var p schema.Reserved
		if err = decode(&p); err == nil {
			m.Held, m.CallID = schema.Money(p.Amount), p.CallID
		}
	case schema.TypeReleased:
		var p schema.Released
		if err = decode(&p); err == nil {
			m.Held, m.CallID = -schema.Money(p.Amount), p.CallID
		}
	case schema.TypeCreditLimitChanged:
		var p schema.CreditLimitChanged
		if err = decode(&p); err == nil {
			m.CreditLimit = schema.Money(p.CreditLimit)
		}
	default:
		err = fmt.Errorf("event %s: ledger event type %q: %w", env.ID, env.Type, schema.ErrUnknownVersion)
	}
	if err != nil {
		return Movement{}, err
	}
	return m, nil
}

// movementRow is a Movement in the column types of ledger_movements.
type movementRow struct {
	eventID, node, account, typ      string
	eventAt, seq                     uint64
	amount, held, creditLimit        int64
	currency, kind, reference, cdrID string
	callID, reason                   string
}

func (r *movementRow) fields() []field {
	return []field{
		{"event_id", &r.eventID},
		{"event_at", &r.eventAt},
		{"seq", &r.seq},
		{"node", &r.node},
		{"account", &r.account},
		{"type", &r.typ},
		{"amount_nano", &r.amount},
		{"held_nano", &r.held},
		{"credit_limit_nano", &r.creditLimit},
		{"currency", &r.currency},
		{"kind", &r.kind},
		{"reference", &r.reference},
		{"cdr_id", &r.cdrID},
		{"call_id", &r.callID},
		{"reason", &r.reason},
	}
}

func fromMovement(m Movement) movementRow {
	return movementRow{
		eventID: m.EventID, eventAt: ms(m.EventAt), seq: m.Seq, node: m.Node, account: m.Account, typ: m.Type,
		amount: int64(m.Amount), held: int64(m.Held), creditLimit: int64(m.CreditLimit),
		currency: m.Currency, kind: m.Kind, reference: m.Reference, cdrID: m.CDR, callID: m.CallID, reason: m.Reason,
	}
}

func (r *movementRow) movement() Movement {
	return Movement{
		EventID: r.eventID, EventAt: int64(r.eventAt), Seq: r.seq, Node: r.node, Account: r.account, Type: r.typ,
		Amount: schema.Money(r.amount), Held: schema.Money(r.held), CreditLimit: schema.Money(r.creditLimit),
		Currency: r.currency, Kind: r.kind, Reference: r.reference, CDR: r.cdrID, CallID: r.callID, Reason: r.reason,
	}
}

// InsertMovements writes ledger movements in one batch; an event written
// twice is seen once.
func InsertMovements(ctx context.Context, conn driver.Conn, database string, ms []Movement) error {
	if len(ms) == 0 {
		return nil
	}
	if err := checkDatabase(database); err != nil {
		return err
	}
	var row movementRow
	return insert(ctx, conn, database, TableLedger, row.fields(), len(ms), func(i int) { row = fromMovement(ms[i]) })
}

// Movements returns the movements of account ("" all accounts) whose time
// is in [from, to) (zero times do not bound), each once, in the order of
// their time and event id.
func Movements(ctx context.Context, conn driver.Conn, database, account string, from, to time.Time) ([]Movement, error) {
	if err := checkDatabase(database); err != nil {
		return nil, err
	}
	var conds []string
	var args []any
	if account != "" {
		conds = append(conds, "account = ?")
		args = append(args, account)
	}
	if !from.IsZero() {
		v := ms(from.UnixMilli())
		conds = append(conds, "event_date >= toDate(?)", "event_at >= ?")
		args = append(args, v/86400000, v)
	}
	if !to.IsZero() {
		v := ms(to.UnixMilli())
		conds = append(conds, "event_date <= toDate(?)", "event_at < ?")
		args = append(args, v/86400000, v)
	}
	var row movementRow
	fields := row.fields()
	q := "SELECT " + columnList(fields) + " FROM " + database + "." + TableLedger + " FINAL"
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	q += " ORDER BY event_at, event_id"
	rows, err := conn.Query(queryContext(ctx), q, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger movements: %w", err)
	}
	defer rows.Close()
	var out []Movement
	targets := scanTargets(fields)
	for rows.Next() {
		row = movementRow{}
		if err := rows.Scan(targets...); err != nil {
			return nil, fmt.Errorf("ledger movements: %w", err)
		}
		out = append(out, row.movement())
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger movements: %w", err)
	}
	return out, nil
}
