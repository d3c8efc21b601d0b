package eventlog

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerConfig configures the embedded NATS server with JetStream.
type ServerConfig struct {
	// Host and Port to listen on; Port -1 picks a free port.
	Host string
	Port int
	// StoreDir keeps the JetStream streams; a restart with the same
	// directory finds them again.
	StoreDir string
	// MonitorPort serves NATS's HTTP monitoring (/varz, /jsz); 0 disables it.
	MonitorPort int
	// SyncInterval is how often JetStream fsyncs file storage (server
	// default two minutes when zero). It bounds what a power cut costs.
	SyncInterval time.Duration
}

// Server is an embedded NATS server with JetStream.
type Server struct {
	ns *server.Server
}

// StartServer starts an embedded NATS server and waits until it accepts
// connections.
func StartServer(cfg ServerConfig) (*Server, error) {
	opts := &server.Options{
		ServerName:            "carrier",
		Host:                  cfg.Host,
		Port:                  cfg.Port,
		JetStream:             true,
		StoreDir:              cfg.StoreDir,
		HTTPHost:              cfg.Host,
		HTTPPort:              cfg.MonitorPort,
		SyncInterval:          cfg.SyncInterval,
		NoSigs:                true,
		MaxPayload:            8 << 20,
		DisableShortFirstPing: true,
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if cfg.MonitorPort == 0 {
		opts.HTTPPort = 0
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s:%d with store %s: not ready after 10s", opts.Host, opts.Port, cfg.StoreDir)
	}
	return &Server{ns: ns}, nil
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Shutdown stops the server and waits until it is down.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
