package cdrgen

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/schema"
)

type metrics struct {
	events  *prometheus.CounterVec
	cdrs    *prometheus.CounterVec
	open    prometheus.Gauge
	expired prometheus.Counter
}

// newMetrics builds the correlator's metrics and registers them with reg
// when it is not nil. The consumer label keeps correlators of different
// partitions apart in one process.
func newMetrics(reg prometheus.Registerer, consumer string) (*metrics, error) {
	labels := prometheus.Labels{"consumer": consumer}
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "carrier_cdrgen_events_total",
			Help:        "SIP transaction events handled by the CDR correlator, by outcome (applied, early, duplicate, conflict, ignored, malformed).",
			ConstLabels: labels,
		}, []string{"outcome"}),
		cdrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "carrier_cdrgen_cdrs_total",
			Help:        "Finished CDRs published by the CDR correlator (call.ended and call.failed), by disposition.",
			ConstLabels: labels,
		}, []string{"disposition"}),
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "carrier_cdrgen_open_calls",
			Help:        "Answered calls the CDR correlator is waiting to see end.",
			ConstLabels: labels,
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "carrier_cdrgen_expired_calls_total",
			Help:        "Answered calls the CDR correlator ended itself because no BYE came within the maximum call duration.",
			ConstLabels: labels,
		}),
	}
	for _, o := range []outcome{outcomeApplied, outcomeEarly, outcomeDuplicate, outcomeConflict, outcomeIgnored, outcomeMalformed} {
		m.events.WithLabelValues(string(o))
	}
	for _, d := range []schema.Disposition{schema.Answered, schema.Busy, schema.NoAnswer, schema.Cancelled, schema.Failed, schema.Congestion} {
		m.cdrs.WithLabelValues(string(d))
	}
	if reg == nil {
		return m, nil
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.events, m.cdrs, m.open, m.expired} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("register cdrgen metrics for consumer %s: %w", consumer, err)
		}
		done = append(done, c)
	}
	return m, nil
}
