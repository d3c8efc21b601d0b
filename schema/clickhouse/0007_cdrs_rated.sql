-- The price of a CDR, from its latest rating (schema.RatedCDR, call.rated
-- v1). A rated CDR is the same call written again with a higher version
-- (analytics.VersionRated: the rating run + 2; the correlator's unrated
-- CDR is version 1), so the ReplacingMergeTree keeps the latest rating
-- whichever arrives first. Rows written before this column read as not
-- rated.
--
-- Amounts are Int64 nano-units of currency (10^-9, schema.Money), exact:
-- sums stay Int64 on 18.16 and current releases, and Go reads them as
-- Money without conversion. An amount the rating did not know (no buy
-- price) is 0; rating_status, rating_reason and buy_reason say why.
-- rated_destination and rated_prefix are the sell leg's match, sell_plan
-- and buy_plan the plans that priced the call, rating_run the run of the
-- rating (0 the rater's, a rerate's otherwise) and rated_at when it was
-- priced (epoch ms).
ALTER TABLE {database}.cdrs
    ADD COLUMN rating_status String DEFAULT '',
    ADD COLUMN rating_reason String DEFAULT '',
    ADD COLUMN rating_run UInt64 DEFAULT 0,
    ADD COLUMN rated_at UInt64 DEFAULT 0,
    ADD COLUMN currency String DEFAULT '',
    ADD COLUMN sell_nano Int64 DEFAULT 0,
    ADD COLUMN buy_nano Int64 DEFAULT 0,
    ADD COLUMN margin_nano Int64 DEFAULT 0,
    ADD COLUMN rated_destination String DEFAULT '',
    ADD COLUMN rated_prefix String DEFAULT '',
    ADD COLUMN sell_plan String DEFAULT '',
    ADD COLUMN buy_plan String DEFAULT '',
    ADD COLUMN buy_reason String DEFAULT '';
