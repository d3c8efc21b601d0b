-- The signed changes carry the money too (see 0008).
ALTER TABLE {database}.cdr_changes
    ADD COLUMN currency String DEFAULT '',
    ADD COLUMN rated_destination String DEFAULT '',
    ADD COLUMN rated UInt8 DEFAULT 0,
    ADD COLUMN sell_nano Int64 DEFAULT 0,
    ADD COLUMN buy_nano Int64 DEFAULT 0,
    ADD COLUMN margin_nano Int64 DEFAULT 0;
