-- cdr_hourly_mv of 0006, with the money of 0008.
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.cdr_hourly_mv TO {database}.cdr_hourly
AS SELECT
    hour_at, account, destination, supplier, gateway, currency, rated_destination,
    sum(sign) AS calls,
    sum(sign * answered) AS answered,
    sum(sign * duration_ms) AS duration_ms,
    sum(sign * billable_sec) AS billable_sec,
    sum(sign * pdd_ms) AS pdd_ms,
    sum(sign * rang) AS pdd_calls,
    sum(sign * rated) AS rated,
    sum(sign * sell_nano) AS sell_nano,
    sum(sign * buy_nano) AS buy_nano,
    sum(sign * margin_nano) AS margin_nano
FROM {database}.cdr_changes
GROUP BY hour_at, account, destination, supplier, gateway, currency, rated_destination;
