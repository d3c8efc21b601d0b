package analytics

import (
	"errors"

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

func newMetrics(reg prometheus.Registerer) *metrics {
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
	if reg != nil {
		m.rows = register(reg, m.rows)
		m.batchSeconds = register(reg, m.batchSeconds)
		m.insertErrors = register(reg, m.insertErrors)
		m.skipped = register(reg, m.skipped)
		m.lag = register(reg, m.lag)
	}
	return m
}

// register registers c, or returns the collector already registered under
// its name, so that two sinks in one process share their series.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}
