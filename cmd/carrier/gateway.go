package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

func newGatewayCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Manage outbound gateways: the SIP servers calls are sent to",
		Long: `Gateways are the next hops of calls. Routes (carrier provision apply)
name the gateways a destination hunts through; a call no route matches goes
to the first provisioned gateway by id, and to the proxies' --gateway
address while none is provisioned. Changes reach the running proxies within
a second.`,
	}
	cmd.AddCommand(
		newGatewayAddCmd(a),
		newProvisionListCmd(a, "gateways", (*eventlog.ProvisionStore).Gateways, gatewayTable),
		newGatewayShowCmd(a),
		newProvisionRmCmd(a, "gateway", "Remove a gateway that no route uses", (*eventlog.ProvisionStore).Gateways, nil),
	)
	return cmd
}

func newGatewayAddCmd(a *app) *cobra.Command {
	var (
		nats natsSettings
		g    schema.Gateway
	)
	cmd := &cobra.Command{
		Use:   "add ID --address HOST[:PORT]",
		Short: "Create a gateway, or replace the gateway of that id",
		Example: `  carrier gateway add carrier-a --address 192.0.2.10:5060 --transport udp
  carrier gateway add telco-x-1 --address gw1.telco-x.example --supplier telco-x`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g.ID = args[0]
			return putProvisioned(cmd.Context(), a, nats.url, g, (*eventlog.ProvisionStore).Gateways, checkGateway)
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVar(&g.Address, "address", "", "host[:port] of the gateway, port 5060 by default (required)")
	cmd.Flags().StringVar(&g.Transport, "transport", "udp", "udp or tcp")
	cmd.Flags().IntVar(&g.CPS, "cps", 0, "calls per second the proxy sends the gateway; over it a call goes to the route's next gateway (0: no limit)")
	cmd.Flags().IntVar(&g.MaxCalls, "max-calls", 0, "calls in progress (ringing or up) the gateway may carry; over it a call goes to the route's next gateway (0: no limit)")
	cmd.Flags().StringVar(&g.Supplier, "supplier", "", "provisioned supplier the gateway belongs to (carrier supplier add): its buy plan prices least-cost routing and the rater's buy side")
	_ = cmd.MarkFlagRequired("address")
	return cmd
}

func newGatewayShowCmd(a *app) *cobra.Command {
	return newProvisionShowCmd(a, "show ID", "Show one gateway", byID("gateway", (*eventlog.ProvisionStore).Gateways),
		func(g schema.Gateway) table {
			return fieldTable(g, [][2]string{
				{"id", g.ID},
				{"address", g.Address},
				{"transport", g.TransportOrDefault()},
				{"cps", cpsText(g.CPS)},
				{"max calls", cpsText(g.MaxCalls)},
				{"supplier", g.Supplier},
			})
		})
}

func gatewayTable(gws []schema.Gateway) table {
	t := table{header: []string{"ID", "ADDRESS", "TRANSPORT", "CPS", "MAX CALLS", "SUPPLIER"}, records: gws}
	if gws == nil {
		t.records = []schema.Gateway{}
	}
	for _, g := range gws {
		t.rows = append(t.rows, []string{g.ID, g.Address, g.TransportOrDefault(), cpsText(g.CPS), cpsText(g.MaxCalls), g.Supplier})
	}
	return t
}

// cpsText shows a limit (calls per second, calls in progress), "-" for
// none.
// cpsText shows a limit (calls per second, calls in progress); 0 is none.
func cpsText(cps int) string {
	if cps == 0 {
		return "-"
	}
	return strconv.Itoa(cps)
}

// checkGateway checks a gateway against the provisioning, saying how to
// provision a supplier it names that does not exist.
func checkGateway(p *schema.Provisioning, g schema.Gateway) error {
	err := p.CheckGateway(g)
	if _, ok := p.Suppliers[g.Supplier]; err != nil && g.Supplier != "" && !ok {
		return fmt.Errorf("%w (provision it first: carrier supplier add %s --currency CUR)", err, g.Supplier)
	}
	return err
}
