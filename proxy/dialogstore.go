package proxy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/schema"
)

// Dialogs keeps the established calls of one proxy, so that a restarted
// proxy goes on ending them (dialog timeout, credit) and counting them
// under their limits. KVDialogs is the JetStream KV one.
type Dialogs interface {
	// Put stores rec, replacing what the call had.
	Put(ctx context.Context, rec DialogRecord) error
	// Delete forgets the call of Call-ID and caller's tag; forgetting one
	// that is not stored is no error.
	Delete(ctx context.Context, callID, callerTag string) error
	// List is every stored call. An undecodable record is left out and
	// reported in the error, beside the records that decode.
	List(ctx context.Context) ([]DialogRecord, error)
}

// dialogRecordVersion is the version of DialogRecord this build writes
// and reads.
const dialogRecordVersion = 1

// DialogRecord is an established call as Dialogs keep it: what a
// restarted proxy needs to end it with a BYE to each side, go on with its
// credit control and take its places under its limits again.
type DialogRecord struct {
	V          int    `json:"v"`
	CallID     string `json:"call_id"`
	CallerTag  string `json:"caller_tag"`
	CalleeTag  string `json:"callee_tag"`
	Account    string `json:"account,omitempty"`
	Trunk      string `json:"trunk,omitempty"`
	AnsweredAt int64  `json:"answered_at"` // ms since the Unix epoch
	// Caller and Callee are how the proxy reaches each party.
	Caller LegRecord `json:"caller"`
	Callee LegRecord `json:"callee"`
	// CallerSeq and CalleeSeq are the highest CSeq each side has sent.
	CallerSeq uint32 `json:"caller_cseq"`
	CalleeSeq uint32 `json:"callee_cseq"`
	// SlotKeys are the concurrent-call counters the call holds a place in.
	SlotKeys []string `json:"slot_keys,omitempty"`
	// Credit is the call's credit control; nil when it has none.
	Credit *CreditRecord `json:"credit,omitempty"`
}

// LegRecord is one party of a stored call (leg).
type LegRecord struct {
	Target    string   `json:"target"` // Request-URI: the party's Contact
	Routes    []string `json:"routes,omitempty"`
	Dest      string   `json:"dest"`      // host:port of the first hop
	Transport string   `json:"transport"` // UDP, TCP or TLS
	// Listener is the bound host:port of the proxy's listener the party
	// is reached from.
	Listener string `json:"listener"`
	From     string `json:"from"` // the other party, with its tag
	To       string `json:"to"`   // this party, with its tag
}

// CreditRecord is the credit state of a stored call (creditSession).
type CreditRecord struct {
	Kind schema.AccountKind `json:"kind"`
	// CDRID keys the call's ledger reservation.
	CDRID  string `json:"cdr_id"`
	Callee string `json:"callee"`
	Want   int64  `json:"want_s,omitempty"`
	// Granted is the talk time granted so far, in seconds from answer;
	// GrantEnd is when it runs out (ms), for whoever reads the bucket.
	Granted  int64 `json:"granted_s"`
	GrantEnd int64 `json:"grant_end"`
	// Exhausted: the last ask brought nothing more.
	Exhausted bool `json:"exhausted,omitempty"`
}

// BucketDialogs is the JetStream KV bucket of the proxies' established
// calls: one key per call, "<node>.<CDR id>" with the node's name base64url
// encoded, so that each proxy restores only its own calls. A proxy's node
// name must therefore stay the same across a restart and be unique among
// the proxies sharing the bucket.
const BucketDialogs = "SIP_DIALOGS"

