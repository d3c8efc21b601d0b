package testkit

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Scenario files under tools/sipp. A UAC scenario pairs with the UAS
// scenario of the same outcome: uac.xml with uas.xml, uac_busy.xml with
// uas_busy.xml.
const (
	SippScenarioUAS     = "uas.xml"      // INVITE -> 180 -> 200, ACK, BYE -> 200
	SippScenarioUASBusy = "uas_busy.xml" // INVITE -> 486, ACK
	SippScenarioUAC     = "uac.xml"      // answered call with a pause, hung up by the caller
	SippScenarioUACBusy = "uac_busy.xml" // expects 486 and acknowledges it
)

// Numbers the UAC dials from and to unless SippCalls says otherwise.
const (
	SippDefaultCaller = "15550000001"
	SippDefaultCallee = "15550000002"
)

// sippBuffer is the socket buffer size given to sipp (-buff_size). Its
// default, 64 kB, overflows when a loaded machine delays sipp, and a
// datagram lost there fails or delays a call for no fault of the proxy.
// The kernel caps it at net.core.rmem_max/wmem_max.
const sippBuffer = "4194304"

// sippExitBind is sipp's exit status for "fatal error binding a socket"
// (-2): the free port we picked was taken in the meantime, so try another.
const sippExitBind = 254

// requireSipp returns the sipp binary, or skips the test when it is
// missing on a developer machine. In CI a missing sipp is a broken set-up,
// not a reason to pass quietly.
func requireSipp(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("sipp")
	if err == nil {
		return path
	}
	msg := "sipp not found (Debian package sip-tester; `make deps` installs it)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// SippScenarioPath returns the path of a scenario file: a bare name is
// looked up in tools/sipp of the module, found by walking up from the
// working directory to go.mod, so tests of any package can use it.
func SippScenarioPath(t testing.TB, scenario string) string {
	t.Helper()
	if filepath.IsAbs(scenario) {
		return scenario
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("sipp scenario %s: %v", scenario, err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("sipp scenario %s: no go.mod above the working directory", scenario)
		}
		dir = parent
	}
	path := filepath.Join(dir, "tools", "sipp", scenario)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("sipp scenario: %v", err)
	}
	return path
}

// sippTransportMode maps a transport name to sipp's -t mode: one socket
// for all calls, as a trunk between two servers uses.
func sippTransportMode(transport string) (string, error) {
	switch strings.ToLower(transport) {
	case "", "udp":
		return "u1", nil
	case "tcp":
		return "t1", nil
	}
	return "", fmt.Errorf("sipp transport %q: want udp or tcp", transport)
}

// SippUAS is a sipp process answering calls with a UAS scenario until the
// test ends.
type SippUAS struct {
	t         testing.TB
	scenario  string
	transport string
	addr      string
	proc      *serverProcess
	logPath   string
	errPath   string
	once      sync.Once
}

// SippOption configures StartSippUAS.
type SippOption func(*sippUASConfig)

type sippUASConfig struct {
	transport string
}

// SippTransport makes the UAS listen on "udp" (the default) or "tcp".
func SippTransport(transport string) SippOption {
	return func(c *sippUASConfig) { c.transport = transport }
}

// StartSippUAS starts sipp with a UAS scenario (SippScenarioUAS,
// SippScenarioUASBusy or a path) on a free 127.0.0.1 port and returns once
// it is listening. It stops at the test's end; an exit before that fails
// the test, since every call sent to it afterwards would fail too.
func StartSippUAS(t testing.TB, scenario string, opts ...SippOption) *SippUAS {
	t.Helper()
	bin := requireSipp(t)
	cfg := sippUASConfig{transport: "udp"}
	for _, o := range opts {
		o(&cfg)
	}
	mode, err := sippTransportMode(cfg.transport)
	if err != nil {
		t.Fatal(err)
	}
	path := SippScenarioPath(t, scenario)
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		u := &SippUAS{
			t:         t,
			scenario:  scenario,
			transport: strings.ToLower(cfg.transport),
			logPath:   filepath.Join(dir, fmt.Sprintf("uas-%d.log", attempt)),
			errPath:   filepath.Join(dir, fmt.Sprintf("uas-%d-errors.log", attempt)),
		}
		port := FreePort(t)
		u.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err := u.start(bin, path, mode, port)
		if err == nil {
			t.Cleanup(u.Stop)
			return u
		}
		var exit *exec.ExitError
		if errors.As(err, &exit) && exit.ExitCode() == sippExitBind && attempt < 3 {
			continue
		}
		t.Fatalf("sipp UAS %s: %v\n%s", scenario, err, sippTail(u.logPath, 2000))
	}
}

