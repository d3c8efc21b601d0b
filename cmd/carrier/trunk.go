package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

func newTrunkCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trunk",
		Short: "Manage IP trunks: the source addresses that may call, and as which account",
		Long: `A trunk maps source addresses (an IP or CIDR, optionally one port and one
transport) to an account. The proxy refuses calls from any other source with
403. Changes reach the running proxies within a second.`,
	}
	cmd.AddCommand(
		newTrunkAddCmd(a),
		newProvisionListCmd(a, "trunks", (*eventlog.ProvisionStore).Trunks, trunkTable),
		newTrunkShowCmd(a),
		newProvisionRmCmd(a, "trunk", "Remove a trunk; its sources may no longer call", (*eventlog.ProvisionStore).Trunks, nil),
	)
	return cmd
}

func newTrunkAddCmd(a *app) *cobra.Command {
	var (
		nats    natsSettings
		t       schema.Trunk
		sources []string
	)
	cmd := &cobra.Command{
		Use:   "add ID --account ACCOUNT --source SOURCE...",
		Short: "Create a trunk, or replace the trunk of that id",
		Long: `Create a trunk, or replace the trunk of that id. A source is
[transport:]CIDR[:port]: 203.0.113.0/24, udp:198.51.100.7:5060,
tcp:[2001:db8::/32]:5061. The account must exist (carrier provision apply).`,
		Example: `  carrier trunk add acme-pbx --account acme --source 203.0.113.0/24 --source udp:198.51.100.7:5060`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t.ID = args[0]
			for _, v := range sources {
				s, err := schema.ParseSource(v)
				if err != nil {
					return fmt.Errorf("--source: %w", err)
				}
				t.Sources = append(t.Sources, s)
			}
			return putProvisioned(cmd.Context(), a, nats.url, t, (*eventlog.ProvisionStore).Trunks, (*schema.Provisioning).CheckTrunk)
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVar(&t.Account, "account", "", "account the trunk's calls belong to (required)")
	cmd.Flags().StringSliceVar(&sources, "source", nil, "source [transport:]CIDR[:port], repeatable (required)")
	cmd.Flags().StringVar(&t.Name, "name", "", "description")
	cmd.Flags().BoolVar(&t.Trusted, "trusted", false, "a trusted peer (SBC, another proxy of ours): may preload a Route")
	cmd.Flags().StringVar(&t.DialPlan, "dial-plan", "", "dial plan that normalises the trunk's numbers (carrier dialplan add)")
	_ = cmd.MarkFlagRequired("account")
	_ = cmd.MarkFlagRequired("source")
	return cmd
}

func newTrunkShowCmd(a *app) *cobra.Command {
	return newProvisionShowCmd(a, "show ID", "Show one trunk", byID("trunk", (*eventlog.ProvisionStore).Trunks),
		func(t schema.Trunk) table {
			return fieldTable(t, [][2]string{
				{"id", t.ID},
				{"name", t.Name},
				{"account", t.Account},
				{"sources", sourcesText(t.Sources)},
				{"trusted", strconv.FormatBool(t.Trusted)},
				{"dial plan", t.DialPlan},
			})
		})
}

func trunkTable(trunks []schema.Trunk) table {
	t := table{header: []string{"ID", "ACCOUNT", "SOURCES", "TRUSTED", "NAME"}, records: trunks}
	if trunks == nil {
		t.records = []schema.Trunk{}
	}
	for _, tr := range trunks {
		t.rows = append(t.rows, []string{tr.ID, tr.Account, sourcesText(tr.Sources), strconv.FormatBool(tr.Trusted), tr.Name})
	}
	return t
}

func sourcesText(sources []schema.Source) string {
	parts := make([]string, len(sources))
	for i, s := range sources {
		parts[i] = s.String()
	}
	return strings.Join(parts, " ")
}

// fieldTable shows one object: a field per row in table and CSV output,
// the object itself in JSON.
func fieldTable(obj any, fields [][2]string) table {
	t := table{header: []string{"FIELD", "VALUE"}, records: obj}
	for _, f := range fields {
		t.rows = append(t.rows, []string{f[0], f[1]})
	}
	return t
}

// notProvisioned words a missing object as an operator reads it.
func notProvisioned(err error, kind string) error {
	if errors.Is(err, eventlog.ErrNotProvisioned) {
		return fmt.Errorf("%w (see `carrier %s list`)", err, kind)
	}
	return err
}
