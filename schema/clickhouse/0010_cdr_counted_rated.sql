-- What a CDR is counted as includes its money, so that a rerate counts
-- the old price out and the new one in (see 0008).
ALTER TABLE {database}.cdr_counted
    ADD COLUMN currency String DEFAULT '',
    ADD COLUMN rated_destination String DEFAULT '',
    ADD COLUMN rated UInt8 DEFAULT 0,
    ADD COLUMN sell_nano Int64 DEFAULT 0,
    ADD COLUMN buy_nano Int64 DEFAULT 0,
    ADD COLUMN margin_nano Int64 DEFAULT 0;
