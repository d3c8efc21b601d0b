package schema

import (
	"fmt"
	"strings"
)

// KindDID is a number of ours that calls come in to: a DID, owned by a
// trunk (delivered to the trunk's PBX) or by a subscriber (delivered to
// the subscriber's registered contacts).
const KindDID Kind = "did"

// DID owner kinds.
const (
	DIDOwnerTrunk      = "trunk"
	DIDOwnerSubscriber = "subscriber"
)

// DID is an inbound number. Calls to it that come from a provisioned
// gateway's address or from a trusted trunk are delivered to its owner
// with the number kept as the Request-URI user.
type DID struct {
	// Number is the DID in E.164 digits without '+'; it is the object's id.
	Number string `json:"number"`
	Name   string `json:"name,omitempty"`
	// OwnerKind is "trunk" or "subscriber"; Owner is that object's id.
	OwnerKind string `json:"owner_kind"`
	Owner     string `json:"owner"`
	// DeliverTo is the host[:port] (port 5060 by default) the calls of a
	// trunk-owned DID go to, over Transport (udp by default, or tcp). A
	// subscriber's DID goes to its registered contacts and has neither.
	DeliverTo string `json:"deliver_to,omitempty"`
	Transport string `json:"transport,omitempty"`
}

func (d DID) ObjectKind() Kind { return KindDID }
func (d DID) ObjectID() string { return d.Number }

// NormalDID is a number as DIDs are keyed: without a leading '+'.
func NormalDID(number string) string { return strings.TrimPrefix(number, "+") }

// Validate checks the DID on its own.
func (d DID) Validate() error {
	if d.Number == "" || len(d.Number) > 15 || strings.Trim(d.Number, "0123456789") != "" {
		return fmt.Errorf("did %q: want 1 to 15 digits (E.164 without '+'): %w", d.Number, ErrInvalidObject)
	}
	if !validID.MatchString(d.Owner) {
		return fmt.Errorf("did %s: owner %q: want a %s id: %w", d.Number, d.Owner, d.OwnerKind, ErrInvalidObject)
	}
	switch d.OwnerKind {
	case DIDOwnerTrunk:
		g := Gateway{ID: "did", Address: d.DeliverTo, Transport: d.Transport}
		if _, _, err := g.HostPort(); err != nil || d.DeliverTo == "" {
			return fmt.Errorf("did %s: deliver to %q: want the trunk's host or host:port: %w", d.Number, d.DeliverTo, ErrInvalidObject)
		}
		switch d.Transport {
		case "", "udp", "tcp":
		default:
			return fmt.Errorf("did %s: transport %q: want udp or tcp: %w", d.Number, d.Transport, ErrInvalidObject)
		}
	case DIDOwnerSubscriber:
		if d.DeliverTo != "" || d.Transport != "" {
			return fmt.Errorf("did %s: deliver to %q: a subscriber's DID goes to its registered contacts: %w", d.Number, d.DeliverTo, ErrInvalidObject)
		}
	default:
		return fmt.Errorf("did %s: owner kind %q: want trunk or subscriber: %w", d.Number, d.OwnerKind, ErrInvalidObject)
	}
	return nil
}

// TransportOrDefault is the delivery transport, udp when unset.
func (d DID) TransportOrDefault() string {
	if d.Transport == "" {
		return "udp"
	}
	return d.Transport
}

// HostPort splits DeliverTo, with port 5060 when it has none.
func (d DID) HostPort() (string, int, error) {
	return Gateway{Address: d.DeliverTo}.HostPort()
}

// CheckDID validates d as it would stand in p: its owner exists.
func (p *Provisioning) CheckDID(d DID) error {
	if err := d.Validate(); err != nil {
		return err
	}
	switch d.OwnerKind {
	case DIDOwnerTrunk:
		if _, ok := p.Trunks[d.Owner]; !ok {
			return fmt.Errorf("did %s: trunk %q does not exist: %w", d.Number, d.Owner, ErrInvalidObject)
		}
	case DIDOwnerSubscriber:
		if _, ok := p.Subscribers[d.Owner]; !ok {
			return fmt.Errorf("did %s: subscriber %q does not exist: %w", d.Number, d.Owner, ErrInvalidObject)
		}
	}
	return nil
}

// DIDsOf are the numbers of the DIDs an owner has, in order: a trunk
// that owns DIDs cannot be removed.
func (p *Provisioning) DIDsOf(kind, owner string) []string {
	var out []string
	for _, n := range SortedIDs(p.DIDs) {
		if d := p.DIDs[n]; d.OwnerKind == kind && d.Owner == owner {
			out = append(out, n)
		}
	}
	return out
}
