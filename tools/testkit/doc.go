// Package testkit starts the real servers the test suite runs against, each
// on free loopback ports and in temp dirs, and stops them when the test
// ends: an in-process JetStream server, a private ClickHouse server, a
// private FreeRADIUS, sipp peers and in-process sipgo phones (SIPPhone).
package testkit