const (
	// dialogRecordMargin is how long past the dialog timeout a record
	// stays: a proxy restarted within it still ends the call (no_bye).
	dialogRecordMargin = time.Hour
	// unboundedDialogAge bounds the records of calls under no dialog
	// timeout, counted from their last change (credit-controlled calls
	// rewrite theirs with every grant).
	unboundedDialogAge = 24 * time.Hour
	// dialogPurgeMarkerTTL is how long the marker of an ended call stays;
	// without it one marker per call would stay for the bucket's max age.
	dialogPurgeMarkerTTL = time.Minute
	// dialogStoreTimeout bounds one write of a call's record.
	dialogStoreTimeout = 2 * time.Second
	// dialogLoadTimeout bounds reading the stored calls at start.
	dialogLoadTimeout = 10 * time.Second
)

// ErrCorruptDialog: a stored call that cannot be read back.
var ErrCorruptDialog = errors.New("corrupt dialog record")

// DialogsMaxAge is how long a call's record stays after its last change,
// for proxies whose dialog timeout is dialogTimeout (0: the default;
// negative: none): the timeout bounds a call, and a margin lets a proxy
// restarted late still end it.
func DialogsMaxAge(dialogTimeout time.Duration) time.Duration {
	switch {
	case dialogTimeout == 0:
		return defaultDialogTimeout + dialogRecordMargin
	case dialogTimeout < 0:
		return unboundedDialogAge
	}
	return dialogTimeout + dialogRecordMargin
}

// DialogsBucket is the definition of the dialogs bucket: one revision per
// call, records expire maxAge after their last change.
func DialogsBucket(o schema.StreamOptions, maxAge time.Duration) jetstream.KeyValueConfig {
	if o.Replicas < 1 {
		o.Replicas = 1
	}
	return jetstream.KeyValueConfig{
		Bucket:         BucketDialogs,
		Description:    "established calls of the SIP proxies, restored by a restarted proxy",
		History:        1,
		TTL:            maxAge,
		LimitMarkerTTL: dialogPurgeMarkerTTL,
		Storage:        jetstream.FileStorage,
		Replicas:       o.Replicas,
	}
}

// KVDialogs are the calls of one proxy node in the JetStream KV bucket
// BucketDialogs, one JSON value per call.
type KVDialogs struct {
	kv     jetstream.KeyValue
	prefix string // the node's part of the keys, with the dot
}

// NewKVDialogs keeps the calls of node in kv.
func NewKVDialogs(kv jetstream.KeyValue, node string) *KVDialogs {
	return &KVDialogs{kv: kv, prefix: base64.RawURLEncoding.EncodeToString([]byte(node)) + "."}
}

// OpenDialogs opens the dialogs bucket for node, creating it with
// single-node defaults when it does not exist yet. An existing bucket
// keeps its replication; its max age is raised to maxAge when shorter.
func OpenDialogs(ctx context.Context, js jetstream.JetStream, node string, maxAge time.Duration) (*KVDialogs, error) {
	kv, err := js.KeyValue(ctx, BucketDialogs)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, DialogsBucket(schema.DefaultStreamOptions(), maxAge))
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, BucketDialogs)
		}
	}
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		return nil, fmt.Errorf("create dialogs bucket %s (needs nats-server 2.11 or newer): %w", BucketDialogs, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open dialogs bucket %s: %w", BucketDialogs, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("dialogs bucket %s: status: %w", BucketDialogs, err)
	}
	if ttl := st.TTL(); ttl > 0 && ttl < maxAge {
		o := schema.DefaultStreamOptions()
		if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok {
			o.Replicas = bs.StreamInfo().Config.Replicas
		}
		if kv, err = js.UpdateKeyValue(ctx, DialogsBucket(o, maxAge)); err != nil {
			return nil, fmt.Errorf("dialogs bucket %s: raise max age from %v to %v: %w", BucketDialogs, ttl, maxAge, err)
		}
	}
	return NewKVDialogs(kv, node), nil
}

func (s *KVDialogs) key(callID, callerTag string) string {
	return s.prefix + schema.CDRID(callID, callerTag)
}

