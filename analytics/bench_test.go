package analytics_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/schema"
)

// BenchmarkClickHouseSinkCDRs measures the sink end to end: b.N finished
// CDRs waiting in JetStream, loaded into ClickHouse with the default batch
// size. Run with a fixed count, e.g. -benchtime 200000x.
func BenchmarkClickHouseSinkCDRs(b *testing.B) {
	_, conn := startClickHouse(b)
	js := startJetStream(b)
	if _, err := analytics.Migrate(testContext(b), conn, db); err != nil {
		b.Fatal(err)
	}
	publishCDRsAsync(b, js, b.N)

	b.ResetTimer()
	start := time.Now()
	sink := runSink(b, js, conn, analytics.SinkConfig{MaxWait: time.Second})
	for sink.metric(b, "carrier_analytics_rows_total", analytics.TableCDRs) < float64(b.N) {
		if time.Since(start) > waitTimeout {
			b.Fatalf("sink loaded %v of %d CDRs", sink.metric(b, "carrier_analytics_rows_total", analytics.TableCDRs), b.N)
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cdrs/s")
	if err := sink.stop(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkClickHouseInsertCDRs measures InsertCDRs alone, in batches of
// 5000, without JetStream.
func BenchmarkClickHouseInsertCDRs(b *testing.B) {
	_, conn := startClickHouse(b)
	ctx := testContext(b)
	if _, err := analytics.Migrate(ctx, conn, db); err != nil {
		b.Fatal(err)
	}
	const batch = 5000
	recs := make([]analytics.CDRRecord, 0, batch)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		recs = append(recs, analytics.CDRRecord{CDR: testCDR(i, "acme", base.Add(time.Duration(i)*time.Millisecond)), Version: analytics.VersionUnrated})
		if len(recs) == batch || i == b.N-1 {
			if err := analytics.InsertCDRs(ctx, conn, db, recs); err != nil {
				b.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "cdrs/s")
}

// publishCDRsAsync stores n CDR events with a bounded window of async
// publishes (eventlog.Publish waits for each ack, too slow for set-up).
func publishCDRsAsync(b *testing.B, js jetstream.JetStream, n int) {
	b.Helper()
	for i := 0; i < n; i++ {
		c := testCDR(i, "acme", base.Add(time.Duration(i)*time.Millisecond))
		typ := cdrEventType(c)
		env, err := schema.NewEnvelopeWithID(c.ID, typ, schema.CDRVersion, schema.FromMillis(c.EndAt), c.Node, c)
		if err != nil {
			b.Fatal(err)
		}
		data, err := env.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		msg := nats.NewMsg(schema.CDRSubject(typ, c.CallID))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, env.ID)
		if _, err := js.PublishMsgAsync(msg); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 || i == n-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publishing the CDRs did not complete")
			}
		}
	}
}
