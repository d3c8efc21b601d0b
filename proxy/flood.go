package proxy

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/carrier-core/carrier/schema"
)

// Flood is the flood protection: a source address (IP, any port and
// transport) that sends more than Threshold requests within Window is
// banned for Ban. The messages of a banned address are dropped without a
// response, before they are parsed, so that a flood costs a map lookup a
// message and writes nothing to the log but the ban itself.
//
// Sources of trusted trunks and the addresses of the gateways are never
// banned: a peer we trust or send calls to is limited by its account's or
// gateway's calls per second instead, which answers rather than goes
// silent. Only requests count; responses of a banned address are dropped
// too.
type Flood struct {
	// Threshold is how many requests one address may send within Window;
	// the next one starts a ban. 0 (the default) turns flood protection
	// off.
	Threshold int
	// Window is the counting period (default 1s).
	Window time.Duration
	// Ban is how long a banned address stays banned (default 60s).
	Ban time.Duration
	// MaxSources bounds the addresses counted at once, so that a flood
	// from many addresses cannot grow memory without bound (default
	// 65536). When it is reached, addresses quiet for a window are
	// forgotten first, then any address that is not banned; while every
	// tracked address is banned, new ones go uncounted.
	MaxSources int
}

const (
	defaultFloodWindow     = time.Second
	defaultFloodBan        = time.Minute
	defaultFloodMaxSources = 1 << 16
)

func (f Flood) withDefaults() (Flood, error) {
	if f.Threshold < 0 || f.Window < 0 || f.Ban < 0 || f.MaxSources < 0 {
		return f, fmt.Errorf("flood protection: negative threshold %d, window %v, ban %v or max sources %d: %w", f.Threshold, f.Window, f.Ban, f.MaxSources, ErrInvalidConfig)
	}
	if f.Window == 0 {
		f.Window = defaultFloodWindow
	}
	if f.Ban == 0 {
		f.Ban = defaultFloodBan
	}
	if f.MaxSources == 0 {
		f.MaxSources = defaultFloodMaxSources
	}
	return f, nil
}

// floodGuard counts requests per source address and holds the bans.
type floodGuard struct {
	cfg    Flood
	window int64 // cfg.Window in nanoseconds
	ban    int64

	mu        sync.Mutex
	sources   map[netip.Addr]*floodSource
	banned    int
	lastSweep int64
	stopped   bool
}

// floodSource is one address: its count in the current window, and its
// ban while there is one.
type floodSource struct {
	start int64 // window start, Unix nanoseconds
	count int
	// exempt: the address was found to be a trusted trunk's or a
	// gateway's when it crossed the threshold in the window that began
	// at start; it is looked up again in the next window.
	exempt bool
	until  int64 // ban end, Unix nanoseconds; 0 while not banned
	ban    schema.SourceBan
	timer  *time.Timer
}

func newFloodGuard(cfg Flood) *floodGuard {
	if cfg.Threshold == 0 {
		return nil
	}
	return &floodGuard{cfg: cfg, window: int64(cfg.Window), ban: int64(cfg.Ban), sources: map[netip.Addr]*floodSource{}}
}

// floodAllowed screens one received message from src; false means drop
// it. It runs on every message, before parsing: one lock, one map lookup.
func (p *Proxy) floodAllowed(src net.Addr, data []byte, transport string) bool {
	g := p.cfg.guards.flood
	if g == nil {
		return true
	}
	ap := addrPortOf(src)
	if !ap.IsValid() {
		return true
	}
	ip := ap.Addr().Unmap()
	request := !bytes.HasPrefix(data, sipVersionPrefix)
	now := time.Now().UnixNano()

	g.mu.Lock()
	s := g.sources[ip]
	var lifted *schema.SourceBan
	if s != nil && s.until != 0 {
		if now < s.until {
			s.ban.Dropped++
			g.mu.Unlock()
			p.m.floodDropped.Inc()
			return false
		}
		// Over, and its timer has not run yet: lift it here.
		lifted = g.liftLocked(s, now)
	}
	if !request || g.stopped {
		g.mu.Unlock()
		p.floodLifted(lifted)
		return true
	}
	if s == nil {
		if s = g.track(ip, now); s == nil {
			g.mu.Unlock()
			return true
		}
	}
	if now-s.start >= g.window {
		s.start, s.count, s.exempt = now, 0, false
	}
	s.count++
	if s.count <= g.cfg.Threshold || s.exempt {
		g.mu.Unlock()
		p.floodLifted(lifted)
		return true
	}
	// Over the threshold: found out once per window whether the address
	// may send this much. The admission table is immutable, so reading
	// it under the lock is cheap and safe.
	if p.floodExempt(ap, transport) {
		s.exempt = true
		g.mu.Unlock()
		p.floodLifted(lifted)
		return true
	}
	s.until = now + g.ban
	s.ban = schema.SourceBan{
		Source: ip.String(), Transport: transport, Requests: s.count, Threshold: g.cfg.Threshold,
		WindowMs: g.cfg.Window.Milliseconds(), BannedAt: now / 1e6, Until: s.until / 1e6,
	}
	s.count = 0
	g.banned++
	banned := s.ban
	until := s.until
	s.timer = time.AfterFunc(g.cfg.Ban, func() { p.floodExpire(ip, until) })
	g.mu.Unlock()

	p.floodLifted(lifted)
	p.m.floodBans.Inc()
	p.m.floodBanned.Inc()
	p.m.floodDropped.Inc()
	p.log.Warn("source banned for flooding", "src", banned.Source, "transport", transport,
		"requests", banned.Requests, "window", g.cfg.Window, "for", g.cfg.Ban)
	p.publishBan(schema.TypeSourceBanned, &banned, time.Unix(0, now))
	return false
}

