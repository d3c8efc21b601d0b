-- One row per call (schema.CDR, from call.ended and call.failed v1).
--
-- A CDR is written again when it changes: a replay of the correlator writes
-- the same row, rating (and rerating) a row with a higher version. The
-- ReplacingMergeTree keeps the highest version of each id, and the last one
-- written among equal versions; queries read with FINAL. For that to work
-- every sorting key and partition column (account, invite_at, id) is fixed
-- for a call and must never change between versions.
--
-- invite_date is derived from invite_at by the server (days since the
-- epoch, no time zone); it partitions by month and lets queries prune.
-- Times are UInt64 epoch milliseconds, 0 when it did not happen; durations
-- are Int64 milliseconds or seconds as in schema.CDR. attempt_* are parallel
-- arrays, one element per gateway tried (schema.Attempt), in order.
CREATE TABLE IF NOT EXISTS {database}.cdrs
(
    id                     String,
    version                UInt64,
    call_id                String,
    from_tag               String,
    to_tag                 String,
    account                String,
    trunk                  String,
    src                    String,
    transport              String,
    caller                 String,
    callee                 String,
    caller_e164            String,
    callee_e164            String,
    attempt_gateway        Array(String),
    attempt_supplier       Array(String),
    attempt_dst            Array(String),
    attempt_status         Array(UInt16),
    attempt_reason         Array(String),
    attempt_q850           Array(UInt16),
    attempt_start_at       Array(UInt64),
    attempt_provisional_at Array(UInt64),
    attempt_final_at       Array(UInt64),
    disposition            String,
    status                 UInt16,
    reason                 String,
    q850                   UInt16,
    invite_at              UInt64,
    invite_date            Date MATERIALIZED toDate(intDiv(invite_at, 86400000)),
    provisional_at         UInt64,
    answer_at              UInt64,
    end_at                 UInt64,
    setup_ms               Int64,
    pdd_ms                 Int64,
    duration_ms            Int64,
    billable_sec           Int64,
    hangup_by              String,
    hangup_reason          String,
    node                   String
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(invite_date)
ORDER BY (account, invite_at, id);
