package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/carrier-core/carrier/schema"
)

var (
	// ErrUnknownAccount: the account has no ledger (it was never opened).
	ErrUnknownAccount = errors.New("no such ledger account")
	// ErrAccountExists: Open on an account that is already open.
	ErrAccountExists = errors.New("ledger account already open")
	// ErrDuplicateReference: a top-up reference this account already used.
	ErrDuplicateReference = errors.New("reference already applied")
	// ErrInsufficientFunds: a reservation the account cannot cover.
	ErrInsufficientFunds = errors.New("insufficient funds")
	// ErrConflict: other writers kept changing the account through every retry.
	ErrConflict = errors.New("ledger account changed concurrently")
	// ErrInvalid: an argument is out of the rules (amount sign, empty reference).
	ErrInvalid = errors.New("invalid ledger request")
	// ErrNotPostpaid: a credit limit for a prepaid account.
	ErrNotPostpaid = errors.New("not a postpaid account")
	// ErrCorruptLog: the account's events cannot be folded.
	ErrCorruptLog = errors.New("ledger log cannot be folded")
)

// BucketBalances is the KV bucket of the balance projection, one key per
// account. It is derived data: Rebuild recreates it from the log.
const BucketBalances = "LEDGER_BALANCES"

// Config tunes a Ledger.
type Config struct {
	// Node names this process in the events it writes.
	Node string
	// MaxAttempts bounds the appends of one write under contention before
	// it gives up with ErrConflict (default 32).
	MaxAttempts int
	Logger      *slog.Logger
	// Registerer, when not nil, gets the carrier_ledger_ metrics.
	Registerer prometheus.Registerer
}

// Ledger writes and reads account ledgers. It is safe for concurrent use;
// several Ledgers (in one process or many) may write the same accounts.
type Ledger struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	kv      jetstream.KeyValue
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu       sync.Mutex
	accounts map[string]*cached
}

// cached is this instance's fold of one account, kept so that a write
// costs one append; the conditional append catches it being stale.
type cached struct {
	mu sync.Mutex
	st *state // nil until loaded
	// projRev is the projection entry's revision this instance wrote last.
	projRev uint64
}

// New opens the ledger on the LEDGER stream (which must exist: see
// eventlog.EnsureStreams) and creates the projection bucket if needed.
func New(ctx context.Context, js jetstream.JetStream, cfg Config) (*Ledger, error) {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 32
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stream, err := js.Stream(ctx, schema.StreamLedger)
	if err != nil {
		return nil, fmt.Errorf("ledger: open stream %s: %w", schema.StreamLedger, err)
	}
	kv, err := js.KeyValue(ctx, BucketBalances)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      BucketBalances,
			Description: "account balances, folded from the LEDGER stream",
			History:     1,
			Storage:     jetstream.FileStorage,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, BucketBalances)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: open bucket %s: %w", BucketBalances, err)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Ledger{js: js, stream: stream, kv: kv, cfg: cfg, log: log, metrics: m, accounts: map[string]*cached{}}, nil
}

// Receipt is the outcome of a write.
type Receipt struct {
	// Balance is the account after the write.
	Balance Balance
	// EventID is the event appended; empty when the write was a no-op.
	EventID string
	// Duplicate: nothing was appended because the write was already
	// applied (a CDR debited before, a call with nothing held).
	Duplicate bool
}

// Open opens an account's ledger. A postpaid account may go down to minus
// creditLimit; a prepaid one has no credit limit.
func (l *Ledger) Open(ctx context.Context, account string, kind schema.AccountKind, currency string, creditLimit schema.Money) (Receipt, error) {
	if _, err := schema.ParseAccountKind(string(kind)); err != nil {
		return Receipt{}, fmt.Errorf("open %s: %w: %w", account, err, ErrInvalid)
	}
	if err := (schema.Account{ID: account, Currency: currency}).Validate(); err != nil {
		return Receipt{}, fmt.Errorf("open: %w: %w", err, ErrInvalid)
	}
	if creditLimit < 0 || (kind == schema.Prepaid && creditLimit != 0) {
		return Receipt{}, fmt.Errorf("open %s: credit limit %s: want 0 or more, and only for postpaid accounts: %w", account, creditLimit, ErrInvalid)
	}
	return l.write(ctx, account, func(s *state) (string, any, error) {
		if s.opened {
			return "", nil, fmt.Errorf("open %s: it is a %s account in %s: %w", account, s.Kind, s.Currency, ErrAccountExists)
		}
		return schema.TypeAccountOpened, schema.AccountOpened{Account: account, Kind: kind, Currency: currency, CreditLimit: int64(creditLimit)}, nil
	})
}