// Put implements Dialogs.
func (s *KVDialogs) Put(ctx context.Context, rec DialogRecord) error {
	rec.V = dialogRecordVersion
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode dialog %s: %w", rec.CallID, err)
	}
	if _, err := s.kv.Put(ctx, s.key(rec.CallID, rec.CallerTag), data); err != nil {
		return fmt.Errorf("store dialog %s: %w", rec.CallID, err)
	}
	return nil
}

// Delete implements Dialogs. The purge leaves a marker that expires on
// its own.
func (s *KVDialogs) Delete(ctx context.Context, callID, callerTag string) error {
	if err := s.kv.Purge(ctx, s.key(callID, callerTag), jetstream.PurgeTTL(dialogPurgeMarkerTTL)); err != nil {
		return fmt.Errorf("delete dialog %s: %w", callID, err)
	}
	return nil
}

// List implements Dialogs.
func (s *KVDialogs) List(ctx context.Context) ([]DialogRecord, error) {
	w, err := s.kv.WatchFiltered(ctx, []string{s.prefix + "*"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list dialogs: watch %s: %w", s.kv.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	var (
		out  []DialogRecord
		errs []error
	)
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list dialogs: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("list dialogs: watcher of %s closed", s.kv.Bucket())
			}
			if e == nil {
				// Every current value has been delivered.
				return out, errors.Join(errs...)
			}
			var rec DialogRecord
			switch err := json.Unmarshal(e.Value(), &rec); {
			case err != nil:
				errs = append(errs, fmt.Errorf("dialog %s: %v: %w", e.Key(), err, ErrCorruptDialog))
			case rec.V != dialogRecordVersion:
				errs = append(errs, fmt.Errorf("dialog %s: version %d, this build reads %d: %w", e.Key(), rec.V, dialogRecordVersion, ErrCorruptDialog))
			default:
				out = append(out, rec)
			}
		}
	}
}

// record is d as stored. It takes d.mu, then its credit's lock.
func (d *dialog) record() DialogRecord {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec := DialogRecord{
		V: dialogRecordVersion, CallID: d.callID, CallerTag: d.callerTag, CalleeTag: d.calleeTag,
		Account: d.account, Trunk: d.trunk, AnsweredAt: schema.Millis(d.answered),
		Caller: d.caller.record(), Callee: d.callee.record(),
		CallerSeq: d.callerSeq, CalleeSeq: d.calleeSeq,
		SlotKeys: d.slotKeys,
	}
	if d.credit != nil {
		rec.Credit = d.credit.record()
	}
	return rec
}

func (l *leg) record() LegRecord {
	return LegRecord{Target: l.target.String(), Routes: l.routes, Dest: l.dest, Transport: l.transport,
		Listener: l.via.local, From: l.from.Value(), To: l.to.Value()}
}

// restoreLeg is the leg of rec, reached from the listener it was reached
// from before the restart, or from the first of its transport.
func (p *Proxy) restoreLeg(rec LegRecord) (leg, error) {
	l := leg{routes: rec.Routes, dest: rec.Dest, transport: rec.Transport}
	if err := sip.ParseUri(rec.Target, &l.target); err != nil {
		return l, fmt.Errorf("target %q: %v: %w", rec.Target, err, ErrCorruptDialog)
	}
	from := &sip.FromHeader{Params: sip.NewParams()}
	name, err := sip.ParseAddressValue(rec.From, &from.Address, &from.Params)
	if err != nil {
		return l, fmt.Errorf("from %q: %v: %w", rec.From, err, ErrCorruptDialog)
	}
	from.DisplayName = name
	to := &sip.ToHeader{Params: sip.NewParams()}
	if to.DisplayName, err = sip.ParseAddressValue(rec.To, &to.Address, &to.Params); err != nil {
		return l, fmt.Errorf("to %q: %v: %w", rec.To, err, ErrCorruptDialog)
	}
	l.from, l.to = from, to
	for _, ln := range p.listeners {
		if ln.local == rec.Listener && ln.transport == rec.Transport {
			l.via = ln
		}
	}
	if l.via == nil {
		l.via = p.listenerFor(rec.Transport)
	}
	if l.via == nil {
		return l, fmt.Errorf("no %s listener to reach %s: %w", rec.Transport, rec.Dest, errNoListener)
	}
	return l, nil
}

