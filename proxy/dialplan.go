package proxy

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
)

// noteDialPlanReject: the trunk's dial plan refused the call (484, 404,
// 420 or 403); the event's Class and numbers say which number it was.
const noteDialPlanReject = "dialplan_reject"

// dialPlan is a schema.DialPlan compiled for the request path: its
// expressions are compiled once per provisioning snapshot.
type dialPlan struct {
	id             string
	callee, caller []dialRule
}

type dialRule struct {
	label   string
	prefix  string
	re      *regexp.Regexp // nil: matched by prefix (or every number)
	strip   int
	add     string
	replace string
	rewrite bool // replace is set
	class   string
	reject  int
	reason  string
	cont    bool
}

// compileDialPlan compiles d; the error names the plan and the rule.
func compileDialPlan(d schema.DialPlan) (*dialPlan, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	dp := &dialPlan{id: d.ID}
	for i, r := range d.Rules {
		c := dialRule{
			label: r.Label(i), prefix: r.Prefix, strip: r.Strip, add: r.Add,
			replace: r.Replace, rewrite: r.Replace != "", class: r.Class,
			reject: r.Reject, reason: r.RejectReason(), cont: r.Continue,
		}
		if r.Regexp != "" {
			re, err := regexp.Compile(r.Regexp)
			if err != nil {
				return nil, fmt.Errorf("dial plan %s: %s: regexp %q: %v: %w", d.ID, c.label, r.Regexp, err, schema.ErrInvalidObject)
			}
			c.re = re
		}
		if r.NumberOrDefault() == schema.DialCaller {
			dp.caller = append(dp.caller, c)
		} else {
			dp.callee = append(dp.callee, c)
		}
	}
	return dp, nil
}

// dialOutcome is what a dial plan made of one number.
type dialOutcome struct {
	number string
	class  string
	reject *dialRule // the rule that refused the call; nil when none did
}

// run passes number through rules: the first that matches applies and
// ends the run unless it says continue.
func run(rules []dialRule, number string) dialOutcome {
	out := dialOutcome{number: number}
	for i := range rules {
		r := &rules[i]
		var m []int
		switch {
		case r.re != nil:
			if m = r.re.FindStringSubmatchIndex(out.number); m == nil {
				continue
			}
		case !strings.HasPrefix(out.number, r.prefix):
			continue
		}
		if r.reject != 0 {
			out.reject = r
			if r.class != "" {
				out.class = r.class
			}
			return out
		}
		switch {
		case r.rewrite:
			n := out.number
			out.number = n[:m[0]] + string(r.re.ExpandString(nil, r.replace, n, m)) + n[m[1]:]
		case r.strip > 0 || r.add != "":
			n := out.number
			n = n[min(r.strip, len(n)):]
			out.number = r.add + n
		}
		if r.class != "" {
			out.class = r.class
		}
		if !r.cont {
			break
		}
	}
	return out
}

// callRouting is what the proxy decided about an initial INVITE before
// routing it: whose call it is and whether it goes to a DID of ours.
type callRouting struct {
	account string
	did     *didEntry
	// admit decides whether a gateway may take the call now; nil for
	// requests without limits (anything but an initial INVITE).
	admit func(*target) bool
}

func (c *callRouting) accountOf() string {
	if c == nil {
		return ""
	}
	return c.account
}

// steer applies what provisioning says about an initial INVITE before it
// is admitted and routed: the trunk's dial plan normalises its callee
// (the Request-URI user, which routes; To is left as the caller wrote
// it) and its caller (the From user; a P-Asserted-Identity passes
// unchanged), or refuses the call; then a call to one of our DIDs from a
// trusted trunk, or from a provisioned gateway's address that no trunk
// holds, is marked for delivery to the DID's owner. It returns the request to go on with (a
// copy when the dial plan rewrote it, so that the received one stays as
// sipgo holds it) and the trunk to admit it as; a nil request was
// answered here.
func (r *request) steer(trunk *trunkRef) (*sip.Request, *trunkRef) {
	a := r.p.table.Load()
	req := r.req
	if trunk != nil {
		r.call.account = trunk.account
		if trunk.dialPlan != nil {
			if req = r.dial(trunk.dialPlan); req == nil {
				return nil, trunk
			}
		}
	}
	if len(a.dids) == 0 {
		return req, trunk
	}
	d := a.dids[schema.NormalDID(req.Recipient.User)]
	if d == nil {
		return req, trunk
	}
	switch {
	case trunk != nil && trunk.trusted:
	case trunk == nil && a.fromGateway(r.ev.Source):
		// A gateway is no customer: the call is admitted for the DID
		// alone, and may not preload a Route. (A source a trunk holds is
		// that trunk's, whatever else is there.)
		trunk = &trunkRef{}
	default:
		// Any other caller's call to a DID of ours is routed like any
		// other call: only gateways and trusted peers bring inbound calls.
		return req, trunk
	}
	r.call.did = d
	r.ev.DID = d.number
	return req, trunk
}

// dial applies dial plan dp to the request's numbers and records them in
// the event. It answers a refused call itself and returns nil.
func (r *request) dial(dp *dialPlan) *sip.Request {
	req := r.req
	callee := run(dp.callee, req.Recipient.User)
	caller := dialOutcome{}
	from := req.From()
	if from != nil {
		caller = run(dp.caller, from.Address.User)
	}
	r.ev.CalleeE164, r.ev.CallerE164 = callee.number, caller.number
	r.ev.Class = caller.class
	if callee.class != "" {
		r.ev.Class = callee.class
	}
	for _, o := range []dialOutcome{callee, caller} {
		if o.reject != nil {
			r.p.log.Debug("call refused by the dial plan", "call_id", r.ev.CallID, "dial_plan", dp.id, "rule", o.reject.label, "code", o.reject.reject)
			r.respond(o.reject.reject, o.reject.reason, noteDialPlanReject)
			r.finish()
			return nil
		}
	}
	if callee.number == req.Recipient.User && (from == nil || caller.number == from.Address.User) {
		return req
	}
	out := req.Clone()
	out.Recipient.User = callee.number
	if from != nil && caller.number != from.Address.User {
		f := out.From()
		f.Address.User = caller.number
	}
	r.req = out
	return out
}

// compileDialPlans compiles every dial plan of pv; a plan that does not
// compile (only possible for one written around the CLI) is logged and
// left out, and its trunks' numbers pass unchanged.
func (p *Proxy) compileDialPlans(pv *schema.Provisioning) map[string]*dialPlan {
	out := make(map[string]*dialPlan, len(pv.DialPlans))
	for _, id := range schema.SortedIDs(pv.DialPlans) {
		dp, err := compileDialPlan(pv.DialPlans[id])
		if err != nil {
			p.log.Error("dial plan skipped", "dial_plan", id, "err", err)
			continue
		}
		out[id] = dp
	}
	return out
}

// trunkDialPlan is the compiled dial plan trunk t names, nil for none.
func (p *Proxy) trunkDialPlan(t schema.Trunk, plans map[string]*dialPlan) *dialPlan {
	if t.DialPlan == "" {
		return nil
	}
	dp, ok := plans[t.DialPlan]
	if !ok {
		p.log.Warn("trunk's dial plan is not provisioned: its numbers pass unchanged", "trunk", t.ID, "dial_plan", t.DialPlan)
	}
	return dp
}

// fromGateway reports whether source (ip:port) is the address of a
// provisioned gateway, on any port.
func (a *admission) fromGateway(source string) bool {
	ap, err := netip.ParseAddrPort(source)
	return err == nil && a.gatewayAddrs[ap.Addr().Unmap()]
}
