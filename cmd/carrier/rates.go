package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/rating"
	"github.com/carrier-core/carrier/schema"
)

func newRatesCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rates",
		Short: "Import rate decks and price calls",
		Long: `Rate decks are CSV files (see the README, "Rate decks") stored in JetStream
under a plan name; every import is a new version and running raters switch to
it without a restart. lookup and quote read a stored plan (--plan) or a local
file (--deck) so a file can be checked before it is imported.`,
	}
	cmd.AddCommand(newRatesImportCmd(a), newRatesListCmd(a), newRatesShowCmd(a), newRatesExportCmd(a), newRatesDeleteCmd(a),
		newRatesLookupCmd(a), newRatesQuoteCmd(a), newRatesRerateCmd(a))
	return cmd
}

// planSettings are the flags that say how a deck file is read.
type planSettings struct {
	timetable string
	zone      string
	decimals  int
	rounding  string
}

func (s *planSettings) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.timetable, "timetable", "", "time band CSV (band,days,from,to); none: one band at all times")
	cmd.Flags().StringVar(&s.zone, "zone", "UTC", "IANA time zone of the time bands and of date-only effective dates")
	cmd.Flags().IntVar(&s.decimals, "decimals", rating.DefaultRounding.Decimals, "decimals a call's total is rounded to (0-9)")
	cmd.Flags().StringVar(&s.rounding, "rounding", rating.DefaultRounding.Mode.String(), "rounding of a call's total: up, half-up, half-even or down")
}

func (s *planSettings) spec() (rating.PlanSpec, error) {
	mode, err := schema.ParseRoundingMode(s.rounding)
	if err != nil {
		return rating.PlanSpec{}, fmt.Errorf("--rounding: %w", err)
	}
	if s.decimals < 0 || s.decimals > 9 {
		return rating.PlanSpec{}, fmt.Errorf("--decimals %d: want 0 to 9", s.decimals)
	}
	spec := rating.PlanSpec{Zone: s.zone, Rounding: &rating.Rounding{Decimals: s.decimals, Mode: mode}}
	if spec.Zone == "UTC" {
		spec.Zone = ""
	}
	if s.timetable != "" {
		b, err := os.ReadFile(s.timetable)
		if err != nil {
			return rating.PlanSpec{}, fmt.Errorf("--timetable: %w", err)
		}
		spec.Timetable = string(b)
	}
	return spec, nil
}

func newRatesImportCmd(a *app) *cobra.Command {
	var (
		ns        natsSettings
		ps        planSettings
		plan      string
		effective string
	)
	cmd := &cobra.Command{
		Use:   "import FILE --plan NAME",
		Short: "Validate a rate deck and make it the plan's new version",
		Long: `Validates the whole file first: any bad row (bad prefix, negative price, bad
increment, duplicate prefix in a band, overlapping dates) rejects the file
with line-numbered errors and leaves the plan as it was. A valid file becomes
the plan's new version at once, or at --effective.`,
		Example: `  carrier rates import retail.csv --plan retail
  carrier rates import retail.csv --plan retail --timetable bands.csv --zone Europe/Berlin --effective 2026-12-01`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if plan == "" {
				return errors.New("--plan is required: the name of the rate plan this deck replaces")
			}
			spec, err := ps.spec()
			if err != nil {
				return err
			}
			if effective != "" {
				if spec.Effective, err = parseTime(effective); err != nil {
					return fmt.Errorf("--effective: %w", err)
				}
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			js, closeNC, err := connect(a.log, ns.url, "carrier rates import")
			if err != nil {
				return err
			}
			defer closeNC()
			ctx := cmd.Context()
			store, err := rating.NewStore(ctx, js)
			if err != nil {
				return err
			}
			start := time.Now()
			pr := newProgressReader(ctx, f, st.Size(), a.errOut)
			info, _, err := store.Import(ctx, plan, pr, spec)
			pr.stop()
			if err != nil {
				var de *rating.DeckError
				if errors.As(err, &de) {
					return fmt.Errorf("%s: %w\nnothing was imported: fix the lines above and import again", args[0], err)
				}
				return err
			}
			fmt.Fprintf(a.out, "plan %s version %d: %d rates, %d prefixes from %s (%d bytes, sha256 %s) in %s\n",
				info.Plan, info.Version, info.Rates, info.Prefixes, args[0], info.Bytes, info.SHA256[:12], time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	ns.addFlags(cmd)
	ps.addFlags(cmd)
	cmd.Flags().StringVar(&plan, "plan", "", "rate plan name (letters, digits, - and _)")
	cmd.Flags().StringVar(&effective, "effective", "", "schedule this version: the previous one stays in force until then (RFC 3339 or YYYY-MM-DD, UTC)")
	return cmd
}

// progressReader reports how far an import got, once a second, for
// files big enough to take that long.
type progressReader struct {
	r    io.Reader
	read atomic.Int64
	done chan struct{}
}

func newProgressReader(ctx context.Context, r io.Reader, total int64, w io.Writer) *progressReader {
	p := &progressReader{r: r, done: make(chan struct{})}
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-p.done:
				return
			case <-t.C:
				if n := p.read.Load(); total > 0 {
					fmt.Fprintf(w, "importing: %d%% (%d of %d bytes)\n", n*100/total, n, total)
				}
			}
		}
	}()
	return p
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.read.Add(int64(n))
	return n, err
}

