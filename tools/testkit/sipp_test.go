package testkit

import (
	"testing"
)

// The scenarios run against each other without a proxy: what the proxy
// tests rely on, checked on its own.

func TestSippAnsweredCalls(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			uas := StartSippUAS(t, SippScenarioUAS, SippTransport(transport))
			res, err := RunSippUAC(t, uas.Addr(), SippScenarioUAC, SippCalls{
				Calls: 50, Rate: 100, PauseMs: 100, Transport: transport,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Created != 50 || res.Successful != 50 || res.Failed != 0 {
				t.Fatalf("want 50 successful calls, got %v", res)
			}
		})
	}
}

func TestSippBusyCalls(t *testing.T) {
	uas := StartSippUAS(t, SippScenarioUASBusy)
	// With no proxy between them the UAS is its own "proxy": this also
	// checks that SippCallThrough pairs uas_busy.xml with uac_busy.xml.
	res := SippCallThrough(t, uas.Addr(), uas, SippCalls{Calls: 20, Rate: 100})
	if res.Created != 20 || res.Successful != 20 || res.Failed != 0 {
		t.Fatalf("want 20 calls that got their 486, got %v", res)
	}
}

// A call that does not go as its scenario says must count as failed, or
// the tests built on these counts would pass on anything.
func TestSippUnexpectedAnswerFails(t *testing.T) {
	uas := StartSippUAS(t, SippScenarioUASBusy)
	res, err := RunSippUAC(t, uas.Addr(), SippScenarioUAC, SippCalls{Calls: 5, Rate: 50})
	if err != nil {
		t.Fatal(err)
	}
	if res.Successful != 0 || res.Failed != 5 {
		t.Fatalf("want 5 failed calls (486 where 200 was expected), got %v", res)
	}
	if res.Errors == "" {
		t.Error("failed calls but no unexpected messages reported")
	}
}
