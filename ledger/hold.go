package ledger

import (
	"context"
	"fmt"

	"github.com/carrier-core/carrier/schema"
)

// HoldFunc decides what a live call should hold in all, given the
// account's standing and what the call holds now (0 for a call that holds
// nothing). b.Reservations is nil: held is the call's own share. It may be
// called more than once for one Hold (whenever another writer changed the
// account first), so it must depend on its arguments only; its error
// refuses the hold and is returned as is.
type HoldFunc func(b Balance, held schema.Money) (schema.Money, error)

// Hold sets the amount the live call callID holds to what decide says,
// deciding from the account's state inside the same conditional append
// as the write: calls of one account that ask at once each see the
// others' holds, so together they never hold more than the account has.
// More than held appends a reservation of the difference, less a partial
// release, the same nothing (Receipt.Duplicate).
//
// Unlike Reserve, Hold does not check the funds itself: decide does,
// from b.Available + held, the money the call may have.
func (l *Ledger) Hold(ctx context.Context, account, callID string, decide HoldFunc) (Receipt, error) {
	if err := checkText("call id", callID); err != nil {
		return Receipt{}, fmt.Errorf("hold %s: %w", account, err)
	}
	if decide == nil {
		return Receipt{}, fmt.Errorf("hold %s for call %s: no decision: %w", account, callID, ErrInvalid)
	}
	return l.write(ctx, account, func(s *state) (string, any, error) {
		if !s.opened {
			return "", nil, fmt.Errorf("account %s: %w (open it with `carrier account create`)", account, ErrUnknownAccount)
		}
		held := s.Reservations[callID]
		b := s.Balance
		b.Reservations = nil
		want, err := decide(b, held)
		if err != nil {
			return "", nil, err
		}
		if want < 0 {
			return "", nil, fmt.Errorf("hold %s for call %s: %s: want 0 or more: %w", account, callID, want, ErrInvalid)
		}
		switch {
		case want > held:
			return schema.TypeReserved, schema.Reserved{CallID: callID, Amount: int64(want - held)}, nil
		case want < held:
			return schema.TypeReleased, schema.Released{CallID: callID, Amount: int64(held - want)}, nil
		}
		return "", nil, nil
	})
}
