package rating

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/schema"
)

// Bucket names are a contract with running raters: keep them stable.
const (
	// PlanBucket is a KV bucket: key = plan name, value = PlanInfo of the
	// plan's current deck. Each import is a new revision; the revision
	// number is the deck version.
	PlanBucket = "RATE_PLANS"
	// DeckBucket is an object store of validated deck files, one object
	// per version ("PLAN/VERSION-ID"), kept so that old CDRs can be
	// rerated with the deck that priced them.
	DeckBucket = "RATE_DECKS"

	planHistory = 64
)

var (
	// ErrUnknownPlan: no deck was imported under that plan name.
	ErrUnknownPlan = errors.New("unknown rate plan")
	// ErrNotInForce: the plan's only versions are scheduled for later.
	ErrNotInForce = errors.New("no version of the rate plan in force yet")
	// ErrBadPlanName: plan names are letters, digits, '-' and '_'.
	ErrBadPlanName = errors.New("bad rate plan name")
)

var planName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// PlanSpec is how a deck file is read, stored with it so that every
// rater reads it the same way.
type PlanSpec struct {
	Zone      string    // IANA zone of the timetable and of date-only effective dates; "" is UTC
	Timetable string    // timetable CSV (band,days,from,to); "" is the default band only
	Rounding  *Rounding // of call totals; nil is DefaultRounding
	// Effective schedules the version: until then the previous version
	// stays in force. Zero: in force at once, and for any time (a
	// corrected deck also reprices past calls when they are rerated).
	Effective time.Time
}

// PlanInfo describes one stored version of a plan's deck.
type PlanInfo struct {
	Plan       string    `json:"plan"`
	Version    uint64    `json:"version"` // KV revision of the import
	Object     string    `json:"object"`  // deck file in DeckBucket
	SHA256     string    `json:"sha256"`
	Bytes      int64     `json:"bytes"`
	Rates      int       `json:"rates"`
	Prefixes   int       `json:"prefixes"`
	ImportedAt time.Time `json:"imported_at"`
	Zone       string    `json:"zone,omitempty"`
	Timetable  string    `json:"timetable,omitempty"`
	Decimals   int       `json:"decimals"`
	Rounding   string    `json:"rounding"`
	Effective  time.Time `json:"effective,omitzero"`
}

// Spec is the PlanSpec the version was imported with.
func (p PlanInfo) Spec() (PlanSpec, error) {
	mode, err := schema.ParseRoundingMode(p.Rounding)
	if err != nil {
		return PlanSpec{}, err
	}
	return PlanSpec{Zone: p.Zone, Timetable: p.Timetable, Rounding: &Rounding{Decimals: p.Decimals, Mode: mode}, Effective: p.Effective}, nil
}

// Config turns the spec into the Config ReadDeck needs.
func (s PlanSpec) Config() (Config, error) {
	loc := time.UTC
	if s.Zone != "" {
		var err error
		if loc, err = time.LoadLocation(s.Zone); err != nil {
			return Config{}, fmt.Errorf("time zone %q: %w", s.Zone, err)
		}
	}
	tt := NewTimetable(loc)
	if strings.TrimSpace(s.Timetable) != "" {
		var err error
		if tt, err = ReadTimetable(strings.NewReader(s.Timetable), loc); err != nil {
			return Config{}, err
		}
	}
	return Config{Timetable: tt, Rounding: s.Rounding}, nil
}

// Store keeps rate decks in JetStream: files in an object store, the
// current version of each plan in a KV bucket.
type Store struct {
	plans jetstream.KeyValue
	decks jetstream.ObjectStore
}

// NewStore opens the buckets, creating them (file storage) if needed.
func NewStore(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	plans, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: PlanBucket, Description: "rate plans: current deck version", History: planHistory, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("rate plan bucket %s: %w", PlanBucket, err)
	}
	decks, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: DeckBucket, Description: "rate deck files, one object per version", Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("rate deck store %s: %w", DeckBucket, err)
	}
	return &Store{plans: plans, decks: decks}, nil
}

