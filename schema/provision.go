package schema

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketProvisioning is the JetStream KV bucket that holds the network's
// provisioning: accounts, trunks and gateways, one JSON object per key
// "<kind>.<id>". The CLI writes it; proxies and consumers watch it. One
// bucket keeps one ordered history, so a watcher sees an account before
// the trunk that was written after it.
const BucketProvisioning = "PROVISIONING"

// Kind names an object type in the provisioning bucket; it is the first
// token of the object's key.
type Kind string

const (
	KindAccount Kind = "account"
	KindTrunk   Kind = "trunk"
	KindGateway Kind = "gateway"
	KindRoute   Kind = "route"
)

// Key is the provisioning key of an object.
func (k Kind) Key(id string) string { return string(k) + "." + id }

// ParseKey splits a provisioning key into its kind and id.
func ParseKey(key string) (Kind, string, bool) {
	kind, id, ok := strings.Cut(key, ".")
	if !ok || !validID.MatchString(id) {
		return "", "", false
	}
	switch Kind(kind) {
	case KindAccount, KindTrunk, KindGateway, KindRoute:
		return Kind(kind), id, true
	}
	return "", "", false
}

// ErrInvalidObject: a provisioning object fails validation.
var ErrInvalidObject = errors.New("invalid provisioning object")

// ProvisioningBucket is the definition of the provisioning bucket. Objects
// are small and change rarely; a short history lets an operator see what
// a change replaced.
func ProvisioningBucket(o StreamOptions) jetstream.KeyValueConfig {
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	return jetstream.KeyValueConfig{
		Bucket:      BucketProvisioning,
		Description: "accounts, trunks, gateways and routes, watched by the proxies",
		History:     5,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}
}

// Object is a provisioning object: something with a kind, an id and rules
// of its own. It is a type constraint, so that stores are typed by it.
type Object interface {
	Account | Trunk | Gateway | Route
	ObjectKind() Kind
	ObjectID() string
	Validate() error
}

// validID: ids are KV key tokens and appear in events and CDRs; no dots,
// so that a key has exactly two tokens.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

func checkID(kind Kind, id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("%s id %q: want 1 to 64 letters, digits, '-' or '_', starting with a letter or digit: %w", kind, id, ErrInvalidObject)
	}
	return nil
}

// Account is a customer: who pays for the calls of its trunks. The ledger
// adds balances and credit limits; here it is what the proxy and the
// rater need to know.
type Account struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Currency is the ISO 4217 code the account is billed in.
	Currency string `json:"currency"`
	// SellPlan names the rate plan the account's calls are sold at.
	SellPlan string `json:"sell_plan,omitempty"`
	// Kind is how the account pays, as its ledger was opened. The proxy
	// puts the calls of prepaid and postpaid accounts under credit
	// control; an account without a kind (no ledger) is not controlled.
	Kind AccountKind `json:"kind,omitempty"`
}

func (a Account) ObjectKind() Kind { return KindAccount }
func (a Account) ObjectID() string { return a.ID }

var validCurrency = regexp.MustCompile(`^[A-Z]{3}$`)

// Validate checks the account on its own.
func (a Account) Validate() error {
	if err := checkID(KindAccount, a.ID); err != nil {
		return err
	}
	if !validCurrency.MatchString(a.Currency) {
		return fmt.Errorf("account %s: currency %q: want an ISO 4217 code such as EUR or USD: %w", a.ID, a.Currency, ErrInvalidObject)
	}
	if a.SellPlan != "" && !validID.MatchString(a.SellPlan) {
		return fmt.Errorf("account %s: sell plan %q: want letters, digits, '-' or '_': %w", a.ID, a.SellPlan, ErrInvalidObject)
	}
	if a.Kind != "" {
		if _, err := ParseAccountKind(string(a.Kind)); err != nil {
			return fmt.Errorf("account %s: %w: %w", a.ID, err, ErrInvalidObject)
		}
	}
	return nil
}

// Trunk is an IP trunk: requests from its sources are calls of its
// account. There is no open relay: a source no trunk names is refused.
type Trunk struct {
	ID      string   `json:"id"`
	Name    string   `json:"name,omitempty"`
	Account string   `json:"account"`
	Sources []Source `json:"sources"`
	// Trusted peers (an SBC or another proxy of ours) may send initial
	// requests with a preloaded Route, which the proxy then follows; from
	// anyone else such a request is refused.
	Trusted bool `json:"trusted,omitempty"`
}

func (t Trunk) ObjectKind() Kind { return KindTrunk }
func (t Trunk) ObjectID() string { return t.ID }

