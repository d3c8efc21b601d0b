package testkit

import (
	"testing"
	"time"
)

// Eventually polls cond until it returns nil, failing the test with cond's
// last error once within has passed. The bound only limits waiting on a
// loaded machine; it is never what a test checks.
func Eventually(t testing.TB, within time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	wait := 10 * time.Millisecond
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not so after %s: %v", within, err)
		}
		time.Sleep(wait)
		wait = min(wait*2, 250*time.Millisecond)
	}
}
