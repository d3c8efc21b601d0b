package testkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// clickHouseReadyTimeout bounds a start; a loaded 2-core machine needs a
// few seconds, a cold one more.
const clickHouseReadyTimeout = 90 * time.Second

// ClickHouse is a private clickhouse-server for a test: its own config,
// data and logs in a temp dir, free loopback ports, started as a child
// process. Stop and Start keep port and data, as an outage does.
type ClickHouse struct {
	t    testing.TB
	bin  []string
	dir  string
	port int

	proc *serverProcess
}

// errExited: the server exited while starting, most likely because its
// port was taken in the meantime.
var errExited = errors.New("server exited during start-up")

// StartClickHouse starts a private ClickHouse server and stops it at the
// test's end. Without a server binary the test is skipped, unless env CI
// is set: CI must run the whole suite, so there it fails instead.
func StartClickHouse(t testing.TB) *ClickHouse {
	t.Helper()
	bin, err := clickHouseBinary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("testkit: %v (CI is set, so the ClickHouse tests must run)", err)
		}
		t.Skipf("testkit: %v; install it (apt-get install clickhouse-server clickhouse-client) to run this test", err)
	}
	c := &ClickHouse{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(func() {
		if t.Failed() {
			c.logTail()
		}
		c.Stop()
	})
	// A free port can be taken by another process before the server binds
	// it; then the server exits and a new port is tried.
	for attempt := 1; ; attempt++ {
		c.port = FreeTCPPort(t)
		if err := c.writeConfig(); err != nil {
			t.Fatalf("testkit: clickhouse config: %v", err)
		}
		err := c.start()
		if err == nil {
			return c
		}
		if !errors.Is(err, errExited) || attempt == 3 {
			t.Fatalf("testkit: clickhouse on %s: %v", c.Addr(), err)
		}
		t.Logf("testkit: clickhouse on %s: %v; trying another port", c.Addr(), err)
	}
}

// clickHouseBinary finds Debian's clickhouse-server (in /usr/sbin, which
// is not always on PATH) or the single binary of current releases.
func clickHouseBinary() ([]string, error) {
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return []string{p}, nil
	}
	for _, p := range []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return []string{p}, nil
		}
	}
	if p, err := exec.LookPath("clickhouse"); err == nil {
		return []string{p, "server"}, nil
	}
	return nil, errors.New("clickhouse-server not found on PATH or in /usr/sbin")
}

// Addr is the host:port of the native protocol, the server's only
// listener.
func (c *ClickHouse) Addr() string { return fmt.Sprintf("127.0.0.1:%d", c.port) }

// Dir is the server's temp dir (config, data, logs).
func (c *ClickHouse) Dir() string { return c.dir }

// LogPath is the server's log file.
func (c *ClickHouse) LogPath() string { return filepath.Join(c.dir, "server.log") }

// Running reports whether the server process is up.
func (c *ClickHouse) Running() bool {
	return c.proc.running()
}

// Start starts the server, or starts it again after Stop, on the same
// port and data, and waits until the native port answers a query.
func (c *ClickHouse) Start() {
	c.t.Helper()
	if err := c.start(); err != nil {
		c.t.Fatalf("testkit: clickhouse on %s: %v", c.Addr(), err)
	}
}

func (c *ClickHouse) start() error {
	if c.Running() {
		return nil
	}
	args := append(append([]string{}, c.bin[1:]...), "--config-file="+filepath.Join(c.dir, "config.xml"))
	proc, err := startServerProcess(c.dir, filepath.Join(c.dir, "stdout.log"), c.bin[0], args...)
	if err != nil {
		return err
	}
	c.proc = proc
	if err := c.waitReady(); err != nil {
		// The cleanup prints the log tail of a failed test.
		c.Stop()
		return err
	}
	return nil
}

func (c *ClickHouse) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), clickHouseReadyTimeout)
	defer cancel()
	conn, err := c.open()
	if err != nil {
		return err
	}
	defer conn.Close()
	var last error
	for {
		qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
		var one uint8
		last = conn.QueryRow(qctx, "SELECT toUInt8(1)").Scan(&one)
		qcancel()
		if last == nil {
			return nil
		}
		select {
		case <-c.proc.exited:
			return fmt.Errorf("%w (%v); see %s", errExited, last, c.LogPath())
		case <-ctx.Done():
			return fmt.Errorf("no answer after %s: %v", clickHouseReadyTimeout, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop terminates the server and waits until it has exited; its port and
// data stay for Start.
func (c *ClickHouse) Stop() {
	if !c.Running() {
		return
	}
	if c.proc.stop(30 * time.Second) {
		c.t.Logf("testkit: clickhouse did not stop in 30s after SIGTERM, killed it")
	}
}

// Conn opens a clickhouse-go connection to the server, closed at the
// test's end.
func (c *ClickHouse) Conn() driver.Conn {
	c.t.Helper()
	conn, err := c.open()
	if err != nil {
		c.t.Fatalf("testkit: open clickhouse: %v", err)
	}
	c.t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func (c *ClickHouse) open() (driver.Conn, error) {
	return clickhouse.Open(&clickhouse.Options{
		Addr:        []string{c.Addr()},
		DialTimeout: 5 * time.Second,
		// 18.16 needs it for LowCardinality; current releases ignore it.
		Settings: clickhouse.Settings{"allow_experimental_low_cardinality_type": 1},
	})
}

// logTail prints the end of the server's logs to the test log.
func (c *ClickHouse) logTail() {
	for _, name := range []string{"server.err.log", "stdout.log", "server.log"} {
		logFileTail(c.t, "clickhouse "+name, filepath.Join(c.dir, name), 40)
	}
}

func (c *ClickHouse) writeConfig() error {
	for _, d := range []string{"data", "tmp", "user_files", "format_schemas"} {
		if err := os.MkdirAll(filepath.Join(c.dir, d), 0o755); err != nil {
			return err
		}
	}
	// The root element <yandex> is what 18.16 reads; current releases
	// accept it as well as <clickhouse>. Only the native port is
	// configured: no HTTP, no interserver port.
	config := fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>%[1]s/server.log</log>
        <errorlog>%[1]s/server.err.log</errorlog>
        <size>100M</size>
        <count>1</count>
        <console>0</console>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>%[2]d</tcp_port>
    <path>%[1]s/data/</path>
    <tmp_path>%[1]s/tmp/</tmp_path>
    <user_files_path>%[1]s/user_files/</user_files_path>
    <format_schema_path>%[1]s/format_schemas/</format_schema_path>
    <users_config>%[1]s/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <shutdown_wait_unfinished>1</shutdown_wait_unfinished>
</yandex>
`, c.dir, c.port)
	users := `<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <!-- A connection notices shutdown once per poll interval
                 (default 10s): keep Stop short with clients connected. -->
            <poll_interval>1</poll_interval>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks>
                <ip>127.0.0.1</ip>
                <ip>::1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default></default>
    </quotas>
</yandex>
`
	if err := os.WriteFile(filepath.Join(c.dir, "config.xml"), []byte(config), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.dir, "users.xml"), []byte(users), 0o644)
}
