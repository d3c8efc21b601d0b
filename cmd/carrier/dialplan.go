package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

func newDialPlanCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dialplan",
		Short: "Manage dial plans: how a trunk's numbers are normalised, classified or refused",
		Long: `A dial plan is an ordered list of rules that the proxy applies to the
initial INVITEs of the trunks that name it, before routing: callee rules to
the Request-URI user (what routes and what the gateway sees; To is left as
sent), caller rules to the From user (a P-Asserted-Identity passes as sent).
For each number the first rule that matches applies and ends the plan, unless
it says continue. A rule matches by prefix, by regular expression (RE2), or
every number when it has neither, and then:

  strip: N, add: PREFIX      remove N leading characters, then prepend PREFIX
  replace: TEMPLATE          with regexp: replace the matched part; $1, ${name}
  class: LABEL               label the call (mobile, premium, ...)
  reject: 484|404|420|403    refuse the call, with reason: PHRASE

The transaction event records the numbers as received (from_uri, ruri) and as
normalised (caller_e164, callee_e164) and the class. Rules are read from a
YAML or JSON file: a list of rules, or {name: ..., rules: [...]}:

  - {name: intl, prefix: "00", strip: 2, add: "+"}
  - {name: national, regexp: '^0([1-9][0-9]{5,})$', replace: '+49$1'}
  - {name: mobile, regexp: '^\+491[5-7]', class: mobile, continue: true}
  - {name: premium, prefix: "+49900", reject: 403, reason: Premium Barred}
  - {name: short, regexp: '^[0-9]{1,5}$', reject: 484}
  - {name: caller, number: caller, prefix: "0", strip: 1, add: "+49"}

A trunk names its dial plan with "dialplan attach" or dial_plan in a
provisioning file. Changes reach the running proxies within a second.`,
	}
	cmd.AddCommand(
		newDialPlanAddCmd(a),
		newDialPlanListCmd(a),
		newDialPlanShowCmd(a),
		newProvisionRmCmd(a, "dialplan", "Remove a dial plan that no trunk names", (*eventlog.ProvisionStore).DialPlans, nil),
		newDialPlanAttachCmd(a),
		newDialPlanDetachCmd(a),
	)
	return cmd
}

