package proxy

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	transactions *prometheus.CounterVec
	inflight     prometheus.Gauge
	malformed    prometheus.Counter
	stray        prometheus.Counter
	eventErrors  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_sip_transactions_total",
			Help: "SIP transactions the proxy finished, by request method and final status code sent upstream (0: none, as for ACK).",
		}, []string{"method", "code"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "carrier_sip_inflight_transactions",
			Help: "SIP server transactions the proxy is handling now.",
		}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_sip_malformed_total",
			Help: "Received SIP messages that were malformed or too large (answered 400/413 when possible, dropped otherwise).",
		}),
		stray: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_sip_stray_responses_total",
			Help: "Responses that matched no client transaction and were dropped.",
		}),
		eventErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_sip_event_errors_total",
			Help: "Transaction events that could not be encoded or handed to the event log.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.transactions, m.inflight, m.malformed, m.stray, m.eventErrors} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("register proxy metrics (one proxy per registry): %v: %w", err, ErrInvalidConfig)
			}
			return nil, fmt.Errorf("register proxy metrics: %w", err)
		}
	}
	return m, nil
}

// methodLabel bounds the method label to the methods SIP defines, so that
// garbage method names cannot grow the metric without limit.
func methodLabel(m string) string {
	switch sip.RequestMethod(m) {
	case sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.REGISTER, sip.OPTIONS, sip.SUBSCRIBE,
		sip.NOTIFY, sip.REFER, sip.INFO, sip.MESSAGE, sip.PRACK, sip.UPDATE, sip.PUBLISH:
		return m
	}
	return "OTHER"
}

// codeLabels holds the label of every status code, built once, so that
// counting a transaction formats nothing.
var codeLabels = func() [700]string {
	var t [700]string
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

func codeLabel(code int) string {
	if code < 0 || code >= len(codeLabels) {
		return "other"
	}
	return codeLabels[code]
}