func (p *progressReader) stop() { close(p.done) }

func newRatesListCmd(a *app) *cobra.Command {
	var (
		ns     natsSettings
		format string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List rate plans and their current versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			js, closeNC, err := connect(a.log, ns.url, "carrier rates list")
			if err != nil {
				return err
			}
			defer closeNC()
			store, err := rating.NewStore(cmd.Context(), js)
			if err != nil {
				return err
			}
			plans, err := store.Plans(cmd.Context())
			if err != nil {
				return err
			}
			t := table{header: []string{"PLAN", "VERSION", "RATES", "PREFIXES", "ZONE", "ROUNDING", "IMPORTED (UTC)", "EFFECTIVE (UTC)"}, records: plans}
			if plans == nil {
				t.records = []rating.PlanInfo{}
			}
			for _, p := range plans {
				zone := p.Zone
				if zone == "" {
					zone = "UTC"
				}
				t.rows = append(t.rows, []string{p.Plan, strconv.FormatUint(p.Version, 10), strconv.Itoa(p.Rates), strconv.Itoa(p.Prefixes),
					zone, fmt.Sprintf("%d/%s", p.Decimals, p.Rounding), p.ImportedAt.Format(time.DateTime), effectiveTime(p.Effective)})
			}
			return writeTable(a.out, format, t)
		},
	}
	ns.addFlags(cmd)
	addOutputFlag(cmd, &format)
	return cmd
}

func effectiveTime(t time.Time) string {
	if t.IsZero() {
		return "at once"
	}
	return t.UTC().Format(time.DateTime)
}

// withStore connects to NATS and opens the rate store for one command.
func withStore(cmd *cobra.Command, a *app, ns natsSettings, fn func(*rating.Store) error) error {
	js, closeNC, err := connect(a.log, ns.url, "carrier "+cmd.CommandPath())
	if err != nil {
		return err
	}
	defer closeNC()
	store, err := rating.NewStore(cmd.Context(), js)
	if err != nil {
		return err
	}
	return fn(store)
}

func newRatesShowCmd(a *app) *cobra.Command {
	var (
		ns     natsSettings
		format string
	)
	cmd := &cobra.Command{
		Use:   "show PLAN",
		Short: "List a plan's versions, newest first",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, a, ns, func(store *rating.Store) error {
				versions, err := store.Versions(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				t := table{header: []string{"VERSION", "RATES", "PREFIXES", "BYTES", "SHA256", "IMPORTED (UTC)", "EFFECTIVE (UTC)"}, records: versions}
				for _, v := range versions {
					t.rows = append(t.rows, []string{strconv.FormatUint(v.Version, 10), strconv.Itoa(v.Rates), strconv.Itoa(v.Prefixes),
						strconv.FormatInt(v.Bytes, 10), v.SHA256[:12], v.ImportedAt.Format(time.DateTime), effectiveTime(v.Effective)})
				}
				return writeTable(a.out, format, t)
			})
		},
	}
	ns.addFlags(cmd)
	addOutputFlag(cmd, &format)
	return cmd
}