// Validate checks the trunk on its own; CheckProvisioning checks it
// against the others.
func (t Trunk) Validate() error {
	if err := checkID(KindTrunk, t.ID); err != nil {
		return err
	}
	if !validID.MatchString(t.Account) {
		return fmt.Errorf("trunk %s: account %q: want an account id: %w", t.ID, t.Account, ErrInvalidObject)
	}
	if len(t.Sources) == 0 {
		return fmt.Errorf("trunk %s: no sources: name at least one address or CIDR: %w", t.ID, ErrInvalidObject)
	}
	seen := map[Source]bool{}
	for _, s := range t.Sources {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("trunk %s: %w", t.ID, err)
		}
		n := s.normal()
		if seen[n] {
			return fmt.Errorf("trunk %s: source %s given twice: %w", t.ID, s, ErrInvalidObject)
		}
		seen[n] = true
	}
	return nil
}

// Source is where a trunk's requests come from: an address or CIDR, and
// optionally one port and one transport.
type Source struct {
	// CIDR is an IP address or prefix, "203.0.113.0/24" or "2001:db8::/32";
	// a bare address is a /32 (/128).
	CIDR string `json:"cidr"`
	// Port 0 is any source port.
	Port int `json:"port,omitempty"`
	// Transport is udp, tcp or tls; empty is any.
	Transport string `json:"transport,omitempty"`
}

// Prefix is the source's address range, masked.
func (s Source) Prefix() (netip.Prefix, error) {
	if strings.Contains(s.CIDR, "/") {
		p, err := netip.ParsePrefix(s.CIDR)
		if err != nil {
			return netip.Prefix{}, err
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, errors.New("zones are not allowed")
		}
		return netip.PrefixFrom(p.Addr().Unmap(), unmapBits(p)).Masked(), nil
	}
	a, err := netip.ParseAddr(s.CIDR)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, errors.New("zones are not allowed")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// unmapBits is the prefix length of an IPv4-mapped IPv6 prefix in IPv4
// terms, so that ::ffff:10.0.0.0/104 means 10.0.0.0/8.
func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return max(p.Bits()-96, 0)
	}
	return p.Bits()
}

// Validate checks the address, port and transport.
func (s Source) Validate() error {
	if _, err := s.Prefix(); err != nil {
		return fmt.Errorf("source %q: not an IP address or CIDR (%v): %w", s.CIDR, err, ErrInvalidObject)
	}
	if s.Port < 0 || s.Port > 65535 {
		return fmt.Errorf("source %s: port %d out of range: %w", s, s.Port, ErrInvalidObject)
	}
	switch s.Transport {
	case "", "udp", "tcp", "tls":
	default:
		return fmt.Errorf("source %s: transport %q: want udp, tcp or tls (or none for any): %w", s, s.Transport, ErrInvalidObject)
	}
	return nil
}

// normal is the source with its prefix in canonical form, for comparing.
func (s Source) normal() Source {
	if p, err := s.Prefix(); err == nil {
		s.CIDR = p.String()
	}
	return s
}

// String is the source as ParseSource reads it: [transport:]cidr[:port],
// with an IPv6 prefix in brackets when a port follows.
func (s Source) String() string {
	var b strings.Builder
	if s.Transport != "" {
		b.WriteString(s.Transport + ":")
	}
	if s.Port == 0 {
		b.WriteString(s.CIDR)
		return b.String()
	}
	if strings.Contains(s.CIDR, ":") {
		b.WriteString("[" + s.CIDR + "]")
	} else {
		b.WriteString(s.CIDR)
	}
	b.WriteString(":" + strconv.Itoa(s.Port))
	return b.String()
}

// ParseSource reads a source written as [transport:]cidr[:port], for
// example "203.0.113.0/24", "udp:198.51.100.7:5060" or
// "tcp:[2001:db8::/32]:5061".
func ParseSource(v string) (Source, error) {
	var s Source
	rest := v
	for _, t := range []string{"udp", "tcp", "tls"} {
		if after, ok := strings.CutPrefix(rest, t+":"); ok {
			s.Transport, rest = t, after
			break
		}
	}
	switch {
	case strings.HasPrefix(rest, "["):
		end := strings.Index(rest, "]")
		if end < 0 {
			return Source{}, fmt.Errorf("source %q: missing ']': %w", v, ErrInvalidObject)
		}
		s.CIDR = rest[1:end]
		if port := rest[end+1:]; port != "" {
			p, ok := strings.CutPrefix(port, ":")
			n, err := strconv.Atoi(p)
			if !ok || err != nil {
				return Source{}, fmt.Errorf("source %q: bad port after ']': %w", v, ErrInvalidObject)
			}
			s.Port = n
		}
	case strings.Count(rest, ":") == 1:
		host, port, _ := strings.Cut(rest, ":")
		n, err := strconv.Atoi(port)
		if err != nil {
			return Source{}, fmt.Errorf("source %q: port %q is not a number: %w", v, port, ErrInvalidObject)
		}
		s.CIDR, s.Port = host, n
	default:
		s.CIDR = rest
	}
	if err := s.Validate(); err != nil {
		return Source{}, err
	}
	return s, nil
}

