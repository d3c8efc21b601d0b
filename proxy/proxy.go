package proxy

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"

	"github.com/carrier-core/carrier/schema"
)

// EventPublisher takes the proxy's events. eventlog.Publisher satisfies it.
// Publish is called on the SIP path and must not block.
type EventPublisher interface {
	Publish(subject string, ev schema.Envelope) error
}

// Proxy is a stateful SIP proxy that carries calls from customers to one
// outbound gateway and writes one schema.Transaction event per transaction.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	events EventPublisher
	m      *metrics

	// screen parses each received message once before sipgo does, so that
	// a message sipgo would drop gets a 400 instead.
	screen *sip.Parser
	tpl    *sip.TransportLayer
	txl    *sip.TransactionLayer

	gwDest      string // host:port of Config.Gateway, resolved by Run
	gwTransport string // UDP or TCP, as sipgo spells it

	// health is the gateways' health, kept across provisioning changes.
	health *healthBook

	// dialogs are the established calls.
	dialogs *dialogTable

	// table is the provisioning compiled for the request path, swapped
	// whole on every change.
	table atomic.Pointer[admission]

	// listeners are bound by Run before anything is served and read-only
	// afterwards.
	listeners []*listener

	// idPrefix makes branches and tags unique across restarts and nodes;
	// idSeq makes them unique within this run.
	idPrefix string
	idSeq    atomic.Uint64

	started atomic.Bool
	ready   chan struct{}
	stop    chan struct{} // closed when Run begins to shut down
	runCtx  context.Context

	// active counts request handlers running, so that Run returns only
	// after the last one.
	mu      sync.Mutex
	active  int
	closing bool
	idle    chan struct{}
}

