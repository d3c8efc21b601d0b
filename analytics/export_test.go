package analytics

import (
	"context"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// MigrateTo applies the migrations up to version last, included: the
// schema of an earlier release, for upgrade tests.
func MigrateTo(ctx context.Context, conn driver.Conn, database string, last uint32) ([]string, error) {
	return migrateTo(ctx, conn, database, last)
}
