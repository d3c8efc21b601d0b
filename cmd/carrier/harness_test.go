package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/carrier-core/carrier/tools/testkit"
)

// running is a carrier command executing in this test process, as it
// would in its own: stopping it cancels its context, like SIGTERM.
type running struct {
	name   string
	cancel context.CancelFunc
	done   chan error
	out    *syncBuffer
}

// startCommand runs `carrier args...` until stop is called or the test ends.
func startCommand(t *testing.T, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{name: args[0], cancel: cancel, done: make(chan error, 1), out: &syncBuffer{}}
	root := newRootCmd(r.out, r.out, nil)
	root.SetArgs(args)
	go func() { r.done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the command and waits for it to return.
func (r *running) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("carrier %s: %v\n%s", r.name, err, r.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("carrier %s did not stop within 30s\n%s", r.name, r.out.String())
	}
}

// waitListening waits until addr accepts TCP connections, failing early
// if the command exits.
func (r *running) waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-r.done:
			t.Fatalf("carrier %s exited: %v\n%s", r.name, err, r.out.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("carrier %s: nothing listening on %s after 30s\n%s", r.name, addr, r.out.String())
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func hostPort(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

// eventually is testkit.Eventually, by its short local name.
func eventually(t *testing.T, within time.Duration, cond func() error) {
	t.Helper()
	testkit.Eventually(t, within, cond)
}
