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
	case KindSubscriber:
		return Kind(kind), id, true
	case KindDialPlan, KindDID:
		return Kind(kind), id, true
	case KindSupplier:
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
	Account | Trunk | Gateway | Route | Subscriber | DialPlan | DID | Supplier
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
	// CPS bounds the calls per second the account may start (INVITEs
	// admitted from its trunks); over it the proxy refuses the call. 0 is
	// no limit.
	CPS int `json:"cps,omitempty"`
	// MaxCalls bounds the account's calls in progress (ringing or up); 0
	// is no limit.
	MaxCalls int `json:"max_calls,omitempty"`
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
	if a.MaxCalls < 0 || a.MaxCalls > MaxCPS {
		return fmt.Errorf("account %s: max calls %d: want 0 (no limit) to %d: %w", a.ID, a.MaxCalls, MaxCPS, ErrInvalidObject)
	}
	return checkCPS(KindAccount, a.ID, a.CPS)
}

// MaxCPS bounds a calls-per-second limit; more than any one proxy carries.
const MaxCPS = 100_000

func checkCPS(kind Kind, id string, cps int) error {
	if cps < 0 || cps > MaxCPS {
		return fmt.Errorf("%s %s: cps %d: want 0 (no limit) to %d calls per second: %w", kind, id, cps, MaxCPS, ErrInvalidObject)
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
	// DialPlan names the dial plan that normalises the numbers of the
	// trunk's calls before they are routed; none leaves them as sent.
	DialPlan string `json:"dial_plan,omitempty"`
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
	if t.DialPlan != "" && !validID.MatchString(t.DialPlan) {
		return fmt.Errorf("trunk %s: dial plan %q: want a dial plan id: %w", t.ID, t.DialPlan, ErrInvalidObject)
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
	// Supplier names the provisioned supplier who runs the gateway: its
	// buy rates are the supplier's buy plan, else "buy-<gateway id>".
	Supplier string `json:"supplier,omitempty"`
	// CPS bounds the calls per second the proxy sends the gateway; a
	// call over it skips to the route's next gateway. 0 is no limit.
	CPS int `json:"cps,omitempty"`
	// MaxCalls bounds the gateway's calls in progress (ringing or up); a
	// call over it skips to the route's next gateway. 0 is no limit.
	MaxCalls int `json:"max_calls,omitempty"`
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
	if g.Supplier != "" && !validID.MatchString(g.Supplier) {
		return fmt.Errorf("gateway %s: supplier %q: want letters, digits, '-' or '_': %w", g.ID, g.Supplier, ErrInvalidObject)
	}
	if g.MaxCalls < 0 || g.MaxCalls > MaxCPS {
		return fmt.Errorf("gateway %s: max calls %d: want 0 (no limit) to %d: %w", g.ID, g.MaxCalls, MaxCPS, ErrInvalidObject)
	}
	return checkCPS(KindGateway, g.ID, g.CPS)
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
	// RouteLCR orders the gateways of each call by their buy rate for its
	// destination, cheapest first; those without a rate go last, in the
	// order listed.
	RouteLCR = "lcr"
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
	// Accounts limits the route to the calls of these accounts; empty is
	// every account.
	Accounts []string `json:"accounts,omitempty"`
	// Windows limit the route to these times (any of them), read in
	// TimeZone (an IANA name, UTC by default); empty is always.
	Windows  []TimeWindow `json:"windows,omitempty"`
	TimeZone string       `json:"time_zone,omitempty"`
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
	case RouteLCR:
		if len(r.Weights) > 0 {
			return fmt.Errorf("route %s: weights given in lcr mode: the buy rates order the gateways: %w", r.ID, ErrInvalidObject)
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
		return fmt.Errorf("route %s: mode %q: want ordered or weighted, or lcr (least cost): %w", r.ID, r.Mode, ErrInvalidObject)
	}
	if r.MaxAttempts < 0 || r.MaxAttempts > MaxRouteGateways {
		return fmt.Errorf("route %s: max attempts %d: want 0 (all gateways) to %d: %w", r.ID, r.MaxAttempts, MaxRouteGateways, ErrInvalidObject)
	}
	return r.validateLimits()
}

// Provisioning is a whole provisioning at one point in time. Snapshots are
// immutable once published: a change produces a new one.
type Provisioning struct {
	Accounts map[string]Account `json:"accounts"`
	Trunks   map[string]Trunk   `json:"trunks"`
	Gateways map[string]Gateway `json:"gateways"`
	Routes   map[string]Route   `json:"routes"`
	// Subscribers are the SIP users of our domains.
	Subscribers map[string]Subscriber `json:"subscribers"`
	DialPlans   map[string]DialPlan   `json:"dial_plans"`
	DIDs        map[string]DID        `json:"dids"`
	// Suppliers are who the gateways belong to.
	Suppliers map[string]Supplier `json:"suppliers"`
	// Revision is the bucket revision of the last change folded in.
	Revision uint64 `json:"revision"`
	// At is when this snapshot was made.
	At time.Time `json:"at"`
}

// NewProvisioning is an empty provisioning.
func NewProvisioning() *Provisioning {
	return &Provisioning{Accounts: map[string]Account{}, Trunks: map[string]Trunk{}, Gateways: map[string]Gateway{}, Routes: map[string]Route{},
		Subscribers: map[string]Subscriber{}, DialPlans: map[string]DialPlan{}, DIDs: map[string]DID{},
		Suppliers: map[string]Supplier{}}
}

// Clone copies the maps, so that the copy can be changed.
func (p *Provisioning) Clone() *Provisioning {
	c := *p
	c.Accounts = cloneMap(p.Accounts)
	c.Trunks = cloneMap(p.Trunks)
	c.Gateways = cloneMap(p.Gateways)
	c.Routes = cloneMap(p.Routes)
	c.Subscribers = cloneMap(p.Subscribers)
	c.DialPlans = cloneMap(p.DialPlans)
	c.DIDs = cloneMap(p.DIDs)
	c.Suppliers = cloneMap(p.Suppliers)
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
	p.eachCheck(func(_ ObjectRef, err error) {
		if err != nil {
			errs = append(errs, err)
		}
	})
	return errors.Join(errs...)
}

// CheckRoute validates r as it would stand in p: its gateways and the
// accounts it is limited to exist, and no other route of p has the same prefix, which would make routing
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
	for _, a := range r.Accounts {
		if _, ok := p.Accounts[a]; !ok {
			errs = append(errs, fmt.Errorf("route %s: account %q does not exist: %w", r.ID, a, ErrInvalidObject))
		}
	}
	for _, id := range SortedIDs(p.Routes) {
		if id != r.ID && p.Routes[id].MatchPrefix() == r.MatchPrefix() && sameLimits(p.Routes[id], r) {
			errs = append(errs, fmt.Errorf("route %s: prefix %q is route %s's already, for the same accounts and times: %w", r.ID, r.Prefix, id, ErrInvalidObject))
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
	if _, ok := p.DialPlans[t.DialPlan]; t.DialPlan != "" && !ok {
		errs = append(errs, fmt.Errorf("trunk %s: dial plan %q does not exist: %w", t.ID, t.DialPlan, ErrInvalidObject))
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
	// Subscribers come after the accounts they belong to.
	Subscribers []Subscriber `json:"subscribers,omitempty"`
	// DialPlans come before the trunks that name them, DIDs after the
	// trunks that own them.
	DialPlans []DialPlan `json:"dial_plans,omitempty"`
	DIDs      []DID      `json:"dids,omitempty"`
	// Suppliers come before the gateways that name them.
	Suppliers []Supplier `json:"suppliers,omitempty"`
}

// Len is the number of objects in the set.
func (s ProvisionSet) Len() int {
	return len(s.Accounts) + len(s.Trunks) + len(s.Gateways) + len(s.Routes) + len(s.Subscribers) +
		len(s.DialPlans) + len(s.DIDs) + len(s.Suppliers)
}

// Merge checks the set against the current provisioning and returns
// what the provisioning would be with the set applied. Every problem is
// reported, each naming its entry ("trunks[2] (acme-pbx): ..."), and
// nothing is merged unless there are none.
func (s ProvisionSet) Merge(current *Provisioning) (*Provisioning, error) {
	next := current.Clone()
	m := &merge{seen: map[Kind]map[string]int{}}
	// Each object on its own first, then the rules between objects, once
	// all of the set is in.
	mergeEach(m, "accounts", s.Accounts, next.Accounts)
	mergeEach(m, "gateways", s.Gateways, next.Gateways)
	mergeEach(m, "trunks", s.Trunks, next.Trunks)
	mergeEach(m, "routes", s.Routes, next.Routes)
	mergeEach(m, "subscribers", s.Subscribers, next.Subscribers)
	mergeEach(m, "dial_plans", s.DialPlans, next.DialPlans)
	mergeEach(m, "dids", s.DIDs, next.DIDs)
	mergeEach(m, "suppliers", s.Suppliers, next.Suppliers)
	checkEach(m, "gateways", s.Gateways, next.CheckGateway)
	checkEach(m, "trunks", s.Trunks, next.CheckTrunk)
	checkEach(m, "routes", s.Routes, next.CheckRoute)
	checkEach(m, "subscribers", s.Subscribers, next.CheckSubscriber)
	checkEach(m, "dids", s.DIDs, next.CheckDID)
	if len(m.errs) > 0 {
		return nil, errors.Join(m.errs...)
	}
	return next, nil
}

// merge is what Merge has found so far: the index in its list of each
// object taken, by kind and id, and every problem.
type merge struct {
	seen map[Kind]map[string]int
	errs []error
}

// mergeEach validates the objects of one list and puts them into into;
// an id given twice in the list is an error.
func mergeEach[T Object](m *merge, list string, objs []T, into map[string]T) {
	for i, o := range objs {
		kind, id := o.ObjectKind(), o.ObjectID()
		seen := m.seen[kind]
		if seen == nil {
			seen = map[string]int{}
			m.seen[kind] = seen
		}
		err := o.Validate()
		if j, dup := seen[id]; err == nil && dup {
			err = fmt.Errorf("%s %s is also %s[%d]: %w", kind, id, list, j, ErrInvalidObject)
		}
		if err != nil {
			m.errs = append(m.errs, fmt.Errorf("%s[%d] (%s): %w", list, i, id, err))
			continue
		}
		seen[id] = i
		into[id] = o
	}
}

// checkEach applies a rule between objects to the objects mergeEach took.
func checkEach[T Object](m *merge, list string, objs []T, check func(T) error) {
	for i, o := range objs {
		if j, ok := m.seen[o.ObjectKind()][o.ObjectID()]; !ok || j != i {
			continue
		}
		if err := check(o); err != nil {
			m.errs = append(m.errs, fmt.Errorf("%s[%d] (%s): %w", list, i, o.ObjectID(), err))
		}
	}
}

// TimeWindow is a period of the week a route is in force: Days
// ("mon-fri", "sat+sun", "mon+wed-fri", "all" or empty for every day)
// from From to To ("08:00", "18:00"; From equal to To is the whole day,
// From after To runs past midnight), read on the local clock of the
// route's time zone. Days are those of the instant: "fri 22:00-06:00"
// covers Friday from 22:00 and Friday until 06:00.
type TimeWindow struct {
	Days string `json:"days,omitempty"`
	From string `json:"from"`
	To   string `json:"to"`
}

// Compile reads the window: a bit per time.Weekday and the minutes of
// the local day it starts and ends at.
func (w TimeWindow) Compile() (days uint8, from, to int, err error) {
	days, err = parseWeekdays(w.Days)
	if err != nil {
		return 0, 0, 0, err
	}
	if from, err = parseClock(w.From); err != nil {
		return 0, 0, 0, err
	}
	if to, err = parseClock(w.To); err != nil {
		return 0, 0, 0, err
	}
	if from == to {
		from, to = 0, 24*60
	}
	return days, from, to, nil
}

// String is the window as ParseTimeWindow reads it: "mon-fri 08:00-18:00".
func (w TimeWindow) String() string {
	s := w.From + "-" + w.To
	if w.Days != "" {
		s = w.Days + " " + s
	}
	return s
}

// ParseTimeWindow reads "[DAYS ]HH:MM-HH:MM", for example
// "mon-fri 08:00-18:00" or "22:00-06:00".
func ParseTimeWindow(v string) (TimeWindow, error) {
	var w TimeWindow
	span := strings.TrimSpace(v)
	if days, rest, ok := strings.Cut(span, " "); ok {
		w.Days, span = days, strings.TrimSpace(rest)
	}
	from, to, ok := strings.Cut(span, "-")
	if !ok {
		return w, fmt.Errorf("time window %q: want [DAYS ]HH:MM-HH:MM, e.g. mon-fri 08:00-18:00: %w", v, ErrInvalidObject)
	}
	w.From, w.To = from, to
	if _, _, _, err := w.Compile(); err != nil {
		return w, fmt.Errorf("time window %q: %w", v, err)
	}
	return w, nil
}

func parseClock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || len(m) != 2 || err1 != nil || err2 != nil || hh < 0 || hh > 24 || mm < 0 || mm > 59 || hh == 24 && mm != 0 {
		return 0, fmt.Errorf("time of day %q: want HH:MM from 00:00 to 24:00: %w", s, ErrInvalidObject)
	}
	return hh*60 + mm, nil
}

var weekdayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// ErrBadWeekdays: a set of weekdays is not written as ParseWeekdays reads it.
var ErrBadWeekdays = errors.New("not a set of weekdays")

// ParseWeekdays reads a set of weekdays, "mon-fri", "sat+sun",
// "mon+wed-fri" (a range may wrap, "fri-mon") or "all", into a bit mask
// with bit time.Weekday set for each day in it. Route windows and rate
// bands share it.
func ParseWeekdays(s string) (uint8, error) {
	if strings.EqualFold(s, "all") {
		return 0x7f, nil
	}
	var mask uint8
	for part := range strings.SplitSeq(strings.ToLower(s), "+") {
		a, b, isRange := strings.Cut(part, "-")
		from, ok1 := weekdayNames[a]
		to, ok2 := from, true
		if isRange {
			to, ok2 = weekdayNames[b]
		}
		if !ok1 || !ok2 {
			return 0, fmt.Errorf("days %q: %w", s, ErrBadWeekdays)
		}
		for d := from; ; d = (d + 1) % 7 {
			mask |= 1 << d
			if d == to {
				break
			}
		}
	}
	return mask, nil
}

func parseWeekdays(s string) (uint8, error) {
	if s == "" {
		return 0x7f, nil
	}
	mask, err := ParseWeekdays(s)
	if err != nil {
		return 0, fmt.Errorf("days %q: want mon-fri, sat+sun, mon+wed-fri or all: %w", s, ErrInvalidObject)
	}
	return mask, nil
}

// MaxRouteWindows bounds a route's time windows.
const MaxRouteWindows = 16

// validateLimits checks the accounts and time windows of a route.
func (r Route) validateLimits() error {
	seen := map[string]bool{}
	for _, a := range r.Accounts {
		if !validID.MatchString(a) {
			return fmt.Errorf("route %s: account %q: want an account id: %w", r.ID, a, ErrInvalidObject)
		}
		if seen[a] {
			return fmt.Errorf("route %s: account %s listed twice: %w", r.ID, a, ErrInvalidObject)
		}
		seen[a] = true
	}
	if len(r.Windows) > MaxRouteWindows {
		return fmt.Errorf("route %s: %d time windows: want at most %d: %w", r.ID, len(r.Windows), MaxRouteWindows, ErrInvalidObject)
	}
	for _, w := range r.Windows {
		if _, _, _, err := w.Compile(); err != nil {
			return fmt.Errorf("route %s: window %s: %w", r.ID, w, err)
		}
	}
	if r.TimeZone != "" {
		if len(r.Windows) == 0 {
			return fmt.Errorf("route %s: time zone %q without windows: %w", r.ID, r.TimeZone, ErrInvalidObject)
		}
		if _, err := time.LoadLocation(r.TimeZone); err != nil {
			return fmt.Errorf("route %s: time zone %q: want an IANA name such as Europe/Berlin (%v): %w", r.ID, r.TimeZone, err, ErrInvalidObject)
		}
	}
	return nil
}

// Location is the zone the route's windows are read in, UTC by default.
func (r Route) Location() *time.Location {
	if r.TimeZone == "" {
		return time.UTC
	}
	loc, err := time.LoadLocation(r.TimeZone)
	if err != nil {
		return time.UTC // validated; never reached
	}
	return loc
}

// sameLimits reports two routes limited to the same accounts and times,
// which with the same prefix would make routing ambiguous.
func sameLimits(a, b Route) bool {
	as, bs := slices.Clone(a.Accounts), slices.Clone(b.Accounts)
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs) && slices.Equal(a.Windows, b.Windows) && (len(a.Windows) == 0 || a.TimeZone == b.TimeZone)
}
