package schema

import (
	"fmt"
)

// Ledger events on the LEDGER stream, one subject per account
// (LedgerSubject). An account's balance is the fold of its events in
// stream order. Amounts are int64 nano-units of the account's currency
// (10⁻⁹ of a euro or dollar), the scale of Money, so that no
// float is ever involved; they are exact integers on the wire.
const (
	TypeAccountOpened      = "ledger.opened"
	TypeCredited           = "ledger.credited"
	TypeDebited            = "ledger.debited"
	TypeReserved           = "ledger.reserved"
	TypeReleased           = "ledger.released"
	TypeAdjusted           = "ledger.adjusted"
	TypeCreditLimitChanged = "ledger.credit_limit_changed"
	LedgerVersion          = 1
)

// AccountKind says how an account pays.
type AccountKind string

const (
	// Prepaid accounts spend what they topped up; calls are admitted
	// only against available credit.
	Prepaid AccountKind = "prepaid"
	// Postpaid accounts are invoiced; they may run up to their credit limit.
	Postpaid AccountKind = "postpaid"
)

// ParseAccountKind reads "prepaid" or "postpaid".
func ParseAccountKind(s string) (AccountKind, error) {
	switch k := AccountKind(s); k {
	case Prepaid, Postpaid:
		return k, nil
	}
	return "", fmt.Errorf("account kind %q: want prepaid or postpaid: %w", s, ErrInvalidObject)
}

// AccountOpened is the first event of an account.
type AccountOpened struct {
	Account  string      `json:"account"`
	Kind     AccountKind `json:"kind"`
	Currency string      `json:"currency"`
	// CreditLimit is how far below zero a postpaid account may go
	// (non-negative); always 0 for prepaid.
	CreditLimit int64 `json:"credit_limit"`
}

// Credited is a top-up. Reference (an invoice, a payment id) is unique per
// account: the ledger refuses a second top-up with the same reference.
type Credited struct {
	Amount    int64  `json:"amount"`
	Reference string `json:"reference"`
}

// Debited pays for one rated CDR. A CDR is debited at most once per
// account, whenever it is replayed.
type Debited struct {
	Amount int64  `json:"amount"`
	CDR    string `json:"cdr"`
}

// Reserved holds credit for a live call; a call may reserve several times
// as it asks for more. Released gives back what the call held.
type Reserved struct {
	CallID string `json:"call_id"`
	Amount int64  `json:"amount"`
}

// Released ends a call's hold on the account's credit.
type Released struct {
	CallID string `json:"call_id"`
	Amount int64  `json:"amount"`
}

// Adjusted is a manual correction, positive or negative, with a reason an
// auditor can read.
type Adjusted struct {
	Amount int64  `json:"amount"`
	Reason string `json:"reason"`
}

// CreditLimitChanged sets a postpaid account's new credit limit.
type CreditLimitChanged struct {
	CreditLimit int64 `json:"credit_limit"`
}

const subjectLedger = "ledger."

// AllLedgerEvents matches every account's events.
const AllLedgerEvents = subjectLedger + ">"

// LedgerSubject is the subject of an account's events. Account ids are
// single subject tokens (see CheckAccountID).
func LedgerSubject(account string) string { return subjectLedger + account }

// LedgerAccount is the account of a ledger subject.
func LedgerAccount(subject string) (string, bool) {
	if len(subject) <= len(subjectLedger) || subject[:len(subjectLedger)] != subjectLedger {
		return "", false
	}
	id := subject[len(subjectLedger):]
	return id, validID.MatchString(id)
}

// CheckAccountID checks that id is a valid account id: one subject token
// and one KV key token, no wildcards.
func CheckAccountID(id string) error { return checkID(KindAccount, id) }
