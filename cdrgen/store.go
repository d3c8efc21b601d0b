package cdrgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// purgeMarkerTTL is how long the marker of an ended call stays in the
	// calls bucket. Nothing reads it (the tombstone is in the finished
	// bucket); without a TTL one marker per call would stay for ever.
	purgeMarkerTTL = time.Minute
	// recentCalls bounds each of the two generations of recently finished
	// calls kept in memory, so that redeliveries of a recent batch are
	// answered without asking KV.
	recentCalls = 1 << 16
	// maxInFlight bounds concurrent KV and publish requests of one batch.
	maxInFlight = 64
)

// store keeps the state of calls in two KV buckets with an in-memory cache.
//
// The calls bucket holds open calls and has no TTL: a call may last days.
// Every open call of the correlator's partitions is loaded into memory at
// start, so a key missing from memory is known not to be open.
//
// The finished bucket holds tombstones of ended and failed calls and BYEs
// waiting for their INVITE, and expires them after a TTL: long enough for
// any redelivery or spool replay, short enough to stay small.
//
// One correlator writes a partition's keys at a time, which is what makes
// the cache trustworthy.
type store struct {
	calls    jetstream.KeyValue
	finished jetstream.KeyValue

	open map[string]*callState
	// recent and older are two generations of finished and early calls:
	// when recent is full it becomes older and the old older is dropped.
	recent, older map[string]*callState
}

// stateBuckets names and sizes the state buckets.
type stateBuckets struct {
	calls, finished string
	finishedTTL     time.Duration
	replicas        int
}

// openStore creates or updates the state buckets.
func openStore(ctx context.Context, js jetstream.JetStream, b stateBuckets) (*store, error) {
	calls, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      b.calls,
		Description: "cdrgen: open calls (answered, not ended yet)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    b.replicas,
		// Lets an ended call's purge marker expire (PurgeTTL); keys
		// themselves never expire.
		LimitMarkerTTL: purgeMarkerTTL,
	})
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		return nil, fmt.Errorf("create kv bucket %s (needs nats-server 2.11 or newer): %w", b.calls, err)
	}
	if err != nil {
		return nil, fmt.Errorf("create or update kv bucket %s: %w", b.calls, err)
	}
	finished, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      b.finished,
		Description: "cdrgen: finished calls and BYEs waiting for their INVITE",
		History:     1,
		TTL:         b.finishedTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    b.replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("create or update kv bucket %s: %w", b.finished, err)
	}
	return &store{
		calls:    calls,
		finished: finished,
		open:     map[string]*callState{},
		recent:   map[string]*callState{},
		older:    map[string]*callState{},
	}, nil
}

// load reads the open calls of the given partitions (nil: all) into memory.
func (s *store) load(ctx context.Context, partitions []int) error {
	filters := make([]string, 0, len(partitions))
	for _, p := range partitions {
		filters = append(filters, strconv.Itoa(p)+".*")
	}
	// An empty filter list watches the whole bucket.
	w, err := s.calls.WatchFiltered(ctx, filters, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("watch kv bucket %s: %w", s.calls.Bucket(), err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("load open calls: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("load open calls from %s: watcher closed", s.calls.Bucket())
			}
			if e == nil {
				// All current values have been delivered.
				return nil
			}
			st, err := decodeState(e)
			if err != nil {
				return err
			}
			if st.Phase != phaseOpen {
				return fmt.Errorf("kv %s key %s: phase %q in the calls bucket: %w", s.calls.Bucket(), e.Key(), st.Phase, ErrCorruptState)
			}
			s.open[e.Key()] = st
		}
	}
}

func decodeState(e jetstream.KeyValueEntry) (*callState, error) {
	var st callState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return nil, fmt.Errorf("kv %s key %s: %v: %w", e.Bucket(), e.Key(), err, ErrCorruptState)
	}
	if st.V != stateVersion {
		return nil, fmt.Errorf("kv %s key %s: state version %d, this build reads %d: %w", e.Bucket(), e.Key(), st.V, stateVersion, ErrCorruptState)
	}
	if (st.Phase == phaseOpen && st.CDR == nil) || (st.Phase == phaseEarly && st.Bye == nil) {
		return nil, fmt.Errorf("kv %s key %s: %s call without its data: %w", e.Bucket(), e.Key(), st.Phase, ErrCorruptState)
	}
	return &st, nil
}

