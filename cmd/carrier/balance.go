package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/schema"
)

func newBalanceCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "balance",
		Short: "Show, top up and adjust account balances; list their history",
		Long: `An account's balance is the fold of its ledger events: top-ups, debits of
rated calls, reservations of live calls and their release, adjustments and
credit limit changes. Amounts are exact decimals in the account's currency
(10.50, 0.0125); no float is involved anywhere.`,
	}
	cmd.AddCommand(newBalanceShowCmd(a), newBalanceTopupCmd(a), newBalanceAdjustCmd(a), newBalanceHistoryCmd(a), newBalanceRebuildCmd(a))
	return cmd
}

// unknownAccount words a missing ledger as an operator reads it.
func unknownAccount(err error, account string) error {
	if errors.Is(err, ledger.ErrUnknownAccount) {
		return fmt.Errorf("account %s has no ledger: open it with `carrier account create %s --currency CUR --kind prepaid|postpaid`", account, account)
	}
	return err
}

func newBalanceShowCmd(a *app) *cobra.Command {
	var (
		nats   natsSettings
		format string
	)
	cmd := &cobra.Command{
		Use:   "show ACCOUNT",
		Short: "Show an account's balance, reserved and available credit",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withLedger(cmd.Context(), a, nats.url, func(ctx context.Context, l *ledger.Ledger, _ *eventlog.ProvisionStore) error {
				b, err := l.Balance(ctx, args[0])
				if err != nil {
					return unknownAccount(err, args[0])
				}
				return writeTable(a.out, format, fieldTable(b, balanceFields(b)))
			})
		},
	}
	nats.addFlags(cmd)
	addOutputFlag(cmd, &format)
	return cmd
}

