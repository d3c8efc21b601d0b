package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// provisionPatience only bounds waits; nothing is judged on speed.
const provisionPatience = 15 * time.Second

func openStore(t *testing.T) (*testkit.NATS, *eventlog.ProvisionStore) {
	t.Helper()
	n := testkit.StartNATS(t)
	_, js := n.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), provisionPatience)
	defer cancel()
	s, err := eventlog.OpenProvisionStore(ctx, js, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return n, s
}

var (
	acme    = schema.Account{ID: "acme", Name: "ACME Telecom", Currency: "EUR", SellPlan: "retail-eu"}
	acmePBX = schema.Trunk{ID: "acme-pbx", Account: "acme", Sources: []schema.Source{{CIDR: "203.0.113.0/24"}, {CIDR: "198.51.100.7", Port: 5060, Transport: "udp"}}}
	gwA     = schema.Gateway{ID: "carrier-a", Address: "192.0.2.10:5060", Transport: "udp"}
)

func TestProvisionPutGetListDelete(t *testing.T) {
	_, s := openStore(t)
	ctx := context.Background()

	for _, put := range []func() (eventlog.Change, error){
		func() (eventlog.Change, error) { return s.Accounts().Put(ctx, acme) },
		func() (eventlog.Change, error) { return s.Trunks().Put(ctx, acmePBX) },
		func() (eventlog.Change, error) { return s.Gateways().Put(ctx, gwA) },
	} {
		if ch, err := put(); err != nil || ch != eventlog.Created {
			t.Fatalf("first put: %v, %v", ch, err)
		}
		// The same object again writes nothing.
		if ch, err := put(); err != nil || ch != eventlog.Unchanged {
			t.Fatalf("second put: %v, %v", ch, err)
		}
	}
	got, err := s.Trunks().Get(ctx, "acme-pbx")
	if err != nil || !reflect.DeepEqual(got, acmePBX) {
		t.Fatalf("Get trunk = %+v, %v", got, err)
	}
	changed := acmePBX
	changed.Trusted = true
	if ch, err := s.Trunks().Put(ctx, changed); err != nil || ch != eventlog.Updated {
		t.Fatalf("put changed trunk: %v %v", ch, err)
	}
	if got, _ := s.Trunks().Get(ctx, "acme-pbx"); !got.Trusted {
		t.Errorf("update not stored: %+v", got)
	}

	other := schema.Gateway{ID: "a-first", Address: "gw.example.net", Transport: "tcp"}
	if _, err := s.Gateways().Put(ctx, other); err != nil {
		t.Fatal(err)
	}
	gws, err := s.Gateways().List(ctx)
	if err != nil || len(gws) != 2 || gws[0].ID != "a-first" || gws[1] != gwA {
		t.Fatalf("List gateways = %+v, %v", gws, err)
	}
	accounts, err := s.Accounts().List(ctx)
	if err != nil || len(accounts) != 1 || accounts[0] != acme {
		t.Fatalf("List accounts = %+v, %v", accounts, err)
	}

	if err := s.Gateways().Delete(ctx, "a-first"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Gateways().Get(ctx, "a-first"); !errors.Is(err, eventlog.ErrNotProvisioned) {
		t.Errorf("Get deleted: %v, want ErrNotProvisioned", err)
	}
	if err := s.Gateways().Delete(ctx, "a-first"); !errors.Is(err, eventlog.ErrNotProvisioned) {
		t.Errorf("Delete twice: %v, want ErrNotProvisioned", err)
	}
	// A deleted id can be created again.
	if ch, err := s.Gateways().Put(ctx, other); err != nil || ch != eventlog.Created {
		t.Errorf("put after delete: %v %v", ch, err)
	}

	// Invalid objects never reach the bucket.
	bad := acmePBX
	bad.ID, bad.Sources = "bad", []schema.Source{{CIDR: "10.0.0.0/33"}}
	if _, err := s.Trunks().Put(ctx, bad); !errors.Is(err, schema.ErrInvalidObject) {
		t.Errorf("put invalid trunk: %v", err)
	}
	if _, err := s.Trunks().Get(ctx, "bad"); !errors.Is(err, eventlog.ErrNotProvisioned) {
		t.Errorf("invalid trunk stored: %v", err)
	}
}

// waitSnapshot waits until the watcher's snapshot satisfies cond.
func waitSnapshot(t *testing.T, w *eventlog.ProvisionWatcher, what string, cond func(*schema.Provisioning) error) *schema.Provisioning {
	t.Helper()
	return waitSnapshotWithin(t, w, provisionPatience, what, cond)
}

func waitSnapshotWithin(t *testing.T, w *eventlog.ProvisionWatcher, within time.Duration, what string, cond func(*schema.Provisioning) error) *schema.Provisioning {
	t.Helper()
	deadline := time.After(within)
	for {
		p := w.Snapshot()
		var err error
		if p == nil {
			err = errors.New("no snapshot yet")
		} else if err = cond(p); err == nil {
			return p
		}
		select {
		case <-w.Changed():
		case <-deadline:
			t.Fatalf("%s: %v", what, err)
		}
	}
}

func TestProvisionWatch(t *testing.T) {
	n, s := openStore(t)
	ctx := context.Background()
	if _, err := s.Accounts().Put(ctx, acme); err != nil {
		t.Fatal(err)
	}
	w, err := s.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	select {
	case <-w.Ready():
	case <-time.After(provisionPatience):
		t.Fatal("watcher never ready")
	}
	first := w.Snapshot()
	if len(first.Accounts) != 1 || len(first.Trunks) != 0 {
		t.Fatalf("initial snapshot %+v", first)
	}

	if _, err := s.Trunks().Put(ctx, acmePBX); err != nil {
		t.Fatal(err)
	}
	p := waitSnapshot(t, w, "trunk put", func(p *schema.Provisioning) error {
		if _, ok := p.Trunks["acme-pbx"]; !ok {
			return errors.New("trunk not in snapshot")
		}
		return nil
	})
	if len(first.Trunks) != 0 {
		t.Errorf("a published snapshot changed: %+v", first.Trunks)
	}
	if p.Revision <= first.Revision {
		t.Errorf("revision %d after %d", p.Revision, first.Revision)
	}

	// An object written by hand that is not valid is skipped; the rest stays.
	_, js := n.Connect()
	kv, err := js.KeyValue(ctx, schema.BucketProvisioning)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, schema.KindGateway.Key("broken"), []byte(`{"id":"broken","address":""}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Gateways().Put(ctx, gwA); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, w, "gateway put", func(p *schema.Provisioning) error {
		if _, ok := p.Gateways["carrier-a"]; !ok {
			return errors.New("gateway not in snapshot")
		}
		if _, ok := p.Gateways["broken"]; ok {
			return errors.New("invalid gateway in snapshot")
		}
		if len(p.Trunks) != 1 {
			return fmt.Errorf("trunks %v", p.Trunks)
		}
		return nil
	})

	// A broker restart: the watch resumes and sees later changes. nats.go
	// notices the lost consumer by its missing heartbeats, which takes up
	// to a few heartbeat intervals (5 s each), hence the longer bound.
	n.Stop()
	n.Start()
	if err := s.Trunks().Delete(ctx, "acme-pbx"); err != nil {
		t.Fatal(err)
	}
	waitSnapshotWithin(t, w, 60*time.Second, "trunk deleted after a restart", func(p *schema.Provisioning) error {
		if len(p.Trunks) != 0 {
			return fmt.Errorf("trunks %v", p.Trunks)
		}
		return nil
	})

	w.Stop()
	select {
	case <-w.Done():
	default:
		t.Error("Done open after Stop")
	}
	if w.Err() != nil {
		t.Errorf("Err after Stop: %v", w.Err())
	}
}

func TestProvisionLoad(t *testing.T) {
	_, s := openStore(t)
	ctx := context.Background()
	p, err := s.Load(ctx)
	if err != nil || len(p.Accounts)+len(p.Trunks)+len(p.Gateways) != 0 {
		t.Fatalf("empty bucket: %+v, %v", p, err)
	}
	if _, err := s.Accounts().Put(ctx, acme); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Trunks().Put(ctx, acmePBX); err != nil {
		t.Fatal(err)
	}
	p, err = s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Check(); err != nil {
		t.Errorf("loaded provisioning fails its check: %v", err)
	}
	if !reflect.DeepEqual(p.Trunks["acme-pbx"], acmePBX) || p.Accounts["acme"] != acme {
		t.Errorf("loaded %+v", p)
	}
}

func TestProvisionApply(t *testing.T) {
	_, s := openStore(t)
	ctx := context.Background()
	set := schema.ProvisionSet{
		Accounts: []schema.Account{acme},
		Trunks:   []schema.Trunk{acmePBX},
		Gateways: []schema.Gateway{gwA},
	}
	count := func(applied []eventlog.Applied) map[eventlog.Change]int {
		m := map[eventlog.Change]int{}
		for _, a := range applied {
			m[a.Change]++
		}
		return m
	}
	applied, err := s.Apply(ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	if c := count(applied); c[eventlog.Created] != 3 || len(applied) != 3 || applied[0].Kind != schema.KindAccount || applied[2].Kind != schema.KindTrunk {
		t.Fatalf("first apply %+v", applied)
	}
	// Twice: nothing changes.
	applied, err = s.Apply(ctx, set)
	if err != nil || count(applied)[eventlog.Unchanged] != 3 {
		t.Fatalf("second apply %+v, %v", applied, err)
	}
	// One object changed: the plan says so and writes nothing.
	set.Gateways[0].Transport = "tcp"
	plan, err := s.Plan(ctx, set)
	if c := count(plan); err != nil || c[eventlog.Updated] != 1 || c[eventlog.Unchanged] != 2 || plan[1].Kind != schema.KindGateway || plan[1].Change != eventlog.Updated {
		t.Fatalf("plan %+v, %v", plan, err)
	}
	if g, _ := s.Gateways().Get(ctx, gwA.ID); g.Transport != "udp" {
		t.Fatalf("Plan wrote: %+v", g)
	}
	applied, err = s.Apply(ctx, set)
	if c := count(applied); err != nil || c[eventlog.Updated] != 1 || c[eventlog.Unchanged] != 2 {
		t.Fatalf("third apply %+v, %v", applied, err)
	}

	// A bad set writes nothing, not even its good entries.
	bad := schema.ProvisionSet{
		Accounts: []schema.Account{{ID: "beta", Currency: "USD"}},
		Trunks:   []schema.Trunk{{ID: "beta-pbx", Account: "beta", Sources: []schema.Source{{CIDR: "203.0.113.0/24"}}}},
	}
	if _, err := s.Apply(ctx, bad); !errors.Is(err, schema.ErrInvalidObject) {
		t.Fatalf("apply of a conflicting trunk: %v", err)
	}
	if _, err := s.Accounts().Get(ctx, "beta"); !errors.Is(err, eventlog.ErrNotProvisioned) {
		t.Errorf("a refused set was partly applied: %v", err)
	}
}