func newRatesExportCmd(a *app) *cobra.Command {
	var (
		ns      natsSettings
		version uint64
		file    string
	)
	cmd := &cobra.Command{
		Use:   "export PLAN",
		Short: "Write a plan's deck file as it was imported",
		Example: `  carrier rates export retail > retail.csv
  carrier rates export retail --version 3 --file retail-v3.csv`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, a, ns, func(store *rating.Store) error {
				w := a.out
				if file != "" {
					f, err := os.Create(file)
					if err != nil {
						return err
					}
					defer f.Close()
					w = f
				}
				if _, err := store.Export(cmd.Context(), args[0], version, w); err != nil {
					return err
				}
				if f, ok := w.(*os.File); ok && file != "" {
					return f.Close()
				}
				return nil
			})
		},
	}
	ns.addFlags(cmd)
	cmd.Flags().Uint64Var(&version, "version", 0, "plan version (default: the newest)")
	cmd.Flags().StringVar(&file, "file", "", "write to this file instead of standard output")
	return cmd
}

func newRatesDeleteCmd(a *app) *cobra.Command {
	var ns natsSettings
	cmd := &cobra.Command{
		Use:   "delete PLAN",
		Short: "Take a plan out of use (its deck files are kept for audit)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, a, ns, func(store *rating.Store) error {
				if err := store.Delete(cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(a.out, "plan %s deleted\n", args[0])
				return nil
			})
		},
	}
	ns.addFlags(cmd)
	return cmd
}

// deckSource is where lookup and quote find a deck: a stored plan or a
// local file.
type deckSource struct {
	ns      natsSettings
	ps      planSettings
	plan    string
	deck    string
	version uint64
}

func (s *deckSource) addFlags(cmd *cobra.Command) {
	s.ns.addFlags(cmd)
	s.ps.addFlags(cmd)
	cmd.Flags().StringVar(&s.plan, "plan", "", "stored rate plan")
	cmd.Flags().Uint64Var(&s.version, "version", 0, "plan version (default: the one in force at --at)")
	cmd.Flags().StringVar(&s.deck, "deck", "", "local deck file instead of a stored plan (read with --timetable, --zone, --decimals, --rounding)")
}

func (s *deckSource) load(ctx context.Context, a *app, at time.Time) (*rating.Deck, string, error) {
	switch {
	case s.deck != "" && s.plan != "":
		return nil, "", errors.New("give --plan or --deck, not both")
	case s.deck != "":
		spec, err := s.ps.spec()
		if err != nil {
			return nil, "", err
		}
		cfg, err := spec.Config()
		if err != nil {
			return nil, "", err
		}
		f, err := os.Open(s.deck)
		if err != nil {
			return nil, "", err
		}
		defer f.Close()
		d, err := rating.ReadDeck(f, cfg)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", s.deck, err)
		}
		return d, s.deck, nil
	case s.plan != "":
		js, closeNC, err := connect(a.log, s.ns.url, "carrier rates")
		if err != nil {
			return nil, "", err
		}
		defer closeNC()
		store, err := rating.NewStore(ctx, js)
		if err != nil {
			return nil, "", err
		}
		var (
			d    *rating.Deck
			info rating.PlanInfo
		)
		if s.version != 0 {
			d, info, err = store.Load(ctx, s.plan, s.version)
		} else {
			d, info, err = store.LoadAt(ctx, s.plan, at)
		}
		if err != nil {
			return nil, "", err
		}
		return d, fmt.Sprintf("plan %s version %d", info.Plan, info.Version), nil
	default:
		return nil, "", errors.New("--plan (a stored plan) or --deck (a local file) is required")
	}
}

func atFlag(s string) (time.Time, error) {
	if s == "" {
		return time.Now(), nil
	}
	t, err := parseTime(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--at: %w", err)
	}
	return t, nil
}