func newDialPlanAddCmd(a *app) *cobra.Command {
	var (
		nats natsSettings
		file string
		name string
	)
	cmd := &cobra.Command{
		Use:     "add ID -f RULES.yaml",
		Short:   "Create a dial plan from a file of rules, or replace the dial plan of that id",
		Example: `  carrier dialplan add de-national -f de-national.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return errors.New("-f FILE is required: the YAML or JSON file of the rules (see carrier dialplan --help)")
			}
			d, err := readDialPlanFile(file)
			if err != nil {
				return err
			}
			d.ID = args[0]
			if name != "" {
				d.Name = name
			}
			return putProvisioned(cmd.Context(), a, nats.url, d, (*eventlog.ProvisionStore).DialPlans, (*schema.Provisioning).CheckDialPlan)
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "YAML or JSON file of the rules (required)")
	cmd.Flags().StringVar(&name, "name", "", "description")
	return cmd
}

// readDialPlanFile reads a dial plan's rules: a list of rules, or an
// object with name and rules. Like provisioning files it goes through
// JSON, so that a misspelt key is an error.
func readDialPlanFile(path string) (schema.DialPlan, error) {
	var d schema.DialPlan
	rulesList := func(doc any) any {
		if list, ok := doc.([]any); ok {
			return map[string]any{"rules": list}
		}
		return doc
	}
	err := readStrictFile("dial plan file", path, "a list of rules, or name and rules; rule keys: name, number, prefix, regexp, strip, add, replace, class, reject, reason, continue", rulesList, &d)
	return d, err
}

func newDialPlanListCmd(a *app) *cobra.Command {
	var (
		nats   natsSettings
		format string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the dial plans and the trunks that use them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withProvisionStore(cmd.Context(), a, nats.url, func(ctx context.Context, s *eventlog.ProvisionStore) error {
				p, err := s.Load(ctx)
				if err != nil {
					return err
				}
				t := table{header: []string{"ID", "RULES", "TRUNKS", "NAME"}, records: []schema.DialPlan{}}
				var plans []schema.DialPlan
				for _, id := range schema.SortedIDs(p.DialPlans) {
					d := p.DialPlans[id]
					plans = append(plans, d)
					t.rows = append(t.rows, []string{d.ID, strconv.Itoa(len(d.Rules)), strings.Join(p.TrunksUsingDialPlan(d.ID), " "), d.Name})
				}
				if plans != nil {
					t.records = plans
				}
				return writeTable(a.out, format, t)
			})
		},
	}
	nats.addFlags(cmd)
	addOutputFlag(cmd, &format)
	return cmd
}

func newDialPlanShowCmd(a *app) *cobra.Command {
	return newProvisionShowCmd(a, "show ID", "Show a dial plan's rules in order", byID("dialplan", (*eventlog.ProvisionStore).DialPlans),
		func(d schema.DialPlan) table {
			t := table{header: []string{"#", "NAME", "NUMBER", "MATCH", "ACTION", "THEN"}, records: d}
			for i, r := range d.Rules {
				then := "stop"
				if r.Continue {
					then = "continue"
				}
				t.rows = append(t.rows, []string{strconv.Itoa(i + 1), r.Name, r.NumberOrDefault(), dialMatch(r), dialAction(r), then})
			}
			return t
		})
}

func dialMatch(r schema.DialRule) string {
	switch {
	case r.Prefix != "":
		return "prefix " + r.Prefix
	case r.Regexp != "":
		return "regexp " + r.Regexp
	}
	return "any"
}

func dialAction(r schema.DialRule) string {
	var parts []string
	if r.Reject != 0 {
		parts = append(parts, fmt.Sprintf("reject %d %s", r.Reject, r.RejectReason()))
	}
	if r.Strip != 0 {
		parts = append(parts, "strip "+strconv.Itoa(r.Strip))
	}
	if r.Add != "" {
		parts = append(parts, "add "+r.Add)
	}
	if r.Replace != "" {
		parts = append(parts, "replace "+r.Replace)
	}
	if r.Class != "" {
		parts = append(parts, "class "+r.Class)
	}
	if len(parts) == 0 {
		return "keep"
	}
	return strings.Join(parts, ", ")
}

func newDialPlanAttachCmd(a *app) *cobra.Command {
	var (
		nats   natsSettings
		trunks []string
	)
	cmd := &cobra.Command{
		Use:     "attach ID --trunk TRUNK...",
		Short:   "Make trunks normalise their calls' numbers with a dial plan",
		Example: `  carrier dialplan attach de-national --trunk acme-pbx`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return setTrunkDialPlan(cmd.Context(), a, nats.url, trunks, args[0])
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringSliceVar(&trunks, "trunk", nil, "trunk id, repeatable (required)")
	_ = cmd.MarkFlagRequired("trunk")
	return cmd
}

func newDialPlanDetachCmd(a *app) *cobra.Command {
	var (
		nats   natsSettings
		trunks []string
	)
	cmd := &cobra.Command{
		Use:   "detach --trunk TRUNK...",
		Short: "Let trunks' numbers pass as sent, without a dial plan",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return setTrunkDialPlan(cmd.Context(), a, nats.url, trunks, "")
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringSliceVar(&trunks, "trunk", nil, "trunk id, repeatable (required)")
	_ = cmd.MarkFlagRequired("trunk")
	return cmd
}

// setTrunkDialPlan names dial plan plan ("" for none) on each trunk. The
// trunks are checked first and none is changed if one is missing.
func setTrunkDialPlan(ctx context.Context, a *app, natsURL string, trunks []string, plan string) error {
	return withProvisionStore(ctx, a, natsURL, func(ctx context.Context, s *eventlog.ProvisionStore) error {
		cur, err := s.Load(ctx)
		if err != nil {
			return err
		}
		if _, ok := cur.DialPlans[plan]; plan != "" && !ok {
			return fmt.Errorf("dial plan %s: %w (see `carrier dialplan list`)", plan, eventlog.ErrNotProvisioned)
		}
		for _, id := range trunks {
			if _, ok := cur.Trunks[id]; !ok {
				return fmt.Errorf("trunk %s: %w (see `carrier trunk list`)", id, eventlog.ErrNotProvisioned)
			}
		}
		for _, id := range trunks {
			t := cur.Trunks[id]
			t.DialPlan = plan
			ch, err := s.Trunks().Put(ctx, t)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "trunk %s %s\n", id, ch)
		}
		return nil
	})
}
