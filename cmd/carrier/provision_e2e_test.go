package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/carrier-core/carrier/tools/testkit"
)

// A running `carrier proxy` refuses sipp's calls until `carrier trunk add`
// provisions its address, takes them from then on, and refuses them again
// after `carrier trunk rm`: no restart, no open relay.
func TestTrunkAddedWhileProxyRunsTakesCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	n := testkit.StartNATS(t)
	uas := testkit.StartSippUAS(t, testkit.SippScenarioUAS)
	sip := hostPort(testkit.FreePort(t))
	p := startCommand(t, "proxy", "--nats-url", n.URL, "--sip-listen", sip, "--gateway", uas.Addr(),
		"--spool-dir", filepath.Join(t.TempDir(), "spool"), "--metrics-listen", "")
	p.waitListening(t, sip)

	call := func() testkit.SippResult {
		return testkit.SippCallThrough(t, sip, uas, testkit.SippCalls{Calls: 1})
	}
	if res := call(); res.Successful != 0 || !strings.Contains(res.Errors, "SIP/2.0 403 Forbidden") {
		t.Fatalf("a call from an unprovisioned source was not refused with 403: %s", res)
	}

	mustCLI(t, "provision", "apply", "--nats-url", n.URL, "-f", writeFile(t, "lab.yaml", "accounts:\n  - {id: lab, currency: EUR}\n"))
	mustCLI(t, "trunk", "add", "sipp", "--account", "lab", "--source", "127.0.0.1", "--nats-url", n.URL)
	eventually(t, 60*time.Second, func() error {
		if res := call(); res.Successful != 1 {
			return fmt.Errorf("call after trunk add: %s", res)
		}
		return nil
	})

	mustCLI(t, "trunk", "rm", "sipp", "--nats-url", n.URL)
	eventually(t, 60*time.Second, func() error {
		if res := call(); res.Successful != 0 || !strings.Contains(res.Errors, "SIP/2.0 403 Forbidden") {
			return fmt.Errorf("call after trunk rm not refused with 403: %s", res)
		}
		return nil
	})
}
