package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

func TestRouteCommands(t *testing.T) {
	n := testkit.StartNATS(t)
	url := []string{"--nats-url", n.URL}
	mustCLI(t, append([]string{"provision", "apply", "-f", writeFile(t, "network.yaml", networkYAML)}, url...)...)
	mustCLI(t, append([]string{"gateway", "add", "carrier-b", "--address", "192.0.2.11"}, url...)...)

	if out := mustCLI(t, append([]string{"route", "add", "default", "--gateway", "carrier-a", "--gateway", "carrier-b", "--max-attempts", "2"}, url...)...); strings.TrimSpace(out) != "route default created" {
		t.Errorf("add: %q", out)
	}
	if out := mustCLI(t, append([]string{"route", "add", "uk", "--prefix", "+44", "--gateway", "carrier-b", "--gateway", "carrier-a", "--mode", "weighted", "--weight", "3", "--weight", "1"}, url...)...); strings.TrimSpace(out) != "route uk created" {
		t.Errorf("add weighted: %q", out)
	}
	for name, args := range map[string][]string{
		`gateway "ghost" does not exist`: {"route", "add", "r", "--gateway", "ghost"},
		`is route uk's already`:          {"route", "add", "uk2", "--prefix", "44", "--gateway", "carrier-a"},
		"weights given in ordered mode":  {"route", "add", "r", "--gateway", "carrier-a", "--weight", "2"},
		"want ordered or weighted":       {"route", "add", "r", "--gateway", "carrier-a", "--mode", "random"},
	} {
		if _, err := runCLI(t, append(args, url...)...); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%v: %v, want %q", args, err, name)
		}
	}
	out := mustCLI(t, append([]string{"route", "list"}, url...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "(default)") || !strings.Contains(lines[1], "carrier-a carrier-b") ||
		!strings.Contains(lines[2], "+44") || !strings.Contains(lines[2], "weighted") || !strings.Contains(lines[2], "3 1") {
		t.Errorf("list:\n%s", out)
	}
	var r schema.Route
	if err := json.Unmarshal([]byte(mustCLI(t, append([]string{"route", "show", "uk", "-o", "json"}, url...)...)), &r); err != nil || r.Mode != "weighted" || len(r.Weights) != 2 {
		t.Errorf("show json: %+v %v", r, err)
	}
	if _, err := runCLI(t, append([]string{"gateway", "rm", "carrier-b"}, url...)...); err == nil || !strings.Contains(err.Error(), "used by route default, uk") {
		t.Errorf("rm of a routed gateway: %v", err)
	}

	// Routes go through export and apply like the other objects.
	exported := writeFile(t, "exported.yaml", mustCLI(t, append([]string{"provision", "export"}, url...)...))
	if out := mustCLI(t, append([]string{"provision", "apply", "-f", exported}, url...)...); !strings.Contains(out, "nothing to change: the 6 objects") {
		t.Errorf("apply of the export:\n%s", out)
	}
	more := writeFile(t, "routes.yaml", `
routes:
  - {id: us, prefix: "1", gateways: [carrier-a], max_attempts: 1}
  - {id: bad, prefix: "1x", gateways: [carrier-a]}
`)
	if _, err := runCLI(t, append([]string{"provision", "apply", "-f", more}, url...)...); err == nil || !strings.Contains(err.Error(), "routes[1] (bad)") {
		t.Errorf("apply of a bad route: %v", err)
	}
	more = writeFile(t, "routes.yaml", "routes:\n  - {id: us, prefix: \"1\", gateways: [carrier-a], max_attempts: 1}\n")
	if out := mustCLI(t, append([]string{"provision", "apply", "-f", more}, url...)...); !strings.Contains(out, "created route us") {
		t.Errorf("apply of a route:\n%s", out)
	}

	for _, id := range []string{"default", "uk", "us"} {
		mustCLI(t, append([]string{"route", "rm", id}, url...)...)
	}
	if _, err := runCLI(t, append([]string{"route", "rm", "uk"}, url...)...); err == nil || !strings.Contains(err.Error(), "not provisioned") {
		t.Errorf("rm twice: %v", err)
	}
	mustCLI(t, append([]string{"gateway", "rm", "carrier-b"}, url...)...)
}
