package eventlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/schema"
)

var (
	// ErrNotProvisioned: no object of that kind has that id.
	ErrNotProvisioned = errors.New("not provisioned")
	// ErrProvisionConflict: the object changed between read and write;
	// read it again and retry.
	ErrProvisionConflict = errors.New("provisioning changed concurrently")
)

// ProvisionStore is the typed view of the provisioning bucket: accounts,
// trunks and gateways as JSON objects under "<kind>.<id>".
type ProvisionStore struct {
	kv  jetstream.KeyValue
	log *slog.Logger
}

// OpenProvisionStore opens the provisioning bucket, creating it with the
// single-node defaults when it does not exist yet. An existing bucket is
// used as it is, so a client never changes a cluster's replication.
func OpenProvisionStore(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*ProvisionStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kv, err := js.KeyValue(ctx, schema.BucketProvisioning)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, schema.ProvisioningBucket(schema.DefaultStreamOptions()))
		if errors.Is(err, jetstream.ErrBucketExists) {
			// Another client created it at the same moment.
			kv, err = js.KeyValue(ctx, schema.BucketProvisioning)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open provisioning bucket %s: %w", schema.BucketProvisioning, err)
	}
	return &ProvisionStore{kv: kv, log: log}, nil
}

// Accounts, Trunks, Gateways and Routes are the store's collections.
func (s *ProvisionStore) Accounts() Collection[schema.Account] { return Collection[schema.Account]{s} }
func (s *ProvisionStore) Trunks() Collection[schema.Trunk]     { return Collection[schema.Trunk]{s} }
func (s *ProvisionStore) Gateways() Collection[schema.Gateway] { return Collection[schema.Gateway]{s} }
func (s *ProvisionStore) Routes() Collection[schema.Route]     { return Collection[schema.Route]{s} }

// Subscribers is the collection of the SIP users of our domains.
func (s *ProvisionStore) Subscribers() Collection[schema.Subscriber] {
	return Collection[schema.Subscriber]{s}
}

// DialPlans and DIDs are the trunks' number normalisation and the
// inbound numbers.
func (s *ProvisionStore) DialPlans() Collection[schema.DialPlan] {
	return Collection[schema.DialPlan]{s}
}
func (s *ProvisionStore) DIDs() Collection[schema.DID] { return Collection[schema.DID]{s} }

// Suppliers is the collection of who the gateways belong to.
func (s *ProvisionStore) Suppliers() Collection[schema.Supplier] {
	return Collection[schema.Supplier]{s}
}

// Collection is one kind of object in the store.
type Collection[T schema.Object] struct{ s *ProvisionStore }

func kindOf[T schema.Object]() schema.Kind {
	var zero T
	return zero.ObjectKind()
}

// Change is what a Put did.
type Change string

const (
	Unchanged Change = "unchanged"
	Created   Change = "created"
	Updated   Change = "updated"
)

// Put validates obj and stores it. Putting an object equal to the stored
// one writes nothing (Unchanged), so applying the same provisioning twice
// leaves the bucket and its watchers alone. Writes are conditional on the
// revision read, so a concurrent change is never overwritten unseen. Put
// checks the object alone; the rules between objects (a trunk's account,
// sources claimed twice) are checked by Apply, or by the caller with
// schema.Provisioning.CheckTrunk.
func (c Collection[T]) Put(ctx context.Context, obj T) (Change, error) {
	if err := obj.Validate(); err != nil {
		return Unchanged, err
	}
	key := obj.ObjectKind().Key(obj.ObjectID())
	data, err := json.Marshal(obj)
	if err != nil {
		return Unchanged, fmt.Errorf("encode %s: %w", key, err)
	}
	cur, err := c.s.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		// Create fails if someone else created it meanwhile; a deleted key
		// can be created again.
		if _, err := c.s.kv.Create(ctx, key, data); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				return Unchanged, fmt.Errorf("put %s: %w", key, ErrProvisionConflict)
			}
			return Unchanged, fmt.Errorf("put %s: %w", key, err)
		}
		return Created, nil
	case err != nil:
		return Unchanged, fmt.Errorf("read %s: %w", key, err)
	}
	if sameJSON(cur.Value(), data) {
		return Unchanged, nil
	}
	if _, err := c.s.kv.Update(ctx, key, data, cur.Revision()); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Unchanged, fmt.Errorf("put %s: %w", key, ErrProvisionConflict)
		}
		return Unchanged, fmt.Errorf("put %s: %w", key, err)
	}
	return Updated, nil
}

