package eventlog_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/schema"
)

// TestProvisionSuppliers: suppliers are stored, applied before the
// gateways that name them, and followed by a watcher like the rest.
func TestProvisionSuppliers(t *testing.T) {
	_, s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), provisionPatience)
	defer cancel()
	w, err := s.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	<-w.Ready()

	telco := schema.Supplier{ID: "telco-x", Currency: "USD", BuyPlan: "wholesale-x", MaxCalls: 100, CPS: 5}
	gw := schema.Gateway{ID: "gx", Address: "192.0.2.20", Supplier: "telco-x"}
	// A gateway whose supplier is neither stored nor in the set: refused.
	if _, err := s.Apply(ctx, schema.ProvisionSet{Gateways: []schema.Gateway{gw}}); !errors.Is(err, schema.ErrInvalidObject) {
		t.Fatalf("apply of a gateway without its supplier: %v", err)
	}
	applied, err := s.Apply(ctx, schema.ProvisionSet{Gateways: []schema.Gateway{gw}, Suppliers: []schema.Supplier{telco}})
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != 2 || applied[0] != (eventlog.Applied{Kind: schema.KindSupplier, ID: "telco-x", Change: eventlog.Created}) || applied[1].Kind != schema.KindGateway {
		t.Fatalf("applied %+v", applied)
	}
	if got, err := s.Suppliers().Get(ctx, "telco-x"); err != nil || got != telco {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	deadline := time.Now().Add(provisionPatience)
	for w.Snapshot().Suppliers["telco-x"] != telco {
		if time.Now().After(deadline) {
			t.Fatalf("the watcher never saw the supplier: %+v", w.Snapshot().Suppliers)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := w.Snapshot().Check(); err != nil {
		t.Errorf("watched provisioning fails its check: %v", err)
	}
	if ch, err := s.Suppliers().Put(ctx, telco); err != nil || ch != eventlog.Unchanged {
		t.Errorf("put again: %v %v", ch, err)
	}
	list, err := s.Suppliers().List(ctx)
	if err != nil || len(list) != 1 || list[0] != telco {
		t.Errorf("List = %+v, %v", list, err)
	}
	if err := s.Suppliers().Delete(ctx, "telco-x"); err != nil {
		t.Fatal(err)
	}
	for _, ok := w.Snapshot().Suppliers["telco-x"]; ok; _, ok = w.Snapshot().Suppliers["telco-x"] {
		if time.Now().After(deadline) {
			t.Fatal("the watcher never saw the supplier go")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
