package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// The prepaid tests run real SIP calls through the carrier as separate
// processes (each a command in this test process), so that the rating
// service can be stopped on its own: proxy, correlator, rater (which
// answers credit control) and the ledger's billing consumer, on an
// in-process JetStream. The destination costs 0.01 a second (0.60 a
// minute on 1/1 increments), so 0.90 is worth 90 seconds.

const prepaidDeck = "prefix,destination,rate,connect_fee,first_increment,next_increment\n1555,US Test,0.60,0,1,1\n"

type prepaidStack struct {
	natsURL string
	sip     string
	js      jetstream.JetStream
	ledger  *ledger.Ledger
	rater   *running
	gw      *testkit.SIPPhone
}

// startPrepaid provisions account acme (prepaid, plan retail) with
// balance on a trunk for 127.0.0.1 and starts the processes; window is
// the proxy's --credit-window.
func startPrepaid(t *testing.T, balance, window string) *prepaidStack {
	t.Helper()
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	s := &prepaidStack{natsURL: n.URL, js: js, gw: testkit.NewSIPPhone(t, "gw")}
	s.gw.SetUAS(s.gw.Answer(false))
	deck := filepath.Join(t.TempDir(), "retail.csv")
	if err := os.WriteFile(deck, []byte(prepaidDeck), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"rates", "import", deck, "--plan", "retail"},
		{"account", "create", "acme", "--currency", "EUR", "--kind", "prepaid", "--plan", "retail"},
		{"trunk", "add", "pbx", "--account", "acme", "--source", "127.0.0.1"},
		{"balance", "topup", "acme", "--amount", balance, "--reference", "first"},
	} {
		if out, err := runRates(t, append(args, "--nats-url", n.URL)...); err != nil {
			t.Fatalf("carrier %v: %v\n%s", args, err, out)
		}
	}
	led, err := ledger.New(context.Background(), js, ledger.Config{Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	s.ledger = led
	s.sip = hostPort(testkit.FreePort(t))
	s.rater = startCommand(t, "rater", "run", "--nats-url", n.URL, "--metrics-listen", "")
	startCommand(t, "ledger", "run", "--nats-url", n.URL, "--metrics-listen", "")
	startCommand(t, "correlator", "--nats-url", n.URL, "--metrics-listen", "")
	proxy := startCommand(t, "proxy", "--nats-url", n.URL, "--sip-listen", s.sip, "--gateway", s.gw.Addr,
		"--credit-window", window, "--metrics-listen", "", "--spool-dir", t.TempDir())
	proxy.waitListening(t, s.sip)
	return s
}

// answeredCall places a call from ph until it is answered: until the
// rating service has subscribed and loaded the plan, the proxy answers
// 503 (or 403 no_rate), which costs nothing.
func (s *prepaidStack) answeredCall(t *testing.T, ph *testkit.SIPPhone) *testkit.SIPCall {
	t.Helper()
	var c *testkit.SIPCall
	eventually(t, 30*time.Second, func() error {
		c = ph.Invite(t, s.sip, "UDP", nil)
		if res := c.WaitFinal(); res.StatusCode != 200 {
			return fmt.Errorf("%s: INVITE answered %d", ph.Name, res.StatusCode)
		}
		return nil
	})
	c.Ack()
	return c
}

// cutCall places a call from a new phone, waits until the proxy ends it
// (a BYE reaches the caller) and returns the call.
func (s *prepaidStack) cutCall(t *testing.T, caller string, within time.Duration) *testkit.SIPCall {
	t.Helper()
	ph := testkit.NewSIPPhone(t, caller)
	c := s.answeredCall(t, ph)
	eventually(t, within, func() error {
		for _, r := range ph.Received(c.CallID) {
			if r.Method == sip.BYE {
				return nil
			}
		}
		return fmt.Errorf("%s: no BYE from the proxy yet", caller)
	})
	return c
}

// cdr waits for the call.ended event of a call. Calls share partition
// subjects, so it reads the call's partition through.
func (s *prepaidStack) cdr(t *testing.T, c *testkit.SIPCall) schema.CDR {
	t.Helper()
	var cdr schema.CDR
	eventually(t, 30*time.Second, func() error {
		ctx := context.Background()
		cons, err := s.js.OrderedConsumer(ctx, schema.StreamCDR, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{schema.CDRSubject(schema.TypeCallEnded, c.CallID)},
		})
		if err != nil {
			return err
		}
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return err
		}
		for m := range batch.Messages() {
			env, err := schema.ParseEnvelope(m.Data())
			if err != nil {
				return err
			}
			var got schema.CDR
			if err := env.Decode(schema.TypeCallEnded, schema.CDRVersion, &got); err != nil {
				return err
			}
			if got.CallID == c.CallID {
				cdr = got
				return nil
			}
		}
		return errors.New("CDR not there yet")
	})
	return cdr
}

// settled waits until the account holds nothing and its balance is want.
func (s *prepaidStack) settled(t *testing.T, want string) ledger.Balance {
	t.Helper()
	var b ledger.Balance
	eventually(t, 60*time.Second, func() error {
		var err error
		if b, err = s.ledger.Fold(context.Background(), "acme"); err != nil {
			return err
		}
		if b.Reserved != 0 || b.Balance.String() != want {
			return fmt.Errorf("balance %s reserved %s, want %s and nothing reserved", b.Balance, b.Reserved, want)
		}
		return nil
	})
	return b
}

