package testkit

import (
	"context"
	"testing"
	"time"
)

func TestClickHouseStopStartKeepsData(t *testing.T) {
	ch := StartClickHouse(t)
	conn := ch.Conn()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS kit",
		"CREATE TABLE kit.t (id UInt64, name String) ENGINE = MergeTree() ORDER BY id",
	} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO kit.t (id, name)")
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 3; i++ {
		if err := batch.Append(i, "row"); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}

	ch.Stop()
	if ch.Running() {
		t.Fatal("server still running after Stop")
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM kit.t").Scan(&n); err == nil {
		t.Fatal("query answered while the server was stopped")
	}

	ch.Start()
	if err := conn.QueryRow(ctx, "SELECT count() FROM kit.t").Scan(&n); err != nil {
		t.Fatalf("after restart: %v", err)
	}
	if n != 3 {
		t.Fatalf("after restart: %d rows, want 3", n)
	}
}