// Gateway is a next hop the proxy sends calls to: a supplier's or
// partner's SIP server.
type Gateway struct {
	ID string `json:"id"`
	// Address is host[:port]; the port defaults to 5060.
	Address string `json:"address"`
	// Transport is udp (default) or tcp.
	Transport string `json:"transport,omitempty"`
}

func (g Gateway) ObjectKind() Kind { return KindGateway }
func (g Gateway) ObjectID() string { return g.ID }

// Validate checks the gateway on its own.
func (g Gateway) Validate() error {
	if err := checkID(KindGateway, g.ID); err != nil {
		return err
	}
	if _, _, err := g.HostPort(); err != nil {
		return fmt.Errorf("gateway %s: address %q: want host or host:port (%v): %w", g.ID, g.Address, err, ErrInvalidObject)
	}
	switch g.Transport {
	case "", "udp", "tcp":
	default:
		return fmt.Errorf("gateway %s: transport %q: want udp or tcp: %w", g.ID, g.Transport, ErrInvalidObject)
	}
	return nil
}

// HostPort splits the gateway's address, with port 5060 when it has none.
func (g Gateway) HostPort() (string, int, error) {
	host, ps, err := net.SplitHostPort(g.Address)
	if err != nil {
		host, ps = strings.TrimSuffix(strings.TrimPrefix(g.Address, "["), "]"), "5060"
		if host == "" || strings.ContainsAny(host, " /[]") || (strings.Contains(host, ":") && net.ParseIP(host) == nil) {
			return "", 0, errors.New("not host[:port]")
		}
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 || host == "" {
		return "", 0, fmt.Errorf("bad port %q", ps)
	}
	return host, port, nil
}

// TransportOrDefault is the gateway's transport, udp when unset.
func (g Gateway) TransportOrDefault() string {
	if g.Transport == "" {
		return "udp"
	}
	return g.Transport
}

// Route modes: how a route orders its gateways for each call.
const (
	// RouteOrdered tries the gateways in the order listed.
	RouteOrdered = "ordered"
	// RouteWeighted draws the order of each call at random, each gateway's
	// chance of coming first in proportion to its weight.
	RouteWeighted = "weighted"
)

// MaxRouteGateways bounds a route's gateway list; a hunt longer than this
// would keep a caller waiting for minutes anyway.
const MaxRouteGateways = 16

// Route says where calls to a destination go: the gateways to hunt
// through, in order or by weight. A call takes the route with the longest
// Prefix of its Request-URI user; the route with an empty Prefix is the
// default.
type Route struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
	// Prefix is the destination digits the route is for ("" for any);
	// digits only, an optional leading '+' is ignored when matching.
	Prefix string `json:"prefix"`
	// Gateways are gateway ids, each at most once, tried in order (or
	// by weight) until one answers or the hunt must stop.
	Gateways []string `json:"gateways"`
	// Mode is "ordered" (default) or "weighted".
	Mode string `json:"mode,omitempty"`
	// Weights, in weighted mode, go with Gateways one to one (each at
	// least 1); empty means equal weights. Not allowed in ordered mode.
	Weights []int `json:"weights,omitempty"`
	// MaxAttempts bounds the gateways tried per call; 0 tries them all.
	MaxAttempts int `json:"max_attempts,omitempty"`
}

func (r Route) ObjectKind() Kind { return KindRoute }
func (r Route) ObjectID() string { return r.ID }

// ModeOrDefault is the route's mode, ordered when unset.
func (r Route) ModeOrDefault() string {
	if r.Mode == "" {
		return RouteOrdered
	}
	return r.Mode
}

// MatchPrefix is the prefix as matched against a destination: without
// the leading '+'.
func (r Route) MatchPrefix() string { return strings.TrimPrefix(r.Prefix, "+") }

