package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/cdrgen"
	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/proxy"
	"github.com/carrier-core/carrier/rating"
)

// Settings shared by several commands. Each command adds the groups it
// uses, so a flag means the same thing everywhere.

type natsSettings struct{ url string }

func (s *natsSettings) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.url, "nats-url", "nats://127.0.0.1:4222", "NATS server with JetStream")
}

type nodeSettings struct{ node string }

func (s *nodeSettings) addFlags(cmd *cobra.Command) {
	host, _ := os.Hostname()
	cmd.Flags().StringVar(&s.node, "node", host, "name of this node in the events it writes")
}

type metricsSettings struct{ listen string }

// Each process type has its own default port so that they can run side by
// side on one host.
func (s *metricsSettings) addFlags(cmd *cobra.Command, addr string) {
	cmd.Flags().StringVar(&s.listen, "metrics-listen", addr, "address of the /metrics, /healthz (readiness) and /livez endpoint (empty: off)")
}

type proxySettings struct {
	listen     []string
	gateway    string
	spoolDir   string
	trunkCIDRs []string
	// trunkCurrency is the currency of account "local" that --trunk-cidr
	// creates.
	trunkCurrency string
	health        proxy.Health
	// subscribers are digest auth and the registrar; nonceSecret is
	// shared by the proxies of one network.
	subscribers proxy.SubscriberConfig
	nonceSecret string
	// tls, flood and limits are the proxy's safety settings.
	tls    proxy.TLS
	flood  proxy.Flood
	limits proxy.Limits
	// credit is credit control; its Control is set from the connection.
	credit        proxy.Credit
	creditControl bool
	dialogTimeout time.Duration
	// keepCalls stores the answered calls in JetStream KV, for a
	// restarted proxy to take them back.
	keepCalls bool
	// readyMaxSpooled is how many spooled events make the proxy not
	// ready (0: never).
	readyMaxSpooled uint64
}

func (s *proxySettings) addFlags(cmd *cobra.Command, defaultSpool string) {
	cmd.Flags().StringSliceVar(&s.listen, "sip-listen", []string{"127.0.0.1:5060"}, "SIP listen addresses: ADDR (UDP and TCP), udp:ADDR, tcp:ADDR or tls:ADDR (with --tls-cert and --tls-key)")
	cmd.Flags().StringVar(&s.tls.CertFile, "tls-cert", "", "PEM certificate (with its chain) of the tls: listeners")
	cmd.Flags().StringVar(&s.tls.KeyFile, "tls-key", "", "PEM private key of --tls-cert")
	cmd.Flags().IntVar(&s.flood.Threshold, "flood-threshold", 0, "ban a source address that sends more SIP requests than this within --flood-window (0: no flood protection; trusted trunks and gateways are never banned)")
	cmd.Flags().DurationVar(&s.flood.Window, "flood-window", time.Second, "window of --flood-threshold")
	cmd.Flags().DurationVar(&s.flood.Ban, "flood-ban", time.Minute, "how long a flooding address stays banned: its messages are dropped unanswered")
	cmd.Flags().IntVar(&s.limits.AccountReply, "account-limit-reply", 503, "status code of a call refused for its account's calls per second: 503 or 486")
	cmd.Flags().StringVar(&s.gateway, "gateway", "127.0.0.1:5070", "default outbound gateway host:port, used while no gateway is provisioned (carrier gateway add)")
	cmd.Flags().StringVar(&s.spoolDir, "spool-dir", defaultSpool, "where events wait while JetStream is unreachable")
	cmd.Flags().Uint64Var(&s.readyMaxSpooled, "ready-max-spooled", 1_000_000, "events waiting in the spool above which /healthz reports the proxy not ready (0: never)")
	cmd.Flags().DurationVar(&s.health.HoldDown, "gateway-hold-down", 30*time.Second, "how long a gateway that answered 503 or did not answer is tried only after the route's others (negative: never held down)")
	cmd.Flags().DurationVar(&s.health.ProbeInterval, "gateway-probe-interval", 0, "send OPTIONS to every provisioned gateway this often and route around those that do not answer (0: no probing)")
	cmd.Flags().StringVar(&s.trunkCurrency, "trunk-currency", "USD", "ISO 4217 currency of account \"local\" that --trunk-cidr creates (wholesale voice is mostly priced in USD)")
	cmd.Flags().BoolVar(&s.creditControl, "credit-control", true, "ask the rating service (rating.authorize over NATS) before and during the calls of prepaid and postpaid accounts")
	cmd.Flags().DurationVar(&s.credit.Window, "credit-window", 30*time.Second, "talk time asked of the rating service at a time; smaller shares an account's money more evenly between its concurrent calls")
	cmd.Flags().DurationVar(&s.credit.Timeout, "credit-timeout", 2*time.Second, "how long the proxy waits for the rating service's answer; a prepaid call gets 503 without one")
	cmd.Flags().BoolVar(&s.credit.AdmitUnavailable, "credit-admit-unavailable", false, "admit prepaid calls, uncontrolled, while the rating service does not answer (postpaid calls always are)")
	cmd.Flags().DurationVar(&s.dialogTimeout, "dialog-timeout", 3*time.Hour, "end an answered call with a BYE to both sides this long after its answer when no BYE came (negative: never)")
	cmd.Flags().BoolVar(&s.keepCalls, "keep-calls", true, "keep the answered calls in JetStream KV (bucket "+proxy.BucketDialogs+"), so that the proxy restarted with the same --node takes them back: dialog timeout, credit control and call limits go on")
	cmd.Flags().StringSliceVar(&s.subscribers.Domains, "domain", nil, "SIP domains served besides those of the subscribers (carrier subscriber add); the first is taken for requests addressed to the proxy's own address")
	cmd.Flags().DurationVar(&s.subscribers.NonceLifetime, "nonce-lifetime", 5*time.Minute, "how long a digest nonce is accepted; an older one is challenged again with stale=true")
	cmd.Flags().StringVar(&s.nonceSecret, "nonce-secret", "", "secret signing the digest nonces, the same on every proxy of a network so that they accept each other's (empty: random per process)")
	cmd.Flags().DurationVar(&s.subscribers.MinExpires, "min-expires", time.Minute, "shortest registration accepted; shorter gets 423 with Min-Expires")
	cmd.Flags().DurationVar(&s.subscribers.MaxExpires, "max-expires", time.Hour, "longest registration granted; longer asks are cut to it")
	cmd.Flags().StringSliceVar(&s.trunkCIDRs, "trunk-cidr", nil, "at start, create or update trunk \"local\" (account \"local\") with these sources, e.g. 127.0.0.1/32; it stays provisioned until \"carrier trunk rm local\". Without any trunk every call is refused")
}

