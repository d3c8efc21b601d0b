// Package ledger keeps accounts and balances as events on the LEDGER
// stream, one subject per account (schema.LedgerSubject). An account's
// balance is the fold of its events; nothing else is authoritative.
//
// Writes are decided against the folded state and appended with
// JetStream's per-subject optimistic concurrency: the append names the
// sequence of the account's last event the decision saw, so two writers
// (goroutines or processes) can never lose each other's update. On a
// conflict the writer reads what it missed, decides again and retries.
//
// The fold remembers every top-up reference and every debited CDR of the
// account, and the check for them is part of the same conditional append,
// so a CDR is debited at most once however late it is replayed (JetStream's
// own dedupe window is minutes) and a top-up reference is used once.
//
// A projection in the KV bucket LEDGER_BALANCES (one key per account,
// with the stream sequence it reflects) makes balance reads one lookup;
// Rebuild recomputes it from the log.
package ledger
