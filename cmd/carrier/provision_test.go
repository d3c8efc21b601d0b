package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// runCLI runs one short carrier command to its end and returns what it
// printed on stdout.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd(&out, &errOut, nil)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runCLI(t, args...)
	if err != nil {
		t.Fatalf("carrier %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const networkYAML = `
accounts:
  - {id: acme, name: ACME Telecom, currency: EUR, sell_plan: retail-eu}
gateways:
  - {id: carrier-a, address: "192.0.2.10:5060", transport: udp}
trunks:
  - id: acme-pbx
    account: acme
    sources:
      - {cidr: 203.0.113.0/24}
      - {cidr: 198.51.100.7, port: 5060, transport: udp}
`

func TestProvisionApplyIsIdempotent(t *testing.T) {
	n := testkit.StartNATS(t)
	file := writeFile(t, "network.yaml", networkYAML)

	out := mustCLI(t, "provision", "apply", "-f", file, "--nats-url", n.URL)
	for _, want := range []string{"created account acme", "created gateway carrier-a", "created trunk acme-pbx", "3 created, 0 updated, 0 unchanged"} {
		if !strings.Contains(out, want) {
			t.Errorf("first apply lacks %q:\n%s", want, out)
		}
	}
	out = mustCLI(t, "provision", "apply", "-f", file, "--nats-url", n.URL)
	if !strings.Contains(out, "nothing to change") || strings.Contains(out, "created") || strings.Contains(out, "updated") {
		t.Errorf("second apply:\n%s", out)
	}
	changed := writeFile(t, "changed.yaml", strings.Replace(networkYAML, "transport: udp}\ntrunks", "transport: tcp}\ntrunks", 1))
	out = mustCLI(t, "provision", "apply", "-f", changed, "--dry-run", "--nats-url", n.URL)
	if !strings.Contains(out, "would be updated gateway carrier-a") || !strings.Contains(out, "0 would be created, 1 would be updated, 2 unchanged") {
		t.Errorf("dry run:\n%s", out)
	}
	out = mustCLI(t, "provision", "apply", "-f", changed, "--nats-url", n.URL)
	if !strings.Contains(out, "updated gateway carrier-a") || !strings.Contains(out, "0 created, 1 updated, 2 unchanged") {
		t.Errorf("apply of a change:\n%s", out)
	}

	// What export prints, apply reads back as it is.
	exported := writeFile(t, "exported.yaml", mustCLI(t, "provision", "export", "--nats-url", n.URL))
	if out := mustCLI(t, "provision", "apply", "-f", exported, "--nats-url", n.URL); !strings.Contains(out, "nothing to change: the 3 objects") {
		t.Errorf("apply of the export:\n%s", out)
	}

	// A bad file is refused whole, naming each bad entry.
	bad := writeFile(t, "bad.yaml", `
accounts:
  - {id: beta, currency: USD}
trunks:
  - {id: beta-pbx, account: beta, sources: [{cidr: 203.0.113.0/24}]}
  - {id: ghost-pbx, account: ghost, sources: [{cidr: 10.0.0.0/33}]}
`)
	_, err := runCLI(t, "provision", "apply", "-f", bad, "--nats-url", n.URL)
	if err == nil {
		t.Fatal("a bad file was applied")
	}
	for _, want := range []string{"trunks[0] (beta-pbx)", "trunk acme-pbx's already", "trunks[1] (ghost-pbx)", "10.0.0.0/33"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if _, err := runCLI(t, "trunk", "show", "beta-pbx", "--nats-url", n.URL); err == nil {
		t.Error("part of a refused file was applied")
	}
	typo := writeFile(t, "typo.yaml", "trunks:\n  - {id: x, acount: acme, sources: [{cidr: 10.0.0.1}]}\n")
	if _, err := runCLI(t, "provision", "apply", "-f", typo, "--nats-url", n.URL); err == nil || !strings.Contains(err.Error(), `unknown field "acount"`) {
		t.Errorf("misspelt key: %v", err)
	}
}

func TestTrunkAndGatewayCommands(t *testing.T) {
	n := testkit.StartNATS(t)
	url := []string{"--nats-url", n.URL}
	mustCLI(t, append([]string{"provision", "apply", "-f", writeFile(t, "network.yaml", networkYAML)}, url...)...)

	out := mustCLI(t, append([]string{"trunk", "add", "acme-lab", "--account", "acme", "--source", "udp:10.1.0.0/16:5060", "--source", "2001:db8::/32", "--trusted"}, url...)...)
	if strings.TrimSpace(out) != "trunk acme-lab created" {
		t.Errorf("add: %q", out)
	}
	if out := mustCLI(t, append([]string{"trunk", "add", "acme-lab", "--account", "acme", "--source", "udp:10.1.0.0/16:5060", "--source", "2001:db8::/32", "--trusted"}, url...)...); strings.TrimSpace(out) != "trunk acme-lab unchanged" {
		t.Errorf("add again: %q", out)
	}
	if _, err := runCLI(t, append([]string{"trunk", "add", "clash", "--account", "acme", "--source", "203.0.113.0/24"}, url...)...); err == nil || !strings.Contains(err.Error(), "trunk acme-pbx's already") {
		t.Errorf("add with a claimed source: %v", err)
	}
	if _, err := runCLI(t, append([]string{"trunk", "add", "orphan", "--account", "nobody", "--source", "192.0.2.99"}, url...)...); err == nil || !strings.Contains(err.Error(), `account "nobody" does not exist`) {
		t.Errorf("add with an unknown account: %v", err)
	}
	if _, err := runCLI(t, append([]string{"trunk", "add", "bad", "--account", "acme", "--source", "not-an-ip"}, url...)...); err == nil || !strings.Contains(err.Error(), "--source") {
		t.Errorf("add with a bad source: %v", err)
	}

	out = mustCLI(t, append([]string{"trunk", "list"}, url...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "acme-lab") || !strings.Contains(lines[1], "udp:10.1.0.0/16:5060 2001:db8::/32") || !strings.Contains(lines[2], "acme-pbx") {
		t.Errorf("list:\n%s", out)
	}
	var trunks []schema.Trunk
	if err := json.Unmarshal([]byte(mustCLI(t, append([]string{"trunk", "list", "-o", "json"}, url...)...)), &trunks); err != nil || len(trunks) != 2 || !trunks[0].Trusted {
		t.Errorf("list json: %+v %v", trunks, err)
	}
	if out := mustCLI(t, append([]string{"trunk", "list", "-o", "csv"}, url...)...); !strings.HasPrefix(out, "ID,ACCOUNT,SOURCES,TRUSTED,NAME\n") {
		t.Errorf("list csv:\n%s", out)
	}
	if out := mustCLI(t, append([]string{"trunk", "show", "acme-pbx"}, url...)...); !strings.Contains(out, "203.0.113.0/24 udp:198.51.100.7:5060") || !strings.Contains(out, "account") {
		t.Errorf("show:\n%s", out)
	}
	var one schema.Trunk
	if err := json.Unmarshal([]byte(mustCLI(t, append([]string{"trunk", "show", "acme-pbx", "-o", "json"}, url...)...)), &one); err != nil || one.ID != "acme-pbx" || len(one.Sources) != 2 {
		t.Errorf("show json: %+v %v", one, err)
	}
	if out := mustCLI(t, append([]string{"trunk", "rm", "acme-lab"}, url...)...); strings.TrimSpace(out) != "trunk acme-lab removed" {
		t.Errorf("rm: %q", out)
	}
	if _, err := runCLI(t, append([]string{"trunk", "rm", "acme-lab"}, url...)...); err == nil || !strings.Contains(err.Error(), "not provisioned") {
		t.Errorf("rm twice: %v", err)
	}
	if _, err := runCLI(t, append([]string{"trunk", "show", "acme-lab"}, url...)...); err == nil {
		t.Error("show of a removed trunk")
	}

	if out := mustCLI(t, append([]string{"gateway", "add", "carrier-b", "--address", "gw.example.net", "--transport", "tcp"}, url...)...); strings.TrimSpace(out) != "gateway carrier-b created" {
		t.Errorf("gateway add: %q", out)
	}
	if _, err := runCLI(t, append([]string{"gateway", "add", "bad", "--address", "192.0.2.1:99999"}, url...)...); err == nil {
		t.Error("gateway with a bad port added")
	}
	out = mustCLI(t, append([]string{"gateway", "list"}, url...)...)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(lines[1], "192.0.2.10:5060") || !strings.Contains(lines[2], "gw.example.net") {
		t.Errorf("gateway list:\n%s", out)
	}
	var g schema.Gateway
	if err := json.Unmarshal([]byte(mustCLI(t, append([]string{"gateway", "show", "carrier-b", "-o", "json"}, url...)...)), &g); err != nil || g.Transport != "tcp" {
		t.Errorf("gateway show json: %+v %v", g, err)
	}
	mustCLI(t, append([]string{"gateway", "rm", "carrier-b"}, url...)...)
	if out := mustCLI(t, append([]string{"gateway", "list", "-o", "json"}, url...)...); strings.Contains(out, "carrier-b") {
		t.Errorf("gateway removed still listed:\n%s", out)
	}
}