// syncSettings bound what a power cut can cost the embedded server: JetStream
// fsyncs its file storage on this interval (its own default is two
// minutes, too long for the CDR and LEDGER streams, which are money).
type syncSettings struct{ interval time.Duration }

func (s *syncSettings) addFlags(cmd *cobra.Command) {
	cmd.Flags().DurationVar(&s.interval, "sync-interval", time.Second, "how often JetStream fsyncs its store: what a power cut can cost on a single node")
}

type clickhouseSettings struct{ addr, database string }

func (s *clickhouseSettings) addFlags(cmd *cobra.Command, addrDefault string) {
	cmd.Flags().StringVar(&s.addr, "clickhouse", addrDefault, "ClickHouse native address host:port")
	cmd.Flags().StringVar(&s.database, "clickhouse-db", "carrier", "ClickHouse database")
}

// parseListeners turns --sip-listen values into proxy listeners; a bare
// address listens on both UDP and TCP, as SIP expects.
func parseListeners(values []string) ([]proxy.Listener, error) {
	var out []proxy.Listener
	for _, v := range values {
		transport, addr, found := strings.Cut(v, ":")
		if !found || (transport != "udp" && transport != "tcp" && transport != "tls") {
			transport, addr = "", v
		}
		if err := checkHostPort(addr); err != nil {
			return nil, fmt.Errorf("--sip-listen %q: want ADDR, udp:ADDR, tcp:ADDR or tls:ADDR with ADDR as host:port: %w", v, err)
		}
		if transport == "" {
			out = append(out, proxy.Listener{Transport: "udp", Addr: addr}, proxy.Listener{Transport: "tcp", Addr: addr})
			continue
		}
		out = append(out, proxy.Listener{Transport: transport, Addr: addr})
	}
	if len(out) == 0 {
		return nil, errors.New("--sip-listen: at least one address is needed")
	}
	return out, nil
}

// checkHostPort accepts host:port with a numeric port.
func checkHostPort(addr string) error {
	_, _, err := splitHostPort(addr)
	return err
}

// splitHostPort splits host:port and checks the port is a number.
func splitHostPort(addr string) (string, int, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number from 0 to 65535", portText)
	}
	return host, port, nil
}

func describeListeners(ls []proxy.Listener) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = l.Transport + ":" + l.Addr
	}
	return strings.Join(parts, " ")
}

