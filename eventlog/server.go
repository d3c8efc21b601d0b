package eventlog

import (
	"cmp"
	"fmt"
	"log/slog"
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
	// Logger takes the server's warnings and errors (its notices at
	// Debug); nil uses slog.Default().
	Logger *slog.Logger
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
	log := &serverLog{log: cmp.Or(cfg.Logger, slog.Default()).With("component", "nats-server"), fatal: make(chan error, 1)}
	ns.SetLogger(log, false, false)
	go ns.Start()
	// A fatal error (port taken, store not writable) stops the start:
	// report it at once rather than time out without a reason.
	for deadline := time.Now().Add(10 * time.Second); !ns.ReadyForConnections(50 * time.Millisecond); {
		select {
		case err := <-log.fatal:
			ns.Shutdown()
			return nil, fmt.Errorf("embedded nats on %s:%d with store %s: %w", opts.Host, opts.Port, cfg.StoreDir, err)
		default:
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			return nil, fmt.Errorf("embedded nats on %s:%d with store %s: not ready after 10s", opts.Host, opts.Port, cfg.StoreDir)
		}
	}
	if !ns.JetStreamEnabled() {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s:%d: jetstream did not start with store %s", opts.Host, opts.Port, cfg.StoreDir)
	}
	return &Server{ns: ns}, nil
}

// serverLog carries the server's log lines to slog. Its Fatalf does not
// exit the process as the server's own logger would: it hands the error
// to StartServer.
type serverLog struct {
	log   *slog.Logger
	fatal chan error
}

func (l *serverLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLog) Debugf(format string, v ...any)  {}
func (l *serverLog) Tracef(format string, v ...any)  {}

func (l *serverLog) Fatalf(format string, v ...any) {
	err := fmt.Errorf(format, v...)
	l.log.Error(err.Error())
	select {
	case l.fatal <- err:
	default:
	}
}

// ClientURL is the nats:// URL clients connect to.
func (s *Server) ClientURL() string { return s.ns.ClientURL() }

// Shutdown stops the server and waits until it is down.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
