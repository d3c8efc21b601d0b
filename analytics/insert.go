package analytics

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// InsertCDRs writes CDRs to the cdrs table in one batch, then brings the
// hourly aggregates up to date. Writing a CDR again is harmless: the row
// with the highest version (the last written among equal ones) is the one
// queries and aggregates see. On an error, write the batch again.
func InsertCDRs(ctx context.Context, conn driver.Conn, database string, recs []CDRRecord) error {
	if len(recs) == 0 {
		return nil
	}
	if err := checkDatabase(database); err != nil {
		return err
	}
	var row cdrRow
	err := insert(ctx, conn, database, TableCDRs, row.fields(), len(recs), func(i int) {
		row = fromCDR(recs[i])
	})
	if err != nil {
		return err
	}
	return countCDRs(ctx, conn, database, recs)
}

// InsertTransactions writes transaction events to the sip_transactions
// table in one batch; an event written twice is seen once.
func InsertTransactions(ctx context.Context, conn driver.Conn, database string, recs []TransactionRecord) error {
	if len(recs) == 0 {
		return nil
	}
	if err := checkDatabase(database); err != nil {
		return err
	}
	var row txRow
	return insert(ctx, conn, database, TableTransactions, row.fields(), len(recs), func(i int) {
		row = fromTransaction(recs[i])
	})
}

// insert sends n rows as one batch. load(i) fills the row struct that
// fields points into with row i. The column list is explicit: 18.16
// refuses a batch without one.
func insert(ctx context.Context, conn driver.Conn, database, table string, fields []field, n int, load func(int)) (err error) {
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+database+"."+table+" ("+columnList(fields)+")")
	if err != nil {
		return fmt.Errorf("insert into %s.%s: %w", database, table, err)
	}
	defer func() {
		if err != nil && !batch.IsSent() {
			_ = batch.Abort()
		}
	}()
	for i := 0; i < n; i++ {
		load(i)
		vs, err := values(fields)
		if err != nil {
			return fmt.Errorf("insert into %s.%s: %w", database, table, err)
		}
		if err := batch.Append(vs...); err != nil {
			return fmt.Errorf("insert into %s.%s, row %d: %w", database, table, i, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("insert %d rows into %s.%s: %w", n, database, table, err)
	}
	return nil
}