// runProxy carries calls until ctx is done; its events go through a
// spooling publisher, which is flushed on the way out. It admits calls by
// the provisioning bucket, which it follows live; it serves SIP only once
// that is loaded, as without it every call would be refused.
func runProxy(ctx context.Context, log *slog.Logger, js jetstream.JetStream, reg *registry, node string, listeners []proxy.Listener, s proxySettings) error {
	// Checks first, so that /healthz never answers ok for a proxy that
	// is still waiting for its provisioning.
	reg.checks.add("nats", natsCheck(js.Conn()))
	var running atomic.Pointer[proxy.Proxy]
	reg.checks.add("proxy", func(context.Context) error {
		p := running.Load()
		if p == nil {
			return fmt.Errorf("%w: starting, provisioning not loaded", proxy.ErrNotReady)
		}
		return p.CheckReady()
	})
	store, err := waitProvisionStore(ctx, log, js)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	if len(s.trunkCIDRs) > 0 {
		if err := provisionLocalTrunk(ctx, log, store, s.trunkCIDRs, s.trunkCurrency); err != nil {
			return fmt.Errorf("proxy: --trunk-cidr: %w", err)
		}
	}
	watch, err := store.Watch(ctx)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	defer watch.Stop()
	select {
	case <-watch.Ready():
	case <-ctx.Done():
		return ctx.Err()
	}

	pub, err := eventlog.NewPublisher(js, eventlog.PublisherConfig{SpoolDir: s.spoolDir, Logger: log, Registerer: reg})
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	defer func() {
		flush, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// Whatever JetStream did not take stays in the spool and is
		// replayed by the next start; Close fails only if the spool could
		// not be synced to disk.
		if err := pub.Close(flush); err != nil {
			log.Error("event spool not synced on close", "spool", s.spoolDir, "err", err)
		}
	}()
	reg.checks.add("event_spool", spoolCheck(pub, s.readyMaxSpooled))
	if s.creditControl {
		s.credit.Control = proxy.NewNATSCredit(js.Conn())
	}
	// The buy rates order the gateways of lcr routes; imports reach the
	// Book without a restart.
	plans, err := rating.NewStore(ctx, js)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	book, err := plans.Follow(ctx, log)
	if err != nil {
		return fmt.Errorf("proxy: buy rates: %w", err)
	}
	regs, err := openRegistrations(ctx, js)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	s.subscribers.Registrations, s.subscribers.NonceSecret = regs, []byte(s.nonceSecret)
	var dialogs proxy.Dialogs
	if s.keepCalls {
		octx, cancel := context.WithTimeout(ctx, provisionTimeout)
		kv, err := proxy.OpenDialogs(octx, js, node, proxy.DialogsMaxAge(s.dialogTimeout))
		cancel()
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		dialogs = kv
	}
	p, err := proxy.New(proxy.Config{Node: node, Listeners: listeners, Gateway: s.gateway, Health: s.health, Credit: s.credit,
		TLS: s.tls, Flood: s.flood, Limits: s.limits,
		DialogTimeout: s.dialogTimeout, Provisioning: watch, Logger: log, Registerer: reg,
		BuyRates: proxy.BookBuyRates(book, watch), Subscribers: s.subscribers, Dialogs: dialogs}, pub)
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	running.Store(p)
	return p.Run(ctx)
}

func runCorrelator(ctx context.Context, log *slog.Logger, js jetstream.JetStream, reg prometheus.Registerer, node string) error {
	c, err := cdrgen.New(js, cdrgen.Config{Node: node, Logger: log, Registerer: reg})
	if err != nil {
		return fmt.Errorf("correlator: %w", err)
	}
	return c.Run(ctx)
}

func runSink(ctx context.Context, log *slog.Logger, js jetstream.JetStream, reg prometheus.Registerer, s clickhouseSettings) error {
	conn, err := analytics.Open(ctx, s.addr, s.database)
	if err != nil {
		return fmt.Errorf("analytics sink: %w", err)
	}
	defer conn.Close()
	sink, err := analytics.NewSink(js, conn, analytics.SinkConfig{Database: s.database, Logger: log, Registerer: reg})
	if err != nil {
		return fmt.Errorf("analytics sink: %w", err)
	}
	return sink.Run(ctx)
}

// serveMetrics serves until ctx is done: Prometheus metrics on /metrics,
// readiness on /healthz (the registered checks) and liveness on /livez
// (always ok while the process serves).
func serveMetrics(ctx context.Context, log *slog.Logger, addr string, reg *registry) error {
	if addr == "" {
		<-ctx.Done()
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/healthz", reg.checks)
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	log.Debug("metrics endpoint up", "addr", addr)
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics endpoint: %w", err)
	}
	return nil
}

