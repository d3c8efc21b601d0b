package main

import (
	"context"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

func newRouteCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "route",
		Short: "Manage routes: which gateways a destination prefix hunts through",
		Long: `A route names the gateways calls to a destination prefix go to. The
proxy takes the route with the longest prefix of the Request-URI user (a
leading + is ignored; the route with no prefix is the default) and tries its
gateways in order, or in a random order drawn by weight: on 408, 5xx or no
response in time it tries the next, up to --max-attempts; 486, 487, 6xx and
other 4xx go to the caller. When every gateway failed the caller gets 503.
A call no route matches goes to the first provisioned gateway by id. Changes
reach the running proxies within a second.`,
	}
	cmd.AddCommand(
		newRouteAddCmd(a),
		newProvisionListCmd(a, "routes", (*eventlog.ProvisionStore).Routes, routeTable),
		newRouteShowCmd(a),
		newProvisionRmCmd(a, "route", "Remove a route", (*eventlog.ProvisionStore).Routes, nil),
	)
	return cmd
}

func newRouteAddCmd(a *app) *cobra.Command {
	var (
		nats    natsSettings
		r       schema.Route
		weights []int
	)
	cmd := &cobra.Command{
		Use:   "add ID --gateway GATEWAY... [--prefix DIGITS]",
		Short: "Create a route, or replace the route of that id",
		Long: `Create a route, or replace the route of that id. Its gateways must
exist (carrier gateway add) and no other route may have the same prefix.`,
		Example: `  carrier route add default --gateway carrier-a --gateway carrier-b
  carrier route add uk-mobile --prefix 447 --gateway carrier-a --gateway carrier-b --mode weighted --weight 3 --weight 1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r.ID, r.Weights = args[0], weights
			return putProvisioned(cmd.Context(), a, nats.url, r, (*eventlog.ProvisionStore).Routes, (*schema.Provisioning).CheckRoute)
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVar(&r.Prefix, "prefix", "", "destination digits the route is for, optionally after + (none: the default route)")
	cmd.Flags().StringSliceVar(&r.Gateways, "gateway", nil, "gateway id, repeatable, in hunting order (required)")
	cmd.Flags().StringVar(&r.Mode, "mode", schema.RouteOrdered, "ordered or weighted")
	cmd.Flags().IntSliceVar(&weights, "weight", nil, "weight of each gateway in weighted mode, repeatable, one per --gateway (default all equal)")
	cmd.Flags().IntVar(&r.MaxAttempts, "max-attempts", 0, "gateways tried per call at most (0: all)")
	cmd.Flags().StringVar(&r.Name, "name", "", "description")
	_ = cmd.MarkFlagRequired("gateway")
	return cmd
}

func newRouteShowCmd(a *app) *cobra.Command {
	var (
		nats   natsSettings
		format string
	)
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one route",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withProvisionStore(cmd.Context(), a, nats.url, func(ctx context.Context, s *eventlog.ProvisionStore) error {
				r, err := s.Routes().Get(ctx, args[0])
				if err != nil {
					return notProvisioned(err, "route")
				}
				return writeTable(a.out, format, fieldTable(r, [][2]string{
					{"id", r.ID},
					{"name", r.Name},
					{"prefix", routePrefix(r)},
					{"gateways", strings.Join(r.Gateways, " ")},
					{"mode", r.ModeOrDefault()},
					{"weights", joinInts(r.Weights)},
					{"max attempts", maxAttempts(r)},
				}))
			})
		},
	}
	nats.addFlags(cmd)
	addOutputFlag(cmd, &format)
	return cmd
}

func routeTable(routes []schema.Route) table {
	t := table{header: []string{"ID", "PREFIX", "GATEWAYS", "MODE", "WEIGHTS", "MAX_ATTEMPTS"}, records: routes}
	if routes == nil {
		t.records = []schema.Route{}
	}
	for _, r := range routes {
		t.rows = append(t.rows, []string{r.ID, routePrefix(r), strings.Join(r.Gateways, " "), r.ModeOrDefault(), joinInts(r.Weights), maxAttempts(r)})
	}
	return t
}

// routePrefix shows the default route's empty prefix as "(default)".
func routePrefix(r schema.Route) string {
	if r.Prefix == "" {
		return "(default)"
	}
	return r.Prefix
}

func maxAttempts(r schema.Route) string {
	if r.MaxAttempts == 0 {
		return "all"
	}
	return strconv.Itoa(r.MaxAttempts)
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, " ")
}
