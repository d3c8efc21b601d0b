package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/carrier-core/carrier/radius"
	"github.com/carrier-core/carrier/schema"
)

func newRadiusCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "radius",
		Short: "Send RADIUS accounting (Start, Interim-Update, Stop, Failed) for the calls of the log",
	}
	cmd.AddCommand(newRadiusRunCmd(a), newRadiusTestCmd(a), newRadiusDictionaryCmd(a))
	return cmd
}

// radiusSettings are the accounting servers and how we present ourselves
// to them.
type radiusSettings struct {
	servers []string
	secrets []string
	timeout time.Duration
	retries int
	noMA    bool
	profile string
	nasID   string
	nasIP   string
}

func (s *radiusSettings) addFlags(cmd *cobra.Command) {
	host, _ := os.Hostname()
	f := cmd.Flags()
	f.StringSliceVar(&s.servers, "radius-server", []string{"127.0.0.1:1813"}, "accounting servers host:port, primary first; the others are tried in turn when it does not answer")
	f.StringSliceVar(&s.secrets, "radius-secret", nil, "shared secrets, one per server in the same order, or one for all (better set CARRIER_RADIUS_SECRET than a flag)")
	f.DurationVar(&s.timeout, "radius-timeout", 3*time.Second, "wait for a response; doubled at each retransmission")
	f.IntVar(&s.retries, "radius-retries", 2, "retransmissions to a server before the next server is tried (0: none)")
	f.BoolVar(&s.noMA, "no-message-authenticator", false, "leave Message-Authenticator out of requests")
	f.StringVar(&s.profile, "radius-profile", string(radius.ProfileOpenSIPS), "call attributes: opensips (Sip-* attributes) or cisco (h323 VSAs)")
	f.StringVar(&s.nasID, "nas-id", host, "NAS-Identifier")
	f.StringVar(&s.nasIP, "nas-ip", "", "NAS-IP-Address, an IPv4 address (empty: not sent)")
}

func (s *radiusSettings) client(reg prometheus.Registerer) (*radius.Client, error) {
	if len(s.secrets) != 1 && len(s.secrets) != len(s.servers) {
		return nil, fmt.Errorf("--radius-secret: %d secrets for %d servers; give one per server or one for all (env CARRIER_RADIUS_SECRET)", len(s.secrets), len(s.servers))
	}
	servers := make([]radius.Server, len(s.servers))
	for i, addr := range s.servers {
		secret := s.secrets[0]
		if len(s.secrets) > 1 {
			secret = s.secrets[i]
		}
		servers[i] = radius.Server{Addr: addr, Secret: secret}
	}
	retries := s.retries
	if retries == 0 {
		// The client reads 0 as its default; -1 means none.
		retries = -1
	}
	return radius.NewClient(radius.ClientConfig{
		Servers:                servers,
		Timeout:                s.timeout,
		Retries:                retries,
		NoMessageAuthenticator: s.noMA,
		Registerer:             reg,
	})
}

func (s *radiusSettings) nas() (radius.NAS, error) {
	n := radius.NAS{Identifier: s.nasID}
	if s.nasIP == "" {
		return n, nil
	}
	ip, err := netip.ParseAddr(s.nasIP)
	if err != nil || !ip.Is4() {
		return n, fmt.Errorf("--nas-ip %q: want an IPv4 address", s.nasIP)
	}
	n.IP = ip
	return n, nil
}

