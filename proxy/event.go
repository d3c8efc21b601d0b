package proxy

import (
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
)

// newTransaction starts the event of a request as received.
func newTransaction(req *sip.Request, local string, at time.Time) schema.Transaction {
	tx := schema.Transaction{
		Method:     string(req.Method),
		RequestURI: req.Recipient.String(),
		Source:     req.Source(),
		Local:      local,
		Transport:  lowerTransport(req.Transport()),
		RequestAt:  schema.Millis(at),
	}
	if h := req.CallID(); h != nil {
		tx.CallID = h.Value()
	}
	if h := req.From(); h != nil {
		tx.FromURI = h.Address.String()
		tx.FromTag, _ = h.Params.Get("tag")
	}
	if h := req.To(); h != nil {
		tx.ToURI = h.Address.String()
		tx.ToTag, _ = h.Params.Get("tag")
		tx.InDialog = tx.ToTag != ""
	}
	if h := req.CSeq(); h != nil {
		tx.CSeq = h.SeqNo
	}
	if req.Method == sip.BYE || req.Method == sip.CANCEL {
		tx.Q850 = q850(req.Headers())
	}
	return tx
}

// final records the final response sent upstream.
func final(tx *schema.Transaction, res *sip.Response, at time.Time, note string) {
	tx.Status, tx.Reason, tx.FinalAt = res.StatusCode, res.Reason, schema.Millis(at)
	if note != "" {
		tx.Note = note
	}
	if !tx.InDialog {
		if h := res.To(); h != nil {
			tx.ToTag, _ = h.Params.Get("tag")
		}
	}
	if tx.Q850 == 0 {
		tx.Q850 = q850(res.Headers())
	}
}

// publish hands the event of a finished transaction to the log. It never
// fails the SIP path: errors are counted and logged.
func (p *Proxy) publish(tx *schema.Transaction, at time.Time) {
	p.m.transactions.WithLabelValues(methodLabel(tx.Method), codeLabel(tx.Status)).Inc()
	env, err := schema.NewEnvelope(schema.TypeTransaction, schema.TransactionVersion, at, p.cfg.Node, tx)
	if err != nil {
		p.m.eventErrors.Inc()
		p.log.Error("encode transaction event", "call_id", tx.CallID, "method", tx.Method, "err", err)
		return
	}
	if err := p.events.Publish(schema.TransactionSubject(tx.CallID), env); err != nil {
		p.m.eventErrors.Inc()
		p.log.Warn("publish transaction event", "call_id", tx.CallID, "method", tx.Method, "event", env.ID, "err", err)
	}
}

func lowerTransport(t string) string {
	switch t {
	case "UDP", "udp", "":
		return "udp"
	case "TCP", "tcp":
		return "tcp"
	case "TLS", "tls":
		return "tls"
	}
	return strings.ToLower(t)
}

// q850 is the cause of the first Q.850 reason in the Reason headers
// (RFC 3326), for example `Reason: Q.850;cause=16;text="Normal"`; 0 when
// there is none.
func q850(hs []sip.Header) int {
	for _, h := range hs {
		if !strings.EqualFold(h.Name(), "Reason") {
			continue
		}
		if c := q850Value(h.Value()); c > 0 {
			return c
		}
	}
	return 0
}

// q850Value scans one Reason header value, which may list several reasons
// separated by commas outside quoted strings.
func q850Value(v string) int {
	for len(v) > 0 {
		// Split off one reason-value, honouring quotes.
		end, quoted := len(v), false
		for i := 0; i < len(v); i++ {
			switch c := v[i]; {
			case c == '"':
				quoted = !quoted
			case c == '\\' && quoted:
				i++
			case c == ',' && !quoted:
				end = i
			}
			if end != len(v) {
				break
			}
		}
		one := v[:end]
		if end < len(v) {
			v = v[end+1:]
		} else {
			v = ""
		}
		proto, params, _ := strings.Cut(one, ";")
		if !strings.EqualFold(strings.TrimSpace(proto), "Q.850") {
			continue
		}
		for params != "" {
			var p string
			p, params, _ = strings.Cut(params, ";")
			name, val, _ := strings.Cut(p, "=")
			if !strings.EqualFold(strings.TrimSpace(name), "cause") {
				continue
			}
			n := 0
			for _, d := range []byte(strings.TrimSpace(val)) {
				if d < '0' || d > '9' || n > 999 {
					return 0
				}
				n = n*10 + int(d-'0')
			}
			return n
		}
	}
	return 0
}
