package main

import (
	"fmt"
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
reach the running proxies within a second.

Mode lcr (least-cost routing) orders the gateways of each call by their buy
rate for its destination, cheapest first: the rate plan "buy-<supplier>" of
the gateway's supplier, else "buy-<gateway>" (carrier rates import), as the
rater prices the call; gateways without a rate follow in the order listed.

A route may be limited to accounts (--account) and to time windows
(--window "mon-fri 08:00-18:00", read in --time-zone). A call takes the route
with the longest prefix among those for its account at that time; among
routes of one prefix, one for some accounts beats one for any, then one with
windows beats one without, then the lower id.`,
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
		windows []string
	)
	cmd := &cobra.Command{
		Use:   "add ID --gateway GATEWAY... [--prefix DIGITS]",
		Short: "Create a route, or replace the route of that id",
		Long: `Create a route, or replace the route of that id. Its gateways must
exist (carrier gateway add) and no other route may have the same prefix.`,
		Example: `  carrier route add default --gateway carrier-a --gateway carrier-b
  carrier route add uk-mobile --prefix 447 --gateway carrier-a --gateway carrier-b --mode weighted --weight 3 --weight 1
  carrier route add de-lcr --prefix 49 --gateway carrier-a --gateway carrier-b --mode lcr
  carrier route add de-acme-office --prefix 49 --account acme --window "mon-fri 08:00-18:00" --time-zone Europe/Berlin --gateway carrier-b`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r.ID, r.Weights = args[0], weights
			r.Windows = nil
			for _, v := range windows {
				w, err := schema.ParseTimeWindow(v)
				if err != nil {
					return fmt.Errorf("--window: %w", err)
				}
				r.Windows = append(r.Windows, w)
			}
			return putProvisioned(cmd.Context(), a, nats.url, r, (*eventlog.ProvisionStore).Routes, (*schema.Provisioning).CheckRoute)
		},
	}
	nats.addFlags(cmd)
	cmd.Flags().StringVar(&r.Prefix, "prefix", "", "destination digits the route is for, optionally after + (none: the default route)")
	cmd.Flags().StringSliceVar(&r.Gateways, "gateway", nil, "gateway id, repeatable, in hunting order (required)")
	cmd.Flags().StringVar(&r.Mode, "mode", schema.RouteOrdered, "ordered, weighted or lcr (cheapest buy rate first)")
	cmd.Flags().StringSliceVar(&r.Accounts, "account", nil, "limit the route to the calls of this account, repeatable (default: every account)")
	cmd.Flags().StringArrayVar(&windows, "window", nil, `limit the route to a time window "[DAYS ]HH:MM-HH:MM", e.g. "mon-fri 08:00-18:00", repeatable (default: always)`)
	cmd.Flags().StringVar(&r.TimeZone, "time-zone", "", "IANA time zone the windows are read in (default UTC)")
	cmd.Flags().IntSliceVar(&weights, "weight", nil, "weight of each gateway in weighted mode, repeatable, one per --gateway (default all equal)")
	cmd.Flags().IntVar(&r.MaxAttempts, "max-attempts", 0, "gateways tried per call at most (0: all)")
	cmd.Flags().StringVar(&r.Name, "name", "", "description")
	_ = cmd.MarkFlagRequired("gateway")
	return cmd
}

func newRouteShowCmd(a *app) *cobra.Command {
	return newProvisionShowCmd(a, "show ID", "Show one route", byID("route", (*eventlog.ProvisionStore).Routes),
		func(r schema.Route) table {
			return fieldTable(r, [][2]string{
				{"id", r.ID},
				{"name", r.Name},
				{"prefix", routePrefix(r)},
				{"gateways", strings.Join(r.Gateways, " ")},
				{"mode", r.ModeOrDefault()},
				{"weights", joinInts(r.Weights)},
				{"max attempts", maxAttempts(r)},
				{"accounts", routeAccounts(r)},
				{"windows", routeWindows(r)},
			})
		})
}

func routeTable(routes []schema.Route) table {
	t := table{header: []string{"ID", "PREFIX", "GATEWAYS", "MODE", "WEIGHTS", "MAX_ATTEMPTS", "ACCOUNTS", "WINDOWS"}, records: routes}
	if routes == nil {
		t.records = []schema.Route{}
	}
	for _, r := range routes {
		t.rows = append(t.rows, []string{r.ID, routePrefix(r), strings.Join(r.Gateways, " "), r.ModeOrDefault(), joinInts(r.Weights), maxAttempts(r),
			routeAccounts(r), routeWindows(r)})
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

func routeAccounts(r schema.Route) string {
	if len(r.Accounts) == 0 {
		return "any"
	}
	return strings.Join(r.Accounts, " ")
}

func routeWindows(r schema.Route) string {
	if len(r.Windows) == 0 {
		return "always"
	}
	parts := make([]string, len(r.Windows))
	for i, w := range r.Windows {
		parts[i] = w.String()
	}
	tz := r.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	return strings.Join(parts, ", ") + " (" + tz + ")"
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
