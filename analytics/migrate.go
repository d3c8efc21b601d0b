package analytics

import (
	"context"
	"fmt"
	"io/fs"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/carrier-core/carrier/schema"
)

// migrationsTable is the bootstrap file; numbered files are migrations.
const migrationsTable = "schema_migrations.sql"

// migration is one numbered file of schema.ClickHouseDDL.
type migration struct {
	version    uint32
	name       string // file name without .sql, e.g. 0001_transactions
	statements []string
}

// Migrate creates database if it is missing and applies the migrations it
// has not recorded yet, in order, recording each after its statements
// succeeded. It returns the names of the migrations it applied (none when
// the schema is current), so running it again changes nothing.
//
// ClickHouse has no transactions: a migration interrupted half way is
// applied again from its start, which its statements are written to
// survive.
func Migrate(ctx context.Context, conn driver.Conn, database string) (applied []string, err error) {
	return migrateTo(ctx, conn, database, math.MaxUint32)
}

// migrateTo is Migrate up to version last, included: the tests build the
// schema of an earlier release with it, to upgrade from.
func migrateTo(ctx context.Context, conn driver.Conn, database string, last uint32) (applied []string, err error) {
	if err := checkDatabase(database); err != nil {
		return nil, err
	}
	boot, migs, err := loadMigrations(database)
	if err != nil {
		return nil, err
	}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+database); err != nil {
		return nil, fmt.Errorf("create database %s: %w", database, err)
	}
	for _, stmt := range boot {
		if err := conn.Exec(ctx, stmt); err != nil {
			return nil, fmt.Errorf("create %s.schema_migrations: %w", database, err)
		}
	}
	done, err := appliedVersions(ctx, conn, database)
	if err != nil {
		return nil, err
	}
	for _, m := range migs {
		if done[m.version] || m.version > last {
			continue
		}
		for i, stmt := range m.statements {
			if err := conn.Exec(ctx, stmt); err != nil {
				return applied, fmt.Errorf("migration %s, statement %d: %w", m.name, i+1, err)
			}
		}
		if err := recordMigration(ctx, conn, database, m); err != nil {
			return applied, err
		}
		applied = append(applied, m.name)
	}
	return applied, nil
}

// Migrations lists the names of all migrations this build knows, in the
// order Migrate applies them.
func Migrations() ([]string, error) {
	_, migs, err := loadMigrations(DefaultDatabase)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(migs))
	for i, m := range migs {
		names[i] = m.name
	}
	return names, nil
}

// AppliedMigrations lists the versions recorded in database, in order.
func AppliedMigrations(ctx context.Context, conn driver.Conn, database string) ([]uint32, error) {
	if err := checkDatabase(database); err != nil {
		return nil, err
	}
	done, err := appliedVersions(ctx, conn, database)
	if err != nil {
		return nil, err
	}
	vs := make([]uint32, 0, len(done))
	for v := range done {
		vs = append(vs, v)
	}
	sort.Slice(vs, func(i, j int) bool { return vs[i] < vs[j] })
	return vs, nil
}

func appliedVersions(ctx context.Context, conn driver.Conn, database string) (map[uint32]bool, error) {
	// DISTINCT: two migrators racing may both record a version.
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM "+database+".schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("read %s.schema_migrations: %w", database, err)
	}
	defer rows.Close()
	done := map[uint32]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read %s.schema_migrations: %w", database, err)
		}
		done[v] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s.schema_migrations: %w", database, err)
	}
	return done, nil
}

func recordMigration(ctx context.Context, conn driver.Conn, database string, m migration) error {
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+database+".schema_migrations (version, name, applied_at)")
	if err != nil {
		return fmt.Errorf("record migration %s: %w", m.name, err)
	}
	if err := batch.Append(m.version, m.name, time.Now().UTC()); err != nil {
		_ = batch.Abort()
		return fmt.Errorf("record migration %s: %w", m.name, err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("record migration %s: %w", m.name, err)
	}
	return nil
}

// loadMigrations reads schema.ClickHouseDDL with database substituted:
// the bootstrap statements and the numbered migrations in order.
func loadMigrations(database string) (boot []string, migs []migration, err error) {
	files, err := fs.Glob(schema.ClickHouseDDL, "clickhouse/*.sql")
	if err != nil {
		return nil, nil, fmt.Errorf("clickhouse ddl: %w", err)
	}
	seen := map[uint32]string{}
	for _, file := range files {
		b, err := fs.ReadFile(schema.ClickHouseDDL, file)
		if err != nil {
			return nil, nil, fmt.Errorf("clickhouse ddl: %w", err)
		}
		base := path.Base(file)
		stmts, err := splitStatements(strings.ReplaceAll(string(b), schema.ClickHouseDatabase, database))
		if err != nil {
			return nil, nil, fmt.Errorf("clickhouse ddl %s: %w", base, err)
		}
		if base == migrationsTable {
			boot = stmts
			continue
		}
		name := strings.TrimSuffix(base, ".sql")
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if !ok || err != nil || v == 0 {
			return nil, nil, fmt.Errorf("clickhouse ddl %s: want NNNN_name.sql", base)
		}
		if other, dup := seen[uint32(v)]; dup {
			return nil, nil, fmt.Errorf("clickhouse ddl: %s and %s share version %d", other, base, v)
		}
		seen[uint32(v)] = base
		migs = append(migs, migration{version: uint32(v), name: name, statements: stmts})
	}
	if boot == nil {
		return nil, nil, fmt.Errorf("clickhouse ddl: %s missing", migrationsTable)
	}
	sort.Slice(migs, func(i, j int) bool { return migs[i].version < migs[j].version })
	return boot, migs, nil
}

// splitStatements splits a file into statements, each ended by a ';' at
// the end of a line. Comment lines ("--") are dropped, so a ';' in a
// comment does not end anything.
func splitStatements(sql string) ([]string, error) {
	var stmts []string
	var cur strings.Builder
	for _, line := range strings.Split(sql, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			stmt := strings.TrimSuffix(strings.TrimSpace(cur.String()), ";")
			if strings.TrimSpace(stmt) != "" {
				stmts = append(stmts, stmt)
			}
			cur.Reset()
		}
	}
	if strings.TrimSpace(cur.String()) != "" {
		return nil, fmt.Errorf("statement without a closing ';': %.60q", cur.String())
	}
	if len(stmts) == 0 {
		return nil, fmt.Errorf("no statements")
	}
	return stmts, nil
}
