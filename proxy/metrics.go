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
	// strayForwarded counts 2xx to INVITEs forwarded without a transaction.
	strayForwarded prometheus.Counter
	eventErrors    prometheus.Counter
	// refused* count the requests admission turned away, by reason.
	refusedUnknown   prometheus.Counter
	refusedPreloaded prometheus.Counter
	refusedDialog    prometheus.Counter
	revision         prometheus.Gauge
	// gatewayAttempts counts attempts by gateway id and final code.
	gatewayAttempts *prometheus.CounterVec
	gatewayUp       *prometheus.GaugeVec
	// Flood protection and limits (flood.go, limits.go).
	floodBans    prometheus.Counter
	floodBanned  prometheus.Gauge
	floodDropped prometheus.Counter
	limited      *prometheus.CounterVec
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
		strayForwarded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_sip_stray_2xx_forwarded_total",
			Help: "2xx responses to INVITEs that matched no client transaction (retransmissions after it ended) and were forwarded statelessly.",
		}),
		eventErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_sip_event_errors_total",
			Help: "Transaction events that could not be encoded or handed to the event log.",
		}),
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "carrier_sip_refused_total",
		Help: "Requests refused by admission, by reason: unknown_source (no trunk has the address), preloaded_route (a Route from an untrusted trunk), not_record_routed (an in-dialog request from outside the trunks that does not follow the proxy's Route set).",
	}, []string{"reason"})
	m.refusedUnknown = refused.WithLabelValues(noteUnknownSource)
	m.refusedPreloaded = refused.WithLabelValues(notePreloadedRoute)
	m.refusedDialog = refused.WithLabelValues(noteNotRecordRouted)
	m.revision = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "carrier_sip_provisioning_revision",
		Help: "Revision of the provisioning bucket the proxy admits and routes by (0: nothing provisioned).",
	})
	m.gatewayAttempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "carrier_sip_gateway_attempts_total",
		Help: "INVITE attempts at gateways, by gateway id and the gateway's final code (408 also when it did not answer in time).",
	}, []string{"gateway", "code"})
	m.gatewayUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "carrier_sip_gateway_up",
		Help: "1 while a provisioned gateway is up, 0 while it is held down after a 503 or a timeout or fails its OPTIONS probes.",
	}, []string{"gateway"})
	m.floodBans = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "carrier_sip_flood_bans_total",
		Help: "Source addresses banned for sending more requests within the flood window than the threshold.",
	})
	m.floodBanned = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "carrier_sip_flood_banned_sources",
		Help: "Source addresses banned now.",
	})
	m.floodDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "carrier_sip_flood_dropped_total",
		Help: "Messages dropped unanswered because their source address was banned.",
	})
	m.limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "carrier_sip_limited_total",
		Help: "Calls held back by a calls-per-second limit, by scope: account (refused) or gateway (sent to the route's next gateway, or refused when none was left).",
	}, []string{"scope"})
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.transactions, m.inflight, m.malformed, m.stray, m.strayForwarded, m.eventErrors, refused, m.revision, m.gatewayAttempts, m.gatewayUp, m.floodBans, m.floodBanned, m.floodDropped, m.limited} {
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
