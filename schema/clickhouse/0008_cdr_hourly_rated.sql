-- The hourly aggregates gain the money of the calls they count: rated
-- calls, revenue (sell), cost (buy) and margin in nano-units, per currency
-- and rated destination (the sell leg's destination name, '' for a call
-- not rated). Both are new sorting key columns, so groups of different
-- currencies or destinations are never summed together. 18.16 adds a
-- column to the sorting key only in the ALTER that creates it, and only
-- without a default expression; existing rows read ''. The counted rows
-- of cdr_counted read '' and 0 too, so a CDR counted before this
-- migration is counted out with exactly what it was counted in with.
ALTER TABLE {database}.cdr_hourly
    ADD COLUMN currency String,
    ADD COLUMN rated_destination String,
    ADD COLUMN rated Int64 DEFAULT 0,
    ADD COLUMN sell_nano Int64 DEFAULT 0,
    ADD COLUMN buy_nano Int64 DEFAULT 0,
    ADD COLUMN margin_nano Int64 DEFAULT 0,
    MODIFY ORDER BY (hour_at, account, destination, supplier, gateway, currency, rated_destination);
