// Package analytics loads the event log into ClickHouse and answers the
// queries behind `carrier cdr` and `carrier report`.
//
// The schema lives in schema.ClickHouseDDL as numbered migrations, applied
// by Migrate (and by the Sink when it starts). The Sink is two durable
// JetStream consumers, one for finished CDRs and one for SIP transactions,
// that insert in batches and ack only once ClickHouse accepted a batch: while
// ClickHouse is down the backlog waits in JetStream.
//
// Rows are never updated in place. Both tables are ReplacingMergeTree keyed
// on the event (a transaction's event id, a CDR's deterministic id), so a
// redelivered or replayed event folds into the row it repeats, and a CDR
// written again with a higher version (rated, rerated) replaces the earlier
// one. Folding happens in background merges, so every query reads with
// FINAL, and tests columns outside the sorting key only after FINAL
// folded the versions (see CDRFilter).
//
// The queries: ListCDRs and EachCDR (streaming, for exports) select CDRs by
// a CDRFilter, CDRsOfCall and TransactionsOfCall look up one call, and
// Report groups calls by destination, account, supplier or gateway with
// the sums behind ASR, ACD, PDD and minutes, computed by ClickHouse.
package analytics
