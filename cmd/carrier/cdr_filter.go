package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/analytics"
	"github.com/carrier-core/carrier/schema"
)

// cdrFilterFlags are the CDR selection flags that cdr list, cdr export and
// report share, so that a filter means the same in each.
type cdrFilterFlags struct {
	from, to       string
	since          time.Duration
	account, trunk string
	caller, callee string
	dispositions   []string
	gateway        string
	supplier       string
	class, did     string
	directions     []string
	minDuration    time.Duration
}

func (f *cdrFilterFlags) addFlags(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.from, "from", "", "start of the range: RFC 3339 time or YYYY-MM-DD (UTC)")
	fl.StringVar(&f.to, "to", "", "end of the range, exclusive (default now)")
	fl.DurationVar(&f.since, "since", 24*time.Hour, "range ending at --to, when --from is not given")
	fl.StringVar(&f.account, "account", "", "only this account")
	fl.StringVar(&f.trunk, "trunk", "", "only this trunk")
	fl.StringVar(&f.caller, "caller", "", "only callers starting with these digits (as received or E.164)")
	fl.StringVar(&f.callee, "callee", "", "only callees starting with these digits (as received or E.164)")
	fl.StringSliceVar(&f.dispositions, "disposition", nil, "only these dispositions: "+strings.Join(dispositionNames(), ", "))
	fl.StringVar(&f.gateway, "gateway", "", "only calls accounted on this gateway (the answered or last one tried)")
	fl.StringVar(&f.supplier, "supplier", "", "only calls accounted on this supplier")
	fl.StringVar(&f.class, "class", "", "only calls of this dial plan class, e.g. mobile")
	fl.StringVar(&f.did, "did", "", "only inbound calls to this DID of ours (E.164, with or without +)")
	fl.StringSliceVar(&f.directions, "direction", nil, "only these directions: "+strings.Join(directionNames(), ", "))
	fl.DurationVar(&f.minDuration, "min-duration", 0, "only calls answered for at least this long, e.g. 30s")
}

var directions = []schema.Direction{schema.Outbound, schema.Inbound, schema.OnNet}

func directionNames() []string {
	names := make([]string, len(directions))
	for i, d := range directions {
		names[i] = string(d)
	}
	return names
}

var dispositions = []schema.Disposition{schema.Answered, schema.Busy, schema.NoAnswer, schema.Cancelled, schema.Failed, schema.Congestion}

func dispositionNames() []string {
	names := make([]string, len(dispositions))
	for i, d := range dispositions {
		names[i] = string(d)
	}
	return names
}

// filter resolves the flags into an analytics.CDRFilter.
func (f *cdrFilterFlags) filter(now time.Time) (analytics.CDRFilter, error) {
	from, to, err := timeRange(f.from, f.to, f.since, now)
	if err != nil {
		return analytics.CDRFilter{}, err
	}
	if f.minDuration < 0 {
		return analytics.CDRFilter{}, fmt.Errorf("--min-duration %s is negative", f.minDuration)
	}
	out := analytics.CDRFilter{
		From: from, To: to, Account: f.account, Trunk: f.trunk,
		CallerPrefix: f.caller, CalleePrefix: f.callee,
		Gateway: f.gateway, Supplier: f.supplier, MinDuration: f.minDuration,
		Class: f.class, DID: f.did,
	}
	for _, d := range f.dispositions {
		if !slices.Contains(dispositions, schema.Disposition(d)) {
			return analytics.CDRFilter{}, fmt.Errorf("--disposition %q: want one of %s", d, strings.Join(dispositionNames(), ", "))
		}
		out.Dispositions = append(out.Dispositions, schema.Disposition(d))
	}
	for _, d := range f.directions {
		if !slices.Contains(directions, schema.Direction(d)) {
			return analytics.CDRFilter{}, fmt.Errorf("--direction %q: want one of %s", d, strings.Join(directionNames(), ", "))
		}
		out.Directions = append(out.Directions, schema.Direction(d))
	}
	return out, nil
}