// sameJSON compares a stored value with a new encoding; values written by
// another tool may differ in layout only.
func sameJSON(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}

// Get reads one object; ErrNotProvisioned when there is none.
func (c Collection[T]) Get(ctx context.Context, id string) (T, error) {
	var obj T
	key := kindOf[T]().Key(id)
	e, err := c.s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return obj, fmt.Errorf("%s %s: %w", kindOf[T](), id, ErrNotProvisioned)
	}
	if err != nil {
		return obj, fmt.Errorf("read %s: %w", key, err)
	}
	if err := json.Unmarshal(e.Value(), &obj); err != nil {
		return obj, fmt.Errorf("decode %s: %w", key, err)
	}
	return obj, nil
}

// List reads every object of the kind, in id order.
func (c Collection[T]) List(ctx context.Context) ([]T, error) {
	p, err := c.s.Load(ctx)
	if err != nil {
		return nil, err
	}
	var out []T
	for _, v := range objects[T](p) {
		out = append(out, v)
	}
	return out, nil
}

// objects is the snapshot's objects of kind T in id order.
func objects[T schema.Object](p *schema.Provisioning) []T {
	var m map[string]T
	switch any(m).(type) {
	case map[string]schema.Account:
		m = any(p.Accounts).(map[string]T)
	case map[string]schema.Trunk:
		m = any(p.Trunks).(map[string]T)
	case map[string]schema.Gateway:
		m = any(p.Gateways).(map[string]T)
	case map[string]schema.Route:
		m = any(p.Routes).(map[string]T)
	case map[string]schema.Subscriber:
		m = any(p.Subscribers).(map[string]T)
	case map[string]schema.DialPlan:
		m = any(p.DialPlans).(map[string]T)
	case map[string]schema.DID:
		m = any(p.DIDs).(map[string]T)
	case map[string]schema.Supplier:
		m = any(p.Suppliers).(map[string]T)
	}
	out := make([]T, 0, len(m))
	for _, id := range schema.SortedIDs(m) {
		out = append(out, m[id])
	}
	return out
}