// start runs the process and waits until its SIP socket is bound.
func (u *SippUAS) start(bin, scenario, mode string, port int) error {
	// -nostdin: sipp reads keyboard commands from stdin, and a test has
	// no terminal. -ci keeps its control socket on loopback.
	proc, err := startServerProcess("", u.logPath, bin,
		"-sf", scenario,
		"-i", "127.0.0.1", "-p", strconv.Itoa(port), "-t", mode,
		"-ci", "127.0.0.1", "-buff_size", sippBuffer,
		"-nostdin",
		"-trace_err", "-error_file", u.errPath,
	)
	if err != nil {
		return err
	}
	u.proc = proc

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-u.proc.exited:
			if u.proc.waitErr == nil {
				return errors.New("exited before listening")
			}
			return u.proc.waitErr
		default:
		}
		if sippListening(u.proc.cmd.Process.Pid, u.transport, port) {
			return nil
		}
		if time.Now().After(deadline) {
			u.kill()
			return fmt.Errorf("not listening on %s/%s after 10s", u.addr, u.transport)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addr is the UAS's host:port, the gateway address for a proxy under test.
func (u *SippUAS) Addr() string { return u.addr }

// Transport is "udp" or "tcp".
func (u *SippUAS) Transport() string { return u.transport }

// Scenario is the scenario the UAS was started with.
func (u *SippUAS) Scenario() string { return u.scenario }

// Stop ends the process; it runs at the test's end and may be called
// earlier, for instance to take a gateway away. An exit the test did not
// ask for is reported with sipp's output.
func (u *SippUAS) Stop() {
	u.once.Do(func() {
		select {
		case <-u.proc.exited:
			u.t.Errorf("sipp UAS %s on %s exited by itself: %v\n%s",
				u.scenario, u.addr, u.proc.waitErr, sippTail(u.logPath, 2000))
			return
		default:
		}
		u.kill()
		if u.t.Failed() {
			if errs := sippTail(u.errPath, 4000); errs != "" {
				u.t.Logf("sipp UAS %s on %s, unexpected messages:\n%s", u.scenario, u.addr, errs)
			}
		}
	})
}

// kill asks sipp to quit (SIGTERM ends it at once, printing its final
// screen) and kills it if it does not.
func (u *SippUAS) kill() { u.proc.stop(5 * time.Second) }

// sippListening reports whether process pid owns a socket bound to
// 127.0.0.1:port, from /proc. Owning, not merely "someone listens": the
// port came from FreePort and another process could have taken it.
func sippListening(pid int, transport string, port int) bool {
	table, state := "/proc/net/udp", "07" // UDP sockets sit in TCP_CLOSE
	if transport == "tcp" {
		table, state = "/proc/net/tcp", "0A" // TCP_LISTEN
	}
	data, err := os.ReadFile(table)
	if err != nil {
		return false
	}
	local := fmt.Sprintf("0100007F:%04X", port)
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == local && f[3] == state {
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return false
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil && inodes[target] {
			return true
		}
	}
	return false
}

// SippCalls describes a run of a UAC scenario.
type SippCalls struct {
	Calls     int           // calls to place (-m); required
	Rate      int           // new calls per second (-r); 10 when zero
	PauseMs   int           // how long an answered call lasts (-d)
	Caller    string        // From user; SippDefaultCaller when empty
	Callee    string        // Request-URI user (-s); SippDefaultCallee when empty
	Transport string        // "udp" (default) or "tcp"
	Limit     int           // most calls open at once (-l); sipp's default when zero
	Timeout   time.Duration // bound for the whole run; derived from the load when zero
}

// SippResult is what sipp counted at the end of a UAC run. A call is
// successful when it ran its scenario to the end: with uac_busy.xml a
// call that got its expected 486 is a success.
type SippResult struct {
	Created         int    // calls started
	Successful      int    // calls that completed their scenario
	Failed          int    // calls that did not (unexpected message, timeout, ...)
	Retransmissions int    // requests and responses sent again (UDP)
	Errors          string // tail of sipp's trace of unexpected messages, when a call failed
}

func (r SippResult) String() string {
	s := fmt.Sprintf("%d calls: %d successful, %d failed, %d retransmissions",
		r.Created, r.Successful, r.Failed, r.Retransmissions)
	if r.Errors != "" {
		s += "\nunexpected messages:\n" + r.Errors
	}
	return s
}

// sippRecvTimeout bounds each wait for a message in the UAC, so a call
// whose peer does not answer fails in seconds rather than after UDP's
// 32-second transaction timeout.
const sippRecvTimeout = 10 * time.Second

// RunSippUAC places c.Calls calls with a UAC scenario (SippScenarioUAC,
// SippScenarioUACBusy or a path) to target (host:port: a proxy, or a
// UAS directly) and waits for all of them to end. Failed calls are in
// the result; the error is for runs that could not be done or counted:
// sipp missing its target socket, a fatal sipp error, the time bound.
func RunSippUAC(t testing.TB, target, scenario string, c SippCalls) (SippResult, error) {
	t.Helper()
	bin := requireSipp(t)
	path := SippScenarioPath(t, scenario)
	if c.Calls <= 0 {
		return SippResult{}, fmt.Errorf("sipp UAC %s: Calls must be positive, got %d", scenario, c.Calls)
	}
	mode, err := sippTransportMode(c.Transport)
	if err != nil {
		return SippResult{}, err
	}
	if c.Rate <= 0 {
		c.Rate = 10
	}
	if c.Caller == "" {
		c.Caller = SippDefaultCaller
	}
	if c.Callee == "" {
		c.Callee = SippDefaultCallee
	}
	if c.Timeout <= 0 {
		// Time to start every call, the last one's length, and its
		// slowest possible failure, with room to spare.
		start := time.Duration(c.Calls) * time.Second / time.Duration(c.Rate)
		c.Timeout = start + time.Duration(c.PauseMs)*time.Millisecond + 2*sippRecvTimeout + 10*time.Second
	}

	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		run := sippUACRun{
			bin: bin, scenario: path, target: target, mode: mode, calls: c,
			port:     FreePort(t),
			statPath: filepath.Join(dir, fmt.Sprintf("uac-%d-stat.csv", attempt)),
			errPath:  filepath.Join(dir, fmt.Sprintf("uac-%d-errors.log", attempt)),
			logPath:  filepath.Join(dir, fmt.Sprintf("uac-%d.log", attempt)),
		}
		res, code, err := run.do(t.Context())
		if code == sippExitBind && attempt < 3 {
			continue
		}
		if err != nil {
			return res, fmt.Errorf("sipp UAC %s to %s: %w", scenario, target, err)
		}
		return res, nil
	}
}

