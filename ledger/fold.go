package ledger

import (
	"fmt"
	"maps"
	"time"

	"github.com/carrier-core/carrier/schema"
)

// Balance is an account's standing after its events up to Seq.
type Balance struct {
	Account     string             `json:"account"`
	Kind        schema.AccountKind `json:"kind"`
	Currency    string             `json:"currency"`
	CreditLimit schema.Money       `json:"credit_limit"`
	// Balance is credits minus debits plus adjustments; it goes below zero
	// when calls cost more than was held for them, or on postpaid use.
	Balance schema.Money `json:"balance"`
	// Reserved is what live calls hold (the sum of Reservations).
	Reserved schema.Money `json:"reserved"`
	// Available is what new reservations may take: Balance - Reserved,
	// plus the credit limit for postpaid accounts.
	Available    schema.Money            `json:"available"`
	Reservations map[string]schema.Money `json:"reservations,omitempty"`
	// Seq is the LEDGER stream sequence of the last event folded in.
	Seq uint64 `json:"seq"`
	// UpdatedAt is the time of that event.
	UpdatedAt time.Time `json:"updated_at"`
}

// clone copies the reservations; none is nil, as the projection's JSON
// (omitempty) reads back.
func (b Balance) clone() Balance {
	b.Reservations = maps.Clone(b.Reservations)
	if len(b.Reservations) == 0 {
		b.Reservations = nil
	}
	return b
}

// state is the fold of one account's events: its balance and the
// references it has applied, which decide idempotency.
type state struct {
	Balance
	opened bool
	// refs holds "credit:<reference>" and "debit:<cdr id>".
	refs map[string]struct{}
}

func newState(account string) *state {
	return &state{Balance: Balance{Account: account}, refs: map[string]struct{}{}}
}

func creditKey(ref string) string { return "credit:" + ref }
func debitKey(cdr string) string  { return "debit:" + cdr }

func (s *state) has(key string) bool {
	_, ok := s.refs[key]
	return ok
}

// apply folds one event in. It reports false for an event the fold
// ignores: a second debit of one CDR or a reused top-up reference that
// reached the log without the ledger's check (a hand-made publish, a
// foreign writer). The fold, not only the writer, is idempotent.
func (s *state) apply(ev schema.Envelope, seq uint64) (bool, error) {
	applied, err := s.applyPayload(ev)
	if err != nil {
		return false, fmt.Errorf("ledger %s: event %s (seq %d): %w", s.Account, ev.ID, seq, err)
	}
	s.Seq = seq
	s.UpdatedAt = schema.FromMillis(ev.Time)
	if !applied {
		return false, nil
	}
	avail, err := s.Balance.Balance.Add(-s.Reserved)
	if err == nil && s.Kind == schema.Postpaid {
		avail, err = avail.Add(s.CreditLimit)
	}
	if err != nil {
		return false, fmt.Errorf("ledger %s: event %s (seq %d): available: %w", s.Account, ev.ID, seq, err)
	}
	s.Available = avail
	return true, nil
}

func (s *state) applyPayload(ev schema.Envelope) (bool, error) {
	if ev.Type == schema.TypeAccountOpened {
		var p schema.AccountOpened
		if err := ev.Decode(ev.Type, schema.LedgerVersion, &p); err != nil {
			return false, err
		}
		if s.opened {
			return false, nil
		}
		s.opened = true
		s.Kind, s.Currency, s.CreditLimit = p.Kind, p.Currency, schema.Money(p.CreditLimit)
		return true, nil
	}
	if !s.opened {
		return false, fmt.Errorf("%s before the account was opened: %w", ev.Type, ErrCorruptLog)
	}
	switch ev.Type {
	case schema.TypeCredited:
		var p schema.Credited
		if err := ev.Decode(ev.Type, schema.LedgerVersion, &p); err != nil {
			return false, err
		}
		return s.addOnce(creditKey(p.Reference), schema.Money(p.Amount))
	case schema.TypeDebited:
		var p schema.Debited
		if err := ev.Decode(ev.Type, schema.LedgerVersion, &p); err != nil {
			return false, err
		}
		return s.addOnce(debitKey(p.CDR), -schema.Money(p.Amount))
	case schema.TypeAdjusted:
		var p schema.Adjusted
		if err := ev.Decode(ev.Type, schema.LedgerVersion, &p); err != nil {
			return false, err
		}
		return s.add(schema.Money(p.Amount))
	case schema.TypeReserved:
		var p schema.Reserved
		if err := ev.Decode(ev.Type, schema.LedgerVersion, &p); err != nil {
			return false, err
		}
		held, err := s.Reservations[p.CallID].Add(schema.Money(p.Amount))
		if err != nil {
			return false, err
		}
		reserved, err := s.Reserved.Add(schema.Money(p.Amount))
		if err != nil {
			return false, err
		}
		if s.Reservations == nil {
			s.Reservations = map[string]schema.Money{}
		}
		s.Reservations[p.CallID], s.Reserved = held, reserved
		return true, nil
	case schema.TypeReleased:
		var p schema.Released
		if err := ev.Decode(ev.Type, schema.LedgerVersion, &p); err != nil {
			return false, err
		}
		held, ok := s.Reservations[p.CallID]
		if !ok {
			return false, nil
		}
		// A release gives back at most what the call holds.
		amount := min(schema.Money(p.Amount), held)
		if amount >= held {
			delete(s.Reservations, p.CallID)
		} else {
			s.Reservations[p.CallID] = held - amount
		}
		s.Reserved -= amount
		return true, nil
	case schema.TypeCreditLimitChanged:
		var p schema.CreditLimitChanged
		if err := ev.Decode(ev.Type, schema.LedgerVersion, &p); err != nil {
			return false, err
		}
		s.CreditLimit = schema.Money(p.CreditLimit)
		return true, nil
	}
	return false, fmt.Errorf("event type %q: %w", ev.Type, schema.ErrUnknownVersion)
}

func (s *state) addOnce(key string, amount schema.Money) (bool, error) {
	if s.has(key) {
		return false, nil
	}
	if ok, err := s.add(amount); !ok {
		return false, err
	}
	s.refs[key] = struct{}{}
	return true, nil
}

func (s *state) add(amount schema.Money) (bool, error) {
	b, err := s.Balance.Balance.Add(amount)
	if err != nil {
		return false, err
	}
	s.Balance.Balance = b
	return true, nil
}
