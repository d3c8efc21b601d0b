package main

import (
	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

func newSupplierCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "supplier",
		Short: "Manage suppliers: who runs the gateways, and the buy plan their calls are priced on",
		Long: `A supplier is a carrier we buy termination from. Its gateways name it
(carrier gateway add --supplier); least-cost routes order them by the
supplier's buy plan, and the rater prices the supplier's side of their calls
on it. The buy plan is the rate plan "buy-<supplier>" unless --buy-plan names
another (carrier rates import). A supplier its gateways name cannot be
removed. Changes reach the running proxies within a second.`,
	}
	cmd.AddCommand(
		newSupplierAddCmd(a),
		newProvisionListCmd(a, "suppliers", (*eventlog.ProvisionStore).Suppliers, supplierTable),
		newSupplierShowCmd(a),
		newProvisionRmCmd(a, "supplier", "Remove a supplier that no gateway names", (*eventlog.ProvisionStore).Suppliers, nil),
	)
	return cmd
}

func newSupplierAddCmd(a *app) *cobra.Command {
	var (
		nats natsSettings
		s    schema.Supplier
	)
	cmd := &cobra.Command{
		Use:   "add ID --currency CUR",
		Short: "Create a supplier, or replace the supplier of that id",
		Example: `  carrier supplier add telco-x --name "Telco X" --currency USD
  carrier supplier add telco-y --currency EUR --buy-plan wholesale-y --max-calls 300 --cps 10`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s.ID = args[0]
			return putProvisioned(cmd.Context(), a, nats.url, s, (*eventlog.ProvisionStore).Suppliers, nil)
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVar(&s.Name, "name", "", "description")
	cmd.Flags().StringVar(&s.Currency, "currency", "", "ISO 4217 currency the supplier bills in, e.g. USD (required)")
	cmd.Flags().StringVar(&s.BuyPlan, "buy-plan", "", "rate plan of the supplier's prices (default buy-ID)")
	cmd.Flags().IntVar(&s.MaxCalls, "max-calls", 0, "calls in progress across all the supplier's gateways (0: no limit)")
	cmd.Flags().IntVar(&s.CPS, "cps", 0, "calls per second across all the supplier's gateways (0: no limit)")
	_ = cmd.MarkFlagRequired("currency")
	return cmd
}

func newSupplierShowCmd(a *app) *cobra.Command {
	return newProvisionShowCmd(a, "show ID", "Show one supplier", byID("supplier", (*eventlog.ProvisionStore).Suppliers),
		func(s schema.Supplier) table {
			return fieldTable(s, [][2]string{
				{"id", s.ID},
				{"name", s.Name},
				{"currency", s.Currency},
				{"buy plan", s.BuyPlanName()},
				{"max calls", cpsText(s.MaxCalls)},
				{"cps", cpsText(s.CPS)},
			})
		})
}

func supplierTable(sups []schema.Supplier) table {
	t := table{header: []string{"ID", "CURRENCY", "BUY_PLAN", "MAX_CALLS", "CPS", "NAME"}, records: sups}
	if sups == nil {
		t.records = []schema.Supplier{}
	}
	for _, s := range sups {
		t.rows = append(t.rows, []string{s.ID, s.Currency, s.BuyPlanName(), cpsText(s.MaxCalls), cpsText(s.CPS), s.Name})
	}
	return t
}