type sippUACRun struct {
	bin, scenario, target, mode string
	calls                       SippCalls
	port                        int
	statPath, errPath, logPath  string
}

// do runs sipp once and returns its counts and exit status.
func (r sippUACRun) do(parent context.Context) (SippResult, int, error) {
	c := r.calls
	// sipp's own -timeout ends the run cleanly with its statistics
	// written; the context is the backstop should sipp hang.
	ctx, cancel := context.WithTimeout(parent, c.Timeout+15*time.Second)
	defer cancel()
	args := []string{
		"-sf", r.scenario,
		"-i", "127.0.0.1", "-p", strconv.Itoa(r.port), "-t", r.mode,
		"-ci", "127.0.0.1", "-buff_size", sippBuffer,
		"-key", "caller", c.Caller,
		"-s", c.Callee,
		"-m", strconv.Itoa(c.Calls),
		"-r", strconv.Itoa(c.Rate),
		"-d", strconv.Itoa(c.PauseMs),
		"-recv_timeout", strconv.Itoa(int(sippRecvTimeout / time.Millisecond)),
		"-timeout", strconv.Itoa(int(c.Timeout.Round(time.Second)/time.Second)) + "s",
		"-nostdin",
		// Statistics every second into a CSV file: the last row, written
		// at exit, holds the run's totals.
		"-trace_stat", "-stf", r.statPath, "-fd", "1",
		"-trace_err", "-error_file", r.errPath,
	}
	if c.Limit > 0 {
		args = append(args, "-l", strconv.Itoa(c.Limit))
	}
	args = append(args, r.target)

	// stdout is sipp's statistics screen; stderr has the reason of a
	// fatal error, the part worth showing.
	logf, err := os.Create(r.logPath)
	if err != nil {
		return SippResult{}, 0, fmt.Errorf("create log: %w", err)
	}
	defer logf.Close()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, r.bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runErr := cmd.Run()
	code := 0
	var exit *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return SippResult{}, -1, fmt.Errorf("killed after %v: %w: %s", c.Timeout+15*time.Second, ctx.Err(), bytes.TrimSpace(stderr.Bytes()))
	case errors.As(runErr, &exit):
		code = exit.ExitCode()
	case runErr != nil:
		return SippResult{}, -1, fmt.Errorf("run: %w", runErr)
	}
	// 0: every call succeeded, 1: some failed; anything else means sipp
	// gave up on the run itself.
	if code != 0 && code != 1 {
		return SippResult{}, code, fmt.Errorf("exit status %d: %s", code, bytes.TrimSpace(stderr.Bytes()))
	}

	res, err := readSippStats(r.statPath)
	if err != nil {
		return res, code, err
	}
	if res.Failed > 0 {
		res.Errors = sippTail(r.errPath, 4000)
	}
	if done := res.Successful + res.Failed; done < c.Calls {
		return res, code, fmt.Errorf("only %d of %d calls ended within %v (%v)", done, c.Calls, c.Timeout, res)
	}
	if code == 1 && res.Failed == 0 {
		return res, code, fmt.Errorf("sipp reports failed calls but its statistics do not (%v)", res)
	}
	return res, code, nil
}