// checkCut: the proxy ended the call for credit within one increment
// (1 s) of the money running out after paid seconds.
func checkCut(t *testing.T, cdr schema.CDR, paid int64, reason string) {
	t.Helper()
	if cdr.HangupBy != schema.HangupProxy || cdr.HangupReason != reason {
		t.Errorf("call %s: hung up by %q for %q, want the proxy for %s", cdr.CallID, cdr.HangupBy, cdr.HangupReason, reason)
	}
	if cdr.BillableSec != paid || cdr.DurationMs <= (paid-1)*1000 || cdr.DurationMs > paid*1000 {
		t.Errorf("call %s lasted %d ms (billable %d s), want cut within the last increment before %d s", cdr.CallID, cdr.DurationMs, cdr.BillableSec, paid)
	}
}

// TestPrepaidCallCutWhenMoneyRunsOut: a balance worth 90 s, one long call:
// cut at 90 s, balance ends at zero.
func TestPrepaidCallCutWhenMoneyRunsOut(t *testing.T) {
	if testing.Short() {
		t.Skip("a 90 s call")
	}
	t.Parallel()
	s := startPrepaid(t, "0.90", "30s")
	c := s.cutCall(t, "alice", 150*time.Second)
	checkCut(t, s.cdr(t, c), 90, schema.EndCreditExhausted)
	if got := s.gw.Received(c.CallID); len(got) == 0 || got[len(got)-1].Method != sip.BYE {
		t.Errorf("the callee did not get the proxy's BYE: %v", got)
	}
	s.settled(t, "0.00")
	checkNeverNegative(t, s, "acme")
}

// TestPrepaidConcurrentCallsSharePool: the same balance, three calls at
// once: each is cut when the shared money is gone, about 30 s each, and
// together they cost exactly the balance.
func TestPrepaidConcurrentCallsSharePool(t *testing.T) {
	if testing.Short() {
		t.Skip("30 s calls")
	}
	t.Parallel()
	s := startPrepaid(t, "0.90", "10s")
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		calls []*testkit.SIPCall
	)
	for _, name := range []string{"alice", "bob", "carol"} {
		wg.Go(func() {
			c := s.cutCall(t, name, 90*time.Second)
			mu.Lock()
			calls = append(calls, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var billed int64
	for _, c := range calls {
		cdr := s.cdr(t, c)
		billed += cdr.BillableSec
		if cdr.HangupReason != schema.EndCreditExhausted || cdr.BillableSec < 20 || cdr.BillableSec > 40 {
			t.Errorf("call %s: %d s, hangup %s/%s; want about 30 s, cut for credit", cdr.CallID, cdr.BillableSec, cdr.HangupBy, cdr.HangupReason)
		}
	}
	if billed != 90 {
		t.Errorf("the three calls billed %d s together, want the 90 s the balance pays", billed)
	}
	s.settled(t, "0.00")
	checkNeverNegative(t, s, "acme")
}

// TestPrepaidTopUpDuringCall: money credited during a call lets it run
// longer.
func TestPrepaidTopUpDuringCall(t *testing.T) {
	if testing.Short() {
		t.Skip("a 40 s call")
	}
	t.Parallel()
	s := startPrepaid(t, "0.20", "10s")
	topUp := make(chan error, 1)
	go func() {
		// During the call's first window (the call starts within a
		// second or two of the stack).
		time.Sleep(5 * time.Second)
		out, err := runRates(t, "balance", "topup", "acme", "--amount", "0.20", "--reference", "during-call", "--nats-url", s.natsURL)
		if err != nil {
			err = fmt.Errorf("%w\n%s", err, out)
		}
		topUp <- err
	}()
	c := s.cutCall(t, "alice", 90*time.Second)
	if err := <-topUp; err != nil {
		t.Fatalf("top-up: %v", err)
	}
	checkCut(t, s.cdr(t, c), 40, schema.EndCreditExhausted)
	s.settled(t, "0.00")
}

// TestPrepaidRatingServiceStoppedMidCall: with the rating service gone,
// a prepaid call ends when its grant runs out (it may not outlive the
// money it was given); once the service is back, the call is rated and
// debited exactly once.
func TestPrepaidRatingServiceStoppedMidCall(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	t.Parallel()
	s := startPrepaid(t, "0.90", "10s")
	ph := testkit.NewSIPPhone(t, "alice")
	c := s.answeredCall(t, ph)
	s.rater.stop(t)
	eventually(t, 40*time.Second, func() error {
		for _, r := range ph.Received(c.CallID) {
			if r.Method == sip.BYE {
				return nil
			}
		}
		return errors.New("no BYE from the proxy yet")
	})
	checkCut(t, s.cdr(t, c), 10, schema.EndCreditUnavailable)

	// While the service is away, new prepaid calls are refused.
	other := ph.Invite(t, s.sip, "UDP", nil)
	if res := other.WaitFinal(); res.StatusCode != 503 {
		t.Errorf("a call with the rating service down answered %d, want 503", res.StatusCode)
	}

	startCommand(t, "rater", "run", "--nats-url", s.natsURL, "--metrics-listen", "")
	s.settled(t, "0.80")
	// The debit is there once, however often the CDR was delivered.
	h, err := s.ledger.History(context.Background(), "acme", time.Time{}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	debits := 0
	for _, e := range h {
		if e.Type == schema.TypeDebited {
			debits++
		}
	}
	if debits != 1 {
		t.Errorf("%d debits, want 1: %+v", debits, h)
	}
}

// checkNeverNegative folds the account's events one by one: the balance
// never went below zero on the way.
func checkNeverNegative(t *testing.T, s *prepaidStack, account string) {
	t.Helper()
	h, err := s.ledger.History(context.Background(), account, time.Time{}, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range h {
		if e.Balance < 0 {
			t.Errorf("balance went to %s after %s %s", e.Balance, e.Type, e.Amount)
		}
	}
}
