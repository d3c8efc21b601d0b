package schema

import "embed"

// ClickHouseDDL holds the ClickHouse schema, applied by package analytics:
//
//   - schema_migrations.sql creates the table that records applied
//     migrations; it runs first, every time.
//   - NNNN_name.sql are the migrations, applied once each in the order of
//     their number NNNN. A number, once released, never changes meaning:
//     a change to a table is a new file.
//
// {database} stands for the database name. A statement ends with a ';' at
// the end of a line; lines starting with "--" are comments. ClickHouse has
// no transactions and a migration is recorded after its last statement, so
// a migrator stopped half way runs the file again from the top: CREATE
// statements say IF NOT EXISTS. 18.16 has no ALTER ... ADD COLUMN IF NOT
// EXISTS, so an ALTER goes in a file of its own.
//
// Every statement must run on ClickHouse 18.16 (Debian's) and on current
// releases: no DateTime64 (epoch milliseconds are UInt64) and no insert
// deduplication tokens (ReplacingMergeTree folds replays instead).
//
//go:embed clickhouse/*.sql
var ClickHouseDDL embed.FS

// ClickHouseDatabase is the placeholder for the database name in ClickHouseDDL.
const ClickHouseDatabase = "{database}"
