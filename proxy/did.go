package proxy

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/carrier-core/carrier/schema"
)

// didEntry is a DID compiled for the request path: where its calls go.
type didEntry struct {
	number string
	// subscriber owns the DID: its calls go to the subscriber's
	// registered contacts (deliver). Otherwise trunk does, at dest.
	subscriber string
	trunk      string
	dest       string // host:port, resolved where possible
	transport  string // UDP or TCP
}

// compileDIDs compiles the DIDs of pv the proxy can deliver: those of
// provisioned subscribers, and those of provisioned trunks it has a
// listener for.
func (p *Proxy) compileDIDs(pv *schema.Provisioning, resolve func(hostport string) string) map[string]*didEntry {
	out := make(map[string]*didEntry, len(pv.DIDs))
	for _, n := range schema.SortedIDs(pv.DIDs) {
		d := pv.DIDs[n]
		if d.OwnerKind == schema.DIDOwnerSubscriber {
			if _, ok := pv.Subscribers[d.Owner]; !ok {
				p.log.Warn("DID skipped: its subscriber is not provisioned", "did", n, "subscriber", d.Owner)
				continue
			}
			out[n] = &didEntry{number: n, subscriber: d.Owner}
			continue
		}
		if _, ok := pv.Trunks[d.Owner]; !ok {
			p.log.Warn("DID skipped: its trunk is not provisioned", "did", n, "trunk", d.Owner)
			continue
		}
		transport := strings.ToUpper(d.TransportOrDefault())
		if !p.hasTransport(transport) {
			p.log.Warn("DID skipped: no listener for its transport", "did", n, "transport", d.TransportOrDefault())
			continue
		}
		host, port, err := d.HostPort()
		if err != nil {
			continue // validated by the store; never reached
		}
		out[n] = &didEntry{number: n, trunk: d.Owner, dest: resolve(net.JoinHostPort(host, strconv.Itoa(port))), transport: transport}
	}
	return out
}

// gatewayAddrs are the IP addresses of the gateways the proxy sends to:
// what they send from is where inbound calls to DIDs come from.
func gatewayAddrs(targets []*target) map[netip.Addr]bool {
	out := make(map[netip.Addr]bool, len(targets))
	for _, t := range targets {
		if ap, err := netip.ParseAddrPort(t.dest); err == nil {
			out[ap.Addr().Unmap()] = true
		}
	}
	return out
}

// toDID points h at the owner of DID d; the Request-URI keeps the DID as
// its user.
func (h *hop) toDID(p *Proxy, d *didEntry) error {
	h.dest, h.transport = d.dest, d.transport
	h.out = p.listenerFor(h.transport)
	if h.out == nil {
		return errNoListener
	}
	return nil
}
