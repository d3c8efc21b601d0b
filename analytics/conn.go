package analytics

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// DefaultDatabase is the database the tables live in unless configured.
const DefaultDatabase = "carrier"

// ErrBadDatabase: a database name that is not a plain identifier. Names
// are spliced into SQL, so nothing else is accepted.
var ErrBadDatabase = errors.New("invalid ClickHouse database name")

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func checkDatabase(name string) error {
	if !identifier.MatchString(name) {
		return fmt.Errorf("%q (letters, digits and _ only): %w", name, ErrBadDatabase)
	}
	return nil
}

// Open prepares a connection pool to ClickHouse over the native protocol
// (the only one that works with 18.16). addr is host:port, or a
// clickhouse:// DSN when a user, password or TLS is needed.
//
// Open does not dial: the first query does, and its error says when the
// server cannot be reached. That lets a sink start before ClickHouse and
// wait for it instead of taking its process down; call Ping to check now.
//
// The session stays in the server's default database and this package names
// its tables with database explicitly, so that Migrate can create database
// through the same connection; database is checked here so that a bad name
// fails early.
func Open(ctx context.Context, addr, database string) (driver.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkDatabase(database); err != nil {
		return nil, err
	}
	opts := &clickhouse.Options{Addr: []string{addr}}
	if strings.Contains(addr, "://") {
		var err error
		if opts, err = clickhouse.ParseDSN(addr); err != nil {
			return nil, fmt.Errorf("clickhouse address %q: %w", addr, err)
		}
	}
	opts.Protocol = clickhouse.Native
	if opts.Settings == nil {
		opts.Settings = clickhouse.Settings{}
	}
	// 18.16 refuses LowCardinality columns without it; current releases
	// accept and ignore it. Old servers take integer settings only.
	opts.Settings["allow_experimental_low_cardinality_type"] = 1
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.ReadTimeout == 0 {
		// clickhouse-go applies it to a query's whole response: generous
		// for exports and reports; a ctx deadline overrides it.
		opts.ReadTimeout = 10 * time.Minute
	}
	if opts.Compression == nil {
		opts.Compression = &clickhouse.Compression{Method: clickhouse.CompressionLZ4}
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", addr, err)
	}
	return conn, nil
}
