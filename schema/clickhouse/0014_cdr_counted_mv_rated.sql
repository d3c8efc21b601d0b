-- cdr_counted_mv of 0006, with the money of 0010.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.cdr_counted_mv TO {database}.cdr_counted
AS SELECT id, version, hour_at, account, destination, supplier, gateway, answered, duration_ms, billable_sec, pdd_ms, rang,
    currency, rated_destination, rated, sell_nano, buy_nano, margin_nano
FROM {database}.cdr_changes
WHERE sign = 1;
