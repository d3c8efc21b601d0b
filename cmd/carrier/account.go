package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/schema"
)

// ledgerTimeout bounds one CLI operation on the ledger; history and
// rebuild read whole accounts.
const ledgerTimeout = 2 * time.Minute

// withLedger runs f with the ledger and the provisioning store of the NATS
// server at url, as a short-lived CLI client.
func withLedger(ctx context.Context, a *app, url string, f func(ctx context.Context, l *ledger.Ledger, s *eventlog.ProvisionStore) error) error {
	nc, js, err := eventlog.Connect(url, "carrier-cli", a.log)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, ledgerTimeout)
	defer cancel()
	s, err := eventlog.OpenProvisionStore(ctx, js, a.log)
	if err != nil {
		return fmt.Errorf("%w (is NATS with JetStream running at %s? start it with `carrier up` or `carrier nats`, or set --nats-url)", err, url)
	}
	l, err := ledger.New(ctx, js, ledger.Config{Node: "carrier-cli", Logger: a.log})
	if err != nil {
		return fmt.Errorf("%w (the LEDGER stream is created by `carrier up` or `carrier nats`)", err)
	}
	return f(ctx, l, s)
}

func newAccountCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "account",
		Short: "Manage customer accounts: currency, prepaid or postpaid, credit limit, sell plan",
		Long: `An account is who pays for calls. It lives in two places: the provisioning
bucket (name, currency, sell plan: what the proxy and the rater read) and the
ledger (prepaid or postpaid, credit limit, and the balance, folded from its
events on the LEDGER stream). These commands keep both in step.`,
	}
	cmd.AddCommand(newAccountCreateCmd(a), newAccountListCmd(a), newAccountShowCmd(a), newAccountSetCmd(a),
		newProvisionRmCmd(a, "account", "Stop provisioning a settled account: its calls are refused from then on; its ledger history stays",
			(*eventlog.ProvisionStore).Accounts, accountSettled(a)))
	return cmd
}

// accountSettled refuses to remove an account the ledger still holds
// money or live calls for: a carrier settles (refunds, invoices) before it
// closes an account, and a live call would lose its billing.
func accountSettled(a *app) func(ctx context.Context, natsURL, id string) error {
	return func(ctx context.Context, natsURL, id string) error {
		return withLedger(ctx, a, natsURL, func(ctx context.Context, l *ledger.Ledger, _ *eventlog.ProvisionStore) error {
			b, err := l.Balance(ctx, id)
			switch {
			case errors.Is(err, ledger.ErrUnknownAccount):
				return nil // provisioned without a ledger (a lab account)
			case err != nil:
				return err
			case b.Reserved != 0:
				return fmt.Errorf("account %s has calls in progress holding %s %s: remove it when they have ended", id, b.Reserved, b.Currency)
			case b.Balance != 0:
				return fmt.Errorf("account %s has a balance of %s %s: settle it first (carrier balance adjust %s ...)", id, b.Balance, b.Currency, id)
			}
			return nil
		})
	}
}

