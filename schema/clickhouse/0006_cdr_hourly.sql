-- Hourly traffic aggregates that count each CDR once, in its latest version.
--
-- A materialized view over cdrs would see every row inserted: redelivered
-- CDRs and earlier versions would all count. Instead the writer of cdrs
-- (analytics.InsertCDRs) works out what changed and inserts signed rows into
-- cdr_changes: +1 for a CDR not counted yet, -1 (the counted values) and +1
-- (the new ones) for a CDR written again in a newer version, nothing for a
-- repeat. cdr_changes keeps nothing (Null engine); two views take its rows:
-- cdr_hourly sums them, cdr_counted remembers what each CDR was counted as,
-- so that the next write of the same CDR can be compared with it.
--
-- hour_at is the INVITE's hour in epoch milliseconds; destination is the
-- first four digits of the callee's E.164 number, so reports can group by
-- any shorter prefix.
CREATE TABLE IF NOT EXISTS {database}.cdr_changes
(
    sign         Int8,
    id           String,
    version      UInt64,
    hour_at      UInt64,
    account      String,
    destination  String,
    supplier     String,
    gateway      String,
    answered     UInt8,
    duration_ms  Int64,
    billable_sec Int64,
    pdd_ms       Int64,
    rang         UInt8
)
ENGINE = Null;
-- Summed by ClickHouse on merge; a group whose sums all reach zero goes
-- away. Read with sum() and GROUP BY, parts are summed lazily.
CREATE TABLE IF NOT EXISTS {database}.cdr_hourly
(
    hour_at      UInt64,
    account      String,
    destination  String,
    supplier     String,
    gateway      String,
    calls        Int64,
    answered     Int64,
    duration_ms  Int64,
    billable_sec Int64,
    pdd_ms       Int64,
    pdd_calls    Int64
)
ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(toDate(intDiv(hour_at, 86400000)))
ORDER BY (hour_at, account, destination, supplier, gateway);
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.cdr_hourly_mv TO {database}.cdr_hourly
AS SELECT
    hour_at, account, destination, supplier, gateway,
    sum(sign) AS calls,
    sum(sign * answered) AS answered,
    sum(sign * duration_ms) AS duration_ms,
    sum(sign * billable_sec) AS billable_sec,
    sum(sign * pdd_ms) AS pdd_ms,
    sum(sign * rang) AS pdd_calls
FROM {database}.cdr_changes
GROUP BY hour_at, account, destination, supplier, gateway;
-- What each CDR is counted as in cdr_hourly: the +1 rows, highest version.
-- hour_at is fixed per CDR (from invite_at, a sorting key column of cdrs),
-- so it leads the key: a batch looks its CDRs up hour by hour.
CREATE TABLE IF NOT EXISTS {database}.cdr_counted
(
    id           String,
    version      UInt64,
    hour_at      UInt64,
    account      String,
    destination  String,
    supplier     String,
    gateway      String,
    answered     UInt8,
    duration_ms  Int64,
    billable_sec Int64,
    pdd_ms       Int64,
    rang         UInt8
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(toDate(intDiv(hour_at, 86400000)))
ORDER BY (hour_at, id);
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.cdr_counted_mv TO {database}.cdr_counted
AS SELECT id, version, hour_at, account, destination, supplier, gateway, answered, duration_ms, billable_sec, pdd_ms, rang
FROM {database}.cdr_changes
WHERE sign = 1;