// New checks cfg and prepares a proxy; Run serves it. events receives one
// envelope per SIP transaction.
func New(cfg Config, events EventPublisher) (*Proxy, error) {
	if events == nil {
		return nil, fmt.Errorf("nil event publisher: %w", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	dialogs, err := newDialogTable(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	gwHost, gwPort, _ := splitHostPortDefault(cfg.Gateway, 5060) // checked by withDefaults
	var rnd [5]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("proxy id prefix: %w", err)
	}
	p := &Proxy{
		cfg:         cfg,
		log:         cfg.Logger,
		events:      events,
		m:           m,
		health:      &healthBook{m: map[string]*gwHealth{}, up: m.gatewayUp},
		dialogs:     dialogs,
		screen:      sip.NewParser(),
		gwDest:      net.JoinHostPort(gwHost, strconv.Itoa(gwPort)),
		gwTransport: strings.ToUpper(cfg.GatewayTransport),
		idPrefix:    strings.ToLower(base32.StdEncoding.EncodeToString(rnd[:])),
		ready:       make(chan struct{}),
		stop:        make(chan struct{}),
		idle:        make(chan struct{}),
	}
	sipLog := cfg.Logger.With("component", "sipgo")
	p.tpl = sip.NewTransportLayer(net.DefaultResolver, sip.NewParser(), nil, sip.WithTransportLayerLogger(sipLog))
	p.txl = sip.NewTransactionLayer(p.tpl,
		sip.WithTransactionLayerLogger(sipLog),
		sip.WithTransactionLayerUnhandledResponseHandler(p.onStrayResponse),
	)
	p.txl.OnRequest(p.onRequest)
	var pv *schema.Provisioning
	if cfg.Provisioning != nil {
		pv = cfg.Provisioning.Snapshot()
	}
	// Names are resolved by Run; until then sipgo would resolve them.
	p.table.Store(p.compile(pv, func(hostport string) string { return hostport }))
	return p, nil
}

// Ready is closed once every listener is bound and served; it stays open
// when Run fails to bind.
func (p *Proxy) Ready() <-chan struct{} { return p.ready }

// ErrNotReady: the proxy cannot take calls now; CheckReady says why.
var ErrNotReady = errors.New("proxy not ready")

// CheckReady reports whether the proxy takes calls: it serves its
// listeners, is not stopping, and has a provisioning snapshot to admit and
// route by (without one it refuses every call). The error wraps
// ErrNotReady. It is cheap enough for a readiness probe.
func (p *Proxy) CheckReady() error {
	select {
	case <-p.ready:
	default:
		return fmt.Errorf("%w: not serving yet", ErrNotReady)
	}
	if p.stopping() {
		return fmt.Errorf("%w: stopping", ErrNotReady)
	}
	if p.cfg.Provisioning == nil || p.cfg.Provisioning.Snapshot() == nil {
		return fmt.Errorf("%w: no provisioning loaded", ErrNotReady)
	}
	return nil
}

// Addrs are the bound listener addresses as "transport:host:port", valid
// once Ready is closed; useful when a listener asked for port 0.
func (p *Proxy) Addrs() []string {
	select {
	case <-p.ready:
	default:
		return nil
	}
	out := make([]string, len(p.listeners))
	for i, l := range p.listeners {
		out[i] = l.network + ":" + l.local
	}
	return out
}

// Run serves all listeners until ctx is done, then stops them, ends the
// pending transactions and returns once every request handler has
// finished. It returns an error when a listener cannot be bound or fails.
func (p *Proxy) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return ErrRunning
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.runCtx = runCtx

	for _, lc := range p.cfg.Listeners {
		l, err := p.bind(lc)
		if err != nil {
			for _, l := range p.listeners {
				l.close()
			}
			p.shutdown()
			return err
		}
		p.listeners = append(p.listeners, l)
	}

	for _, l := range p.listeners {
		if l.udp != nil {
			// sipgo registers the socket for sending when its reader starts;
			// register it now so that the first relayed request finds it.
			p.tpl.Pool("udp").Add(l.local, &sip.UDPConnection{PacketConn: l.udp, PacketAddr: l.local, Listener: true})
		}
	}
	p.gwDest = p.resolve(runCtx, p.gwDest)
	var pv *schema.Provisioning
	if p.cfg.Provisioning != nil {
		pv = p.cfg.Provisioning.Snapshot()
	}
	p.install(runCtx, pv)
	var following sync.WaitGroup
	if p.cfg.Provisioning != nil {
		following.Go(func() { p.follow(runCtx, p.cfg.Provisioning, pv) })
	}
	if p.cfg.Health.ProbeInterval > 0 {
		following.Go(func() { p.probe(p.stop) })
	}
	serveErr := make(chan error, len(p.listeners))
	var serving sync.WaitGroup
	for _, l := range p.listeners {
		serving.Add(1)
		go func() {
			defer serving.Done()
			err := l.serve(p.tpl)
			select {
			case <-p.stop:
			default:
				// A listener that stops on its own is fatal for the proxy.
				serveErr <- fmt.Errorf("%s listener %s stopped: %w", l.network, l.local, errOrClosed(err))
			}
		}()
	}
	// Calls up across a restart, once the listeners serve: ending one
	// needs them.
	p.restoreDialogs(runCtx)
	close(p.ready)
	p.log.Info("proxy serving", "node", p.cfg.Node, "listeners", strings.Join(p.Addrs(), " "),
		"default_gateway", p.gwDest, "default_gateway_transport", strings.ToLower(p.gwTransport))

	var err error
	select {
	case <-runCtx.Done():
	case err = <-serveErr:
		p.log.Error("proxy stopping", "err", err)
	}

	close(p.stop)
	cancel()
	p.forgetDialogs()
	following.Wait()
	for _, l := range p.listeners {
		l.close()
	}
	serving.Wait()
	p.shutdown()
	p.log.Info("proxy stopped", "node", p.cfg.Node)
	return err
}

// shutdown ends every transaction, closes sipgo's connections and waits
// for the request handlers to return.
func (p *Proxy) shutdown() {
	p.mu.Lock()
	p.closing = true
	wait := p.active > 0
	p.mu.Unlock()
	// Terminating the transactions wakes every handler blocked on one.
	p.txl.Close()
	if err := p.tpl.Close(); err != nil {
		p.log.Debug("closing sip transports", "err", err)
	}
	if wait {
		<-p.idle
	}
}

// enter registers a request handler; false once the proxy is stopping.
func (p *Proxy) enter() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.active++
	p.m.inflight.Inc()
	return true
}

func (p *Proxy) leave() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.active--
	p.m.inflight.Dec()
	if p.active == 0 && p.closing {
		close(p.idle)
	}
}

func (p *Proxy) stopping() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

func errOrClosed(err error) error {
	if err == nil {
		return net.ErrClosed
	}
	return err
}

// newID returns a string unique to this proxy instance: the random prefix
// and a sequence number.
func (p *Proxy) newID(prefix string) string {
	var b [48]byte
	out := append(b[:0], prefix...)
	out = append(out, p.idPrefix...)
	out = append(out, '.')
	out = appendBase36(out, p.idSeq.Add(1))
	return string(out)
}

func appendBase36(b []byte, v uint64) []byte {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	var tmp [13]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = digits[v%36]
		v /= 36
		if v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

// branchPrefix starts every branch this proxy generates: the RFC 3261
// magic cookie and a marker.
const branchPrefix = sip.RFC3261BranchMagicCookie + "-cc"

func (p *Proxy) newBranch() string { return p.newID(branchPrefix) }

func (p *Proxy) newTag() string { return p.newID("cc") }

var errNoListener = errors.New("no listener for transport")