func newRatesLookupCmd(a *app) *cobra.Command {
	var (
		src    deckSource
		at     string
		format string
	)
	cmd := &cobra.Command{
		Use:   "lookup NUMBER",
		Short: "Show which prefix and rate a call to NUMBER would start with",
		Example: `  carrier rates lookup 4930123456 --plan retail
  carrier rates lookup +4930123456 --deck retail.csv --at 2026-12-25T10:00:00Z`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			when, err := atFlag(at)
			if err != nil {
				return err
			}
			d, _, err := src.load(cmd.Context(), a, when)
			if err != nil {
				return err
			}
			r, err := d.Lookup(args[0], when)
			if err != nil {
				return err
			}
			t := table{
				header:  []string{"PREFIX", "DESTINATION", "BAND", "RATE/MIN", "CONNECT FEE", "INCREMENTS", "MIN", "TIER", "EFFECTIVE"},
				records: r,
			}
			tier := ""
			if r.TierAfter > 0 {
				tier = fmt.Sprintf("%s after %ds", r.TierRate, r.TierAfter)
			}
			t.rows = [][]string{{r.Prefix, r.Destination, bandName(r.Band), r.PerMinute.String(), r.ConnectFee.String(),
				fmt.Sprintf("%d/%d", r.FirstIncrement, r.NextIncrement), strconv.Itoa(r.MinDuration), tier, effectiveRange(r)}}
			return writeTable(a.out, format, t)
		},
	}
	src.addFlags(cmd)
	cmd.Flags().StringVar(&at, "at", "", "time of the call (RFC 3339 or YYYY-MM-DD, UTC; default now)")
	addOutputFlag(cmd, &format)
	return cmd
}

func bandName(b string) string {
	if b == "" {
		return "default"
	}
	return b
}

func effectiveRange(r rating.Rate) string {
	from, to := "-", "-"
	if !r.EffectiveFrom.IsZero() {
		from = r.EffectiveFrom.Format(time.RFC3339)
	}
	if !r.EffectiveTo.IsZero() {
		to = r.EffectiveTo.Format(time.RFC3339)
	}
	if from == "-" && to == "-" {
		return "always"
	}
	return from + " .. " + to
}

// parseCallDuration accepts whole seconds ("90") or a Go duration ("1m30s", "61.5s").
func parseCallDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > int64(time.Duration(1<<63-1)/time.Second) {
			return 0, fmt.Errorf("duration %q out of range", s)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration %q: give seconds (90) or a duration (1m30s, 61.5s)", s)
	}
	return d, nil
}

