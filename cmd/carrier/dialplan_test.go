package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/carrier-core/carrier/schema"
	"github.com/carrier-core/carrier/tools/testkit"
)

const dialPlanYAML = `
name: German PBX
rules:
  - {name: intl, prefix: "00", strip: 2, add: "+"}
  - {name: national, regexp: '^0([1-9][0-9]+)$', replace: '+49$1'}
  - {name: short, regexp: '^[0-9]{1,5}$', reject: 484}
`

// TestDialPlanAndDIDCommands: dial plans and DIDs through the CLI, with
// routes limited to accounts and times in lcr mode, and all of it through
// export and apply.
func TestDialPlanAndDIDCommands(t *testing.T) {
	t.Parallel()
	n := testkit.StartNATS(t)
	url := []string{"--nats-url", n.URL}
	cli := func(args ...string) string { return mustCLI(t, append(args, url...)...) }
	fails := func(want string, args ...string) {
		t.Helper()
		if _, err := runCLI(t, append(args, url...)...); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: %v, want %q", args, err, want)
		}
	}
	cli("provision", "apply", "-f", writeFile(t, "network.yaml", networkYAML))

	if out := cli("dialplan", "add", "de", "-f", writeFile(t, "de.yaml", dialPlanYAML)); strings.TrimSpace(out) != "dialplan de created" {
		t.Errorf("add: %q", out)
	}
	// A bare list of rules is a plan too; a bad rule is named.
	if out := cli("dialplan", "add", "plain", "-f", writeFile(t, "plain.yaml", "- {prefix: '0', strip: 1, add: '+44'}\n")); !strings.Contains(out, "created") {
		t.Errorf("add a list: %q", out)
	}
	fails(`dial plan bad: rule 1 (oops): regexp "(": error parsing regexp`, "dialplan", "add", "bad", "-f", writeFile(t, "bad.yaml", "- {name: oops, regexp: '('}\n"))
	fails("unknown field", "dialplan", "add", "bad", "-f", writeFile(t, "typo.yaml", "- {prefx: '0'}\n"))

	if out := cli("dialplan", "attach", "de", "--trunk", "acme-pbx"); strings.TrimSpace(out) != "trunk acme-pbx updated" {
		t.Errorf("attach: %q", out)
	}
	fails("not provisioned", "dialplan", "attach", "ghost", "--trunk", "acme-pbx")
	out := cli("dialplan", "list")
	if !strings.Contains(out, "de") || !strings.Contains(out, "acme-pbx") || !strings.Contains(out, "German PBX") {
		t.Errorf("list:\n%s", out)
	}
	out = cli("dialplan", "show", "de")
	for _, want := range []string{"prefix 00", "strip 2, add +", "replace +49$1", "reject 484 Address Incomplete"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	fails("used by trunk acme-pbx", "dialplan", "rm", "de")

	if out := cli("did", "add", "+493012345678", "--trunk", "acme-pbx", "--deliver-to", "203.0.113.5"); strings.TrimSpace(out) != "did 493012345678 created" {
		t.Errorf("did add: %q", out)
	}
	fails(`trunk "ghost" does not exist`, "did", "add", "4930", "--trunk", "ghost", "--deliver-to", "203.0.113.5")
	if out := cli("did", "list"); !strings.Contains(out, "493012345678") || !strings.Contains(out, "trunk acme-pbx") || !strings.Contains(out, "203.0.113.5") {
		t.Errorf("did list:\n%s", out)
	}
	// A subscriber's DID: no PBX address, the owner must exist.
	cli("subscriber", "add", "alice@sip.example.com", "--id", "alice", "--account", "acme", "--password", "pw")
	if out := cli("did", "add", "+493098765432", "--subscriber", "alice"); strings.TrimSpace(out) != "did 493098765432 created" {
		t.Errorf("did add --subscriber: %q", out)
	}
	fails("does not exist", "did", "add", "4931", "--subscriber", "ghost")
	fails("for a trunk's DID", "did", "add", "4931", "--subscriber", "alice", "--deliver-to", "203.0.113.5")
	fails("needs --deliver-to", "did", "add", "4931", "--trunk", "acme-pbx")
	fails("none of the others can be", "did", "add", "4931", "--trunk", "acme-pbx", "--subscriber", "alice")
	fails("used by did 493098765432", "subscriber", "rm", "alice")
	cli("did", "rm", "493098765432")
	var d schema.DID
	if err := json.Unmarshal([]byte(cli("did", "show", "+493012345678", "-o", "json")), &d); err != nil || d.Owner != "acme-pbx" || d.OwnerKind != schema.DIDOwnerTrunk {
		t.Errorf("did show: %+v %v", d, err)
	}

	cli("route", "add", "de-lcr", "--prefix", "49", "--gateway", "carrier-a", "--mode", "lcr")
	cli("route", "add", "de-office", "--prefix", "49", "--gateway", "carrier-a", "--account", "acme",
		"--window", "mon-fri 08:00-18:00", "--time-zone", "Europe/Berlin")
	fails("time window \"8-18\"", "route", "add", "r", "--gateway", "carrier-a", "--window", "8-18")
	fails("for the same accounts and times", "route", "add", "de-lcr2", "--prefix", "+49", "--gateway", "carrier-a")
	out = cli("route", "show", "de-office")
	if !strings.Contains(out, "mon-fri 08:00-18:00 (Europe/Berlin)") || !strings.Contains(out, "acme") {
		t.Errorf("route show:\n%s", out)
	}

	// Export and apply carry dial plans, DIDs and the routes' limits.
	exported := writeFile(t, "exported.yaml", cli("provision", "export"))
	if out := cli("provision", "apply", "-f", exported); !strings.Contains(out, "nothing to change: the 9 objects") {
		t.Errorf("apply of the export:\n%s", out)
	}
	cli("dialplan", "detach", "--trunk", "acme-pbx")
	cli("dialplan", "rm", "de")
	cli("did", "rm", "493012345678")
	if out := cli("did", "list"); strings.Contains(out, "4930") {
		t.Errorf("did list after rm:\n%s", out)
	}
}
