-- The applied migrations. Migrate creates it before anything else and adds
-- a row after each migration; two migrators racing record a version twice,
-- which the engine folds and readers ignore (they read distinct versions).
CREATE TABLE IF NOT EXISTS {database}.schema_migrations
(
    version    UInt32,
    name       String,
    applied_at DateTime
)
ENGINE = ReplacingMergeTree()
ORDER BY version;
