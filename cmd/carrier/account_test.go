package main

import (
	"encoding/csv"
	"encoding/json"
	"strings"
	"testing"

	"github.com/carrier-core/carrier/ledger"
	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

func TestAccountCommands(t *testing.T) {
	n := testkit.StartNATS(t)
	url := []string{"--nats-url", n.URL}
	cli := func(args ...string) string { t.Helper(); return mustCLI(t, append(args, url...)...) }

	out := cli("account", "create", "acme", "--name", "ACME Telecom", "--currency", "EUR", "--kind", "prepaid", "--plan", "retail-eu")
	if strings.TrimSpace(out) != "account acme: ledger opened (prepaid, EUR), provisioning created" {
		t.Errorf("create: %q", out)
	}
	out = cli("account", "create", "acme", "--name", "ACME Telecom", "--currency", "EUR", "--kind", "prepaid", "--plan", "retail-eu")
	if strings.TrimSpace(out) != "account acme: ledger unchanged (prepaid, EUR), provisioning unchanged" {
		t.Errorf("create again: %q", out)
	}
	if _, err := runCLI(t, append([]string{"account", "create", "acme", "--currency", "EUR", "--kind", "postpaid"}, url...)...); err == nil || !strings.Contains(err.Error(), "already open as a prepaid account in EUR") {
		t.Errorf("create with another kind: %v", err)
	}
	if _, err := runCLI(t, append([]string{"account", "create", "x", "--currency", "EUR", "--kind", "prepaid", "--credit-limit", "5"}, url...)...); err == nil || !strings.Contains(err.Error(), "only postpaid") {
		t.Errorf("credit limit on prepaid: %v", err)
	}
	cli("account", "create", "bigco", "--currency", "USD", "--kind", "postpaid", "--credit-limit", "100")
	out = cli("account", "set", "bigco", "--credit-limit", "250.50", "--plan", "wholesale-us")
	if !strings.Contains(out, "account bigco: provisioning updated") || !strings.Contains(out, "credit limit changed 250.50, available 250.50") {
		t.Errorf("set: %q", out)
	}

	// The proxy and the rater read the provisioning entry.
	if out := cli("provision", "export"); !strings.Contains(out, "retail-eu") || !strings.Contains(out, "wholesale-us") {
		t.Errorf("provisioning lacks the accounts:\n%s", out)
	}

	var views []accountView
	if err := json.Unmarshal([]byte(cli("account", "list", "-o", "json")), &views); err != nil {
		t.Fatal(err)
	}
	if len(views) != 2 || views[0].ID != "acme" || views[1].Ledger == nil || views[1].Ledger.CreditLimit != schema.MustParseMoney("250.50") || views[1].SellPlan != "wholesale-us" {
		t.Errorf("list: %+v", views)
	}
	if out := cli("account", "show", "bigco"); !strings.Contains(out, "postpaid") || !strings.Contains(out, "250.50") {
		t.Errorf("show:\n%s", out)
	}

	// rm: refused while a trunk names the account or money is on it.
	cli("account", "add", "small", "--currency", "EUR", "--kind", "prepaid")
	cli("trunk", "add", "small-pbx", "--account", "small", "--source", "192.0.2.9")
	fails := func(want string, args ...string) {
		t.Helper()
		if _, err := runCLI(t, append(args, url...)...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: %v, want %q", args, err, want)
		}
	}
	fails("used by trunk small-pbx", "account", "rm", "small")
	cli("trunk", "rm", "small-pbx")
	cli("balance", "topup", "small", "--amount", "5", "--reference", "T1")
	fails("has a balance of 5.00 EUR: settle it first", "account", "rm", "small")
	cli("balance", "adjust", "small", "--amount", "-5", "--reason", "refund on closing")
	if out := cli("account", "rm", "small"); strings.TrimSpace(out) != "account small removed" {
		t.Errorf("rm: %q", out)
	}
	if out := cli("provision", "export"); strings.Contains(out, "small") {
		t.Errorf("removed account still provisioned:\n%s", out)
	}
}

func TestBalanceCommands(t *testing.T) {
	n := testkit.StartNATS(t)
	url := []string{"--nats-url", n.URL}
	cli := func(args ...string) string { t.Helper(); return mustCLI(t, append(args, url...)...) }
	cli("account", "create", "acme", "--currency", "EUR", "--kind", "prepaid")

	out := cli("balance", "topup", "acme", "--amount", "10.50", "--reference", "INV-1")
	if strings.TrimSpace(out) != "account acme credited 10.50 EUR (reference INV-1): balance 10.50, available 10.50" {
		t.Errorf("topup: %q", out)
	}
	_, err := runCLI(t, append([]string{"balance", "topup", "acme", "--amount", "10.50", "--reference", "INV-1"}, url...)...)
	if err == nil || err.Error() != `top-up refused: reference "INV-1" was already applied to account acme, nothing was credited (see `+"`carrier balance history acme`)" {
		t.Errorf("duplicate topup: %v", err)
	}
	if out := cli("balance", "adjust", "acme", "--amount", "-0.125", "--reason", "rounding fix"); !strings.Contains(out, "balance 10.375") {
		t.Errorf("adjust: %q", out)
	}
	if _, err := runCLI(t, append([]string{"balance", "topup", "nobody", "--amount", "1", "--reference", "x"}, url...)...); err == nil || !strings.Contains(err.Error(), "open it with `carrier account create nobody") {
		t.Errorf("topup of an unknown account: %v", err)
	}
	if _, err := runCLI(t, append([]string{"balance", "topup", "acme", "--amount", "1.0000000001", "--reference", "y"}, url...)...); err == nil || !strings.Contains(err.Error(), "exact decimal") {
		t.Errorf("too precise an amount: %v", err)
	}

	show := cli("balance", "show", "acme")
	for _, want := range []string{"balance       10.375", "available     10.375", "live calls    0"} {
		if !strings.Contains(show, want) {
			t.Errorf("show lacks %q:\n%s", want, show)
		}
	}

	table := cli("balance", "history", "acme")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "SEQ") || !strings.Contains(lines[2], "top-up") || !strings.Contains(lines[2], "INV-1") || !strings.Contains(lines[3], "rounding fix") {
		t.Errorf("history table:\n%s", table)
	}
	var entries []ledger.Entry
	if err := json.Unmarshal([]byte(cli("balance", "history", "acme", "-o", "json")), &entries); err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 || entries[0].Type != schema.TypeAccountOpened || entries[1].Amount != schema.MustParseMoney("10.50") || entries[2].Balance != schema.MustParseMoney("10.375") {
		t.Errorf("history json: %+v", entries)
	}
	rows, err := csv.NewReader(strings.NewReader(cli("balance", "history", "acme", "-o", "csv"))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 || rows[0][3] != "AMOUNT" || rows[3][3] != "-0.125" || rows[3][5] != "10.375" {
		t.Errorf("history csv: %q", rows)
	}
	if out := cli("balance", "history", "acme", "--from", "2000-01-01", "--to", "2000-01-02", "-o", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("history of an empty range: %q", out)
	}
	if out := cli("balance", "rebuild"); strings.TrimSpace(out) != "rebuilt the balances of 1 accounts from the ledger" {
		t.Errorf("rebuild: %q", out)
	}
}