func newRatesQuoteCmd(a *app) *cobra.Command {
	var (
		src    deckSource
		at     string
		format string
	)
	cmd := &cobra.Command{
		Use:   "quote NUMBER DURATION",
		Short: "Price a call exactly and show how the price was computed",
		Example: `  carrier rates quote 4930123456 90 --plan retail
  carrier rates quote 4930123456 1h30m --plan retail --at 2026-11-23T17:30:00Z --output json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			when, err := atFlag(at)
			if err != nil {
				return err
			}
			dur, err := parseCallDuration(args[1])
			if err != nil {
				return err
			}
			d, from, err := src.load(cmd.Context(), a, when)
			if err != nil {
				return err
			}
			q, err := d.Quote(args[0], when, dur)
			if err != nil {
				return err
			}
			if format != "table" && format != "" {
				return writeTable(a.out, format, quoteTable(q))
			}
			fmt.Fprintf(a.out, "%s -> prefix %s (%s), %s\n", q.Number, q.Prefix, q.Destination, from)
			fmt.Fprintf(a.out, "answered %s, %s -> %d s -> billed %d s (increments %d/%d, minimum %d s)\n",
				q.Answer.UTC().Format(time.RFC3339), q.Duration, q.Seconds, q.Billed, q.First, q.Next, q.MinDuration)
			if err := writeTable(a.out, "table", quoteTable(q)); err != nil {
				return err
			}
			fmt.Fprintf(a.out, "connect fee %s + segments = exact %s; rounded %s to %d decimals: total %s\n",
				q.ConnectFee, q.Exact, q.Rounding.Mode, q.Rounding.Decimals, q.Total.Format(q.Rounding.Decimals))
			return nil
		},
	}
	src.addFlags(cmd)
	cmd.Flags().StringVar(&at, "at", "", "answer time (RFC 3339 or YYYY-MM-DD, UTC; default now)")
	addOutputFlag(cmd, &format)
	return cmd
}

func quoteTable(q rating.Quote) table {
	t := table{header: []string{"FROM S", "SECONDS", "BAND", "PREFIX", "RATE/MIN", "TIER", "CHARGE"}, records: q}
	for _, s := range q.Segments {
		tier := ""
		if s.Tier {
			tier = "yes"
		}
		t.rows = append(t.rows, []string{strconv.FormatInt(s.Offset, 10), strconv.FormatInt(s.Seconds, 10), bandName(s.Band),
			s.Prefix, s.PerMinute.String(), tier, s.Charge.String()})
	}
	return t
}

func newRatesRerateCmd(a *app) *cobra.Command {
	var (
		ns       natsSettings
		node     nodeSettings
		from, to string
		account  string
		format   string
	)
	cmd := &cobra.Command{
		Use:   "rerate --from TIME --to TIME [--account ID]",
		Short: "Reprice a period with the current decks and publish the differences as corrections",
		Long: `Reads the rated CDRs of the calls answered from --from (inclusive) to --to
(exclusive), prices each again with the rate plans and accounts as they are
now, and publishes a correction (call.rated with a run number, the rating it
replaces and sell_delta) for every call whose price changed; the ledger
applies the deltas. Calls the current decks cannot price keep their price.
Run it again and it finds nothing left to correct.`,
		Example: `  carrier rates rerate --from 2026-11-01 --to 2026-12-01
  carrier rates rerate --from 2026-11-23T00:00:00Z --to 2026-11-24T00:00:00Z --account acme -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || to == "" {
				return errors.New("--from and --to are required: the period of answer times to reprice")
			}
			cfg := rating.RerateConfig{Account: account, Run: uint64(time.Now().UnixMilli())}
			var err error
			if cfg.From, err = parseTime(from); err != nil {
				return fmt.Errorf("--from: %w", err)
			}
			if cfg.To, err = parseTime(to); err != nil {
				return fmt.Errorf("--to: %w", err)
			}
			if !cfg.To.After(cfg.From) {
				return fmt.Errorf("--to %s is not after --from %s", to, from)
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel() // stops following the rate plans
			js, closeNC, err := connect(a.log, ns.url, "carrier rates rerate")
			if err != nil {
				return err
			}
			defer closeNC()
			ps, err := eventlog.OpenProvisionStore(ctx, js, a.log)
			if err != nil {
				return err
			}
			snapshot, err := ps.Load(ctx)
			if err != nil {
				return err
			}
			store, err := rating.NewStore(ctx, js)
			if err != nil {
				return err
			}
			book, err := store.Follow(ctx, a.log)
			if err != nil {
				return err
			}
			r, err := rating.NewRater(js, rating.RaterConfig{Book: book, Store: store, Accounts: fixedProvisioning{snapshot}, Node: node.node, Logger: a.log})
			if err != nil {
				return err
			}
			last := time.Now()
			cfg.Progress = func(read int) {
				if time.Since(last) >= time.Second {
					last = time.Now()
					fmt.Fprintf(a.errOut, "rerate: %d rated CDRs read\n", read)
				}
			}
			sum, err := r.Rerate(ctx, cfg)
			if err != nil {
				return fmt.Errorf("rerate run %d stopped after %d corrections (run it again: corrected calls are not corrected twice): %w", cfg.Run, sum.Corrected, err)
			}
			t := table{
				header: []string{"RUN", "READ", "CALLS", "UNCHANGED", "CORRECTED", "UNPRICED", "SELL DELTA"},
				records: struct {
					Run uint64 `json:"run"`
					rating.RerateSummary
				}{cfg.Run, sum},
				rows: [][]string{{strconv.FormatUint(cfg.Run, 10), strconv.Itoa(sum.Read), strconv.Itoa(sum.Calls), strconv.Itoa(sum.Unchanged),
					strconv.Itoa(sum.Corrected), strconv.Itoa(sum.Unpriced), sum.SellDelta.String()}},
			}
			return writeTable(a.out, format, t)
		},
	}
	ns.addFlags(cmd)
	node.addFlags(cmd)
	cmd.Flags().StringVar(&from, "from", "", "first answer time to reprice (RFC 3339 or date, UTC), inclusive")
	cmd.Flags().StringVar(&to, "to", "", "answer time to stop at, exclusive")
	cmd.Flags().StringVar(&account, "account", "", "reprice only this account's calls")
	addOutputFlag(cmd, &format)
	return cmd
}

// fixedProvisioning is provisioning read once, for a command that runs
// to its end on one view of the accounts.
type fixedProvisioning struct{ p *schema.Provisioning }

func (f fixedProvisioning) Snapshot() *schema.Provisioning { return f.p }
