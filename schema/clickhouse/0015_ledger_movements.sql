-- One row per LEDGER event (schema.ledger.*, v1): the account movements.
--
-- The event id is the last sorting key column of a ReplacingMergeTree and
-- account (from the subject) and event_at (the envelope's time, epoch ms)
-- are fixed per event, so a redelivered event folds into one row; read
-- with FINAL. event_date is derived from event_at like sip_transactions'.
--
-- Amounts are Int64 nano-units of the account's currency, signed by their
-- effect: amount_nano on the balance (credited +, debited -, adjusted as
-- given), held_nano on the credit held by live calls (reserved +,
-- released -), credit_limit_nano the new limit (opened,
-- credit_limit_changed). sum(amount_nano) of an account is its balance.
-- What identifies the movement: reference (credited), cdr_id (debited),
-- call_id (reserved, released), reason (adjusted); kind and currency are
-- the opened account's.
CREATE TABLE IF NOT EXISTS {database}.ledger_movements
(
    event_id          String,
    event_at          UInt64,
    event_date        Date MATERIALIZED toDate(intDiv(event_at, 86400000)),
    account           String,
    type              String,
    amount_nano       Int64,
    held_nano         Int64,
    credit_limit_nano Int64,
    currency          String,
    kind              String,
    reference         String,
    cdr_id            String,
    call_id           String,
    reason            String,
    node              String,
    seq               UInt64
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_date)
ORDER BY (account, event_at, event_id);
