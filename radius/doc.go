// Package radius sends RADIUS accounting (RFC 2866) for the calls of the
// log: a Start when a call is answered, Interim-Updates while it lasts, a
// Stop with Acct-Session-Time when it ends and a Failed record (status
// 15) for a call that never connected. Records carry the standard
// attributes and either OpenSIPS's SIP attributes or Cisco's h323 VSAs
// (Profile); dictionary.carrier, in this directory, lets FreeRADIUS decode
// them all by name.
//
// Packets are encoded, decoded and authenticated by layeh.com/radius and
// its typed RFC helpers; this package adds what the library lacks: the
// Message-Authenticator of accounting requests and responses, Cisco-style
// VSAs, the SIP attributes of dictionary.carrier, and a Client that sends
// a request to the first server that answers, with retransmission,
// backoff, a hold-down for a silent server and failover. The Accounter
// consumes the CDR stream and acks an event only once a server has
// acknowledged its record.
package radius
