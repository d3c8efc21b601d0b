package main

import (
	"context"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/proxy"
	"github.com/carrier-core/carrier/schema"
)

func newSubscriberCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "subscriber",
		Short: "Manage subscribers: SIP users of our domains who register phones and call with digest authentication",
		Long: `A subscriber is user@domain of an account. Its phones register with the
proxies (401 challenge, MD5 or SHA-256 digest) and may then call (407
challenge); the calls are billed to the subscriber's account, and calls to
user@domain reach its registered phones. Only the HA1 hashes of the password
are stored, never the password. Changes reach the running proxies within a
second.`,
	}
	cmd.AddCommand(
		newSubscriberAddCmd(a),
		newProvisionListCmd(a, "subscribers", (*eventlog.ProvisionStore).Subscribers, subscriberTable),
		newSubscriberShowCmd(a),
		newProvisionRmCmd(a, "subscriber", "Remove a subscriber; its phones can no longer register or call", (*eventlog.ProvisionStore).Subscribers, nil),
	)
	return cmd
}

func newSubscriberAddCmd(a *app) *cobra.Command {
	var (
		nats     natsSettings
		s        schema.Subscriber
		password string
	)
	cmd := &cobra.Command{
		Use:   "add USER@DOMAIN --account ACCOUNT (--password PASSWORD | --ha1 HEX [--ha1-sha256 HEX])",
		Short: "Create a subscriber, or replace the subscriber of that id",
		Long: `Create a subscriber, or replace the subscriber of that id. The domain is
the digest realm. --password stores the MD5 and SHA-256 HA1 of the password
(H(user:domain:password)), not the password; --ha1 and --ha1-sha256 take
hashes made elsewhere (a phone offered only the algorithm it has no hash for
is refused). The id defaults to USER_DOMAIN with other characters as '-'.`,
		Example: `  carrier subscriber add alice@sip.example.com --account acme --password 's3cret' --max-contacts 3`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user, domain, err := schema.ParseAOR(args[0])
			if err != nil {
				return fmt.Errorf("subscriber address %w", err)
			}
			s.User, s.Domain = user, domain
			if s.ID == "" {
				s.ID = schema.SubscriberID(user, domain)
			}
			switch {
			case password != "" && (s.HA1MD5 != "" || s.HA1SHA256 != ""):
				return fmt.Errorf("give --password or the HA1 hashes (--ha1, --ha1-sha256), not both")
			case password != "":
				if err := s.SetPassword(password); err != nil {
					return err
				}
			case s.HA1MD5 == "" && s.HA1SHA256 == "":
				return fmt.Errorf("--password or --ha1/--ha1-sha256 is required: the subscriber's credentials")
			}
			return putProvisioned(cmd.Context(), a, nats.url, s, (*eventlog.ProvisionStore).Subscribers, (*schema.Provisioning).CheckSubscriber)
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVar(&s.Account, "account", "", "account the subscriber's calls are billed to (required)")
	cmd.Flags().StringVar(&password, "password", "", "digest password; only its HA1 hashes are stored (env CARRIER_PASSWORD)")
	cmd.Flags().StringVar(&s.HA1MD5, "ha1", "", "MD5 HA1, 32 hex digits, instead of --password")
	cmd.Flags().StringVar(&s.HA1SHA256, "ha1-sha256", "", "SHA-256 HA1, 64 hex digits, instead of --password")
	cmd.Flags().IntVar(&s.MaxContacts, "max-contacts", 0, fmt.Sprintf("most phones registered at once (0: %d)", schema.DefaultMaxContacts))
	cmd.Flags().StringVar(&s.ID, "id", "", "subscriber id (default USER_DOMAIN)")
	cmd.Flags().StringVar(&s.Name, "name", "", "description")
	_ = cmd.MarkFlagRequired("account")
	return cmd
}

func newSubscriberShowCmd(a *app) *cobra.Command {
	return newProvisionShowCmd(a, "show ID|USER@DOMAIN", "Show one subscriber (its HA1 hashes are not shown in the table)", findSubscriber,
		func(s schema.Subscriber) table {
			return fieldTable(s, [][2]string{
				{"id", s.ID},
				{"address", s.AOR()},
				{"account", s.Account},
				{"algorithms", algorithms(s)},
				{"max_contacts", strconv.Itoa(s.MaxContactsOrDefault())},
				{"name", s.Name},
			})
		})
}

// findSubscriber reads a subscriber by id or by user@domain.
func findSubscriber(ctx context.Context, st *eventlog.ProvisionStore, ref string) (schema.Subscriber, error) {
	user, domain, err := schema.ParseAOR(ref)
	if err != nil {
		s, err := st.Subscribers().Get(ctx, ref)
		return s, notProvisioned(err, "subscriber")
	}
	all, err := st.Subscribers().List(ctx)
	if err != nil {
		return schema.Subscriber{}, err
	}
	for _, s := range all {
		if s.User == user && s.Domain == domain {
			return s, nil
		}
	}
	return schema.Subscriber{}, notProvisioned(fmt.Errorf("subscriber %s@%s: %w", user, domain, eventlog.ErrNotProvisioned), "subscriber")
}

func algorithms(s schema.Subscriber) string {
	switch {
	case s.HA1MD5 != "" && s.HA1SHA256 != "":
		return "SHA-256 MD5"
	case s.HA1SHA256 != "":
		return "SHA-256"
	default:
		return "MD5"
	}
}

func subscriberTable(subs []schema.Subscriber) table {
	t := table{header: []string{"ID", "ADDRESS", "ACCOUNT", "ALGORITHMS", "MAX_CONTACTS", "NAME"}, records: subs}
	if subs == nil {
		t.records = []schema.Subscriber{}
	}
	for _, s := range subs {
		t.rows = append(t.rows, []string{s.ID, s.AOR(), s.Account, algorithms(s), strconv.Itoa(s.MaxContactsOrDefault()), s.Name})
	}
	return t
}

// openRegistrations opens the registrar's bucket for the proxy.
func openRegistrations(ctx context.Context, js jetstream.JetStream) (*proxy.KVRegistrations, error) {
	ctx, cancel := context.WithTimeout(ctx, provisionTimeout)
	defer cancel()
	return proxy.OpenRegistrations(ctx, js)
}