func newBalanceTopupCmd(a *app) *cobra.Command {
	var (
		nats              natsSettings
		amount, reference string
	)
	cmd := &cobra.Command{
		Use:   "topup ACCOUNT --amount AMOUNT --reference REF",
		Short: "Credit an account; each reference (payment, invoice) is applied once",
		Long: `Credit an account with an exact amount. The reference names the payment
(an invoice or transaction id) and is applied once per account: a top-up
with a reference that was already applied is refused, so running the same
command twice never credits twice.`,
		Example: `  carrier balance topup acme --amount 10.50 --reference INV-2026-0042`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			account := args[0]
			m, err := parseAmount("--amount", amount)
			if err != nil {
				return err
			}
			if m <= 0 {
				return fmt.Errorf("--amount %s: a top-up is more than 0; use `carrier balance adjust` to take money off", amount)
			}
			return withLedger(cmd.Context(), a, nats.url, func(ctx context.Context, l *ledger.Ledger, _ *eventlog.ProvisionStore) error {
				r, err := l.Credit(ctx, account, m, reference)
				if errors.Is(err, ledger.ErrDuplicateReference) {
					return fmt.Errorf("top-up refused: reference %q was already applied to account %s, nothing was credited (see `carrier balance history %s`)", reference, account, account)
				}
				if err != nil {
					return unknownAccount(err, account)
				}
				fmt.Fprintf(a.out, "account %s credited %s %s (reference %s): balance %s, available %s\n",
					account, m, r.Balance.Currency, reference, r.Balance.Balance, r.Balance.Available)
				return nil
			})
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVar(&amount, "amount", "", "amount to credit, an exact decimal such as 10.50 (required)")
	cmd.Flags().StringVar(&reference, "reference", "", "payment or invoice reference, unique per account (required)")
	_ = cmd.MarkFlagRequired("amount")
	_ = cmd.MarkFlagRequired("reference")
	return cmd
}

func newBalanceAdjustCmd(a *app) *cobra.Command {
	var (
		nats           natsSettings
		amount, reason string
	)
	cmd := &cobra.Command{
		Use:   "adjust ACCOUNT --amount [-]AMOUNT --reason TEXT",
		Short: "Correct a balance up or down, with a reason",
		Example: `  carrier balance adjust acme --amount -2.40 --reason "refund of ticket 1234 reversed"
  carrier balance adjust acme --amount=5 --reason "goodwill credit"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			account := args[0]
			m, err := parseAmount("--amount", amount)
			if err != nil {
				return err
			}
			if strings.TrimSpace(reason) == "" {
				return errors.New("--reason: say why, for whoever audits the account")
			}
			return withLedger(cmd.Context(), a, nats.url, func(ctx context.Context, l *ledger.Ledger, _ *eventlog.ProvisionStore) error {
				r, err := l.Adjust(ctx, account, m, reason)
				if err != nil {
					return unknownAccount(err, account)
				}
				fmt.Fprintf(a.out, "account %s adjusted by %s %s: balance %s, available %s\n",
					account, m, r.Balance.Currency, r.Balance.Balance, r.Balance.Available)
				return nil
			})
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVar(&amount, "amount", "", "signed exact decimal, e.g. -2.40 or 5 (required)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (required)")
	_ = cmd.MarkFlagRequired("amount")
	_ = cmd.MarkFlagRequired("reason")
	return cmd
}

func newBalanceHistoryCmd(a *app) *cobra.Command {
	var (
		nats     natsSettings
		format   string
		from, to string
	)
	cmd := &cobra.Command{
		Use:   "history ACCOUNT [--from TIME] [--to TIME]",
		Short: "List an account's ledger events with the balance each left",
		Example: `  carrier balance history acme
  carrier balance history acme --from 2026-11-01 --to 2026-12-01 -o csv`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var fromT, toT time.Time
			var err error
			if from != "" {
				if fromT, err = parseTime(from); err != nil {
					return fmt.Errorf("--from: %w", err)
				}
			}
			if to != "" {
				if toT, err = parseTime(to); err != nil {
					return fmt.Errorf("--to: %w", err)
				}
			}
			return withLedger(cmd.Context(), a, nats.url, func(ctx context.Context, l *ledger.Ledger, _ *eventlog.ProvisionStore) error {
				entries, err := l.History(ctx, args[0], fromT, toT)
				if err != nil {
					return unknownAccount(err, args[0])
				}
				return writeTable(a.out, format, historyTable(entries))
			})
		},
	}
	nats.addFlags(cmd)
	addOutputFlag(cmd, &format)
	cmd.Flags().StringVar(&from, "from", "", "first time, inclusive (RFC 3339 or a date, UTC)")
	cmd.Flags().StringVar(&to, "to", "", "end time, exclusive")
	return cmd
}

// historyNames are the event types as the history table shows them.
var historyNames = map[string]string{
	schema.TypeAccountOpened:      "opened",
	schema.TypeCredited:           "top-up",
	schema.TypeDebited:            "debit",
	schema.TypeReserved:           "reserve",
	schema.TypeReleased:           "release",
	schema.TypeAdjusted:           "adjust",
	schema.TypeCreditLimitChanged: "credit-limit",
}

func historyTable(entries []ledger.Entry) table {
	t := table{header: []string{"SEQ", "TIME (UTC)", "EVENT", "AMOUNT", "REFERENCE", "BALANCE", "AVAILABLE"}, records: entries}
	for _, e := range entries {
		name := historyNames[e.Type]
		if name == "" {
			name = e.Type
		}
		if e.Ignored {
			name += " (repeat, ignored)"
		}
		t.rows = append(t.rows, []string{
			strconv.FormatUint(e.Seq, 10), e.Time.UTC().Format("2006-01-02 15:04:05.000"), name,
			e.Amount.String(), e.Reference, e.Balance.String(), e.Available.String(),
		})
	}
	return t
}

func newBalanceRebuildCmd(a *app) *cobra.Command {
	var nats natsSettings
	cmd := &cobra.Command{
		Use:   "rebuild",
		Short: "Recompute every balance from the LEDGER stream",
		Long: `Balances are read from a projection in the KV bucket LEDGER_BALANCES. It is
derived data: rebuild recomputes it from the ledger events, which stay the
source of truth. Writers may keep running meanwhile.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withLedger(cmd.Context(), a, nats.url, func(ctx context.Context, l *ledger.Ledger, _ *eventlog.ProvisionStore) error {
				n, err := l.Rebuild(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "rebuilt the balances of %d accounts from the ledger\n", n)
				return nil
			})
		},
	}
	nats.addFlags(cmd)
	return cmd
}
