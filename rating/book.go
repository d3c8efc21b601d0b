package rating

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync/atomic"
	"time"

	"github.com/carrier-core/carrier/schema"
)

// bookKeepBack is how far back a Book keeps superseded versions: a CDR
// rated up to a day after a scheduled switch still finds the version its
// call was answered under. Older calls are rerated from the Store.
const bookKeepBack = 24 * time.Hour

// Book is the deck of every plan, kept up to date from the plan bucket:
// an import anywhere reaches every process holding a Book without a
// restart, and a scheduled version takes over at its effective time.
// Readers never wait: decks are loaded aside and swapped in whole.
type Book struct {
	plans atomic.Pointer[map[string][]bookEntry] // per plan, newest version first
}

type bookEntry struct {
	deck *Deck
	info PlanInfo
}

// Deck returns the plan's deck in force now.
func (b *Book) Deck(plan string) (*Deck, PlanInfo, bool) { return b.DeckAt(plan, time.Now()) }

// DeckAt returns the plan's deck in force at t.
func (b *Book) DeckAt(plan string, t time.Time) (*Deck, PlanInfo, bool) {
	m := b.plans.Load()
	if m == nil {
		return nil, PlanInfo{}, false
	}
	for _, e := range (*m)[plan] {
		if e.info.Effective.IsZero() || !e.info.Effective.After(t) {
			return e.deck, e.info, true
		}
	}
	return nil, PlanInfo{}, false
}

// Follow loads every plan's decks, returns once they are loaded, and
// keeps the Book current until ctx ends. A version that fails to load is
// logged and skipped; the plan's other versions stay.
func (s *Store) Follow(ctx context.Context, log *slog.Logger) (*Book, error) {
	if log == nil {
		log = slog.Default()
	}
	w, err := s.plans.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", PlanBucket, err)
	}
	b := &Book{}
	b.plans.Store(&map[string][]bookEntry{})
	// The watcher sends the current entries, then nil, then updates.
	for e := range w.Updates() {
		if e == nil {
			break
		}
		s.refresh(ctx, log, b, e.Key())
	}
	if ctx.Err() != nil {
		w.Stop()
		return nil, ctx.Err()
	}
	go func() {
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					s.refresh(ctx, log, b, e.Key())
				}
			}
		}
	}()
	return b, nil
}

// refresh reloads the versions of plan that can still be in force: the
// newest ones down to the first that took effect over bookKeepBack ago.
func (s *Store) refresh(ctx context.Context, log *slog.Logger, b *Book, plan string) {
	cur := *b.plans.Load()
	next := maps.Clone(cur)
	versions, err := s.Versions(ctx, plan)
	if errors.Is(err, ErrUnknownPlan) {
		delete(next, plan)
		b.plans.Store(&next)
		log.Info("rate plan removed", "plan", plan)
		return
	}
	if err != nil {
		log.Error("rate plan not refreshed, keeping its decks", "plan", plan, "err", err)
		return
	}
	loaded := map[uint64]*Deck{}
	for _, e := range cur[plan] {
		loaded[e.info.Version] = e.deck
	}
	horizon := time.Now().Add(-bookKeepBack)
	var entries []bookEntry
	for _, v := range versions {
		d, ok := loaded[v.Version]
		if !ok {
			if d, _, err = s.Load(ctx, plan, v.Version); err != nil {
				log.Error("rate deck not loaded", "plan", plan, "version", v.Version, "err", err)
				continue
			}
			log.Info("rate plan loaded", "plan", plan, "version", v.Version, "rates", v.Rates, "effective", v.Effective)
		}
		entries = append(entries, bookEntry{deck: d, info: v})
		if v.Effective.IsZero() || v.Effective.Before(horizon) {
			break
		}
	}
	next[plan] = entries
	b.plans.Store(&next)
}

// Authorize answers the prepaid admission question for an account on
// plan: the deck in force at at, then Deck.Authorize.
func (b *Book) Authorize(plan, number string, at time.Time, amount schema.Money, limit time.Duration) (Authorization, PlanInfo, error) {
	d, info, ok := b.DeckAt(plan, at)
	if !ok {
		return Authorization{}, PlanInfo{}, fmt.Errorf("plan %q at %s: %w", plan, at.UTC().Format(time.RFC3339), ErrUnknownPlan)
	}
	a, err := d.Authorize(number, at, amount, limit)
	return a, info, err
}

// Quote prices a call on plan with the deck in force at its answer time.
func (b *Book) Quote(plan, number string, answer time.Time, dur time.Duration) (Quote, PlanInfo, error) {
	d, info, ok := b.DeckAt(plan, answer)
	if !ok {
		return Quote{}, PlanInfo{}, fmt.Errorf("plan %q at %s: %w", plan, answer.UTC().Format(time.RFC3339), ErrUnknownPlan)
	}
	q, err := d.Quote(number, answer, dur)
	return q, info, err
}