// Credit tops the account up by amount. The reference (payment or invoice
// id) is unique per account: a reused one is ErrDuplicateReference.
func (l *Ledger) Credit(ctx context.Context, account string, amount schema.Money, reference string) (Receipt, error) {
	if amount <= 0 {
		return Receipt{}, fmt.Errorf("credit %s: amount %s: want more than 0: %w", account, amount, ErrInvalid)
	}
	if err := checkText("reference", reference); err != nil {
		return Receipt{}, fmt.Errorf("credit %s: %w", account, err)
	}
	return l.write(ctx, account, func(s *state) (string, any, error) {
		if s.has(creditKey(reference)) {
			return "", nil, fmt.Errorf("credit %s: top-up reference %q: %w", account, reference, ErrDuplicateReference)
		}
		return schema.TypeCredited, schema.Credited{Amount: int64(amount), Reference: reference}, nil
	})
}

// Debit charges the account amount for the rated CDR cdrID. A CDR already
// debited is a no-op (Receipt.Duplicate), however late it comes again.
// A debit is never refused for lack of funds: the call happened.
func (l *Ledger) Debit(ctx context.Context, account string, amount schema.Money, cdrID string) (Receipt, error) {
	if amount < 0 {
		return Receipt{}, fmt.Errorf("debit %s: amount %s: want 0 or more: %w", account, amount, ErrInvalid)
	}
	if err := checkText("CDR id", cdrID); err != nil {
		return Receipt{}, fmt.Errorf("debit %s: %w", account, err)
	}
	return l.write(ctx, account, func(s *state) (string, any, error) {
		if s.has(debitKey(cdrID)) {
			return "", nil, nil
		}
		return schema.TypeDebited, schema.Debited{Amount: int64(amount), CDR: cdrID}, nil
	})
}

// Reserve holds amount of the account's credit for the live call callID,
// on top of what the call holds already. It fails with
// ErrInsufficientFunds when the available credit (for postpaid: down to
// the credit limit) is less than amount.
func (l *Ledger) Reserve(ctx context.Context, account, callID string, amount schema.Money) (Receipt, error) {
	if amount <= 0 {
		return Receipt{}, fmt.Errorf("reserve %s: amount %s: want more than 0: %w", account, amount, ErrInvalid)
	}
	if err := checkText("call id", callID); err != nil {
		return Receipt{}, fmt.Errorf("reserve %s: %w", account, err)
	}
	return l.write(ctx, account, func(s *state) (string, any, error) {
		if s.Available < amount {
			return "", nil, fmt.Errorf("reserve %s for call %s: %s wanted, %s available: %w", amount, callID, amount, s.Available, ErrInsufficientFunds)
		}
		return schema.TypeReserved, schema.Reserved{CallID: callID, Amount: int64(amount)}, nil
	})
}

// Release gives back everything the call callID holds. A call that holds
// nothing (never reserved, or released already) is a no-op.
func (l *Ledger) Release(ctx context.Context, account, callID string) (Receipt, error) {
	if err := checkText("call id", callID); err != nil {
		return Receipt{}, fmt.Errorf("release %s: %w", account, err)
	}
	return l.write(ctx, account, func(s *state) (string, any, error) {
		held, ok := s.Reservations[callID]
		if !ok {
			return "", nil, nil
		}
		return schema.TypeReleased, schema.Released{CallID: callID, Amount: int64(held)}, nil
	})
}

// Adjust corrects the balance by a signed amount, for a reason an auditor
// can read.
func (l *Ledger) Adjust(ctx context.Context, account string, amount schema.Money, reason string) (Receipt, error) {
	if amount == 0 {
		return Receipt{}, fmt.Errorf("adjust %s: amount 0 changes nothing: %w", account, ErrInvalid)
	}
	if err := checkText("reason", reason); err != nil {
		return Receipt{}, fmt.Errorf("adjust %s: %w", account, err)
	}
	return l.write(ctx, account, func(*state) (string, any, error) {
		return schema.TypeAdjusted, schema.Adjusted{Amount: int64(amount), Reason: reason}, nil
	})
}

