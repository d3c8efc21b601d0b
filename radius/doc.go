// Package radius sends RADIUS accounting (RFC 2866) for the calls of the
// log: a Start when a call is answered, Interim-Updates while it lasts, a
// Stop with Acct-Session-Time when it ends and a Failed record (status
// 15) for a call that never connected. Records carry the standard
// attributes and either OpenSIPS's SIP attributes or Cisco's h323 VSAs
// (Profile); dictionary.carrier, in this directory, lets FreeRADIUS decode
// them all by name.
//
// The Client sends a request to the first server that answers, with
// retransmission, backoff and failover; the Accounter consumes the CDR
// stream and acks an event only once a server has acknowledged its
// record.
package radius