// Delete removes an object; ErrNotProvisioned when there is none.
func (c Collection[T]) Delete(ctx context.Context, id string) error {
	key := kindOf[T]().Key(id)
	e, err := c.s.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%s %s: %w", kindOf[T](), id, ErrNotProvisioned)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if err := c.s.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// Applied is what Apply did to one object.
type Applied struct {
	Kind   schema.Kind `json:"kind"`
	ID     string      `json:"id"`
	Change Change      `json:"change"`
}

// Apply creates or updates every object of set. It checks the whole set
// against the stored provisioning first and writes nothing when anything
// is wrong (the error names each bad entry). Accounts, suppliers and
// gateways are written before the gateways, trunks and routes that need
// them, so a watcher never sees a trunk without its account, a gateway
// without its supplier or a route without its gateways.
// Objects the set does not name are left as they are.
func (s *ProvisionStore) Apply(ctx context.Context, set schema.ProvisionSet) ([]Applied, error) {
	if _, err := s.Plan(ctx, set); err != nil {
		return nil, err
	}
	out := make([]Applied, 0, set.Len())
	record := func(kind schema.Kind, id string, ch Change, err error) error {
		if err != nil {
			return fmt.Errorf("apply %s %s (after %d of %d objects): %w", kind, id, len(out), set.Len(), err)
		}
		out = append(out, Applied{Kind: kind, ID: id, Change: ch})
		return nil
	}
	for _, a := range set.Accounts {
		ch, err := s.Accounts().Put(ctx, a)
		if err := record(schema.KindAccount, a.ID, ch, err); err != nil {
			return out, err
		}
	}
	for _, sup := range set.Suppliers {
		ch, err := s.Suppliers().Put(ctx, sup)
		if err := record(schema.KindSupplier, sup.ID, ch, err); err != nil {
			return out, err
		}
	}
	for _, g := range set.Gateways {
		ch, err := s.Gateways().Put(ctx, g)
		if err := record(schema.KindGateway, g.ID, ch, err); err != nil {
			return out, err
		}
	}
	for _, d := range set.DialPlans {
		ch, err := s.DialPlans().Put(ctx, d)
		if err := record(schema.KindDialPlan, d.ID, ch, err); err != nil {
			return out, err
		}
	}
	for _, t := range set.Trunks {
		ch, err := s.Trunks().Put(ctx, t)
		if err := record(schema.KindTrunk, t.ID, ch, err); err != nil {
			return out, err
		}
	}
	for _, r := range set.Routes {
		ch, err := s.Routes().Put(ctx, r)
		if err := record(schema.KindRoute, r.ID, ch, err); err != nil {
			return out, err
		}
	}
	for _, sub := range set.Subscribers {
		ch, err := s.Subscribers().Put(ctx, sub)
		if err := record(schema.KindSubscriber, sub.ID, ch, err); err != nil {
			return out, err
		}
	}
	for _, d := range set.DIDs {
		ch, err := s.DIDs().Put(ctx, d)
		if err := record(schema.KindDID, d.Number, ch, err); err != nil {
			return out, err
		}
	}
	return out, nil
}

// Plan checks set as Apply does and says what Apply would do to each
// object, in the order Apply writes them, without writing anything.
func (s *ProvisionStore) Plan(ctx context.Context, set schema.ProvisionSet) ([]Applied, error) {
	cur, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := set.Merge(cur); err != nil {
		return nil, err
	}
	out := make([]Applied, 0, set.Len())
	for _, a := range set.Accounts {
		out = append(out, Applied{schema.KindAccount, a.ID, planned(cur.Accounts, a)})
	}
	for _, sup := range set.Suppliers {
		out = append(out, Applied{schema.KindSupplier, sup.ID, planned(cur.Suppliers, sup)})
	}
	for _, g := range set.Gateways {
		out = append(out, Applied{schema.KindGateway, g.ID, planned(cur.Gateways, g)})
	}
	for _, d := range set.DialPlans {
		out = append(out, Applied{schema.KindDialPlan, d.ID, planned(cur.DialPlans, d)})
	}
	for _, t := range set.Trunks {
		out = append(out, Applied{schema.KindTrunk, t.ID, planned(cur.Trunks, t)})
	}
	for _, r := range set.Routes {
		out = append(out, Applied{schema.KindRoute, r.ID, planned(cur.Routes, r)})
	}
	for _, sub := range set.Subscribers {
		out = append(out, Applied{schema.KindSubscriber, sub.ID, planned(cur.Subscribers, sub)})
	}
	for _, d := range set.DIDs {
		out = append(out, Applied{schema.KindDID, d.Number, planned(cur.DIDs, d)})
	}
	return out, nil
}

// planned is the change putting obj into m would make, judged as Put
// judges it: by the stored JSON.
func planned[T schema.Object](m map[string]T, obj T) Change {
	old, ok := m[obj.ObjectID()]
	if !ok {
		return Created
	}
	a, errA := json.Marshal(old)
	b, errB := json.Marshal(obj)
	if errA == nil && errB == nil && sameJSON(a, b) {
		return Unchanged
	}
	return Updated
}

// Load reads the whole provisioning at once.
func (s *ProvisionStore) Load(ctx context.Context) (*schema.Provisioning, error) {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("read provisioning: %w", err)
	}
	defer func() { _ = w.Stop() }()
	p := schema.NewProvisioning()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("read provisioning: watcher closed: %w", ctx.Err())
			}
			if e == nil {
				p.At = time.Now()
				return p, nil
			}
			s.fold(p, e)
		case <-ctx.Done():
			return nil, fmt.Errorf("read provisioning: %w", ctx.Err())
		}
	}
}

// fold applies one bucket entry to p. Entries that are not provisioning
// objects, or not valid ones (written by hand or by a newer build), are
// skipped with a warning: one bad object must not take the rest down.
func (s *ProvisionStore) fold(p *schema.Provisioning, e jetstream.KeyValueEntry) {
	p.Revision = max(p.Revision, e.Revision())
	kind, id, ok := schema.ParseKey(e.Key())
	if !ok {
		s.log.Warn("provisioning: ignoring unknown key", "key", e.Key())
		return
	}
	del := e.Operation() != jetstream.KeyValuePut
	var err error
	switch kind {
	case schema.KindAccount:
		err = foldOne(p.Accounts, id, del, e.Value())
	case schema.KindTrunk:
		err = foldOne(p.Trunks, id, del, e.Value())
	case schema.KindGateway:
		err = foldOne(p.Gateways, id, del, e.Value())
	case schema.KindRoute:
		err = foldOne(p.Routes, id, del, e.Value())
	case schema.KindSubscriber:
		err = foldOne(p.Subscribers, id, del, e.Value())
	case schema.KindDialPlan:
		err = foldOne(p.DialPlans, id, del, e.Value())
	case schema.KindDID:
		err = foldOne(p.DIDs, id, del, e.Value())
	case schema.KindSupplier:
		err = foldOne(p.Suppliers, id, del, e.Value())
	}
	if err != nil {
		s.log.Warn("provisioning: ignoring invalid object", "key", e.Key(), "revision", e.Revision(), "err", err)
	}
}