// SetCreditLimit changes a postpaid account's credit limit. Setting the
// limit it has is a no-op.
func (l *Ledger) SetCreditLimit(ctx context.Context, account string, limit schema.Money) (Receipt, error) {
	if limit < 0 {
		return Receipt{}, fmt.Errorf("credit limit of %s: %s: want 0 or more: %w", account, limit, ErrInvalid)
	}
	return l.write(ctx, account, func(s *state) (string, any, error) {
		if s.Kind != schema.Postpaid {
			return "", nil, fmt.Errorf("credit limit of %s: it is %s: %w", account, s.Kind, ErrNotPostpaid)
		}
		if s.CreditLimit == limit {
			return "", nil, nil
		}
		return schema.TypeCreditLimitChanged, schema.CreditLimitChanged{CreditLimit: int64(limit)}, nil
	})
}

// maxText bounds references, CDR and call ids and reasons: they live in
// the fold's memory and in every replay.
const maxText = 256

func checkText(what, v string) error {
	if v == "" || len(v) > maxText {
		return fmt.Errorf("%s: want 1 to %d characters: %w", what, maxText, ErrInvalid)
	}
	return nil
}

// decision is what a write appends given the account's state: an event
// type and payload, nothing (a no-op) or an error. It must not change the
// state.
type decision func(*state) (typ string, payload any, err error)

// write decides against the account's fold and appends the event only if
// no other event reached the account since: the decision and its checks
// (references, funds) hold for the state the append lands on.
func (l *Ledger) write(ctx context.Context, account string, decide decision) (Receipt, error) {
	if err := schema.CheckAccountID(account); err != nil {
		return Receipt{}, fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	c := l.cachedAccount(account)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st == nil {
		st, err := l.fold(ctx, account)
		if err != nil {
			return Receipt{}, err
		}
		c.st = st
	}
	subject := schema.LedgerSubject(account)
	fresh := false
	for attempt := 1; ; attempt++ {
		st := c.st
		typ, payload, err := decide(st)
		if err == nil && typ != schema.TypeAccountOpened && !st.opened {
			err = fmt.Errorf("account %s: %w (open it with `carrier account create`)", account, ErrUnknownAccount)
		}
		if (err != nil || typ == "") && !fresh {
			// A refusal or a no-op must not rest on a stale cache (another
			// writer may have opened or topped up the account, or reserved
			// for a call): read what it missed and decide again.
			if err := l.catchUp(ctx, st); err != nil {
				c.st = nil
				return Receipt{}, err
			}
			fresh = true
			continue
		}
		if err != nil {
			l.metrics.refused.Inc()
			return Receipt{}, err
		}
		if typ == "" {
			l.metrics.duplicates.Inc()
			return Receipt{Balance: st.clone(), Duplicate: true}, nil
		}
		ev, err := schema.NewEnvelope(typ, schema.LedgerVersion, time.Now(), l.cfg.Node, payload)
		if err != nil {
			return Receipt{}, err
		}
		data, err := ev.Marshal()
		if err != nil {
			return Receipt{}, fmt.Errorf("encode %s: %w", typ, err)
		}
		msg := nats.NewMsg(subject)
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, ev.ID)
		ack, err := l.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(st.Seq))
		if isWrongLastSequence(err) {
			l.metrics.conflicts.Inc()
			if attempt >= l.cfg.MaxAttempts {
				return Receipt{}, fmt.Errorf("%s on %s after %d attempts: %w", typ, account, attempt, ErrConflict)
			}
			if err := l.catchUp(ctx, st); err != nil {
				c.st = nil
				return Receipt{}, err
			}
			fresh = true
			continue
		}
		if err != nil {
			return Receipt{}, fmt.Errorf("append %s to %s: %w", typ, subject, err)
		}
		if _, err := st.apply(ev, ack.Sequence); err != nil {
			// Our own event does not fold: drop the cache, the log decides.
			c.st = nil
			return Receipt{}, err
		}
		l.metrics.appends.WithLabelValues(typ).Inc()
		bal := st.clone()
		rev, err := l.putProjection(ctx, bal, false, c.projRev)
		c.projRev = rev
		if err != nil {
			// The event is stored; the projection catches up with the next
			// write of the account or a Rebuild.
			l.metrics.projectionErrors.Inc()
			l.log.Warn("ledger: balance projection not updated", "account", account, "seq", bal.Seq, "err", err)
		}
		return Receipt{Balance: bal, EventID: ev.ID}, nil
	}
}

func (l *Ledger) cachedAccount(account string) *cached {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.accounts[account]
	if !ok {
		c = &cached{}
		l.accounts[account] = c
	}
	return c
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}
