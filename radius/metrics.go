package radius

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type clientMetrics struct {
	requests     *prometheus.CounterVec
	retransmits  *prometheus.CounterVec
	badResponses *prometheus.CounterVec
	rtt          *prometheus.HistogramVec
}

func newClientMetrics(reg prometheus.Registerer) (*clientMetrics, error) {
	m := &clientMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_radius_requests_total",
			Help: "Accounting requests per server and result (ok, no_answer); a request that fails over counts at each server it tried.",
		}, []string{"server", "result"}),
		retransmits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_radius_retransmits_total",
			Help: "Accounting requests sent again to a server after a timeout.",
		}, []string{"server"}),
		badResponses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_radius_bad_responses_total",
			Help: "Responses dropped because their authenticator did not verify (wrong shared secret).",
		}, []string{"server"}),
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "carrier_radius_response_seconds",
			Help:    "Time from sending an accounting request to its response.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"server"}),
	}
	return m, register(reg, m.requests, m.retransmits, m.badResponses, m.rtt)
}

type accounterMetrics struct {
	records   *prometheus.CounterVec
	skipped   prometheus.Counter
	openCalls prometheus.Gauge
}

func newAccounterMetrics(reg prometheus.Registerer) (*accounterMetrics, error) {
	m := &accounterMetrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_radius_records_total",
			Help: "Accounting records a server acknowledged, by Acct-Status-Type.",
		}, []string{"status"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_radius_skipped_total",
			Help: "Call events not accounted because this build cannot decode them or their record cannot be encoded (see the log).",
		}),
		openCalls: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carrier_radius_open_calls",
			Help: "Answered calls with a Start and no Stop yet: the ones that get Interim-Updates.",
		}),
	}
	return m, register(reg, m.records, m.skipped, m.openCalls)
}

func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("radius metrics: %w", err)
		}
	}
	return nil
}