// Import validates a deck file and makes it the plan's current version
// in one step: the file streams into the object store while it is
// parsed, and only a valid file is then published in the plan bucket
// (with an optimistic-concurrency update, so two imports never silently
// overwrite each other). An invalid file leaves the plan untouched and
// returns the *DeckError.
func (s *Store) Import(ctx context.Context, plan string, r io.Reader, spec PlanSpec) (PlanInfo, *Deck, error) {
	if !planName.MatchString(plan) {
		return PlanInfo{}, nil, fmt.Errorf("%q: %w", plan, ErrBadPlanName)
	}
	cfg, err := spec.Config()
	if err != nil {
		return PlanInfo{}, nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return PlanInfo{}, nil, err
	}
	object := plan + "/" + id.String()
	pr, pw := io.Pipe()
	put := make(chan error, 1)
	go func() {
		_, err := s.decks.Put(ctx, jetstream.ObjectMeta{Name: object, Description: "rate deck of plan " + plan}, pr)
		pr.CloseWithError(err) // unblock the parser if the store failed
		put <- err
	}()
	sum := sha256.New()
	counted := &countingWriter{}
	deck, err := ReadDeck(io.TeeReader(r, io.MultiWriter(pw, sum, counted)), cfg)
	if err != nil {
		pw.CloseWithError(err)
		<-put
		_ = s.decks.Delete(context.WithoutCancel(ctx), object)
		return PlanInfo{}, nil, err
	}
	pw.Close()
	if err := <-put; err != nil {
		return PlanInfo{}, nil, fmt.Errorf("store deck %s: %w", object, err)
	}
	info := PlanInfo{
		Plan: plan, Object: object, SHA256: hex.EncodeToString(sum.Sum(nil)), Bytes: counted.n,
		Rates: deck.Len(), Prefixes: deck.Prefixes(), ImportedAt: time.Now().UTC(),
		Zone: spec.Zone, Timetable: spec.Timetable, Decimals: deck.rounding.Decimals, Rounding: deck.rounding.Mode.String(),
		Effective: spec.Effective,
	}
	val, err := json.Marshal(info)
	if err != nil {
		return PlanInfo{}, nil, err
	}
	var rev uint64
	cur, err := s.plans.Get(ctx, plan)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		rev, err = s.plans.Create(ctx, plan, val)
	case err == nil:
		rev, err = s.plans.Update(ctx, plan, val, cur.Revision())
	}
	if err != nil {
		_ = s.decks.Delete(context.WithoutCancel(ctx), object)
		return PlanInfo{}, nil, fmt.Errorf("publish plan %s: %w", plan, err)
	}
	info.Version = rev
	return info, deck, nil
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// Info returns a plan's version (0: the current one).
func (s *Store) Info(ctx context.Context, plan string, version uint64) (PlanInfo, error) {
	var (
		e   jetstream.KeyValueEntry
		err error
	)
	if version == 0 {
		e, err = s.plans.Get(ctx, plan)
	} else {
		e, err = s.plans.GetRevision(ctx, plan, version)
	}
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return PlanInfo{}, fmt.Errorf("%q: %w", plan, ErrUnknownPlan)
	}
	if err != nil {
		return PlanInfo{}, fmt.Errorf("plan %s: %w", plan, err)
	}
	var info PlanInfo
	if err := json.Unmarshal(e.Value(), &info); err != nil {
		return PlanInfo{}, fmt.Errorf("plan %s version %d: %w", plan, e.Revision(), err)
	}
	info.Version = e.Revision()
	return info, nil
}

// Load reads a plan's deck (version 0: the current one).
func (s *Store) Load(ctx context.Context, plan string, version uint64) (*Deck, PlanInfo, error) {
	info, err := s.Info(ctx, plan, version)
	if err != nil {
		return nil, PlanInfo{}, err
	}
	spec, err := info.Spec()
	if err != nil {
		return nil, PlanInfo{}, err
	}
	cfg, err := spec.Config()
	if err != nil {
		return nil, PlanInfo{}, err
	}
	obj, err := s.decks.Get(ctx, info.Object)
	if err != nil {
		return nil, PlanInfo{}, fmt.Errorf("deck %s of plan %s: %w", info.Object, plan, err)
	}
	defer obj.Close()
	deck, err := ReadDeck(obj, cfg)
	if err != nil {
		return nil, PlanInfo{}, fmt.Errorf("deck %s of plan %s: %w", info.Object, plan, err)
	}
	return deck, info, nil
}

