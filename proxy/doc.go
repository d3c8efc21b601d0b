// Package proxy is Carrier Core's SIP proxy: a transaction-stateful proxy
// on sipgo that carries calls from customers to the outbound gateway and
// writes every SIP transaction it handles to the event log as a
// schema.Transaction.
//
// There is no open relay: an initial request (no To tag) is admitted only
// from a source address a provisioned trunk names (an IP or CIDR,
// optionally with a port and a transport; the longest prefix, then the
// most specific entry wins), and its events carry the trunk and its
// account. Others get 403 with the note unknown_source; an initial
// request with a preloaded Route from a trunk that is not trusted gets
// 403 with preloaded_route. Requests inside a dialog are not admitted by
// their source (the callee's side sends them too), but from outside the
// trunks they must follow the proxy's Route set, which every dialog it
// carries has: otherwise 403 with not_record_routed. The provisioning
// (Config.Provisioning) is compiled into an immutable table and swapped
// atomically on every change, so the running proxy follows it without a
// restart.
//
// Admitted initial requests take the provisioned route with the longest
// prefix of their Request-URI user (schema.Route; "" is the default
// route), and without one go to the first provisioned gateway by id, or
// to Config.Gateway while none is provisioned. An INVITE hunts through its
// route's gateways, in order or drawn by weight: on 408, a 5xx or no
// response within Timers.Response it tries the next, up to the route's
// MaxAttempts; 486, 487, 6xx and other 4xx end the hunt and go to the
// caller, as does a CANCEL; when none is left the caller gets 503 with
// the note no_gateway_left. Every attempt is in the INVITE's event. A
// gateway that answered 503 or did not answer is held down for
// Health.HoldDown, and with Health.ProbeInterval set OPTIONS probes mark
// gateways down and up; a gateway that is down is tried only after the
// route's healthy ones. INVITEs are record-routed (twice when the two
// sides use different listeners, RFC 5658), so that the dialog's ACK, BYE
// and re-INVITEs come back through the proxy and follow their Route set
// (loose routing, RFC 3261 16.4, 16.12).
// CANCEL is matched to its INVITE and carried downstream; Max-Forwards is
// decremented and enforced; INVITEs get 100 Trying at once.
//
// Every message is screened before sipgo parses it: malformed requests get
// 400 and oversized ones 413 where the raw bytes allow a reply, and are
// dropped (and counted) otherwise.
//
// The event of a transaction is published when its final response has
// gone upstream (for an INVITE, once the attempt is settled too); ACKs that
// the proxy relays have an event of their own with no status.
package proxy
