package analytics

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/carrier-core/carrier/schema"
)

// CDRFilter selects CDRs. Zero fields do not filter; set fields must all
// match.
type CDRFilter struct {
	// From (inclusive) and To (exclusive) bound the INVITE time.
	From, To time.Time
	Account  string
	Trunk    string
	// CallerPrefix and CalleePrefix match the start of the number as
	// received or as normalised to E.164: an operator types whichever
	// form is at hand.
	CallerPrefix, CalleePrefix string
	// Dispositions keeps CDRs with any of these dispositions.
	Dispositions []schema.Disposition
	// Gateway and Supplier are those the call is accounted on (the
	// answered attempt, or the last one tried).
	Gateway, Supplier string
	// Class is the dial plan's label for the call, DID the number of ours
	// an inbound call was for (E.164 digits, a leading '+' ignored).
	Class, DID string
	// Directions keeps CDRs with any of these directions.
	Directions []schema.Direction
	// MinDuration keeps CDRs whose answered duration is at least this.
	MinDuration time.Duration
	// Limit caps the number of CDRs returned; 0 returns all.
	Limit int
}

// where builds the WHERE clause of f.
//
// Conditions on sorting key columns (account, invite_at and invite_date,
// derived from it) are the same in every version of a CDR and let
// ClickHouse skip partitions and granules. Other columns (disposition,
// gateway, ...) may differ between versions, so they must be tested after
// FINAL folded the versions, never before. WHERE is applied after FINAL;
// PREWHERE is applied to the rows as read, before folding, so queryContext
// turns off the optimiser's move of WHERE conditions to PREWHERE rather
// than rely on each release leaving FINAL queries alone.
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
	if f.Trunk != "" {
		conds = append(conds, "trunk = ?")
		args = append(args, f.Trunk)
	}
	// substring on bytes with a bound length rather than LIKE: a prefix
	// needs no escaping of % and _, and startsWith is not in 18.16.
	if f.CallerPrefix != "" {
		conds = append(conds, "(substring(caller, 1, ?) = ? OR substring(caller_e164, 1, ?) = ?)")
		args = append(args, len(f.CallerPrefix), f.CallerPrefix, len(f.CallerPrefix), f.CallerPrefix)
	}
	if f.CalleePrefix != "" {
		conds = append(conds, "(substring(callee, 1, ?) = ? OR substring(callee_e164, 1, ?) = ?)")
		args = append(args, len(f.CalleePrefix), f.CalleePrefix, len(f.CalleePrefix), f.CalleePrefix)
	}
	if len(f.Dispositions) > 0 {
		marks := make([]string, len(f.Dispositions))
		for i, d := range f.Dispositions {
			marks[i] = "?"
			args = append(args, string(d))
		}
		conds = append(conds, "disposition IN ("+strings.Join(marks, ", ")+")")
	}
	if f.Gateway != "" {
		conds = append(conds, "gateway = ?")
		args = append(args, f.Gateway)
	}
	if f.Supplier != "" {
		conds = append(conds, "supplier = ?")
		args = append(args, f.Supplier)
	}
	if f.Class != "" {
		conds = append(conds, "class = ?")
		args = append(args, f.Class)
	}
	if f.DID != "" {
		conds = append(conds, "did = ?")
		args = append(args, schema.NormalDID(f.DID))
	}
	if len(f.Directions) > 0 {
		marks := make([]string, len(f.Directions))
		for i, d := range f.Directions {
			marks[i] = "?"
			args = append(args, string(d))
		}
		conds = append(conds, "direction IN ("+strings.Join(marks, ", ")+")")
	}
	if f.MinDuration > 0 {
		conds = append(conds, "duration_ms >= ?")
		args = append(args, f.MinDuration.Milliseconds())
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// externalSortBytes is the memory a CDR listing sorts in before the
// server sorts on disk.
const externalSortBytes = 1 << 30

// queryContext carries the settings every query over a FINAL table needs:
// WHERE stays after FINAL (see CDRFilter.where). Both 18.16 and current
// releases know the setting; 18.16 takes integer settings only.
func queryContext(ctx context.Context) context.Context {
	return clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"optimize_move_to_prewhere": 0}))
}

