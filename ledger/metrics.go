package ledger

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/schema"
)

type metrics struct {
	appends          *prometheus.CounterVec
	conflicts        prometheus.Counter
	duplicates       prometheus.Counter
	refused          prometheus.Counter
	projectionErrors prometheus.Counter
}

// newMetrics builds the ledger's metrics and registers them with reg when
// it is not nil; two Ledgers on one registry are told apart by the caller
// (prometheus.WrapRegistererWith).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		appends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "carrier_ledger_appends_total",
			Help: "Events appended to account ledgers, by event type.",
		}, []string{"type"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_ledger_conflicts_total",
			Help: "Conditional appends refused because another writer changed the account first; each is retried.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_ledger_noops_total",
			Help: "Writes that appended nothing because they were applied already (a CDR debited before, a call holding nothing).",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_ledger_refused_total",
			Help: "Writes refused: insufficient funds, reused top-up reference, unknown account.",
		}),
		projectionErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "carrier_ledger_projection_errors_total",
			Help: "Balance projection updates that failed after the event was stored; the next write or a rebuild repairs them.",
		}),
	}
	for _, t := range []string{schema.TypeAccountOpened, schema.TypeCredited, schema.TypeDebited, schema.TypeReserved, schema.TypeReleased, schema.TypeAdjusted, schema.TypeCreditLimitChanged} {
		m.appends.WithLabelValues(t)
	}
	if reg == nil {
		return m, nil
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{m.appends, m.conflicts, m.duplicates, m.refused, m.projectionErrors} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, fmt.Errorf("register ledger metrics: %w", err)
		}
		done = append(done, c)
	}
	return m, nil
}
