// Package proxy is Carrier Core's SIP proxy: a transaction-stateful proxy
// on sipgo that carries calls from customers to the outbound gateway and
// writes every SIP transaction it handles to the event log as a
// schema.Transaction.
//
// Initial requests (no To tag) go to the configured gateway; INVITEs are
// record-routed (twice when the two sides use different listeners, RFC
// 5658), so that the dialog's ACK, BYE and re-INVITEs come back through the
// proxy and follow their Route set (loose routing, RFC 3261 16.4, 16.12).
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