// ListCDRs returns the CDRs that match f, each once in its latest version,
// in the order of their INVITE.
func ListCDRs(ctx context.Context, conn driver.Conn, database string, f CDRFilter) ([]schema.CDR, error) {
	var cdrs []schema.CDR
	err := EachCDR(ctx, conn, database, f, func(r CDRRecord) error {
		cdrs = append(cdrs, r.CDR)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return cdrs, nil
}

// ListCDRRecords is ListCDRs with each CDR's version.
func ListCDRRecords(ctx context.Context, conn driver.Conn, database string, f CDRFilter) ([]CDRRecord, error) {
	var recs []CDRRecord
	err := EachCDR(ctx, conn, database, f, func(r CDRRecord) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return recs, nil
}

// EachCDR calls fn with each CDR that matches f, in the order of ListCDRs,
// as the rows arrive from ClickHouse: an export of millions of CDRs holds
// one block in memory, not the result. An error from fn stops the query
// and is returned as it is.
func EachCDR(ctx context.Context, conn driver.Conn, database string, f CDRFilter, fn func(CDRRecord) error) error {
	if err := checkDatabase(database); err != nil {
		return err
	}
	var row cdrRow
	fields := row.fields()
	where, args := f.where()
	q := "SELECT " + columnList(fields) + " FROM " + database + "." + TableCDRs + " FINAL" + where + " ORDER BY invite_at, id"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	// ORDER BY invite_at is not the sorting key's order, so the server
	// sorts the whole result before the first row: past a limit it sorts
	// on disk, so an export of months holds the server's memory bounded
	// too.
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"optimize_move_to_prewhere":      0,
		"max_bytes_before_external_sort": externalSortBytes,
	}))
	rows, err := conn.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("list cdrs: %w", err)
	}
	defer rows.Close()
	targets := scanTargets(fields)
	for rows.Next() {
		row = cdrRow{}
		if err := rows.Scan(targets...); err != nil {
			return fmt.Errorf("list cdrs: %w", err)
		}
		rec, err := row.record()
		if err != nil {
			return fmt.Errorf("list cdrs: %w", err)
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list cdrs: %w", err)
	}
	return nil
}

// CDRsOfCall returns the CDRs of a Call-ID (one per From tag: a call
// forked upstream has several), each in its latest version.
func CDRsOfCall(ctx context.Context, conn driver.Conn, database, callID string) ([]CDRRecord, error) {
	if err := checkDatabase(database); err != nil {
		return nil, err
	}
	// call_id is not in the sorting key. Reading that one column without
	// FINAL finds the key of each CDR of the call (the same in all its
	// versions); FINAL over all columns then reads only their granules
	// instead of the whole table.
	keys, err := conn.Query(queryContext(ctx), "SELECT DISTINCT account, invite_at FROM "+database+"."+TableCDRs+" WHERE call_id = ?", callID)
	if err != nil {
		return nil, fmt.Errorf("cdr of call %s: %w", callID, err)
	}
	defer keys.Close()
	var conds []string
	args := []any{callID}
	for keys.Next() {
		var account string
		var at uint64
		if err := keys.Scan(&account, &at); err != nil {
			return nil, fmt.Errorf("cdr of call %s: %w", callID, err)
		}
		conds = append(conds, "(account = ? AND invite_date = toDate(?) AND invite_at = ?)")
		args = append(args, account, at/86400000, at)
	}
	if err := keys.Err(); err != nil {
		return nil, fmt.Errorf("cdr of call %s: %w", callID, err)
	}
	if len(conds) == 0 {
		return nil, nil
	}
	var row cdrRow
	fields := row.fields()
	q := "SELECT " + columnList(fields) + " FROM " + database + "." + TableCDRs + " FINAL WHERE call_id = ? AND (" +
		strings.Join(conds, " OR ") + ") ORDER BY invite_at, id"
	rows, err := conn.Query(queryContext(ctx), q, args...)
	if err != nil {
		return nil, fmt.Errorf("cdr of call %s: %w", callID, err)
	}
	defer rows.Close()
	var recs []CDRRecord
	targets := scanTargets(fields)
	for rows.Next() {
		row = cdrRow{}
		if err := rows.Scan(targets...); err != nil {
			return nil, fmt.Errorf("cdr of call %s: %w", callID, err)
		}
		rec, err := row.record()
		if err != nil {
			return nil, fmt.Errorf("cdr of call %s: %w", callID, err)
		}
		recs = append(recs, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("cdr of call %s: %w", callID, err)
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
	if err := conn.QueryRow(queryContext(ctx), q, args...).Scan(&n); err != nil {
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