// registry is what the components of a process register with: their
// metrics (it is the process's Prometheus registry) and their readiness
// checks, both served by serveMetrics.
type registry struct {
	*prometheus.Registry
	checks *readiness
}

func newRegistry() *registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &registry{Registry: reg, checks: &readiness{checks: map[string]check{}}}
}

// check says why a part of the process cannot do its work now; nil when
// it can. It must be quick: /healthz runs every check on each request.
type check func(ctx context.Context) error

// checkTimeout bounds the checks of one /healthz request.
const checkTimeout = 2 * time.Second

// readiness is the set of a process's checks, by name. It answers
// /healthz: 200 and {"status":"ok","checks":{name:"ok",...}} when every
// check passes, 503 and {"status":"unavailable","checks":{...}} with the
// failing checks' errors otherwise.
type readiness struct {
	mu     sync.Mutex
	checks map[string]check
}

// add registers c under name. Components that share a resource add the
// same check under one name; the last one added stays.
func (r *readiness) add(name string, c check) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks[name] = c
}

// healthReport is the body of a /healthz answer.
type healthReport struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

// run runs every check, in name order.
func (r *readiness) run(ctx context.Context) (healthReport, bool) {
	r.mu.Lock()
	names := make([]string, 0, len(r.checks))
	for name := range r.checks {
		names = append(names, name)
	}
	checks := make([]check, 0, len(names))
	slices.Sort(names)
	for _, name := range names {
		checks = append(checks, r.checks[name])
	}
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	rep, ok := healthReport{Status: "ok", Checks: make(map[string]string, len(names))}, true
	for i, c := range checks {
		if err := c(ctx); err != nil {
			rep.Checks[names[i]], ok = err.Error(), false
			continue
		}
		rep.Checks[names[i]] = "ok"
	}
	if !ok {
		rep.Status = "unavailable"
	}
	return rep, ok
}

func (r *readiness) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rep, ok := r.run(req.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(rep)
}

// natsCheck fails while nc is not connected: events cannot reach
// JetStream (the proxy spools them) and consumers stall.
func natsCheck(nc *nats.Conn) check {
	return func(context.Context) error {
		if st := nc.Status(); st != nats.CONNECTED {
			return fmt.Errorf("nats connection %s", strings.ToLower(st.String()))
		}
		return nil
	}
}

// spoolCheck fails while more than max events (0: no limit) wait in the
// publisher's spool: JetStream has not taken the proxy's events for a
// long while, and the spool's disk is filling.
func spoolCheck(pub *eventlog.Publisher, max uint64) check {
	return func(context.Context) error {
		st := pub.Spool()
		if max > 0 && st.Events > max {
			return fmt.Errorf("%d events spooled, over %d; the oldest waits for %s", st.Events, max, st.Oldest.Round(time.Second))
		}
		return nil
	}
}

// component is one long-running part of a process.
type component struct {
	name string
	run  func(ctx context.Context) error
}

// runComponents runs the components until ctx is done or one of them
// fails, which stops the others: a process is healthy only whole.
func runComponents(ctx context.Context, log *slog.Logger, cs ...component) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, c := range cs {
		g.Go(func() error {
			err := c.run(ctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				log.Error("component stopped", "component", c.name, "err", err)
				return fmt.Errorf("%s: %w", c.name, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// runConsumerProcess runs one consumer of the log as its own process:
// it connects to NATS, makes sure the streams exist, says what it does,
// then runs the consumer beside the metrics endpoint until ctx ends.
func runConsumerProcess(ctx context.Context, a *app, natsURL, name, metricsAddr, banner string,
	run func(ctx context.Context, js jetstream.JetStream, reg prometheus.Registerer) error) error {
	js, closeConn, err := connect(a.log, natsURL, "carrier-"+name)
	if err != nil {
		return err
	}
	defer closeConn()
	if err := ensureStreams(ctx, a.log, js); err != nil {
		return err
	}
	reg := newRegistry()
	reg.checks.add("nats", natsCheck(js.Conn()))
	fmt.Fprintln(a.out, banner)
	return runComponents(ctx, a.log,
		component{name, func(ctx context.Context) error { return run(ctx, js, reg) }},
		component{"metrics", func(ctx context.Context) error { return serveMetrics(ctx, a.log, metricsAddr, reg) }},
	)
}

// connect dials NATS for a component process.
func connect(log *slog.Logger, url, name string) (jetstream.JetStream, func(), error) {
	nc, js, err := eventlog.Connect(url, name, log)
	if err != nil {
		return nil, nil, err
	}
	return js, nc.Close, nil
}

func defaultDataDir() string { return filepath.Join(".", "carrier-data") }
