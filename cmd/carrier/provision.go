package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

// provisionTimeout bounds one CLI operation on the provisioning bucket,
// so that a command against a NATS server that is not there fails.
const provisionTimeout = 10 * time.Second

// withProvisionStore runs f on the provisioning bucket of the NATS server
// at url, as a short-lived CLI client.
func withProvisionStore(ctx context.Context, a *app, url string, f func(ctx context.Context, s *eventlog.ProvisionStore) error) error {
	nc, js, err := eventlog.Connect(url, "carrier-cli", a.log)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, provisionTimeout)
	defer cancel()
	s, err := eventlog.OpenProvisionStore(ctx, js, a.log)
	if err != nil {
		return fmt.Errorf("%w (is NATS with JetStream running at %s? start it with `carrier up` or `carrier nats`, or set --nats-url)", err, url)
	}
	return f(ctx, s)
}

// waitProvisionStore opens the provisioning bucket for a long-running
// component, waiting for JetStream when it is not up yet.
func waitProvisionStore(ctx context.Context, log *slog.Logger, js jetstream.JetStream) (*eventlog.ProvisionStore, error) {
	wait := 250 * time.Millisecond
	for {
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := eventlog.OpenProvisionStore(attempt, js, log)
		cancel()
		if err == nil {
			return s, nil
		}
		log.Warn("waiting for the provisioning bucket", "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// Local trunk of --trunk-cidr: for a laptop or a lab, where the callers
// are known addresses and one account, in --trunk-currency, takes their
// calls.
const (
	localTrunk   = "local"
	localAccount = "local"
)

// provisionLocalTrunk puts trunk "local" of account "local" with the given
// sources, as --trunk-cidr asks, and says so in the log.
func provisionLocalTrunk(ctx context.Context, log *slog.Logger, s *eventlog.ProvisionStore, cidrs []string, currency string) error {
	t := schema.Trunk{ID: localTrunk, Name: "from --trunk-cidr", Account: localAccount}
	for _, c := range cidrs {
		src, err := schema.ParseSource(c)
		if err != nil {
			return err
		}
		t.Sources = append(t.Sources, src)
	}
	set := schema.ProvisionSet{Accounts: []schema.Account{{ID: localAccount, Name: "from --trunk-cidr", Currency: currency}}, Trunks: []schema.Trunk{t}}
	applied, err := s.Apply(ctx, set)
	if err != nil {
		return err
	}
	log.Warn("trunk provisioned from --trunk-cidr: calls from these sources are admitted", "trunk", localTrunk, "account", localAccount,
		"sources", sourcesText(t.Sources), "change", applied[len(applied)-1].Change)
	return nil
}

func newProvisionCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "provision",
		Short: "Load or export the whole network (accounts, trunks, suppliers, gateways, routes, subscribers, dial plans, DIDs) as a file",
	}
	cmd.AddCommand(newProvisionApplyCmd(a), newProvisionExportCmd(a))
	return cmd
}

func newProvisionExportCmd(a *app) *cobra.Command {
	var nats natsSettings
	cmd := &cobra.Command{
		Use:     "export",
		Short:   "Print every provisioned object as a file that apply reads back",
		Example: `  carrier provision export > network.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withProvisionStore(cmd.Context(), a, nats.url, func(ctx context.Context, s *eventlog.ProvisionStore) error {
				p, err := s.Load(ctx)
				if err != nil {
					return err
				}
				var set schema.ProvisionSet
				for _, id := range schema.SortedIDs(p.Accounts) {
					set.Accounts = append(set.Accounts, p.Accounts[id])
				}
				for _, id := range schema.SortedIDs(p.Suppliers) {
					set.Suppliers = append(set.Suppliers, p.Suppliers[id])
				}
				for _, id := range schema.SortedIDs(p.Gateways) {
					set.Gateways = append(set.Gateways, p.Gateways[id])
				}
				for _, id := range schema.SortedIDs(p.Trunks) {
					set.Trunks = append(set.Trunks, p.Trunks[id])
				}
				for _, id := range schema.SortedIDs(p.Routes) {
					set.Routes = append(set.Routes, p.Routes[id])
				}
				for _, id := range schema.SortedIDs(p.Subscribers) {
					set.Subscribers = append(set.Subscribers, p.Subscribers[id])
				}
				for _, id := range schema.SortedIDs(p.DialPlans) {
					set.DialPlans = append(set.DialPlans, p.DialPlans[id])
				}
				for _, id := range schema.SortedIDs(p.DIDs) {
					set.DIDs = append(set.DIDs, p.DIDs[id])
				}
				return writeProvisionFile(a.out, set)
			})
		},
	}
	nats.addFlags(cmd)
	return cmd
}

func newProvisionApplyCmd(a *app) *cobra.Command {
	var (
		nats   natsSettings
		file   string
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update every object a YAML file declares; applying it again changes nothing",
		Long: `Apply creates or updates the accounts, suppliers, gateways, trunks, routes,
subscribers, dial plans and DIDs a YAML file declares. The whole file is
checked first (each object, duplicate ids, trunk accounts, gateway
suppliers, sources claimed by two trunks, route gateways, prefixes claimed
by two routes) and nothing is written if any entry is wrong. Objects the file does not name are left alone. The running proxies
pick the change up within a second.

The file uses the JSON field names of the objects:

  accounts:
    - {id: acme, name: ACME Telecom, currency: EUR, sell_plan: retail-eu}
  suppliers:        # buy_plan defaults to buy-<id>
    - {id: telco-x, name: Telco X, currency: USD, buy_plan: wholesale-x, max_calls: 500, cps: 20}
  gateways:
    - {id: carrier-a, address: "192.0.2.10:5060", transport: udp, supplier: telco-x}
  trunks:
    - id: acme-pbx
      account: acme
      sources:
        - {cidr: 203.0.113.0/24}
        - {cidr: 198.51.100.7, port: 5060, transport: udp}
  routes:
    - {id: default, prefix: "", gateways: [carrier-a, carrier-b], max_attempts: 2}
    - {id: uk-mobile, prefix: "447", gateways: [carrier-a, carrier-b],
       mode: weighted, weights: [3, 1]}
    - {id: de-lcr, prefix: "49", gateways: [carrier-a, carrier-b], mode: lcr}
    - {id: de-acme-office, prefix: "49", gateways: [carrier-b], accounts: [acme],
       windows: [{days: mon-fri, from: "08:00", to: "18:00"}], time_zone: Europe/Berlin}
  dial_plans:
    - id: de-national
      rules:
        - {prefix: "00", strip: 2, add: "+"}
        - {regexp: '^0([1-9][0-9]+)$', replace: '+49$1'}
        - {regexp: '^[0-9]{1,5}$', reject: 484}
  dids:
    - {number: "493012345678", owner_kind: trunk, owner: acme-pbx,
       deliver_to: "203.0.113.5:5060"}
  subscribers:      # HA1 hashes, as carrier subscriber add --password makes them
    - {id: alice, user: alice, domain: sip.example.com, account: acme,
       ha1_md5: 0123456789abcdef0123456789abcdef, max_contacts: 3}

A trunk names its dial plan with dial_plan: de-national; a gateway its
supplier with supplier: (its buy plan prices lcr routes and the rater's
buy side).`,
		Example: `  carrier provision apply -f network.yaml --dry-run
  carrier provision apply -f network.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("-f FILE is required: the YAML file to apply")
			}
			set, err := readProvisionFile(file)
			if err != nil {
				return err
			}
			return withProvisionStore(cmd.Context(), a, nats.url, func(ctx context.Context, s *eventlog.ProvisionStore) error {
				apply, verb := s.Apply, ""
				if dryRun {
					apply, verb = s.Plan, "would be "
				}
				applied, err := apply(ctx, set)
				counts := map[eventlog.Change]int{}
				for _, ap := range applied {
					counts[ap.Change]++
					if ap.Change != eventlog.Unchanged {
						fmt.Fprintf(a.out, "%s%s %s %s\n", verb, ap.Change, ap.Kind, ap.ID)
					}
				}
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				if counts[eventlog.Created]+counts[eventlog.Updated] == 0 {
					fmt.Fprintf(a.out, "nothing to change: the %d objects of %s are provisioned as declared\n", len(applied), file)
					return nil
				}
				fmt.Fprintf(a.out, "%s: %d %screated, %d %supdated, %d unchanged\n", file, counts[eventlog.Created], verb, counts[eventlog.Updated], verb, counts[eventlog.Unchanged])
				return nil
			})
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML file of accounts, suppliers, gateways, trunks, routes, subscribers, dial plans and DIDs")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "check the file and say what would change, without changing anything")
	return cmd
}

// writeProvisionFile writes set as YAML with the objects' JSON names, the
// form readProvisionFile reads.
func writeProvisionFile(w io.Writer, set schema.ProvisionSet) error {
	j, err := json.Marshal(set)
	if err != nil {
		return err
	}
	var doc any
	if err := json.Unmarshal(j, &doc); err != nil {
		return err
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

// readProvisionFile reads a YAML provisioning file. It goes through JSON
// so that the file's keys are the objects' JSON names, and a misspelt key
// is an error rather than a field silently left empty.
func readProvisionFile(path string) (schema.ProvisionSet, error) {
	var set schema.ProvisionSet
	if err := readStrictFile("provisioning file", path, "keys: accounts, suppliers, gateways, trunks, routes, subscribers, dial_plans, dids, with the objects' fields", nil, &set); err != nil {
		return set, err
	}
	if set.Len() == 0 {
		return set, fmt.Errorf("provisioning file %s declares no objects (accounts, suppliers, gateways, trunks ...)", path)
	}
	return set, nil
}

// readStrictFile decodes a YAML (or JSON) file into v through JSON, so
// that the file's keys are v's JSON names and a misspelt key is an error
// rather than a field silently left empty. adapt, when not nil, may
// reshape the document first; hint says what keys are expected.
func readStrictFile(what, path, hint string, adapt func(any) any, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	if adapt != nil {
		doc = adapt(doc)
	}
	if doc == nil {
		return fmt.Errorf("%s %s is empty", what, path)
	}
	j, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s %s: %v (%s)", what, path, err, hint)
	}
	return nil
}

// newProvisionListCmd lists one kind of provisioned object; trunks,
// gateways and routes differ only in their collection and their table.
func newProvisionListCmd[T schema.Object](a *app, plural string, collection func(*eventlog.ProvisionStore) eventlog.Collection[T], render func([]T) table) *cobra.Command {
	var (
		nats   natsSettings
		format string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the " + plural,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withProvisionStore(cmd.Context(), a, nats.url, func(ctx context.Context, s *eventlog.ProvisionStore) error {
				objs, err := collection(s).List(ctx)
				if err != nil {
					return err
				}
				return writeTable(a.out, format, render(objs))
			})
		},
	}
	nats.addFlags(cmd)
	addOutputFlag(cmd, &format)
	return cmd
}

