package analytics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of a Sink, labelled by table.
type metrics struct {
	rows         *prometheus.CounterVec
	batchSeconds *prometheus.HistogramVec
	insertErrors *prometheus.CounterVec
	skipped      *prometheus.CounterVec
	lag          *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_analytics_rows_total",
			Help: "Rows inserted into ClickHouse (a redelivered event counts again).",
		}, []string{"table"}),
		batchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "carrier_analytics_batch_seconds",
			Help:    "Time to insert one batch into ClickHouse, failed attempts included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"table"}),
		insertErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_analytics_insert_errors_total",
			Help: "Batches ClickHouse did not accept; each is retried until it does.",
		}, []string{"table"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_analytics_skipped_total",
			Help: "Events left out of ClickHouse because this build cannot decode them (see the log).",
		}, []string{"table"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "carrier_analytics_lag_seconds",
			Help: "Age of the newest event of the last batch inserted, when it was inserted.",
		}, []string{"table"}),
	}
	if reg == nil {
		return m, nil
	}
	// Two sinks on one registry must be told apart by the caller with
	// prometheus.WrapRegistererWith.
	for _, c := range []prometheus.Collector{m.rows, m.batchSeconds, m.insertErrors, m.skipped, m.lag} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("analytics: register sink metrics: %w", err)
		}
	}
	return m, nil
}