var sipVersionPrefix = []byte("SIP/")

// floodExpire is the timer of the ban that ends at until.
func (p *Proxy) floodExpire(ip netip.Addr, until int64) {
	g := p.cfg.guards.flood
	g.mu.Lock()
	s := g.sources[ip]
	if g.stopped || s == nil || s.until != until {
		// Lifted already, by a message that came after its end.
		g.mu.Unlock()
		return
	}
	lifted := g.liftLocked(s, time.Now().UnixNano())
	g.mu.Unlock()
	p.floodLifted(lifted)
}

// liftLocked ends the ban of s and returns its event payload.
func (g *floodGuard) liftLocked(s *floodSource, now int64) *schema.SourceBan {
	ban := s.ban
	s.until, s.ban, s.start, s.count, s.exempt = 0, schema.SourceBan{}, now, 0, false
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	g.banned--
	return &ban
}

// floodLifted logs and publishes the end of a ban (nil: none).
func (p *Proxy) floodLifted(ban *schema.SourceBan) {
	if ban == nil {
		return
	}
	p.m.floodBanned.Dec()
	p.log.Info("source ban lifted", "src", ban.Source, "dropped", ban.Dropped)
	p.publishBan(schema.TypeSourceUnbanned, ban, time.UnixMilli(ban.Until))
}

// track starts counting ip, making room when the table is full; nil when
// there is none (every tracked address is banned).
func (g *floodGuard) track(ip netip.Addr, now int64) *floodSource {
	if len(g.sources) >= g.cfg.MaxSources {
		if now-g.lastSweep >= g.window {
			g.lastSweep = now
			for a, s := range g.sources {
				if s.until == 0 && now-s.start >= g.window {
					delete(g.sources, a)
				}
			}
		}
		if len(g.sources) >= g.cfg.MaxSources {
			if g.banned >= len(g.sources) {
				return nil
			}
			// Map order is random: this forgets an arbitrary address.
			for a, s := range g.sources {
				if s.until == 0 {
					delete(g.sources, a)
					break
				}
			}
		}
	}
	s := &floodSource{start: now}
	g.sources[ip] = s
	return s
}

// floodExempt reports an address the proxy must not ban: a trusted
// trunk's source (matched as admission would match the request) or a
// gateway's.
func (p *Proxy) floodExempt(ap netip.AddrPort, transport string) bool {
	a := p.table.Load()
	if t := a.lookup(ap.String(), transport); t != nil && t.trusted {
		return true
	}
	ip := ap.Addr().Unmap()
	isGateway := func(t *target) bool {
		g, err := netip.ParseAddrPort(t.dest)
		return err == nil && g.Addr().Unmap() == ip
	}
	if a.gateway != nil && isGateway(a.gateway) {
		return true
	}
	for _, t := range a.targets {
		if isGateway(t) {
			return true
		}
	}
	return false
}

// stop ends the bans' timers, so that nothing is published once the proxy
// has stopped. Later messages are not counted.
func (g *floodGuard) stop() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	for _, s := range g.sources {
		if s.timer != nil {
			s.timer.Stop()
		}
	}
}

// publishBan writes a ban event to the log; like transaction events, it
// never blocks and its failures are counted and logged.
func (p *Proxy) publishBan(typ string, ban *schema.SourceBan, at time.Time) {
	env, err := schema.NewEnvelope(typ, schema.BanVersion, at, p.cfg.Node, ban)
	if err == nil {
		err = p.events.Publish(schema.SubjectBans, env)
	}
	if err != nil {
		p.m.eventErrors.Inc()
		p.log.Warn("publish ban event", "type", typ, "src", ban.Source, "err", err)
	}
}

// addrPortOf is the address of a UDP or TCP peer without allocating.
func addrPortOf(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.AddrPort()
	case *net.TCPAddr:
		return v.AddrPort()
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// floodBanned reports a banned address, counting what it cost: a
// connection refused before anything was read from it.
func (p *Proxy) floodBanned(src net.Addr) bool {
	g := p.cfg.guards.flood
	if g == nil {
		return false
	}
	ap := addrPortOf(src)
	if !ap.IsValid() {
		return false
	}
	now := time.Now().UnixNano()
	g.mu.Lock()
	s := g.sources[ap.Addr().Unmap()]
	banned := s != nil && s.until != 0 && now < s.until
	if banned {
		s.ban.Dropped++
	}
	g.mu.Unlock()
	if banned {
		p.m.floodDropped.Inc()
	}
	return banned
}
