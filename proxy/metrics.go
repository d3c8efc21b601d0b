package proxy

import (
	"errors"
	"fmt"
	"strconv"
	"sync"

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
	// answers keeps each gateway's answer ratio over its last attempts.
	answers *answerRatios
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
	m.answers = newAnswerRatios()
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
	for _, c := range []prometheus.Collector{m.transactions, m.inflight, m.malformed, m.stray, m.strayForwarded, m.eventErrors, refused, m.revision, m.gatewayAttempts, m.gatewayUp, m.answers.ratio, m.floodBans, m.floodBanned, m.floodDropped, m.limited} {
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

// answerWindow is how many of a gateway's last INVITE attempts its answer
// ratio (carrier_sip_gateway_answer_ratio) is taken over: enough that one
// failed call moves it by a point, few enough that a gateway going bad
// shows within minutes at a few calls per second.
const answerWindow = 100

// answerRatios keeps the outcome of each gateway's last answerWindow
// attempts and exports the share that were answered (2xx). A gateway has
// no series until its first attempt: a ratio of 0 for a gateway that
// carried nothing would read as one that fails every call, and an absent
// series is what alert rules already treat as "no data".
type answerRatios struct {
	ratio *prometheus.GaugeVec
	mu    sync.Mutex
	gws   map[string]*answerRing
}

// answerRing holds a gateway's last attempts, answered or not.
type answerRing struct {
	answered [answerWindow]bool
	n        int // attempts held, at most answerWindow
	next     int // slot of the next attempt
	hits     int // answered among those held
	gauge    prometheus.Gauge
}

func newAnswerRatios() *answerRatios {
	return &answerRatios{
		ratio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "carrier_sip_gateway_answer_ratio",
			Help: "Share of the last 100 INVITE attempts at a gateway that it answered with 2xx (no series before its first attempt).",
		}, []string{"gateway"}),
		gws: map[string]*answerRing{},
	}
}

// attempt books the final code of one attempt at gateway (408 when it
// did not answer in time).
func (a *answerRatios) attempt(gateway string, code int) {
	ok := code >= 200 && code < 300
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.gws[gateway]
	if r == nil {
		r = &answerRing{gauge: a.ratio.WithLabelValues(gateway)}
		a.gws[gateway] = r
	}
	if r.n == answerWindow {
		if r.answered[r.next] {
			r.hits--
		}
	} else {
		r.n++
	}
	r.answered[r.next] = ok
	if ok {
		r.hits++
	}
	r.next = (r.next + 1) % answerWindow
	r.gauge.Set(float64(r.hits) / float64(r.n))
}

// prune forgets the gateways not in keep, and their series, so that a
// gateway removed from provisioning does not report its last ratio
// forever. Call it where provisioning is compiled, beside healthBook.prune.
func (a *answerRatios) prune(keep map[string]bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id := range a.gws {
		if !keep[id] {
			delete(a.gws, id)
			a.ratio.DeleteLabelValues(id)
		}
	}
}
