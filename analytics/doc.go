// Package analytics loads the event log into ClickHouse and answers the
// queries behind `carrier cdr` and `carrier report`.
//
// The schema lives in schema.ClickHouseDDL as numbered migrations, applied
// by Migrate (and by the Sink when it starts). The Sink is four durable
// JetStream consumers, for finished CDRs, rated CDRs, SIP transactions and
// ledger events, that insert in batches and ack only once ClickHouse accepted a batch: while
// ClickHouse is down the backlog waits in JetStream.
//
// Rows are never updated in place. The tables are ReplacingMergeTree keyed
// on the event (a transaction's or ledger event's id, a CDR's deterministic
// id), so a
// redelivered or replayed event folds into the row it repeats, and a CDR
// written again with a higher version (rated, rerated: VersionRated)
// replaces the earlier one, whichever order they arrive in. Folding happens in background merges, so every query reads with
// FINAL, and tests columns outside the sorting key only after FINAL
// folded the versions (see CDRFilter).
//
// The queries: ListCDRs and EachCDR (streaming, for exports) select CDRs by
// a CDRFilter, CDRsOfCall and TransactionsOfCall look up one call, and
// Report groups calls by destination, account, supplier, gateway, class or
// direction with the sums behind ASR, ACD, PDD and minutes, computed by
// ClickHouse.
// MarginReport adds the money of rated CDRs: revenue, cost and margin,
// exact in nano-units. The Hourly variants read the hourly aggregates,
// which count each CDR once, in its latest version and price. Movements
// reads the ledger events.
package analytics