// Plans lists the current version of every plan, by name.
func (s *Store) Plans(ctx context.Context) ([]PlanInfo, error) {
	keys, err := s.plans.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list plans: %w", err)
	}
	out := make([]PlanInfo, 0, len(keys))
	for _, k := range keys {
		info, err := s.Info(ctx, k, 0)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b PlanInfo) int { return strings.Compare(a.Plan, b.Plan) })
	return out, nil
}

// Versions lists a plan's stored versions, newest first, back to its
// last deletion.
func (s *Store) Versions(ctx context.Context, plan string) ([]PlanInfo, error) {
	h, err := s.plans.History(ctx, plan)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, fmt.Errorf("%q: %w", plan, ErrUnknownPlan)
	}
	if err != nil {
		return nil, fmt.Errorf("plan %s history: %w", plan, err)
	}
	var out []PlanInfo
	for i := len(h) - 1; i >= 0; i-- {
		e := h[i]
		if e.Operation() != jetstream.KeyValuePut {
			break
		}
		var info PlanInfo
		if err := json.Unmarshal(e.Value(), &info); err != nil {
			return nil, fmt.Errorf("plan %s version %d: %w", plan, e.Revision(), err)
		}
		info.Version = e.Revision()
		out = append(out, info)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%q: %w", plan, ErrUnknownPlan)
	}
	return out, nil
}

// inForce picks from versions, newest first, the one in force at t: the
// newest whose Effective has come (or is zero).
func inForce(versions []PlanInfo, t time.Time) (PlanInfo, bool) {
	for _, v := range versions {
		if v.Effective.IsZero() || !v.Effective.After(t) {
			return v, true
		}
	}
	return PlanInfo{}, false
}

// LoadAt reads the version of a plan in force at t.
func (s *Store) LoadAt(ctx context.Context, plan string, t time.Time) (*Deck, PlanInfo, error) {
	vs, err := s.Versions(ctx, plan)
	if err != nil {
		return nil, PlanInfo{}, err
	}
	v, ok := inForce(vs, t)
	if !ok {
		return nil, PlanInfo{}, fmt.Errorf("plan %s at %s (first version from %s): %w", plan, t.UTC().Format(time.RFC3339), vs[len(vs)-1].Effective.UTC().Format(time.RFC3339), ErrNotInForce)
	}
	return s.Load(ctx, plan, v.Version)
}

// Export writes the deck file of a plan's version (0: the current one)
// exactly as it was imported.
func (s *Store) Export(ctx context.Context, plan string, version uint64, w io.Writer) (PlanInfo, error) {
	info, err := s.Info(ctx, plan, version)
	if err != nil {
		return PlanInfo{}, err
	}
	obj, err := s.decks.Get(ctx, info.Object)
	if err != nil {
		return PlanInfo{}, fmt.Errorf("deck %s of plan %s: %w", info.Object, plan, err)
	}
	defer obj.Close()
	if _, err := io.Copy(w, obj); err != nil {
		return PlanInfo{}, fmt.Errorf("export deck %s of plan %s: %w", info.Object, plan, err)
	}
	return info, nil
}

// Delete takes a plan out of use: it is no longer listed, loaded or
// followed. Its deck files stay in DeckBucket, so the prices of calls
// already rated with it can still be explained.
func (s *Store) Delete(ctx context.Context, plan string) error {
	if _, err := s.Info(ctx, plan, 0); err != nil {
		return err
	}
	if err := s.plans.Delete(ctx, plan); err != nil {
		return fmt.Errorf("delete plan %s: %w", plan, err)
	}
	return nil
}