// Validate checks the route on its own; CheckRoute checks it against
// the others.
func (r Route) Validate() error {
	if err := checkID(KindRoute, r.ID); err != nil {
		return err
	}
	digits := r.MatchPrefix()
	if len(digits) > 32 || strings.Trim(digits, "0123456789") != "" {
		return fmt.Errorf("route %s: prefix %q: want up to 32 digits, optionally after '+' (empty for the default route): %w", r.ID, r.Prefix, ErrInvalidObject)
	}
	if len(r.Gateways) == 0 || len(r.Gateways) > MaxRouteGateways {
		return fmt.Errorf("route %s: %d gateways: want 1 to %d: %w", r.ID, len(r.Gateways), MaxRouteGateways, ErrInvalidObject)
	}
	seen := map[string]bool{}
	for _, g := range r.Gateways {
		if !validID.MatchString(g) {
			return fmt.Errorf("route %s: gateway %q: want a gateway id: %w", r.ID, g, ErrInvalidObject)
		}
		if seen[g] {
			return fmt.Errorf("route %s: gateway %s listed twice: %w", r.ID, g, ErrInvalidObject)
		}
		seen[g] = true
	}
	switch r.ModeOrDefault() {
	case RouteOrdered:
		if len(r.Weights) > 0 {
			return fmt.Errorf("route %s: weights given in ordered mode: set mode weighted or drop them: %w", r.ID, ErrInvalidObject)
		}
	case RouteWeighted:
		if len(r.Weights) > 0 && len(r.Weights) != len(r.Gateways) {
			return fmt.Errorf("route %s: %d weights for %d gateways: want one per gateway: %w", r.ID, len(r.Weights), len(r.Gateways), ErrInvalidObject)
		}
		for i, w := range r.Weights {
			if w < 1 || w > 1_000_000 {
				return fmt.Errorf("route %s: weight %d of gateway %s: want 1 to 1000000: %w", r.ID, w, r.Gateways[i], ErrInvalidObject)
			}
		}
	default:
		return fmt.Errorf("route %s: mode %q: want ordered or weighted: %w", r.ID, r.Mode, ErrInvalidObject)
	}
	if r.MaxAttempts < 0 || r.MaxAttempts > MaxRouteGateways {
		return fmt.Errorf("route %s: max attempts %d: want 0 (all gateways) to %d: %w", r.ID, r.MaxAttempts, MaxRouteGateways, ErrInvalidObject)
	}
	return nil
}

// Provisioning is a whole provisioning at one point in time. Snapshots are
// immutable once published: a change produces a new one.
type Provisioning struct {
	Accounts map[string]Account `json:"accounts"`
	Trunks   map[string]Trunk   `json:"trunks"`
	Gateways map[string]Gateway `json:"gateways"`
	Routes   map[string]Route   `json:"routes"`
	// Revision is the bucket revision of the last change folded in.
	Revision uint64 `json:"revision"`
	// At is when this snapshot was made.
	At time.Time `json:"at"`
}

// NewProvisioning is an empty provisioning.
func NewProvisioning() *Provisioning {
	return &Provisioning{Accounts: map[string]Account{}, Trunks: map[string]Trunk{}, Gateways: map[string]Gateway{}, Routes: map[string]Route{}}
}

// Clone copies the maps, so that the copy can be changed.
func (p *Provisioning) Clone() *Provisioning {
	c := *p
	c.Accounts = cloneMap(p.Accounts)
	c.Trunks = cloneMap(p.Trunks)
	c.Gateways = cloneMap(p.Gateways)
	c.Routes = cloneMap(p.Routes)
	return &c
}