// restoreDialogs takes the calls the store kept over a restart back into
// the dialog table: their timeout re-armed for what is left of it, their
// credit control resumed and their places under the limits taken again.
// A call that cannot be restored is forgotten. It runs once the
// listeners serve, as ending a call needs them.
func (p *Proxy) restoreDialogs(ctx context.Context) {
	store := p.cfg.Dialogs
	if store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, dialogLoadTimeout)
	recs, err := store.List(ctx)
	cancel()
	if err != nil {
		p.log.Error("stored calls not all read: those are not restored", "err", err)
	}
	now := time.Now()
	for _, rec := range recs {
		d, err := p.restoreDialog(rec, now)
		if err != nil {
			p.log.Warn("stored call not restored", "call_id", rec.CallID, "account", rec.Account, "err", err)
			p.dialogs.restoreFailed.Inc()
			ctx, cancel := context.WithTimeout(context.WithoutCancel(p.runCtx), dialogStoreTimeout)
			if err := store.Delete(ctx, rec.CallID, rec.CallerTag); err != nil {
				p.log.Warn("stored call not deleted", "call_id", rec.CallID, "err", err)
			}
			cancel()
			continue
		}
		p.dialogs.restored.Inc()
		p.log.Info("call restored", "call_id", d.callID, "account", d.account, "trunk", d.trunk,
			"talk_time", now.Sub(d.answered).Round(time.Millisecond), "credit", d.credit != nil)
	}
	if len(recs) > 0 {
		p.log.Info("stored calls restored", "calls", len(recs))
	}
}

// restoreDialog rebuilds the call of rec and starts tracking it.
func (p *Proxy) restoreDialog(rec DialogRecord, now time.Time) (*dialog, error) {
	if rec.CallID == "" || rec.CallerTag == "" || rec.CalleeTag == "" {
		return nil, fmt.Errorf("call id or tags missing: %w", ErrCorruptDialog)
	}
	d := &dialog{
		callID: rec.CallID, callerTag: rec.CallerTag, calleeTag: rec.CalleeTag,
		account: rec.Account, trunk: rec.Trunk, answered: time.UnixMilli(rec.AnsweredAt),
		callerSeq: rec.CallerSeq, calleeSeq: rec.CalleeSeq, slotKeys: rec.SlotKeys,
	}
	// The record is in the store: the call's end deletes it.
	d.stored.written = true
	var err error
	if d.caller, err = p.restoreLeg(rec.Caller); err != nil {
		return nil, fmt.Errorf("caller: %w", err)
	}
	if d.callee, err = p.restoreLeg(rec.Callee); err != nil {
		return nil, fmt.Errorf("callee: %w", err)
	}
	if !p.dialogs.add(d) {
		return nil, fmt.Errorf("tracked already")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.slotKeys) > 0 {
		// No maximum: the call is up, whatever the limit is now.
		d.slot, _ = p.cfg.guards.limits.calls.acquire(d.slotKeys, make([]int, len(d.slotKeys)))
	}
	if t := p.cfg.DialogTimeout; t > 0 {
		// Past already: ended at once, with the reason it would have had.
		d.timeout = time.AfterFunc(max(d.answered.Add(t).Sub(now), 0), func() { p.hangUp(d, noteDialogTimeout) })
	}
	if rec.Credit != nil {
		if p.cfg.Credit.Control == nil {
			p.log.Warn("restored call goes on without credit control: credit control is off", "call_id", d.callID, "account", d.account)
		} else {
			d.credit = p.resumeCredit(d, rec.Credit)
		}
	}
	return d, nil
}