// cached is the state of a call when memory knows it. A miss means the
// call is not open; whether it finished is in the finished bucket.
func (s *store) cached(key string) (*callState, bool) {
	if st, ok := s.open[key]; ok {
		return st, true
	}
	if st, ok := s.recent[key]; ok {
		return st, true
	}
	st, ok := s.older[key]
	return st, ok
}

// fetch returns the state of the given calls as it was before the batch,
// asking the finished bucket concurrently for those memory does not know.
// Calls nobody knows are absent from the map.
func (s *store) fetch(ctx context.Context, keys []string) (map[string]*callState, error) {
	known := make(map[string]*callState, len(keys))
	var missing []string
	for _, key := range keys {
		if _, seen := known[key]; seen {
			continue
		}
		if st, ok := s.cached(key); ok {
			known[key] = st
			continue
		}
		known[key] = nil
		missing = append(missing, key)
	}
	found := make([]*callState, len(missing))
	err := forEach(ctx, len(missing), func(ctx context.Context, i int) error {
		e, err := s.finished.Get(ctx, missing[i])
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("get %s from kv %s: %w", missing[i], s.finished.Bucket(), err)
		}
		found[i], err = decodeState(e)
		return err
	})
	if err != nil {
		return nil, err
	}
	for i, key := range missing {
		if found[i] == nil {
			delete(known, key)
		} else {
			known[key] = found[i]
		}
	}
	return known, nil
}

// persist stores a call's new state; prev is its state before the batch.
// A finished call's tombstone is written before its open record goes, so
// that a crash in between leaves a state a redelivery repairs.
func (s *store) persist(ctx context.Context, key string, prev, next *callState) error {
	data, err := json.Marshal(next)
	if err != nil {
		return fmt.Errorf("encode state of %s: %w", key, err)
	}
	if next.Phase == phaseOpen {
		if _, err := s.calls.Put(ctx, key, data); err != nil {
			return fmt.Errorf("put %s in kv %s: %w", key, s.calls.Bucket(), err)
		}
		return nil
	}
	if _, err := s.finished.Put(ctx, key, data); err != nil {
		return fmt.Errorf("put %s in kv %s: %w", key, s.finished.Bucket(), err)
	}
	if prev != nil && prev.Phase == phaseOpen {
		if err := s.calls.Purge(ctx, key, jetstream.PurgeTTL(purgeMarkerTTL)); err != nil {
			return fmt.Errorf("purge %s from kv %s: %w", key, s.calls.Bucket(), err)
		}
	}
	return nil
}

// remember updates memory once a batch's states are durable.
func (s *store) remember(key string, st *callState) {
	if st.Phase == phaseOpen {
		s.open[key] = st
		return
	}
	delete(s.open, key)
	s.recent[key] = st
	if len(s.recent) >= recentCalls {
		s.older, s.recent = s.recent, make(map[string]*callState, recentCalls)
	}
}

// batchBook is the book of one batch: the states fetched before it and the
// ones it changed. Nothing reaches the store until the batch is durable, so
// a failed batch is retried from the same starting point.
type batchBook struct {
	base  map[string]*callState
	next  map[string]*callState
	dirty []string // changed keys, in order of first change
}

func newBatchBook(base map[string]*callState) *batchBook {
	return &batchBook{base: base, next: map[string]*callState{}}
}

func (b *batchBook) get(key string) *callState {
	if st, ok := b.next[key]; ok {
		return st
	}
	return b.base[key]
}

func (b *batchBook) put(key string, st *callState) {
	if _, ok := b.next[key]; !ok {
		b.dirty = append(b.dirty, key)
	}
	b.next[key] = st
}

// forEach runs f for 0..n-1 on up to maxInFlight goroutines and returns the
// first error; after an error the remaining calls are skipped.
func forEach(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		next  atomic.Int64
		once  sync.Once
		first error
		wg    sync.WaitGroup
	)
	for range min(n, maxInFlight) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return first
	}
	// Skipped work because the caller's context ended is an error too.
	if int(next.Load()) < n {
		return ctx.Err()
	}
	return nil
}
