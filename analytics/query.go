package analytics

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/carrier-core/carrier/schema"
)

// CDRFilter selects CDRs by the time of their INVITE and their account.
// Zero fields do not filter.
type CDRFilter struct {
	// From (inclusive) and To (exclusive) bound the INVITE time.
	From, To time.Time
	Account  string
	// Limit caps the number of CDRs returned; 0 returns all.
	Limit int
}

// where builds the WHERE clause of f. It only uses sorting key columns and
// invite_date (derived from one): those are the same in every version of a
// CDR, so filtering before FINAL folds the versions cannot pick an outdated
// one. invite_date lets ClickHouse skip whole partitions.
func (f CDRFilter) where() (string, []any) {
	var conds []string
	var args []any
	if !f.From.IsZero() {
		from := ms(f.From.UnixMilli())
		conds = append(conds, "invite_date >= toDate(?)", "invite_at >= ?")
		args = append(args, from/86400000, from)
	}
	if !f.To.IsZero() {
		to := ms(f.To.UnixMilli())
		conds = append(conds, "invite_date <= toDate(?)", "invite_at < ?")
		args = append(args, to/86400000, to)
	}
	if f.Account != "" {
		conds = append(conds, "account = ?")
		args = append(args, f.Account)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// ListCDRs returns the CDRs that match f, each once in its latest version,
// in the order of their INVITE.
func ListCDRs(ctx context.Context, conn driver.Conn, database string, f CDRFilter) ([]schema.CDR, error) {
	recs, err := ListCDRRecords(ctx, conn, database, f)
	if err != nil {
		return nil, err
	}
	cdrs := make([]schema.CDR, len(recs))
	for i, r := range recs {
		cdrs[i] = r.CDR
	}
	return cdrs, nil
}

// ListCDRRecords is ListCDRs with each CDR's version.
func ListCDRRecords(ctx context.Context, conn driver.Conn, database string, f CDRFilter) ([]CDRRecord, error) {
	if err := checkDatabase(database); err != nil {
		return nil, err
	}
	var row cdrRow
	fields := row.fields()
	where, args := f.where()
	q := "SELECT " + columnList(fields) + " FROM " + database + "." + TableCDRs + " FINAL" + where + " ORDER BY invite_at, id"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list cdrs: %w", err)
	}
	defer rows.Close()
	var recs []CDRRecord
	targets := scanTargets(fields)
	for rows.Next() {
		row = cdrRow{}
		if err := rows.Scan(targets...); err != nil {
			return nil, fmt.Errorf("list cdrs: %w", err)
		}
		rec, err := row.record()
		if err != nil {
			return nil, fmt.Errorf("list cdrs: %w", err)
		}
		recs = append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list cdrs: %w", err)
	}
	return recs, nil
}

// CountCDRs counts the CDRs that match f (Limit does not apply), each once.
func CountCDRs(ctx context.Context, conn driver.Conn, database string, f CDRFilter) (uint64, error) {
	if err := checkDatabase(database); err != nil {
		return 0, err
	}
	where, args := f.where()
	var n uint64
	q := "SELECT count() FROM " + database + "." + TableCDRs + " FINAL" + where
	if err := conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count cdrs: %w", err)
	}
	return n, nil
}

// TransactionsOfCall returns the SIP transactions of a Call-ID, each once,
// in the order of their requests.
func TransactionsOfCall(ctx context.Context, conn driver.Conn, database, callID string) ([]TransactionRecord, error) {
	if err := checkDatabase(database); err != nil {
		return nil, err
	}
	var row txRow
	fields := row.fields()
	q := "SELECT " + columnList(fields) + " FROM " + database + "." + TableTransactions + " FINAL WHERE call_id = ? ORDER BY request_at, event_id"
	rows, err := conn.Query(ctx, q, callID)
	if err != nil {
		return nil, fmt.Errorf("transactions of call %s: %w", callID, err)
	}
	defer rows.Close()
	var recs []TransactionRecord
	targets := scanTargets(fields)
	for rows.Next() {
		row = txRow{}
		if err := rows.Scan(targets...); err != nil {
			return nil, fmt.Errorf("transactions of call %s: %w", callID, err)
		}
		rec, err := row.record()
		if err != nil {
			return nil, fmt.Errorf("transactions of call %s: %w", callID, err)
		}
		recs = append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("transactions of call %s: %w", callID, err)
	}
	return recs, nil
}

// CountTransactions counts the transaction events whose envelope time is
// in [from, to) (zero times do not bound), each once.
func CountTransactions(ctx context.Context, conn driver.Conn, database string, from, to time.Time) (uint64, error) {
	if err := checkDatabase(database); err != nil {
		return 0, err
	}
	var conds []string
	var args []any
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
	q := "SELECT count() FROM " + database + "." + TableTransactions + " FINAL"
	if len(conds) > 0 {
		q += " WHERE " + strings.Join(conds, " AND ")
	}
	var n uint64
	if err := conn.QueryRow(ctx, q, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count transactions: %w", err)
	}
	return n, nil
}