func newAccountCreateCmd(a *app) *cobra.Command {
	var (
		nats        natsSettings
		acct        schema.Account
		kind        string
		creditLimit string
	)
	cmd := &cobra.Command{
		Use:     "create ID --currency CUR --kind prepaid|postpaid",
		Aliases: []string{"add"},
		Short:   "Open an account's ledger and provision it",
		Long: `Open an account's ledger (prepaid, or postpaid with a credit limit) and
create or update its provisioning entry. Running it again with the same
kind, currency and credit limit changes nothing in the ledger; the kind and
currency of an open ledger cannot change.`,
		Example: `  carrier account create acme --name "ACME Telecom" --currency EUR --kind prepaid --plan retail-eu
  carrier account create bigco --currency USD --kind postpaid --credit-limit 5000`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			acct.ID = args[0]
			if err := acct.Validate(); err != nil {
				return err
			}
			k, err := schema.ParseAccountKind(kind)
			if err != nil {
				return fmt.Errorf("--kind: %w", err)
			}
			acct.Kind = k
			var limit schema.Money
			if creditLimit != "" {
				if k != schema.Postpaid {
					return errors.New("--credit-limit: only postpaid accounts have a credit limit")
				}
				if limit, err = parseAmount("--credit-limit", creditLimit); err != nil {
					return err
				}
			}
			return withLedger(cmd.Context(), a, nats.url, func(ctx context.Context, l *ledger.Ledger, s *eventlog.ProvisionStore) error {
				ledgerChange := "opened"
				_, err := l.Open(ctx, acct.ID, k, acct.Currency, limit)
				if errors.Is(err, ledger.ErrAccountExists) {
					b, ferr := l.Balance(ctx, acct.ID)
					if ferr != nil {
						return ferr
					}
					if b.Kind != k || b.Currency != acct.Currency || b.CreditLimit != limit {
						return fmt.Errorf("account %s is already open as a %s account in %s with credit limit %s; the kind and currency stay, change the credit limit with `carrier account set %s --credit-limit`", acct.ID, b.Kind, b.Currency, b.CreditLimit, acct.ID)
					}
					ledgerChange, err = "unchanged", nil
				}
				if err != nil {
					return err
				}
				ch, err := s.Accounts().Put(ctx, acct)
				if err != nil {
					return err
				}
				fmt.Fprintf(a.out, "account %s: ledger %s (%s, %s), provisioning %s\n", acct.ID, ledgerChange, k, acct.Currency, ch)
				return nil
			})
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVar(&acct.Name, "name", "", "description")
	cmd.Flags().StringVar(&acct.Currency, "currency", "", "ISO 4217 currency the account is billed in, e.g. EUR (required)")
	cmd.Flags().StringVar(&kind, "kind", "", "prepaid or postpaid (required)")
	cmd.Flags().StringVar(&creditLimit, "credit-limit", "", "postpaid: how far below zero the balance may go, e.g. 500.00")
	cmd.Flags().StringVar(&acct.SellPlan, "plan", "", "sell rate plan of the account's calls")
	cmd.Flags().IntVar(&acct.CPS, "cps", 0, "calls per second the account may start; over it a call is refused (0: no limit)")
	cmd.Flags().IntVar(&acct.MaxCalls, "max-calls", 0, "calls the account may have in progress at once; over it a call is refused (0: no limit)")
	_ = cmd.MarkFlagRequired("currency")
	_ = cmd.MarkFlagRequired("kind")
	return cmd
}

// accountView is an account as the CLI shows it: provisioning and ledger.
type accountView struct {
	schema.Account
	// Ledger is nil for an account provisioned without a ledger.
	Ledger *ledger.Balance `json:"ledger,omitempty"`
}

func loadAccounts(ctx context.Context, l *ledger.Ledger, s *eventlog.ProvisionStore) ([]accountView, error) {
	accounts, err := s.Accounts().List(ctx)
	if err != nil {
		return nil, err
	}
	balances, err := l.Balances(ctx)
	if err != nil {
		return nil, err
	}
	byID := map[string]*accountView{}
	for _, acc := range accounts {
		byID[acc.ID] = &accountView{Account: acc}
	}
	for _, b := range balances {
		v := byID[b.Account]
		if v == nil {
			// In the ledger but not (or no longer) provisioned.
			v = &accountView{Account: schema.Account{ID: b.Account, Currency: b.Currency}}
			byID[b.Account] = v
		}
		v.Ledger = &b
	}
	out := make([]accountView, 0, len(byID))
	for _, id := range schema.SortedIDs(byID) {
		out = append(out, *byID[id])
	}
	return out, nil
}

func newAccountListCmd(a *app) *cobra.Command {
	var (
		nats   natsSettings
		format string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the accounts with their balances",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withLedger(cmd.Context(), a, nats.url, func(ctx context.Context, l *ledger.Ledger, s *eventlog.ProvisionStore) error {
				views, err := loadAccounts(ctx, l, s)
				if err != nil {
					return err
				}
				t := table{header: []string{"ID", "NAME", "CURRENCY", "KIND", "PLAN", "BALANCE", "AVAILABLE", "CREDIT LIMIT"}, records: views}
				for _, v := range views {
					kind, bal, avail, limit := "-", "-", "-", "-"
					if b := v.Ledger; b != nil {
						kind, bal, avail, limit = string(b.Kind), b.Balance.String(), b.Available.String(), b.CreditLimit.String()
					}
					t.rows = append(t.rows, []string{v.ID, v.Name, v.Currency, kind, v.SellPlan, bal, avail, limit})
				}
				return writeTable(a.out, format, t)
			})
		},
	}
	nats.addFlags(cmd)
	addOutputFlag(cmd, &format)
	return cmd
}

func newAccountShowCmd(a *app) *cobra.Command {
	var (
		nats   natsSettings
		format string
	)
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one account: provisioning and balance",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withLedger(cmd.Context(), a, nats.url, func(ctx context.Context, l *ledger.Ledger, s *eventlog.ProvisionStore) error {
				v := accountView{}
				acc, err := s.Accounts().Get(ctx, args[0])
				switch {
				case err == nil:
					v.Account = acc
				case !errors.Is(err, eventlog.ErrNotProvisioned):
					return err
				}
				b, err := l.Balance(ctx, args[0])
				switch {
				case err == nil:
					v.Ledger = &b
					if v.ID == "" {
						v.Account = schema.Account{ID: b.Account, Currency: b.Currency}
					}
				case !errors.Is(err, ledger.ErrUnknownAccount):
					return err
				}
				if v.ID == "" {
					return fmt.Errorf("account %s is neither provisioned nor in the ledger (see `carrier account list`)", args[0])
				}
				fields := [][2]string{{"id", v.ID}, {"name", v.Name}, {"currency", v.Currency}, {"plan", v.SellPlan}, {"cps", cpsText(v.CPS)}, {"max calls", cpsText(v.MaxCalls)}}
				if v.Ledger == nil {
					fields = append(fields, [2]string{"ledger", "none: open it with `carrier account create`"})
				} else {
					fields = append(fields, balanceFields(*v.Ledger)[2:]...)
				}
				return writeTable(a.out, format, fieldTable(v, fields))
			})
		},
	}
	nats.addFlags(cmd)
	addOutputFlag(cmd, &format)
	return cmd
}

