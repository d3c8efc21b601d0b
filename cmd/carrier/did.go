package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

func newDIDCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "did",
		Short: "Manage DIDs: our numbers, and where calls to them are delivered",
		Long: `A DID is a number of ours that a trunk owns. A call to it (the
Request-URI user, with or without +) that comes from the address of a
provisioned gateway, or from a trusted trunk, is delivered to the DID's
deliver-to address with the DID kept as the Request-URI user; the event
records it as "did". Calls to a DID from any other trunk are routed like any
other call. Changes reach the running proxies within a second.`,
	}
	cmd.AddCommand(
		newDIDAddCmd(a),
		newProvisionListCmd(a, "DIDs", (*eventlog.ProvisionStore).DIDs, didTable),
		newDIDShowCmd(a),
		newProvisionRmCmd(a, "did", "Remove a DID; calls to it are routed like any other", (*eventlog.ProvisionStore).DIDs, nil),
	)
	return cmd
}

func newDIDAddCmd(a *app) *cobra.Command {
	var (
		nats              natsSettings
		d                 schema.DID
		trunk, subscriber string
	)
	cmd := &cobra.Command{
		Use:   "add NUMBER (--trunk TRUNK --deliver-to HOST[:PORT] | --subscriber SUBSCRIBER)",
		Short: "Create a DID owned by a trunk or a subscriber, or replace the DID of that number",
		Long: `Create a DID owned by a trunk or a subscriber, or replace the DID of that
number. NUMBER is E.164 digits, with or without a leading +. The owner must
exist. A trunk's DID is delivered to its PBX at --deliver-to; a subscriber's
rings all of the subscriber's registered contacts at once.`,
		Example: `  carrier did add +493012345678 --trunk acme-pbx --deliver-to 203.0.113.5:5060
  carrier did add +493098765432 --subscriber alice`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			d.Number = schema.NormalDID(args[0])
			switch {
			case subscriber != "":
				if cmd.Flags().Changed("deliver-to") || cmd.Flags().Changed("transport") {
					return fmt.Errorf("did %s: --deliver-to and --transport are for a trunk's DID; a subscriber's goes to its registered contacts", d.Number)
				}
				d.OwnerKind, d.Owner, d.Transport = schema.DIDOwnerSubscriber, subscriber, ""
			case d.DeliverTo == "":
				return fmt.Errorf("did %s: a trunk's DID needs --deliver-to HOST[:PORT]", d.Number)
			default:
				d.OwnerKind, d.Owner = schema.DIDOwnerTrunk, trunk
			}
			return putProvisioned(cmd.Context(), a, nats.url, d, (*eventlog.ProvisionStore).DIDs, (*schema.Provisioning).CheckDID)
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVar(&trunk, "trunk", "", "trunk that owns the DID")
	cmd.Flags().StringVar(&subscriber, "subscriber", "", "subscriber that owns the DID")
	cmd.Flags().StringVar(&d.DeliverTo, "deliver-to", "", "host[:port] of the trunk's PBX the calls go to, port 5060 by default (a trunk's DID)")
	cmd.Flags().StringVar(&d.Transport, "transport", "udp", "udp or tcp (a trunk's DID)")
	cmd.Flags().StringVar(&d.Name, "name", "", "description")
	cmd.MarkFlagsOneRequired("trunk", "subscriber")
	cmd.MarkFlagsMutuallyExclusive("trunk", "subscriber")
	return cmd
}

func newDIDShowCmd(a *app) *cobra.Command {
	get := byID("did", (*eventlog.ProvisionStore).DIDs)
	find := func(ctx context.Context, s *eventlog.ProvisionStore, number string) (schema.DID, error) {
		return get(ctx, s, schema.NormalDID(number))
	}
	return newProvisionShowCmd(a, "show NUMBER", "Show one DID", find,
		func(d schema.DID) table {
			return fieldTable(d, [][2]string{
				{"number", d.Number},
				{"name", d.Name},
				{"owner", d.OwnerKind + " " + d.Owner},
				{"deliver to", d.DeliverTo},
				{"transport", didTransport(d)},
			})
		})
}

func didTable(dids []schema.DID) table {
	t := table{header: []string{"NUMBER", "OWNER", "DELIVER_TO", "TRANSPORT", "NAME"}, records: dids}
	if dids == nil {
		t.records = []schema.DID{}
	}
	for _, d := range dids {
		t.rows = append(t.rows, []string{d.Number, d.OwnerKind + " " + d.Owner, d.DeliverTo, didTransport(d), d.Name})
	}
	return t
}

func didTransport(d schema.DID) string {
	if d.OwnerKind != schema.DIDOwnerTrunk {
		return ""
	}
	return d.TransportOrDefault()
}