// newProvisionShowCmd shows one provisioned object; find gets it by the
// id the operator gave, render lays it out.
func newProvisionShowCmd[T schema.Object](a *app, use, short string,
	find func(ctx context.Context, s *eventlog.ProvisionStore, id string) (T, error), render func(T) table) *cobra.Command {
	var (
		nats   natsSettings
		format string
	)
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withProvisionStore(cmd.Context(), a, nats.url, func(ctx context.Context, s *eventlog.ProvisionStore) error {
				obj, err := find(ctx, s, args[0])
				if err != nil {
					return err
				}
				return writeTable(a.out, format, render(obj))
			})
		},
	}
	nats.addFlags(cmd)
	addOutputFlag(cmd, &format)
	return cmd
}

// byID finds a provisioned object of a collection by its id.
func byID[T schema.Object](kind string, collection func(*eventlog.ProvisionStore) eventlog.Collection[T]) func(context.Context, *eventlog.ProvisionStore, string) (T, error) {
	return func(ctx context.Context, s *eventlog.ProvisionStore, id string) (T, error) {
		obj, err := collection(s).Get(ctx, id)
		if err != nil {
			return obj, notProvisioned(err, kind)
		}
		return obj, nil
	}
}

// newProvisionRmCmd removes one provisioned object after check, when
// given, allows it, and no other object names it: the rules add and apply
// check must hold without it (schema.Provisioning.CheckRemove).
func newProvisionRmCmd[T schema.Object](a *app, kind, short string, collection func(*eventlog.ProvisionStore) eventlog.Collection[T],
	check func(ctx context.Context, natsURL, id string) error) *cobra.Command {
	var nats natsSettings
	cmd := &cobra.Command{
		Use:   "rm ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if check != nil {
				if err := check(cmd.Context(), nats.url, args[0]); err != nil {
					return err
				}
			}
			return withProvisionStore(cmd.Context(), a, nats.url, func(ctx context.Context, s *eventlog.ProvisionStore) error {
				cur, err := s.Load(ctx)
				if err != nil {
					return err
				}
				var zero T
				if err := cur.CheckRemove(zero.ObjectKind(), args[0]); err != nil {
					return err
				}
				if err := collection(s).Delete(ctx, args[0]); err != nil {
					return notProvisioned(err, kind)
				}
				fmt.Fprintf(a.out, "%s %s removed\n", kind, args[0])
				return nil
			})
		},
	}
	nats.addFlags(cmd)
	return cmd
}

// putProvisioned validates obj, checks it against what is provisioned
// (when check is given: the objects it names exist, nothing else claims
// what it claims), stores it and says whether it was created, updated or
// unchanged.
func putProvisioned[T schema.Object](ctx context.Context, a *app, natsURL string, obj T,
	collection func(*eventlog.ProvisionStore) eventlog.Collection[T], check func(*schema.Provisioning, T) error) error {
	if err := obj.Validate(); err != nil {
		return err
	}
	return withProvisionStore(ctx, a, natsURL, func(ctx context.Context, s *eventlog.ProvisionStore) error {
		if check != nil {
			cur, err := s.Load(ctx)
			if err != nil {
				return err
			}
			if err := check(cur, obj); err != nil {
				return err
			}
		}
		ch, err := collection(s).Put(ctx, obj)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.out, "%s %s %s\n", obj.ObjectKind(), obj.ObjectID(), ch)
		return nil
	})
}
