package schema

import (
	"errors"
	"fmt"
	"strings"
)

// KindSupplier is who runs gateways and sells us their minutes: the buy
// side of a call.
const KindSupplier Kind = "supplier"

// BuyPlanPrefix names the buy plan of a supplier (or gateway) that names
// none: "buy-<id>". rating.BuyPlan follows it. ("buy:" would read better,
// but plan names are KV keys and exclude ':'.)
const BuyPlanPrefix = "buy-"

// Supplier is a carrier we buy termination from. Its gateways name it
// (Gateway.Supplier); least-cost routing and the rater price their calls
// on its buy plan.
type Supplier struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Currency is the ISO 4217 code the supplier bills us in.
	Currency string `json:"currency"`
	// BuyPlan names the rate plan of the supplier's prices; empty is
	// "buy-<id>", the name buy decks were imported under before suppliers
	// were provisioned.
	BuyPlan string `json:"buy_plan,omitempty"`
	// MaxCalls bounds the calls in progress across all the supplier's
	// gateways, as its contract does; 0 is no limit.
	MaxCalls int `json:"max_calls,omitempty"`
	// CPS bounds the calls per second sent across all its gateways; 0 is
	// no limit.
	CPS int `json:"cps,omitempty"`
}

func (s Supplier) ObjectKind() Kind { return KindSupplier }
func (s Supplier) ObjectID() string { return s.ID }

// BuyPlanName is the rate plan the supplier's side of a call is priced on.
func (s Supplier) BuyPlanName() string {
	if s.BuyPlan != "" {
		return s.BuyPlan
	}
	return BuyPlanPrefix + s.ID
}

// Validate checks the supplier on its own.
func (s Supplier) Validate() error {
	if err := checkID(KindSupplier, s.ID); err != nil {
		return err
	}
	if !validCurrency.MatchString(s.Currency) {
		return fmt.Errorf("supplier %s: currency %q: want an ISO 4217 code such as EUR or USD: %w", s.ID, s.Currency, ErrInvalidObject)
	}
	if s.BuyPlan != "" && !validID.MatchString(s.BuyPlan) {
		return fmt.Errorf("supplier %s: buy plan %q: want letters, digits, '-' or '_': %w", s.ID, s.BuyPlan, ErrInvalidObject)
	}
	if s.MaxCalls < 0 || s.MaxCalls > MaxCPS {
		return fmt.Errorf("supplier %s: max calls %d: want 0 (no limit) to %d: %w", s.ID, s.MaxCalls, MaxCPS, ErrInvalidObject)
	}
	return checkCPS(KindSupplier, s.ID, s.CPS)
}

// SupplierBuyPlan is the buy plan of supplier id: the provisioned
// supplier's BuyPlanName, or "buy-<id>" when p does not hold it (p may be
// nil), so that decks imported under that name keep pricing. "" for no
// supplier.
func (p *Provisioning) SupplierBuyPlan(id string) string {
	if id == "" {
		return ""
	}
	if p != nil {
		if s, ok := p.Suppliers[id]; ok {
			return s.BuyPlanName()
		}
	}
	return Supplier{ID: id}.BuyPlanName()
}

// CheckGateway validates g as it would stand in p: the supplier it names
// exists.
func (p *Provisioning) CheckGateway(g Gateway) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if _, ok := p.Suppliers[g.Supplier]; g.Supplier != "" && !ok {
		return fmt.Errorf("gateway %s: supplier %q does not exist: %w", g.ID, g.Supplier, ErrInvalidObject)
	}
	return nil
}

// GatewaysOf are the ids of the gateways of supplier id, in order.
func (p *Provisioning) GatewaysOf(supplier string) []string {
	var out []string
	for _, id := range SortedIDs(p.Gateways) {
		if p.Gateways[id].Supplier == supplier {
			out = append(out, id)
		}
	}
	return out
}

// ErrInUse: an object that other objects name cannot be removed.
var ErrInUse = errors.New("provisioning object in use")

// ObjectRef names one provisioned object.
type ObjectRef struct {
	Kind Kind
	ID   string
}

func (r ObjectRef) String() string { return string(r.Kind) + " " + r.ID }

// CheckRemove says whether the object kind id may be removed from p: it
// may unless an object that passes its rules in p (its account, gateways,
// owner ... exist) would fail them without it. This is the rule add and
// apply check, run on p without the object, so that removing never
// leaves what adding would refuse. The error (ErrInUse) names the
// objects that refer to it; problems p already had do not block it.
func (p *Provisioning) CheckRemove(kind Kind, id string) error {
	next := p.Clone()
	if !next.remove(kind, id) {
		return nil
	}
	whole := map[ObjectRef]bool{}
	p.eachCheck(func(r ObjectRef, err error) {
		if err == nil {
			whole[r] = true
		}
	})
	var users []ObjectRef
	next.eachCheck(func(r ObjectRef, err error) {
		if err != nil && whole[r] {
			users = append(users, r)
		}
	})
	if len(users) == 0 {
		return nil
	}
	return fmt.Errorf("%s %s is used by %s: change or remove them first: %w", kind, id, refsText(users), ErrInUse)
}

// refsText lists objects grouped by kind in the order met: "route a, b;
// trunk c".
func refsText(refs []ObjectRef) string {
	var kinds []Kind
	ids := map[Kind][]string{}
	for _, r := range refs {
		if _, ok := ids[r.Kind]; !ok {
			kinds = append(kinds, r.Kind)
		}
		ids[r.Kind] = append(ids[r.Kind], r.ID)
	}
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = string(k) + " " + strings.Join(ids[k], ", ")
	}
	return strings.Join(parts, "; ")
}

// remove deletes the object kind id from p's maps; false when p has none.
func (p *Provisioning) remove(kind Kind, id string) bool {
	switch kind {
	case KindAccount:
		return removeID(p.Accounts, id)
	case KindSupplier:
		return removeID(p.Suppliers, id)
	case KindGateway:
		return removeID(p.Gateways, id)
	case KindTrunk:
		return removeID(p.Trunks, id)
	case KindRoute:
		return removeID(p.Routes, id)
	case KindSubscriber:
		return removeID(p.Subscribers, id)
	case KindDialPlan:
		return removeID(p.DialPlans, id)
	case KindDID:
		return removeID(p.DIDs, id)
	}
	return false
}

func removeID[T any](m map[string]T, id string) bool {
	_, ok := m[id]
	delete(m, id)
	return ok
}

// eachCheck applies to every object of p, kind by kind in id order, the
// rules it must pass as it stands in p: the ones add, apply and Check use.
func (p *Provisioning) eachCheck(f func(ObjectRef, error)) {
	checkAll(p.Accounts, Account.Validate, f)
	checkAll(p.Suppliers, Supplier.Validate, f)
	checkAll(p.Gateways, p.CheckGateway, f)
	checkAll(p.Trunks, p.CheckTrunk, f)
	checkAll(p.Routes, p.CheckRoute, f)
	checkAll(p.Subscribers, p.CheckSubscriber, f)
	checkAll(p.DialPlans, p.CheckDialPlan, f)
	checkAll(p.DIDs, p.CheckDID, f)
}

func checkAll[T Object](m map[string]T, check func(T) error, f func(ObjectRef, error)) {
	for _, id := range SortedIDs(m) {
		o := m[id]
		f(ObjectRef{o.ObjectKind(), id}, check(o))
	}
}