func newAccountSetCmd(a *app) *cobra.Command {
	var (
		nats                    natsSettings
		name, plan, creditLimit string
		cps, maxCalls           int
	)
	cmd := &cobra.Command{
		Use:     "set ID [--name NAME] [--plan PLAN] [--cps N] [--max-calls N] [--credit-limit AMOUNT]",
		Short:   "Change an account's name, sell plan, calls-per-second limit or (postpaid) credit limit",
		Example: `  carrier account set bigco --credit-limit 7500 --plan wholesale-us`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			f := cmd.Flags()
			if !f.Changed("name") && !f.Changed("plan") && !f.Changed("credit-limit") && !f.Changed("cps") && !f.Changed("max-calls") {
				return errors.New("nothing to set: give --name, --plan, --cps, --max-calls or --credit-limit")
			}
			var limit schema.Money
			if f.Changed("credit-limit") {
				var err error
				if limit, err = parseAmount("--credit-limit", creditLimit); err != nil {
					return err
				}
			}
			return withLedger(cmd.Context(), a, nats.url, func(ctx context.Context, l *ledger.Ledger, s *eventlog.ProvisionStore) error {
				if f.Changed("name") || f.Changed("plan") || f.Changed("cps") || f.Changed("max-calls") {
					acc, err := s.Accounts().Get(ctx, id)
					if err != nil {
						return notProvisioned(err, "account")
					}
					if f.Changed("name") {
						acc.Name = name
					}
					if f.Changed("plan") {
						acc.SellPlan = plan
					}
					if f.Changed("max-calls") {
						acc.MaxCalls = maxCalls
					}
					if f.Changed("cps") {
						acc.CPS = cps
					}
					ch, err := s.Accounts().Put(ctx, acc)
					if err != nil {
						return err
					}
					fmt.Fprintf(a.out, "account %s: provisioning %s\n", id, ch)
				}
				if f.Changed("credit-limit") {
					r, err := l.SetCreditLimit(ctx, id, limit)
					if errors.Is(err, ledger.ErrNotPostpaid) {
						return fmt.Errorf("account %s is prepaid: only postpaid accounts have a credit limit", id)
					}
					if err != nil {
						return err
					}
					change := "changed"
					if r.Duplicate {
						change = "unchanged"
					}
					fmt.Fprintf(a.out, "account %s: credit limit %s %s, available %s\n", id, change, r.Balance.CreditLimit, r.Balance.Available)
				}
				return nil
			})
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVar(&name, "name", "", "description")
	cmd.Flags().StringVar(&plan, "plan", "", "sell rate plan (empty: none)")
	cmd.Flags().IntVar(&cps, "cps", 0, "calls per second the account may start (0: no limit)")
	cmd.Flags().IntVar(&maxCalls, "max-calls", 0, "calls the account may have in progress at once (0: no limit)")
	cmd.Flags().StringVar(&creditLimit, "credit-limit", "", "postpaid credit limit, e.g. 500.00")
	return cmd
}

// parseAmount reads an exact decimal amount from a flag.
func parseAmount(flag, v string) (schema.Money, error) {
	m, err := schema.ParseMoney(v)
	if err != nil {
		return 0, fmt.Errorf("%s %q: want an exact decimal amount such as 10.50: %w", flag, v, err)
	}
	return m, nil
}

// balanceFields are a balance's rows for `show` commands; the first two
// are account and currency.
func balanceFields(b ledger.Balance) [][2]string {
	return [][2]string{
		{"account", b.Account},
		{"currency", b.Currency},
		{"kind", string(b.Kind)},
		{"balance", b.Balance.String()},
		{"reserved", b.Reserved.String()},
		{"available", b.Available.String()},
		{"credit limit", b.CreditLimit.String()},
		{"live calls", strconv.Itoa(len(b.Reservations))},
		{"last event", fmt.Sprintf("seq %d at %s", b.Seq, b.UpdatedAt.UTC().Format("2006-01-02 15:04:05"))},
	}
}
