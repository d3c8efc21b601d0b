-- One row per SIP transaction event (schema.Transaction, sip.transaction v1).
--
-- Times are UInt64 milliseconds since the Unix epoch, UTC, 0 when the thing
-- did not happen (ClickHouse 18.16 has no DateTime64). event_date is derived
-- from event_at by the server, in days since the epoch, so it needs no time
-- zone and is the same on every server.
--
-- The event id is the last sorting key column of a ReplacingMergeTree and
-- every key column is fixed per event, so a redelivered event folds into one
-- row; read with FINAL (or count distinct event_id) to see each once.
-- The key serves both common lookups: a day range, and the transactions of
-- one Call-ID within the days around its CDR.
--
-- attempt_* are parallel arrays, one element per relay of the request
-- (schema.Attempt), in order.
CREATE TABLE IF NOT EXISTS {database}.sip_transactions
(
    event_id               String,
    event_at               UInt64,
    event_date             Date MATERIALIZED toDate(intDiv(event_at, 86400000)),
    node                   String,
    method                 String,
    call_id                String,
    from_uri               String,
    from_tag               String,
    to_uri                 String,
    to_tag                 String,
    cseq                   UInt32,
    ruri                   String,
    in_dialog              UInt8,
    src                    String,
    local_addr             String,
    dst                    String,
    transport              String,
    status                 UInt16,
    reason                 String,
    q850                   UInt16,
    request_at             UInt64,
    provisional_at         UInt64,
    provisional_status     UInt16,
    final_at               UInt64,
    account                String,
    trunk                  String,
    note                   String,
    attempt_gateway        Array(String),
    attempt_supplier       Array(String),
    attempt_dst            Array(String),
    attempt_status         Array(UInt16),
    attempt_reason         Array(String),
    attempt_q850           Array(UInt16),
    attempt_start_at       Array(UInt64),
    attempt_provisional_at Array(UInt64),
    attempt_final_at       Array(UInt64)
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_date)
ORDER BY (event_date, call_id, event_id);
