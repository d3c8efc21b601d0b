package testkit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// serverProcess is a server a test runs as a child process (ClickHouse,
// FreeRADIUS, sipp). Linux kills it with the test binary, so a crashed
// test leaves nothing behind; stop asks it to end and kills it after a
// grace period.
type serverProcess struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has exited
	// waitErr is how it exited; read it only after exited is closed.
	waitErr error
}

// startServerProcess starts name with args in dir, its output appended
// to logPath.
func startServerProcess(dir, logPath, name string, args ...string) (*serverProcess, error) {
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	// The child has its own copy of the descriptor.
	defer out.Close()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &serverProcess{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// running reports whether the process is up; a nil process is not.
func (p *serverProcess) running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for the exit, killing the process after
// grace; it reports whether it had to kill.
func (p *serverProcess) stop(grace time.Duration) (killed bool) {
	if !p.running() {
		return false
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return false
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return true
	}
}

// logFileTail logs the last n lines of a server's log file, if it has any.
func logFileTail(t testing.TB, what, path string, n int) {
	b, err := os.ReadFile(path)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("testkit: %s (last %d lines):\n%s", what, len(lines), strings.Join(lines, "\n"))
}
