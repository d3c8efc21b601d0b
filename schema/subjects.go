package schema

import (
	"hash/fnv"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Partitions is the number of Call-ID partitions of the SIP and CDR
// subjects. All events of one call land on one partition, so correlators
// scale out by taking a subset of partitions. It is part of the subject
// contract: changing it re-partitions the log.
const Partitions = 16

// Stream names are a contract; keep them stable.
const (
	StreamSIP    = "SIP"
	StreamCDR    = "CDR"
	StreamLedger = "LEDGER"
)

// Subject prefixes.
const (
	subjectTransaction = "sip.tx."
	subjectCallStarted = "cdr.started."
	subjectCallEnded   = "cdr.ended."
	subjectCallFailed  = "cdr.failed."
)

// Partition is the partition of a call, a hash of its Call-ID.
func Partition(callID string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(callID))
	return int(h.Sum32() % Partitions)
}

// TransactionSubject is the subject of the transaction events of a call.
func TransactionSubject(callID string) string {
	return subjectTransaction + strconv.Itoa(Partition(callID))
}

// TransactionPartitionSubject is the subject of one partition of the SIP
// stream, for consumers that take a subset of partitions.
func TransactionPartitionSubject(p int) string { return subjectTransaction + strconv.Itoa(p) }

// CDRSubject is the subject of a call lifecycle event of the given type
// (TypeCallStarted, TypeCallEnded, TypeCallFailed).
func CDRSubject(eventType, callID string) string {
	p := strconv.Itoa(Partition(callID))
	switch eventType {
	case TypeCallStarted:
		return subjectCallStarted + p
	case TypeCallFailed:
		return subjectCallFailed + p
	default:
		return subjectCallEnded + p
	}
}

// Wildcards for consumers.
const (
	AllTransactions = "sip.tx.>"
	AllCallEvents   = "cdr.>"
	// FinishedCalls matches the events that carry a finished CDR.
	FinishedCallsEnded  = "cdr.ended.>"
	FinishedCallsFailed = "cdr.failed.>"
)

// StreamOptions tune the stream definitions to a deployment.
type StreamOptions struct {
	// Replicas is the JetStream replication factor (1 on a single server).
	Replicas int
	// SIPMaxAge bounds how long raw transactions are kept; CDR and LEDGER
	// keep everything (they are the money).
	SIPMaxAge time.Duration
	// DuplicateWindow is JetStream's Nats-Msg-Id dedupe window.
	DuplicateWindow time.Duration
}

// DefaultStreamOptions suits a single node.
func DefaultStreamOptions() StreamOptions {
	return StreamOptions{Replicas: 1, SIPMaxAge: 30 * 24 * time.Hour, DuplicateWindow: 10 * time.Minute}
}

// Streams are the definitions of the log's streams. All use file storage:
// with the server's default sync interval a power cut can cost the last
// couple of minutes of unsynced writes on a single node; replicas (R3)
// remove that window in a cluster.
func Streams(o StreamOptions) []jetstream.StreamConfig {
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	return []jetstream.StreamConfig{
		{
			Name:        StreamSIP,
			Description: "every SIP transaction the proxies handled",
			Subjects:    []string{AllTransactions, SubjectBans},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      o.SIPMaxAge,
			Duplicates:  o.DuplicateWindow,
			Replicas:    o.Replicas,
		},
		{
			Name:        StreamCDR,
			Description: "call lifecycle events and finished CDRs",
			Subjects:    []string{AllCallEvents},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Duplicates:  o.DuplicateWindow,
			Replicas:    o.Replicas,
		},
		{
			Name:        StreamLedger,
			Description: "account events: credits, debits, reservations",
			Subjects:    []string{"ledger.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Duplicates:  o.DuplicateWindow,
			Replicas:    o.Replicas,
		},
	}
}