func newRadiusRunCmd(a *app) *cobra.Command {
	var (
		nats       natsSettings
		metrics    metricsSettings
		rs         radiusSettings
		interim    time.Duration
		skipFailed bool
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the RADIUS accounter: call events from the log, acked once a server has answered",
		Long: `Consume the call lifecycle events of the CDR stream (durable consumer
"radius") and send RADIUS accounting for them: call.started is a Start,
call.ended a Stop with Acct-Session-Time, call.failed a Failed record
(Acct-Status-Type 15), and answered calls get an Interim-Update every
--interim while they last. An event is acked only after a server has
answered its record, so while no server answers the events wait in
JetStream and nothing is lost.

FreeRADIUS needs radius/dictionary.carrier to decode the SIP attributes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			profile, err := radius.ParseProfile(rs.profile)
			if err != nil {
				return err
			}
			nas, err := rs.nas()
			if err != nil {
				return err
			}
			reg := newRegistry()
			client, err := rs.client(reg)
			if err != nil {
				return err
			}
			js, closeConn, err := connect(a.log, nats.url, "carrier-radius-"+rs.nasID)
			if err != nil {
				return err
			}
			defer closeConn()
			if err := ensureStreams(cmd.Context(), a.log, js); err != nil {
				return err
			}
			acct, err := radius.New(js, client, radius.Config{
				Profile:         profile,
				NAS:             nas,
				InterimInterval: interim,
				SkipFailed:      skipFailed,
				Logger:          a.log,
				Registerer:      reg,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.out, "carrier radius: stream CDR on %s -> %v (profile %s)\n", nats.url, rs.servers, profile)
			return runComponents(cmd.Context(), a.log,
				component{"radius", acct.Run},
				component{"metrics", func(ctx context.Context) error { return serveMetrics(ctx, a.log, metrics.listen, reg) }},
			)
		},
	}
	nats.addFlags(cmd)
	metrics.addFlags(cmd, "127.0.0.1:9467")
	rs.addFlags(cmd)
	cmd.Flags().DurationVar(&interim, "interim", 0, "period of Interim-Updates of answered calls (0: none)")
	cmd.Flags().BoolVar(&skipFailed, "skip-failed", false, "send nothing for calls that never connected (default: a Failed record)")
	return cmd
}

func newRadiusTestCmd(a *app) *cobra.Command {
	var (
		rs       radiusSettings
		caller   string
		callee   string
		duration time.Duration
		format   string
	)
	cmd := &cobra.Command{
		Use:   "test",
		Short: "Send the Start and Stop of a made-up call to the servers and show what came back",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			profile, err := radius.ParseProfile(rs.profile)
			if err != nil {
				return err
			}
			nas, err := rs.nas()
			if err != nil {
				return err
			}
			client, err := rs.client(nil)
			if err != nil {
				return err
			}
			c := testCall(rs.nasID, caller, callee, duration)
			started := c
			started.EndAt, started.DurationMs, started.BillableSec = 0, 0, 0
			t := table{header: []string{"RECORD", "CALL-ID", "SERVER", "RESULT", "RTT"}}
			type result struct {
				Record string `json:"record"`
				CallID string `json:"call_id"`
				Server string `json:"server,omitempty"`
				Result string `json:"result"`
				RTTMs  int64  `json:"rtt_ms,omitempty"`
			}
			var records []result
			var failed error
			for _, rec := range []radius.Record{
				{Status: radius.StatusStart, CDR: started, At: schema.FromMillis(c.AnswerAt)},
				{Status: radius.StatusStop, CDR: c, At: schema.FromMillis(c.EndAt)},
			} {
				r := result{Record: rec.Status.String(), CallID: c.CallID}
				resp, err := client.Send(cmd.Context(), rec.Packet(profile, nas, time.Now()))
				if err != nil {
					r.Result = err.Error()
					failed = errors.Join(failed, fmt.Errorf("%s: %w", rec.Status, err))
				} else {
					r.Server, r.RTTMs = resp.Server, resp.RTT.Milliseconds()
					r.Result = fmt.Sprintf("Accounting-Response, %d attributes", len(resp.Packet.Attributes))
				}
				records = append(records, r)
				rtt := ""
				if r.Server != "" {
					rtt = strconv.FormatInt(r.RTTMs, 10) + "ms"
				}
				t.rows = append(t.rows, []string{r.Record, r.CallID, r.Server, r.Result, rtt})
			}
			t.records = records
			if err := writeTable(a.out, format, t); err != nil {
				return err
			}
			if failed != nil {
				return fmt.Errorf("radius test: %w; check the address, the shared secret and that the server lists this host as a client", failed)
			}
			return nil
		},
	}
	rs.addFlags(cmd)
	cmd.Flags().StringVar(&caller, "caller", "4930000001", "Calling-Station-Id of the test call (E.164)")
	cmd.Flags().StringVar(&callee, "callee", "4930000002", "Called-Station-Id of the test call (E.164)")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "length of the test call (its Acct-Session-Time)")
	addOutputFlag(cmd, &format)
	return cmd
}

func newRadiusDictionaryCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "dictionary",
		Short: "Print the FreeRADIUS dictionary of the attributes we send (include it from FreeRADIUS's dictionary)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := a.out.Write(radius.Dictionary)
			return err
		},
	}
}

// testCall is a made-up answered call that ended now.
func testCall(node, caller, callee string, d time.Duration) schema.CDR {
	callID := "radius-test-" + uuid.NewString() + "@" + node
	fromTag := uuid.NewString()[:8]
	end := time.Now().UTC()
	answer := end.Add(-d)
	invite := answer.Add(-time.Second)
	return schema.CDR{
		ID:           schema.CDRID(callID, fromTag),
		CallID:       callID,
		FromTag:      fromTag,
		ToTag:        uuid.NewString()[:8],
		Caller:       caller,
		Callee:       callee,
		CallerE164:   caller,
		CalleeE164:   callee,
		Disposition:  schema.Answered,
		Status:       200,
		InviteAt:     schema.Millis(invite),
		AnswerAt:     schema.Millis(answer),
		EndAt:        schema.Millis(end),
		SetupMs:      1000,
		DurationMs:   d.Milliseconds(),
		BillableSec:  schema.BillableSeconds(d.Milliseconds()),
		HangupBy:     schema.HangupCaller,
		HangupReason: schema.EndNormal,
		Node:         node,
	}
}
