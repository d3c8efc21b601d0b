package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

// NATS is an in-process JetStream server for a test. It can be stopped and
// started again on the same port and store, as a broker outage.
type NATS struct {
	t   testing.TB
	cfg eventlog.ServerConfig
	srv *eventlog.Server
	URL string
}

// StartNATS starts a JetStream server on a free loopback port with a temp
// store, creates the log's streams and stops the server at the test's end.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	n := &NATS{t: t, cfg: eventlog.ServerConfig{Host: "127.0.0.1", Port: FreeTCPPort(t), StoreDir: t.TempDir()}}
	n.Start()
	t.Cleanup(n.Stop)
	_, js := n.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := eventlog.EnsureStreams(ctx, js, schema.DefaultStreamOptions()); err != nil {
		t.Fatal(err)
	}
	return n
}

// Start (re)starts the server on its port and store.
func (n *NATS) Start() {
	n.t.Helper()
	srv, err := eventlog.StartServer(n.cfg)
	if err != nil {
		n.t.Fatal(err)
	}
	n.srv = srv
	n.URL = srv.ClientURL()
}

// Stop shuts the server down; Start brings it back with its data.
func (n *NATS) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv = nil
	}
}

// Connect opens a client connection closed at the test's end.
func (n *NATS) Connect() (*nats.Conn, jetstream.JetStream) {
	n.t.Helper()
	nc, js, err := eventlog.Connect(n.URL, n.t.Name(), nil)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(nc.Close)
	return nc, js
}