// readSippStats reads the totals from the last row of sipp's statistics
// file. Columns are looked up by name, not position, since their set
// varies between sipp versions.
func readSippStats(path string) (SippResult, error) {
	f, err := os.Open(path)
	if err != nil {
		return SippResult{}, fmt.Errorf("sipp statistics: %w", err)
	}
	defer f.Close()
	rd := csv.NewReader(f)
	rd.Comma = ';'
	rd.FieldsPerRecord = -1 // rows end with a trailing separator
	header, err := rd.Read()
	if err != nil {
		return SippResult{}, fmt.Errorf("sipp statistics %s: header: %w", path, err)
	}
	var last []string
	for {
		row, err := rd.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return SippResult{}, fmt.Errorf("sipp statistics %s: %w", path, err)
		}
		last = row
	}
	if last == nil {
		return SippResult{}, fmt.Errorf("sipp statistics %s: no rows", path)
	}
	col := func(name string) (int, error) {
		for i, h := range header {
			if h == name && i < len(last) {
				n, err := strconv.Atoi(strings.TrimSpace(last[i]))
				if err != nil {
					return 0, fmt.Errorf("sipp statistics %s: column %s: %w", path, name, err)
				}
				return n, nil
			}
		}
		return 0, fmt.Errorf("sipp statistics %s: no column %s", path, name)
	}
	var res SippResult
	for _, c := range []struct {
		name string
		dst  *int
	}{
		{"TotalCallCreated", &res.Created},
		{"SuccessfulCall(C)", &res.Successful},
		{"FailedCall(C)", &res.Failed},
		{"Retransmissions(C)", &res.Retransmissions},
	} {
		if *c.dst, err = col(c.name); err != nil {
			return res, err
		}
	}
	return res, nil
}

// SippCallThrough places calls from a sipp UAC through a proxy at proxy
// to uas, the proxy's gateway, with the UAC scenario that matches the
// UAS's (uac.xml for uas.xml, uac_busy.xml for uas_busy.xml) and, unless
// c says otherwise, the UAS's transport. A run sipp could not do or count
// fails the test; failed calls are left to the caller to judge.
func SippCallThrough(t testing.TB, proxy string, uas *SippUAS, c SippCalls) SippResult {
	t.Helper()
	uac := map[string]string{
		SippScenarioUAS:     SippScenarioUAC,
		SippScenarioUASBusy: SippScenarioUACBusy,
	}[uas.Scenario()]
	if uac == "" {
		t.Fatalf("sipp: no UAC scenario pairs with UAS scenario %s", uas.Scenario())
	}
	if c.Transport == "" {
		c.Transport = uas.Transport()
	}
	res, err := RunSippUAC(t, proxy, uac, c)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// sippTail returns up to the last n bytes of a file, for failure messages;
// a file that is missing or empty gives "".
func sippTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		if _, err := f.Seek(-n, io.SeekEnd); err != nil {
			return ""
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return ""
	}
	return string(bytes.TrimSpace(b))
}