func cloneMap[T any](m map[string]T) map[string]T {
	out := make(map[string]T, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// SortedIDs are the keys of an object map in order.
func SortedIDs[T any](m map[string]T) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Check validates every object and the rules between them (see
// CheckTrunk). Errors name the objects; all problems are reported, joined.
func (p *Provisioning) Check() error {
	var errs []error
	for _, id := range SortedIDs(p.Accounts) {
		if err := p.Accounts[id].Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, id := range SortedIDs(p.Gateways) {
		if err := p.Gateways[id].Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, id := range SortedIDs(p.Trunks) {
		if err := p.CheckTrunk(p.Trunks[id]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, id := range SortedIDs(p.Routes) {
		if err := p.CheckRoute(p.Routes[id]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CheckRoute validates r as it would stand in p: its gateways exist, and
// no other route of p has the same prefix, which would make routing
// ambiguous.
func (p *Provisioning) CheckRoute(r Route) error {
	if err := r.Validate(); err != nil {
		return err
	}
	var errs []error
	for _, g := range r.Gateways {
		if _, ok := p.Gateways[g]; !ok {
			errs = append(errs, fmt.Errorf("route %s: gateway %q does not exist: %w", r.ID, g, ErrInvalidObject))
		}
	}
	for _, id := range SortedIDs(p.Routes) {
		if id != r.ID && p.Routes[id].MatchPrefix() == r.MatchPrefix() {
			errs = append(errs, fmt.Errorf("route %s: prefix %q is route %s's already: %w", r.ID, r.Prefix, id, ErrInvalidObject))
		}
	}
	return errors.Join(errs...)
}

// RoutesUsing are the ids of the routes that name gateway id, in order:
// a gateway they name cannot be removed.
func (p *Provisioning) RoutesUsing(gateway string) []string {
	var out []string
	for _, id := range SortedIDs(p.Routes) {
		if slices.Contains(p.Routes[id].Gateways, gateway) {
			out = append(out, id)
		}
	}
	return out
}

// CheckTrunk validates t as it would stand in p: its account exists, and
// no other trunk of p claims one of its sources (same prefix, port and
// transport), which would make admission ambiguous.
func (p *Provisioning) CheckTrunk(t Trunk) error {
	if err := t.Validate(); err != nil {
		return err
	}
	var errs []error
	if _, ok := p.Accounts[t.Account]; !ok {
		errs = append(errs, fmt.Errorf("trunk %s: account %q does not exist: %w", t.ID, t.Account, ErrInvalidObject))
	}
	mine := map[Source]bool{}
	for _, s := range t.Sources {
		mine[s.normal()] = true
	}
	for _, id := range SortedIDs(p.Trunks) {
		if id == t.ID {
			continue
		}
		for _, s := range p.Trunks[id].Sources {
			if mine[s.normal()] {
				errs = append(errs, fmt.Errorf("trunk %s: source %s is trunk %s's already: %w", t.ID, s, id, ErrInvalidObject))
			}
		}
	}
	return errors.Join(errs...)
}

// ProvisionSet is a declarative set of objects, as an operator writes it
// in a provisioning file: applying it creates or updates each object.
type ProvisionSet struct {
	Accounts []Account `json:"accounts,omitempty"`
	Trunks   []Trunk   `json:"trunks,omitempty"`
	Gateways []Gateway `json:"gateways,omitempty"`
	Routes   []Route   `json:"routes,omitempty"`
}

// Len is the number of objects in the set.
func (s ProvisionSet) Len() int {
	return len(s.Accounts) + len(s.Trunks) + len(s.Gateways) + len(s.Routes)
}

// Merge checks the set against the current provisioning and returns
// what the provisioning would be with the set applied. Every problem is
// reported, each naming its entry ("trunks[2] (acme-pbx): ..."), and
// nothing is merged unless there are none.
func (s ProvisionSet) Merge(current *Provisioning) (*Provisioning, error) {
	next := current.Clone()
	var errs []error
	seen := map[Kind]map[string]int{KindAccount: {}, KindTrunk: {}, KindGateway: {}, KindRoute: {}}
	entry := func(list string, i int, kind Kind, id string, err error) bool {
		if err == nil {
			if j, dup := seen[kind][id]; dup {
				err = fmt.Errorf("%s %s is also %s[%d]: %w", kind, id, list, j, ErrInvalidObject)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s[%d] (%s): %w", list, i, id, err))
			return false
		}
		seen[kind][id] = i
		return true
	}
	for i, a := range s.Accounts {
		if entry("accounts", i, KindAccount, a.ID, a.Validate()) {
			next.Accounts[a.ID] = a
		}
	}
	for i, g := range s.Gateways {
		if entry("gateways", i, KindGateway, g.ID, g.Validate()) {
			next.Gateways[g.ID] = g
		}
	}
	for i, t := range s.Trunks {
		if entry("trunks", i, KindTrunk, t.ID, t.Validate()) {
			next.Trunks[t.ID] = t
		}
	}
	for i, r := range s.Routes {
		if entry("routes", i, KindRoute, r.ID, r.Validate()) {
			next.Routes[r.ID] = r
		}
	}
	// Rules between objects, once all of the set is in.
	for i, t := range s.Trunks {
		if seen[KindTrunk][t.ID] != i {
			continue
		}
		if err := next.CheckTrunk(t); err != nil {
			errs = append(errs, fmt.Errorf("trunks[%d] (%s): %w", i, t.ID, err))
		}
	}
	for i, r := range s.Routes {
		if seen[KindRoute][r.ID] != i {
			continue
		}
		if err := next.CheckRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("routes[%d] (%s): %w", i, r.ID, err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return next, nil
}
