package analytics_test

import (
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/synth"
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
	publishCDRsAsync(b, js, b.N, false)
	benchmarkSink(b, conn, js, b.N)
}

// BenchmarkClickHouseSinkRatedCDRs is BenchmarkClickHouseSinkCDRs with a
// rating (call.rated) for every CDR: 2·b.N events, each CDR written
// twice, the second time counted out and in again with its price. The
// figure is CDRs (not events) per second.
func BenchmarkClickHouseSinkRatedCDRs(b *testing.B) {
	_, conn := startClickHouse(b)
	js := startJetStream(b)
	if _, err := analytics.Migrate(testContext(b), conn, db); err != nil {
		b.Fatal(err)
	}
	publishCDRsAsync(b, js, b.N, true)
	benchmarkSink(b, conn, js, 2*b.N)
}

// benchmarkSink runs a sink until it inserted rows CDR rows.
func benchmarkSink(b *testing.B, conn driver.Conn, js jetstream.JetStream, rows int) {
	b.ResetTimer()
	start := time.Now()
	sink := runSink(b, js, conn, analytics.SinkConfig{MaxWait: time.Second})
	for sink.metric(b, "carrier_analytics_rows_total", analytics.TableCDRs) < float64(rows) {
		if time.Since(start) > waitTimeout {
			b.Fatalf("sink inserted %v of %d CDR rows", sink.metric(b, "carrier_analytics_rows_total", analytics.TableCDRs), rows)
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

// publishCDRsAsync stores n CDR events, and with rated the rating of
// each, with a bounded window of async publishes (eventlog.Publish waits
// for each ack, too slow for set-up).
func publishCDRsAsync(b *testing.B, js jetstream.JetStream, n int, rated bool) {
	b.Helper()
	for i := 0; i < n; i++ {
		c := testCDR(i, "acme", base.Add(time.Duration(i)*time.Millisecond))
		typ := cdrEventType(c)
		env, err := schema.NewEnvelopeWithID(c.ID, typ, schema.CDRVersion, schema.FromMillis(c.EndAt), c.Node, c)
		if err != nil {
			b.Fatal(err)
		}
		msgs := []struct {
			subject string
			env     schema.Envelope
		}{{schema.CDRSubject(typ, c.CallID), env}}
		if rated {
			rc := synth.Rate(c, 0)
			env, err := schema.NewEnvelopeWithID(schema.RatedID(c.ID, 0), schema.TypeCallRated, schema.RatedVersion, schema.FromMillis(rc.RatedAt), "rater-1", rc)
			if err != nil {
				b.Fatal(err)
			}
			msgs = append(msgs, struct {
				subject string
				env     schema.Envelope
			}{schema.RatedSubject(c.CallID), env})
		}
		for _, m := range msgs {
			data, err := m.env.Marshal()
			if err != nil {
				b.Fatal(err)
			}
			msg := nats.NewMsg(m.subject)
			msg.Data = data
			msg.Header.Set(jetstream.MsgIDHeader, m.env.ID)
			if _, err := js.PublishMsgAsync(msg); err != nil {
				b.Fatal(err)
			}
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
