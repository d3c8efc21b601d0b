package schema

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// KindDialPlan is a trunk's number normalisation: ordered rules that
// rewrite, classify or reject the caller and callee of its calls.
const KindDialPlan Kind = "dialplan"

// Which number a dial rule looks at.
const (
	DialCallee = "callee" // the Request-URI user: what routes
	DialCaller = "caller" // the From user
)

// MaxDialRules bounds a dial plan; every initial INVITE of its trunks
// runs through the rules in order.
const MaxDialRules = 256

// DialRejectCodes are the answers a dial rule may refuse a call with.
var DialRejectCodes = map[int]string{
	403: "Forbidden",
	404: "Not Found",
	420: "Bad Extension",
	484: "Address Incomplete",
}

// DialPlan normalises the numbers of a trunk's calls to E.164 before they
// are routed, and can classify or refuse them. Each number (callee, and
// caller) runs through the rules that look at it, in order: the first
// rule that matches applies its actions and ends the plan for that number,
// unless it says Continue, in which case the next rules see the rewritten
// number. A number no rule matches passes unchanged.
type DialPlan struct {
	ID    string     `json:"id"`
	Name  string     `json:"name,omitempty"`
	Rules []DialRule `json:"rules"`
}

// DialRule is one step of a dial plan: a match (a prefix or a regular
// expression, or neither to match every number) and actions. Rewrites
// are either Strip then Add, or Replace; Reject refuses the call.
type DialRule struct {
	// Name labels the rule in errors; rules are also known by position
	// ("rule 3").
	Name string `json:"name,omitempty"`
	// Number is "callee" (default) or "caller".
	Number string `json:"number,omitempty"`
	// Prefix matches numbers that start with it, as written ("+", "00").
	Prefix string `json:"prefix,omitempty"`
	// Regexp is an RE2 expression matched against the number (anchor it
	// with ^ and $ to match the whole number).
	Regexp string `json:"regexp,omitempty"`
	// Strip removes that many leading characters; Add then puts a prefix
	// in front.
	Strip int    `json:"strip,omitempty"`
	Add   string `json:"add,omitempty"`
	// Replace, with Regexp, replaces the part the expression matched by
	// this template: $1 or ${1} for a capture group, ${name} for a named
	// one ("^0(\d+)$" and "+49$1" turn 0301234 into +49301234).
	Replace string `json:"replace,omitempty"`
	// Class labels the call ("mobile", "premium"); the last matching
	// rule with a class sets it. It is recorded in the call's event.
	Class string `json:"class,omitempty"`
	// Reject refuses the call with 484, 404, 420 or 403; Reason is the
	// reason phrase (the code's usual phrase by default).
	Reject int    `json:"reject,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Continue goes on with the next rules after this one matched.
	Continue bool `json:"continue,omitempty"`
}

func (d DialPlan) ObjectKind() Kind { return KindDialPlan }
func (d DialPlan) ObjectID() string { return d.ID }

// Label names rule i (from 0) in errors: "rule 3" or "rule 3 (national)".
func (r DialRule) Label(i int) string {
	if r.Name == "" {
		return "rule " + strconv.Itoa(i+1)
	}
	return "rule " + strconv.Itoa(i+1) + " (" + r.Name + ")"
}

// NumberOrDefault is the number the rule looks at, callee when unset.
func (r DialRule) NumberOrDefault() string {
	if r.Number == "" {
		return DialCallee
	}
	return r.Number
}

// RejectReason is the reason phrase of a rejecting rule.
func (r DialRule) RejectReason() string {
	if r.Reason != "" {
		return r.Reason
	}
	return DialRejectCodes[r.Reject]
}

var (
	// dialDigits: what a prefix and an added prefix may hold; they end up
	// in a SIP URI user part, so nothing that needs escaping there.
	dialDigits = regexp.MustCompile(`^[0-9A-Za-z+*._-]{0,32}$`)
	dialClass  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	dialReason = regexp.MustCompile(`^[\x20-\x7e]{1,64}$`)
)

// Validate checks the plan and compiles its expressions; errors name the
// plan and the rule.
func (d DialPlan) Validate() error {
	if err := checkID(KindDialPlan, d.ID); err != nil {
		return err
	}
	if len(d.Rules) == 0 || len(d.Rules) > MaxDialRules {
		return fmt.Errorf("dial plan %s: %d rules: want 1 to %d: %w", d.ID, len(d.Rules), MaxDialRules, ErrInvalidObject)
	}
	for i, r := range d.Rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("dial plan %s: %s: %w", d.ID, r.Label(i), err)
		}
	}
	return nil
}

func (r DialRule) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, ErrInvalidObject)...)
	}
	if len(r.Name) > 64 || strings.ContainsAny(r.Name, "\r\n") {
		return bad("name %q: want up to 64 characters on one line", r.Name)
	}
	switch r.NumberOrDefault() {
	case DialCallee, DialCaller:
	default:
		return bad("number %q: want callee or caller", r.Number)
	}
	if r.Prefix != "" && r.Regexp != "" {
		return bad("both prefix and regexp: a rule matches by one of them")
	}
	if !dialDigits.MatchString(r.Prefix) {
		return bad("prefix %q: want up to 32 digits, letters, '+', '*', '.', '_' or '-'", r.Prefix)
	}
	if r.Regexp != "" {
		if len(r.Regexp) > 512 {
			return bad("regexp of %d characters: want at most 512", len(r.Regexp))
		}
		if _, err := regexp.Compile(r.Regexp); err != nil {
			return bad("regexp %q: %v", r.Regexp, err)
		}
	}
	if r.Strip < 0 || r.Strip > 32 {
		return bad("strip %d: want 0 to 32 characters", r.Strip)
	}
	if !dialDigits.MatchString(r.Add) {
		return bad("add %q: want up to 32 digits, letters, '+', '*', '.', '_' or '-'", r.Add)
	}
	if r.Replace != "" {
		if r.Regexp == "" {
			return bad("replace without regexp: the template fills in the expression's capture groups")
		}
		if r.Strip != 0 || r.Add != "" {
			return bad("replace with strip or add: rewrite with one or the other")
		}
		if len(r.Replace) > 64 || strings.ContainsAny(r.Replace, " \t\r\n@;<>\"") {
			return bad("replace %q: want up to 64 characters without spaces, '@', ';', '<', '>' or quotes", r.Replace)
		}
	}
	if r.Class != "" && !dialClass.MatchString(r.Class) {
		return bad("class %q: want 1 to 32 letters, digits, '-' or '_'", r.Class)
	}
	if r.Reject != 0 {
		if _, ok := DialRejectCodes[r.Reject]; !ok {
			return bad("reject %d: want 484, 404, 420 or 403", r.Reject)
		}
		if r.Strip != 0 || r.Add != "" || r.Replace != "" {
			return bad("reject with a rewrite: a refused call is not rewritten")
		}
		if r.Continue {
			return bad("reject with continue: a refused call goes no further")
		}
	}
	if r.Reason != "" {
		if r.Reject == 0 {
			return bad("reason without reject")
		}
		if !dialReason.MatchString(r.Reason) {
			return bad("reason %q: want 1 to 64 printable ASCII characters", r.Reason)
		}
	}
	return nil
}

// CheckDialPlan validates d as it would stand in p (a dial plan names
// no other object; this is for symmetry with the other kinds).
func (p *Provisioning) CheckDialPlan(d DialPlan) error { return d.Validate() }

// TrunksUsingDialPlan are the ids of the trunks that name dial plan id:
// it cannot be removed while they do.
func (p *Provisioning) TrunksUsingDialPlan(id string) []string {
	var out []string
	for _, tid := range SortedIDs(p.Trunks) {
		if p.Trunks[tid].DialPlan == id {
			out = append(out, tid)
		}
	}
	return out
}
