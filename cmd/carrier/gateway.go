package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

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
		newProvisionRmCmd(a, "gateway", "Remove a gateway that no route uses", (*eventlog.ProvisionStore).Gateways, gatewayUnused),
	)
	return cmd
}

func newGatewayAddCmd(a *app) *cobra.Command {
	var (
		nats natsSettings
		g    schema.Gateway
	)
	cmd := &cobra.Command{
		Use:     "add ID --address HOST[:PORT]",
		Short:   "Create a gateway, or replace the gateway of that id",
		Example: `  carrier gateway add carrier-a --address 192.0.2.10:5060 --transport udp`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			g.ID = args[0]
			return putProvisioned(cmd.Context(), a, nats.url, g, (*eventlog.ProvisionStore).Gateways, nil)
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVar(&g.Address, "address", "", "host[:port] of the gateway, port 5060 by default (required)")
	cmd.Flags().StringVar(&g.Transport, "transport", "udp", "udp or tcp")
	cmd.Flags().IntVar(&g.CPS, "cps", 0, "calls per second the proxy sends the gateway; over it a call goes to the route's next gateway (0: no limit)")
	cmd.Flags().StringVar(&g.Supplier, "supplier", "", "supplier the gateway belongs to: its buy plan is buy-SUPPLIER (least-cost routing and the rater)")
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
			})
		})
}

func gatewayTable(gws []schema.Gateway) table {
	t := table{header: []string{"ID", "ADDRESS", "TRANSPORT", "CPS"}, records: gws}
	if gws == nil {
		t.records = []schema.Gateway{}
	}
	for _, g := range gws {
		t.rows = append(t.rows, []string{g.ID, g.Address, g.TransportOrDefault(), cpsText(g.CPS)})
	}
	return t
}

// cpsText shows a calls-per-second limit, "-" for none.
func cpsText(cps int) string {
	if cps == 0 {
		return "-"
	}
	return strconv.Itoa(cps)
}

// gatewayUnused refuses to remove a gateway that routes still name.
func gatewayUnused(ctx context.Context, s *eventlog.ProvisionStore, id string) error {
	cur, err := s.Load(ctx)
	if err != nil {
		return err
	}
	if used := cur.RoutesUsing(id); len(used) > 0 {
		return fmt.Errorf("gateway %s is used by route %s: change or remove the routes first (carrier route add|rm)", id, strings.Join(used, ", "))
	}
	return nil
}
