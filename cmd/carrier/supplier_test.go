package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// TestSupplierCommands: suppliers through the CLI, gateways that need
// them, and rm refusing every object that others name.
func TestSupplierCommands(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	url := []string{"--nats-url", n.URL}
	cli := func(args ...string) string { t.Helper(); return mustCLI(t, append(args, url...)...) }
	fails := func(want string, args ...string) {
		t.Helper()
		if _, err := runCLI(t, append(args, url...)...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: %v, want %q", args, err, want)
		}
	}
	cli("provision", "apply", "-f", writeFile(t, "network.yaml", networkYAML))

	if out := cli("supplier", "add", "telco-x", "--name", "Telco X", "--currency", "USD", "--buy-plan", "wholesale-x", "--max-calls", "300", "--cps", "10"); strings.TrimSpace(out) != "supplier telco-x created" {
		t.Errorf("add: %q", out)
	}
	if out := cli("supplier", "add", "telco-x", "--name", "Telco X", "--currency", "USD", "--buy-plan", "wholesale-x", "--max-calls", "300", "--cps", "10"); strings.TrimSpace(out) != "supplier telco-x unchanged" {
		t.Errorf("add again: %q", out)
	}
	cli("supplier", "add", "telco-y", "--currency", "EUR")
	fails(`currency "usd"`, "supplier", "add", "bad", "--currency", "usd")
	fails("cps -1", "supplier", "add", "bad", "--currency", "EUR", "--cps", "-1")

	fails(`gateway gx: supplier "ghost" does not exist`, "gateway", "add", "gx", "--address", "192.0.2.20", "--supplier", "ghost")
	fails("carrier supplier add ghost", "gateway", "add", "gx", "--address", "192.0.2.20", "--supplier", "ghost")
	if out := cli("gateway", "add", "gx", "--address", "192.0.2.20", "--supplier", "telco-x"); strings.TrimSpace(out) != "gateway gx created" {
		t.Errorf("gateway add: %q", out)
	}
	if out := cli("gateway", "show", "gx"); !strings.Contains(out, "telco-x") {
		t.Errorf("gateway show lacks the supplier:\n%s", out)
	}

	out := cli("supplier", "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "wholesale-x") || !strings.Contains(lines[1], "300") ||
		!strings.Contains(lines[2], "telco-y") || !strings.Contains(lines[2], "buy-telco-y") {
		t.Errorf("list:\n%s", out)
	}
	var sups []schema.Supplier
	if err := json.Unmarshal([]byte(cli("supplier", "list", "-o", "json")), &sups); err != nil || len(sups) != 2 || sups[0].BuyPlan != "wholesale-x" || sups[1].BuyPlan != "" {
		t.Errorf("list json: %+v %v", sups, err)
	}
	var s schema.Supplier
	if err := json.Unmarshal([]byte(cli("supplier", "show", "telco-x", "-o", "json")), &s); err != nil ||
		s != (schema.Supplier{ID: "telco-x", Name: "Telco X", Currency: "USD", BuyPlan: "wholesale-x", MaxCalls: 300, CPS: 10}) {
		t.Errorf("show json: %+v %v", s, err)
	}
	fails("not provisioned", "supplier", "show", "ghost")

	// A file: a gateway naming a supplier the file does not provision
	// is refused whole; with the supplier in it, it applies.
	fails(`gateways[0] (gz): gateway gz: supplier "telco-z" does not exist`, "provision", "apply", "-f", writeFile(t, "bad.yaml", `
gateways:
  - {id: gz, address: "192.0.2.30", supplier: telco-z}
`))
	if out := cli("provision", "apply", "-f", writeFile(t, "more.yaml", `
suppliers:
  - {id: telco-z, currency: GBP, buy_plan: wholesale-z}
gateways:
  - {id: gz, address: "192.0.2.30", supplier: telco-z}
subscribers:
  - {id: alice, user: alice, domain: sip.example.com, account: acme, ha1_md5: 0123456789abcdef0123456789abcdef}
dial_plans:
  - {id: de, rules: [{prefix: "00", strip: 2, add: "+"}]}
dids:
  - {number: "493012345678", owner_kind: trunk, owner: acme-pbx, deliver_to: "203.0.113.5"}
  - {number: "493087654321", owner_kind: subscriber, owner: alice}
routes:
  - {id: uk, prefix: "44", gateways: [gx, gz], accounts: [acme]}
`)); !strings.Contains(out, "created supplier telco-z") || !strings.Contains(out, "created gateway gz") {
		t.Errorf("apply with a supplier:\n%s", out)
	}
	cli("dialplan", "attach", "de", "--trunk", "acme-pbx")
	fails(`route uk2: account "ghost" does not exist`, "route", "add", "uk2", "--prefix", "44", "--gateway", "gx", "--account", "ghost")

	// Export carries the suppliers, and applies back unchanged.
	exported := cli("provision", "export")
	if !strings.Contains(exported, "suppliers:") || !strings.Contains(exported, "buy_plan: wholesale-x") {
		t.Errorf("export lacks the suppliers:\n%s", exported)
	}
	if out := cli("provision", "apply", "-f", writeFile(t, "exported.yaml", exported)); !strings.Contains(out, "nothing to change: the 13 objects") {
		t.Errorf("apply of the export:\n%s", out)
	}

	// rm refuses what others name, saying who, and removes nothing.
	fails("supplier telco-x is used by gateway gx", "supplier", "rm", "telco-x")
	fails("gateway gx is used by route uk", "gateway", "rm", "gx")
	fails("trunk acme-pbx is used by did 493012345678", "trunk", "rm", "acme-pbx")
	fails("subscriber alice is used by did 493087654321", "subscriber", "rm", "alice")
	fails("used by trunk acme-pbx", "dialplan", "rm", "de")
	for _, show := range [][]string{{"supplier", "show", "telco-x"}, {"gateway", "show", "gx"}, {"trunk", "show", "acme-pbx"}, {"subscriber", "show", "alice"}, {"dialplan", "show", "de"}} {
		cli(show...)
	}

	// Taken apart in order, everything goes.
	cli("route", "rm", "uk")
	cli("did", "rm", "493012345678")
	cli("did", "rm", "493087654321")
	cli("dialplan", "detach", "--trunk", "acme-pbx")
	for _, rm := range [][]string{
		{"gateway", "rm", "gx"}, {"gateway", "rm", "gz"}, {"supplier", "rm", "telco-x"}, {"supplier", "rm", "telco-z"},
		{"trunk", "rm", "acme-pbx"}, {"subscriber", "rm", "alice"}, {"dialplan", "rm", "de"},
	} {
		if out := cli(rm...); strings.TrimSpace(out) != rm[0]+" "+rm[2]+" removed" {
			t.Errorf("%v: %q", rm, out)
		}
	}
	fails("not provisioned", "supplier", "rm", "telco-x")
	if out := cli("supplier", "list"); strings.Contains(out, "telco-x") || !strings.Contains(out, "telco-y") {
		t.Errorf("list after rm:\n%s", out)
	}
}
