package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

// TestLimitCommands: the calls-per-second limits of accounts and
// gateways are set and shown by their commands, and checked.
func TestLimitCommands(t *testing.T) {
	n := testkit.StartNATS(t)
	url := []string{"--nats-url", n.URL}
	cli := func(args ...string) string { t.Helper(); return mustCLI(t, append(args, url...)...) }

	cli("account", "create", "acme", "--currency", "EUR", "--kind", "prepaid", "--cps", "20")
	if out := cli("account", "show", "acme"); !strings.Contains(out, "cps") || !strings.Contains(out, "20") {
		t.Errorf("account show:\n%s", out)
	}
	if out := cli("account", "set", "acme", "--cps", "5"); !strings.Contains(out, "provisioning updated") {
		t.Errorf("account set: %q", out)
	}
	var views []accountView
	if err := json.Unmarshal([]byte(cli("account", "list", "-o", "json")), &views); err != nil || len(views) != 1 || views[0].CPS != 5 {
		t.Errorf("account list: %+v %v", views, err)
	}
	if _, err := runCLI(t, append([]string{"account", "set", "acme", "--cps", "-1"}, url...)...); err == nil || !strings.Contains(err.Error(), "cps -1") {
		t.Errorf("negative account cps: %v", err)
	}

	cli("gateway", "add", "carrier-a", "--address", "192.0.2.10", "--cps", "30")
	if out := cli("gateway", "list"); !strings.Contains(out, "CPS") || !strings.Contains(out, "30") {
		t.Errorf("gateway list:\n%s", out)
	}
	var g schema.Gateway
	if err := json.Unmarshal([]byte(cli("gateway", "show", "carrier-a", "-o", "json")), &g); err != nil || g.CPS != 30 {
		t.Errorf("gateway show json: %+v %v", g, err)
	}
	if _, err := runCLI(t, append([]string{"gateway", "add", "carrier-b", "--address", "192.0.2.11", "--cps", "1000000"}, url...)...); err == nil || !strings.Contains(err.Error(), "cps 1000000") {
		t.Errorf("gateway cps over the maximum: %v", err)
	}
}

// TestTLSListenFlag: --sip-listen takes tls:ADDR.
func TestTLSListenFlag(t *testing.T) {
	ls, err := parseListeners([]string{"tls:127.0.0.1:5061", "udp:127.0.0.1:5060"})
	if err != nil || len(ls) != 2 || ls[0].Transport != "tls" || ls[0].Addr != "127.0.0.1:5061" {
		t.Fatalf("parseListeners = %+v, %v", ls, err)
	}
	if _, err := parseListeners([]string{"tls:nowhere"}); err == nil || !strings.Contains(err.Error(), "tls:ADDR") {
		t.Errorf("bad tls address: %v", err)
	}
}
