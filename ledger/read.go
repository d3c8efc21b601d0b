package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/schema"
)

// Balance reads the account's balance from the projection. When the
// projection has no entry (never written, or deleted and not rebuilt) the
// account's events are folded instead and the entry is written back.
func (l *Ledger) Balance(ctx context.Context, account string) (Balance, error) {
	if err := schema.CheckAccountID(account); err != nil {
		return Balance{}, fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	e, err := l.kv.Get(ctx, account)
	if err == nil {
		var b Balance
		if err := json.Unmarshal(e.Value(), &b); err != nil {
			return Balance{}, fmt.Errorf("decode balance of %s: %w", account, err)
		}
		return b, nil
	}
	if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return Balance{}, fmt.Errorf("read balance of %s: %w", account, err)
	}
	b, err := l.Fold(ctx, account)
	if err != nil {
		return Balance{}, err
	}
	if _, err := l.putProjection(ctx, b, false, 0); err != nil {
		l.log.Warn("ledger: balance projection not written", "account", account, "err", err)
	}
	return b, nil
}

// Balances reads every account's balance from the projection, in id order.
func (l *Ledger) Balances(ctx context.Context) ([]Balance, error) {
	keys, err := l.projectionKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Balance, 0, len(keys))
	for _, k := range keys {
		b, err := l.Balance(ctx, k)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Fold computes the account's balance from its events, ignoring the
// projection: the source of truth, for audits and checks.
func (l *Ledger) Fold(ctx context.Context, account string) (Balance, error) {
	if err := schema.CheckAccountID(account); err != nil {
		return Balance{}, fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	st, err := l.fold(ctx, account)
	if err != nil {
		return Balance{}, err
	}
	if !st.opened {
		return Balance{}, fmt.Errorf("account %s: %w", account, ErrUnknownAccount)
	}
	return st.clone(), nil
}

// fold reads all of an account's events into a fresh state.
func (l *Ledger) fold(ctx context.Context, account string) (*state, error) {
	st := newState(account)
	err := l.scan(ctx, schema.LedgerSubject(account), func(ev schema.Envelope, _ string, seq uint64) error {
		_, err := st.apply(ev, seq)
		return err
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// catchUp folds into st the account's events after st.Seq, one direct
// read each: after a conflict there are few of them.
func (l *Ledger) catchUp(ctx context.Context, st *state) error {
	subject := schema.LedgerSubject(st.Account)
	for {
		msg, err := l.stream.GetMsg(ctx, st.Seq+1, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s after seq %d: %w", subject, st.Seq, err)
		}
		ev, err := schema.ParseEnvelope(msg.Data)
		if err != nil {
			return fmt.Errorf("%s seq %d: %w: %w", subject, msg.Sequence, err, ErrCorruptLog)
		}
		if _, err := st.apply(ev, msg.Sequence); err != nil {
			return err
		}
	}
}

// scan calls fn for every event on the subjects filter matches, in stream
// order, up to the last one stored when it started.
func (l *Ledger) scan(ctx context.Context, filter string, fn func(ev schema.Envelope, subject string, seq uint64) error) error {
	last, err := l.lastSeq(ctx, filter)
	if err != nil || last == 0 {
		return err
	}
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{filter},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("read %s: %w", filter, err)
	}
	defer l.dropConsumer(cons)
	for {
		// No wait: a fetch that waits for a full batch would idle for the
		// whole expiry on every short account.
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return fmt.Errorf("read %s: %w", filter, err)
		}
		done, n := false, 0
		for msg := range batch.Messages() {
			n++
			md, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("read %s: %w", filter, err)
			}
			seq := md.Sequence.Stream
			ev, err := schema.ParseEnvelope(msg.Data())
			if err != nil {
				return fmt.Errorf("%s seq %d: %w: %w", msg.Subject(), seq, err, ErrCorruptLog)
			}
			if err := fn(ev, msg.Subject(), seq); err != nil {
				return err
			}
			done = done || seq >= last
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("read %s: %w", filter, err)
		}
		if done {
			return nil
		}
		if n == 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("read %s: %w", filter, ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// dropConsumer deletes a finished scan's consumer at once rather than
// leaving it to the server's inactivity cleanup.
func (l *Ledger) dropConsumer(cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := l.stream.DeleteConsumer(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		l.log.Debug("ledger: scan consumer left to the server's cleanup", "consumer", info.Name, "err", err)
	}
}

// lastSeq is the sequence of the last event on filter's subjects, 0 when
// there is none.
func (l *Ledger) lastSeq(ctx context.Context, filter string) (uint64, error) {
	msg, err := l.stream.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read last event of %s: %w", filter, err)
	}
	return msg.Sequence, nil
}

// Entry is one event of an account's history, with the balance it left.
type Entry struct {
	Seq  uint64    `json:"seq"`
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	Type string    `json:"type"`
	// Amount is the event's amount as it moves the balance (a debit is
	// negative); for reservations, releases and credit limits it is the
	// amount held, given back or allowed.
	Amount schema.Money `json:"amount"`
	// Reference is the top-up reference, debited CDR, call id or reason.
	Reference string       `json:"reference,omitempty"`
	Balance   schema.Money `json:"balance"`
	Available schema.Money `json:"available"`
	// Ignored: the fold skipped the event, a repeat of a reference or CDR
	// that was applied before.
	Ignored bool `json:"ignored,omitempty"`
}

// History is the account's events with time in [from, to) (a zero bound
// is open), each with the balance it left.
func (l *Ledger) History(ctx context.Context, account string, from, to time.Time) ([]Entry, error) {
	if err := schema.CheckAccountID(account); err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	st := newState(account)
	out := []Entry{}
	err := l.scan(ctx, schema.LedgerSubject(account), func(ev schema.Envelope, _ string, seq uint64) error {
		applied, err := st.apply(ev, seq)
		if err != nil {
			return err
		}
		at := schema.FromMillis(ev.Time)
		if (!from.IsZero() && at.Before(from)) || (!to.IsZero() && !at.Before(to)) {
			return nil
		}
		e := Entry{Seq: seq, ID: ev.ID, Time: at, Type: ev.Type, Balance: st.Balance.Balance, Available: st.Available, Ignored: !applied}
		e.Amount, e.Reference = describe(ev)
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !st.opened {
		return nil, fmt.Errorf("account %s: %w", account, ErrUnknownAccount)
	}
	return out, nil
}

// describe is an event's amount and reference for History; the event was
// decoded once by the fold, so errors cannot happen here.
func describe(ev schema.Envelope) (schema.Money, string) {
	switch ev.Type {
	case schema.TypeAccountOpened:
		var p schema.AccountOpened
		_ = json.Unmarshal(ev.Data, &p)
		return schema.Money(p.CreditLimit), string(p.Kind) + " " + p.Currency
	case schema.TypeCredited:
		var p schema.Credited
		_ = json.Unmarshal(ev.Data, &p)
		return schema.Money(p.Amount), p.Reference
	case schema.TypeDebited:
		var p schema.Debited
		_ = json.Unmarshal(ev.Data, &p)
		return -schema.Money(p.Amount), p.CDR
	case schema.TypeReserved:
		var p schema.Reserved
		_ = json.Unmarshal(ev.Data, &p)
		return schema.Money(p.Amount), p.CallID
	case schema.TypeReleased:
		var p schema.Released
		_ = json.Unmarshal(ev.Data, &p)
		return schema.Money(p.Amount), p.CallID
	case schema.TypeAdjusted:
		var p schema.Adjusted
		_ = json.Unmarshal(ev.Data, &p)
		return schema.Money(p.Amount), p.Reason
	case schema.TypeCreditLimitChanged:
		var p schema.CreditLimitChanged
		_ = json.Unmarshal(ev.Data, &p)
		return schema.Money(p.CreditLimit), ""
	}
	return 0, ""
}

// Rebuild recomputes the projection of every account from the log in one
// pass and removes entries of accounts the log does not have. It returns
// the number of accounts. Writers may run meanwhile: an entry newer than
// the rebuilt one is kept.
func (l *Ledger) Rebuild(ctx context.Context) (int, error) {
	states := map[string]*state{}
	var scanned uint64
	err := l.scan(ctx, schema.AllLedgerEvents, func(ev schema.Envelope, subject string, seq uint64) error {
		scanned = seq
		account, ok := schema.LedgerAccount(subject)
		if !ok {
			l.log.Warn("ledger: rebuild skips an event on a subject that names no account", "subject", subject, "seq", seq)
			return nil
		}
		st := states[account]
		if st == nil {
			st = newState(account)
			states[account] = st
		}
		_, err := st.apply(ev, seq)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("rebuild: %w", err)
	}
	for _, st := range states {
		if !st.opened {
			continue
		}
		if _, err := l.putProjection(ctx, st.clone(), true, 0); err != nil {
			return 0, fmt.Errorf("rebuild: %w", err)
		}
	}
	keys, err := l.projectionKeys(ctx)
	if err != nil {
		return 0, fmt.Errorf("rebuild: %w", err)
	}
	for _, k := range keys {
		if st, ok := states[k]; !ok || !st.opened {
			if l.newerThan(ctx, k, scanned) {
				continue // opened while the rebuild read the log
			}
			if err := l.kv.Purge(ctx, k); err != nil {
				return 0, fmt.Errorf("rebuild: remove balance of %s: %w", k, err)
			}
		}
	}
	n := 0
	for _, st := range states {
		if st.opened {
			n++
		}
	}
	return n, nil
}

// putProjection stores b as the account's projection unless the stored
// one is newer (or as new, unless force), and returns the entry's
// revision. Updates are conditional on the entry's revision, so a slower
// writer never overwrites a newer balance. A known revision (the one this
// instance wrote last) saves reading the entry first.
func (l *Ledger) putProjection(ctx context.Context, b Balance, force bool, knownRev uint64) (uint64, error) {
	data, err := json.Marshal(b)
	if err != nil {
		return 0, fmt.Errorf("encode balance of %s: %w", b.Account, err)
	}
	if knownRev > 0 {
		if rev, err := l.kv.Update(ctx, b.Account, data, knownRev); err == nil {
			return rev, nil
		}
	}
	for range 16 {
		e, err := l.kv.Get(ctx, b.Account)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			rev, err := l.kv.Create(ctx, b.Account, data)
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue
			}
			return rev, err
		}
		if err != nil {
			return 0, fmt.Errorf("read balance of %s: %w", b.Account, err)
		}
		var cur Balance
		if json.Unmarshal(e.Value(), &cur) == nil && (cur.Seq > b.Seq || (cur.Seq == b.Seq && !force)) {
			return e.Revision(), nil
		}
		rev, err := l.kv.Update(ctx, b.Account, data, e.Revision())
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue
		}
		return rev, err
	}
	return 0, fmt.Errorf("balance of %s: %w", b.Account, ErrConflict)
}

// newerThan says whether the account's projection reflects an event
// after seq.
func (l *Ledger) newerThan(ctx context.Context, account string, seq uint64) bool {
	e, err := l.kv.Get(ctx, account)
	if err != nil {
		return false
	}
	var b Balance
	return json.Unmarshal(e.Value(), &b) == nil && b.Seq > seq
}

func (l *Ledger) projectionKeys(ctx context.Context) ([]string, error) {
	lister, err := l.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list balances: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	// The lister stops itself once every key is sent; Stop is for an
	// early exit only and reports the closed subscription otherwise.
	_ = lister.Stop()
	slices.Sort(keys)
	return keys, nil
}