func foldOne[T schema.Object](m map[string]T, id string, del bool, data []byte) error {
	if del {
		delete(m, id)
		return nil
	}
	var obj T
	if err := json.Unmarshal(data, &obj); err != nil {
		delete(m, id)
		return err
	}
	if err := obj.Validate(); err != nil {
		delete(m, id)
		return err
	}
	if obj.ObjectID() != id {
		delete(m, id)
		return fmt.Errorf("object id %q under key id %q: %w", obj.ObjectID(), id, schema.ErrInvalidObject)
	}
	m[id] = obj
	return nil
}

// ProvisionWatcher keeps a live snapshot of the provisioning. Each change
// in the bucket produces a new immutable snapshot; readers take the
// current one without locking the writer out.
type ProvisionWatcher struct {
	store   *ProvisionStore
	mu      sync.Mutex
	cur     *schema.Provisioning
	ready   chan struct{}
	changed chan struct{}
	done    chan struct{}
	cancel  context.CancelFunc
	err     error
}

// Watch starts watching the bucket until ctx ends or Stop is called.
// Ready is closed once the current contents are loaded; Changed is
// signalled after every new snapshot (signals coalesce). While JetStream
// is away the last snapshot stays in force; after a broker restart the
// watch resumes once nats.go notices its consumer is gone (missed
// heartbeats, some ten seconds), and misses no change.
func (s *ProvisionStore) Watch(ctx context.Context) (*ProvisionWatcher, error) {
	ctx, cancel := context.WithCancel(ctx)
	kw, err := s.kv.WatchAll(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watch provisioning: %w", err)
	}
	w := &ProvisionWatcher{
		store:   s,
		ready:   make(chan struct{}),
		changed: make(chan struct{}, 1),
		done:    make(chan struct{}),
		cancel:  cancel,
	}
	go w.run(ctx, kw)
	return w, nil
}

func (w *ProvisionWatcher) run(ctx context.Context, kw jetstream.KeyWatcher) {
	defer close(w.done)
	defer func() { _ = kw.Stop() }()
	next := schema.NewProvisioning()
	loaded := false
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case e, ok = <-kw.Updates():
		case <-ctx.Done():
			return
		}
		if !ok {
			if ctx.Err() == nil {
				w.mu.Lock()
				w.err = errors.New("provisioning watcher closed by the server")
				w.mu.Unlock()
				w.store.log.Error("provisioning watch ended; the last snapshot stays in force")
			}
			return
		}
		if e == nil {
			loaded = true
			w.publish(next)
			continue
		}
		if loaded && next == w.Snapshot() {
			// Copy on the first change after a publish: published
			// snapshots are never modified.
			next = next.Clone()
		}
		w.store.fold(next, e)
		if loaded && len(kw.Updates()) == 0 {
			// A burst (an apply of many objects) makes one snapshot.
			w.publish(next)
		}
	}
}

func (w *ProvisionWatcher) publish(p *schema.Provisioning) {
	p.At = time.Now()
	w.mu.Lock()
	first := w.cur == nil
	w.cur = p
	w.mu.Unlock()
	if first {
		close(w.ready)
	}
	select {
	case w.changed <- struct{}{}:
	default:
	}
	w.store.log.Debug("provisioning snapshot", "revision", p.Revision, "accounts", len(p.Accounts), "trunks", len(p.Trunks), "gateways", len(p.Gateways), "routes", len(p.Routes))
}

// Snapshot is the current provisioning, nil until it is loaded. The
// caller must not modify it.
func (w *ProvisionWatcher) Snapshot() *schema.Provisioning {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur
}

// Ready is closed once the first snapshot is loaded.
func (w *ProvisionWatcher) Ready() <-chan struct{} { return w.ready }

// Changed is signalled after each new snapshot.
func (w *ProvisionWatcher) Changed() <-chan struct{} { return w.changed }

// Done is closed when the watcher has stopped.
func (w *ProvisionWatcher) Done() <-chan struct{} { return w.done }

// Err says why the watcher stopped on its own; nil otherwise.
func (w *ProvisionWatcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Stop ends the watch and waits for it.
func (w *ProvisionWatcher) Stop() {
	w.cancel()
	<-w.done
}
