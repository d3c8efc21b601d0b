package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

func TestSubscriberCommands(t *testing.T) {
	n := testkit.StartNATS(t)
	url := []string{"--nats-url", n.URL}
	mustCLI(t, append([]string{"provision", "apply", "-f", writeFile(t, "accounts.yaml", "accounts:\n  - {id: acme, currency: EUR}\n")}, url...)...)

	if out := mustCLI(t, append([]string{"subscriber", "add", "alice@SIP.example.com", "--account", "acme", "--password", "s3cret", "--max-contacts", "3"}, url...)...); strings.TrimSpace(out) != "subscriber alice_sip-example-com created" {
		t.Errorf("add: %q", out)
	}
	for want, args := range map[string][]string{
		"--password or --ha1":                           {"subscriber", "add", "bob@sip.example.com", "--account", "acme"},
		"not both":                                      {"subscriber", "add", "bob@sip.example.com", "--account", "acme", "--password", "x", "--ha1", strings.Repeat("a", 32)},
		"want user@domain":                              {"subscriber", "add", "bob", "--account", "acme", "--password", "x"},
		`account "ghost" does not exist`:                {"subscriber", "add", "bob@sip.example.com", "--account", "ghost", "--password", "x"},
		"want 32 lower-case hex digits":                 {"subscriber", "add", "bob@sip.example.com", "--account", "acme", "--ha1", "xyz"},
		"is subscriber alice_sip-example-com's already": {"subscriber", "add", "alice@sip.example.com", "--id", "alice2", "--account", "acme", "--password", "x"},
	} {
		if _, err := runCLI(t, append(args, url...)...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: %v, want %q", args, err, want)
		}
	}
	// Only the HA1s are stored, and they are the digest's.
	var s schema.Subscriber
	if err := json.Unmarshal([]byte(mustCLI(t, append([]string{"subscriber", "show", "alice@sip.example.com", "-o", "json"}, url...)...)), &s); err != nil {
		t.Fatal(err)
	}
	if s.HA1MD5 != schema.HA1MD5("alice", "sip.example.com", "s3cret") || s.HA1SHA256 != schema.HA1SHA256("alice", "sip.example.com", "s3cret") || s.MaxContacts != 3 {
		t.Errorf("stored %+v", s)
	}
	if raw := mustCLI(t, append([]string{"subscriber", "show", "alice_sip-example-com", "-o", "json"}, url...)...); strings.Contains(raw, "s3cret") {
		t.Errorf("password stored in clear: %s", raw)
	}
	more := writeFile(t, "subs.yaml", `
subscribers:
  - {id: bob, user: bob, domain: sip.example.com, account: acme, ha1_sha256: `+schema.HA1SHA256("bob", "sip.example.com", "pw")+`}
`)
	if out := mustCLI(t, append([]string{"provision", "apply", "-f", more}, url...)...); !strings.Contains(out, "created subscriber bob") {
		t.Errorf("apply: %s", out)
	}
	out := mustCLI(t, append([]string{"subscriber", "list"}, url...)...)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "alice@sip.example.com") || !strings.Contains(lines[1], "SHA-256 MD5") ||
		!strings.Contains(lines[2], "bob@sip.example.com") || !strings.Contains(lines[2], " SHA-256 ") {
		t.Errorf("list:\n%s", out)
	}
	exported := writeFile(t, "exported.yaml", mustCLI(t, append([]string{"provision", "export"}, url...)...))
	if out := mustCLI(t, append([]string{"provision", "apply", "-f", exported}, url...)...); !strings.Contains(out, "nothing to change") {
		t.Errorf("apply of the export:\n%s", out)
	}
	mustCLI(t, append([]string{"subscriber", "rm", "bob"}, url...)...)
	if _, err := runCLI(t, append([]string{"subscriber", "show", "bob"}, url...)...); err == nil || !strings.Contains(err.Error(), "not provisioned") {
		t.Errorf("show after rm: %v", err)
	}
}
