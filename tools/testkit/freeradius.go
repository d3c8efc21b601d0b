package testkit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FreeRADIUSSecret is the shared secret of the test client 127.0.0.1.
const FreeRADIUSSecret = "testing123"

// freeRADIUSReadyTimeout bounds a start; it reads its dictionaries and
// modules in a second or two on a loaded machine.
const freeRADIUSReadyTimeout = 60 * time.Second

// FreeRADIUS is a private FreeRADIUS server for a test: a copy of the
// system configuration in a temp dir, listening on free loopback ports,
// run in the foreground (-X) as a child process, with one client,
// 127.0.0.1 with FreeRADIUSSecret, and an accounting section that writes
// every request to a detail file. Stop and Start keep ports and files, as
// an outage does.
type FreeRADIUS struct {
	t        testing.TB
	bin      string
	dir      string
	authPort int
	acctPort int

	proc *serverProcess
}

// FreeRADIUSOption changes the generated configuration.
type FreeRADIUSOption func(*freeRADIUSOptions)

type freeRADIUSOptions struct {
	dictionaries []string
}

// WithDictionary has the server include a dictionary file, so that the
// attributes it defines are decoded by name.
func WithDictionary(path string) FreeRADIUSOption {
	return func(o *freeRADIUSOptions) { o.dictionaries = append(o.dictionaries, path) }
}

// StartFreeRADIUS starts a private FreeRADIUS and stops it at the test's
// end. Without freeradius the test is skipped, unless env CI is set: CI
// must run the whole suite, so there it fails instead.
func StartFreeRADIUS(t testing.TB, opts ...FreeRADIUSOption) *FreeRADIUS {
	t.Helper()
	var o freeRADIUSOptions
	for _, opt := range opts {
		opt(&o)
	}
	bin, src, err := freeRADIUSInstall()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("testkit: %v (CI is set, so the FreeRADIUS tests must run)", err)
		}
		t.Skipf("testkit: %v; install it (apt-get install freeradius freeradius-utils) to run this test", err)
	}
	f := &FreeRADIUS{t: t, bin: bin, dir: filepath.Join(t.TempDir(), "raddb")}
	t.Cleanup(func() {
		f.Stop()
		if t.Failed() {
			f.logTail()
		}
	})
	if err := f.writeConfig(src, o); err != nil {
		t.Fatalf("testkit: freeradius config: %v", err)
	}
	// A free port can be taken by another process before the server binds
	// it; then the server exits and other ports are tried.
	for attempt := 1; ; attempt++ {
		if err := f.writeSite(freeUDPPort(t), freeUDPPort(t)); err != nil {
			t.Fatalf("testkit: freeradius config: %v", err)
		}
		err := f.start()
		if err == nil {
			return f
		}
		if !errors.Is(err, errExited) || attempt == 3 {
			t.Fatalf("testkit: freeradius on %s: %v", f.AcctAddr(), err)
		}
		t.Logf("testkit: freeradius on %s: %v; trying other ports", f.AcctAddr(), err)
	}
}

// freeRADIUSInstall finds the server binary (Debian names it freeradius,
// others radiusd) and the configuration to copy.
func freeRADIUSInstall() (bin, confDir string, err error) {
	for _, name := range []string{"freeradius", "radiusd"} {
		if p, err := exec.LookPath(name); err == nil {
			bin = p
			break
		}
		if p := "/usr/sbin/" + name; isFile(p) {
			bin = p
			break
		}
	}
	if bin == "" {
		return "", "", errors.New("freeradius not found on PATH or in /usr/sbin")
	}
	for _, d := range []string{"/etc/freeradius/3.0", "/etc/raddb"} {
		if isFile(filepath.Join(d, "radiusd.conf")) {
			return bin, d, nil
		}
	}
	return "", "", errors.New("freeradius configuration (/etc/freeradius/3.0/radiusd.conf) not found")
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// AcctAddr is the accounting listener, host:port.
func (f *FreeRADIUS) AcctAddr() string { return fmt.Sprintf("127.0.0.1:%d", f.acctPort) }

// AuthAddr is the authentication listener (it rejects everything).
func (f *FreeRADIUS) AuthAddr() string { return fmt.Sprintf("127.0.0.1:%d", f.authPort) }

// Dir is the server's configuration directory.
func (f *FreeRADIUS) Dir() string { return f.dir }

// AcctDir is radacctdir: the detail module writes
// AcctDir/<client-ip>/detail-YYYYMMDD.
func (f *FreeRADIUS) AcctDir() string { return filepath.Join(f.dir, "radacct") }

// LogPath is the server's debug output.
func (f *FreeRADIUS) LogPath() string { return filepath.Join(f.dir, "log", "stdout.log") }

// Running reports whether the server process is up.
func (f *FreeRADIUS) Running() bool {
	return f.proc.running()
}

// Start starts the server, or starts it again after Stop on the same
// ports and files, and waits until it is ready to process requests.
func (f *FreeRADIUS) Start() {
	f.t.Helper()
	if err := f.start(); err != nil {
		f.t.Fatalf("testkit: freeradius on %s: %v", f.AcctAddr(), err)
	}
}

var readyLine = []byte("Ready to process requests")

func (f *FreeRADIUS) start() error {
	if f.Running() {
		return nil
	}
	// Readiness is read from what this start appends to the log.
	var from int64
	if st, err := os.Stat(f.LogPath()); err == nil {
		from = st.Size()
	}
	proc, err := startServerProcess(f.dir, f.LogPath(), f.bin, "-X", "-d", f.dir, "-l", "stdout")
	if err != nil {
		return err
	}
	f.proc = proc
	deadline := time.After(freeRADIUSReadyTimeout)
	for {
		b, _ := os.ReadFile(f.LogPath())
		if int64(len(b)) > from && bytes.Contains(b[from:], readyLine) {
			return nil
		}
		select {
		case <-proc.exited:
			return fmt.Errorf("%w; see %s", errExited, f.LogPath())
		case <-deadline:
			f.Stop()
			return fmt.Errorf("not ready after %s; see %s", freeRADIUSReadyTimeout, f.LogPath())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop terminates the server and waits until it has exited; ports and
// files stay for Start.
func (f *FreeRADIUS) Stop() {
	if !f.Running() {
		return
	}
	if f.proc.stop(10 * time.Second) {
		f.t.Logf("testkit: freeradius did not stop in 10s after SIGTERM, killed it")
	}
}

func (f *FreeRADIUS) logTail() {
	logFileTail(f.t, "freeradius output", f.LogPath(), 60)
}

// writeConfig copies the system configuration and points it at the temp
// dir: no privilege drop (the server runs as the test's user), logs,
// run dir and radacctdir inside, no proxying, one test client, and only
// the site writeSite generates.
func (f *FreeRADIUS) writeConfig(src string, o freeRADIUSOptions) error {
	if err := copyTree(src, f.dir); err != nil {
		return err
	}
	for _, d := range []string{"log", "run", "radacct"} {
		if err := os.MkdirAll(filepath.Join(f.dir, d), 0o755); err != nil {
			return err
		}
	}
	conf := filepath.Join(f.dir, "radiusd.conf")
	b, err := os.ReadFile(conf)
	if err != nil {
		return err
	}
	for _, r := range []struct{ re, repl string }{
		{`(?m)^raddbdir\s*=.*$`, "raddbdir = " + f.dir},
		{`(?m)^logdir\s*=.*$`, "logdir = " + filepath.Join(f.dir, "log")},
		{`(?m)^radacctdir\s*=.*$`, "radacctdir = " + f.AcctDir()},
		{`(?m)^run_dir\s*=.*$`, "run_dir = " + filepath.Join(f.dir, "run")},
		{`(?m)^(\s*)(user|group)\s*=`, "$1#$2 ="},
		{`(?m)^proxy_requests\s*=.*$`, "proxy_requests = no"},
	} {
		b = regexp.MustCompile(r.re).ReplaceAll(b, []byte(r.repl))
	}
	if err := os.WriteFile(conf, b, 0o644); err != nil {
		return err
	}
	clients := fmt.Sprintf("client test {\n\tipaddr = 127.0.0.1\n\tsecret = %s\n\trequire_message_authenticator = yes\n}\n", FreeRADIUSSecret)
	if err := os.WriteFile(filepath.Join(f.dir, "clients.conf"), []byte(clients), 0o644); err != nil {
		return err
	}
	// EAP needs the certificates a package install generates; the
	// accounting tests do not use it.
	_ = os.Remove(filepath.Join(f.dir, "mods-enabled", "eap"))
	sites, err := os.ReadDir(filepath.Join(f.dir, "sites-enabled"))
	if err != nil {
		return err
	}
	for _, s := range sites {
		if err := os.Remove(filepath.Join(f.dir, "sites-enabled", s.Name())); err != nil {
			return err
		}
	}
	dict, err := os.OpenFile(filepath.Join(f.dir, "dictionary"), os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer dict.Close()
	for _, d := range o.dictionaries {
		abs, err := filepath.Abs(d)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(dict, "\n$INCLUDE %s\n", abs); err != nil {
			return err
		}
	}
	return dict.Close()
}

// writeSite writes the one virtual server: accounting requests go to the
// detail file and are answered; authentication is rejected.
func (f *FreeRADIUS) writeSite(authPort, acctPort int) error {
	f.authPort, f.acctPort = authPort, acctPort
	site := fmt.Sprintf(`server carrier_test {
	listen {
		type = auth
		ipaddr = 127.0.0.1
		port = %d
	}
	listen {
		type = acct
		ipaddr = 127.0.0.1
		port = %d
	}
	authorize {
		reject
	}
	authenticate {
	}
	preacct {
	}
	accounting {
		detail
		ok
	}
}
`, authPort, acctPort)
	return os.WriteFile(filepath.Join(f.dir, "sites-enabled", "carrier_test"), []byte(site), 0o644)
}

// copyTree copies files, directories and symlinks (mods-enabled is links
// into mods-available).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, 0o644)
		}
	})
}

// DetailRecord is one request in a detail file: its header line (the
// time it was written) and its attributes in order, values unquoted.
type DetailRecord struct {
	Time  string
	Attrs []DetailAttr
}

// DetailAttr is one "Name = value" line.
type DetailAttr struct {
	Name, Value string
}

// Get returns the value of the first attribute of that name.
func (r DetailRecord) Get(name string) (string, bool) {
	for _, a := range r.Attrs {
		if a.Name == name {
			return a.Value, true
		}
	}
	return "", false
}

// Value is Get without the found flag.
func (r DetailRecord) Value(name string) string {
	v, _ := r.Get(name)
	return v
}

// Records reads every detail file the server has written, in file name
// order (client address, then day).
func (f *FreeRADIUS) Records() ([]DetailRecord, error) {
	var files []string
	err := filepath.WalkDir(f.AcctDir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasPrefix(d.Name(), "detail") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var out []DetailRecord
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		recs, err := ParseDetail(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, recs...)
	}
	return out, nil
}

// ParseDetail parses the records of a detail file. A record being
// written (no blank line after it yet) is left out.
func ParseDetail(b []byte) ([]DetailRecord, error) {
	var out []DetailRecord
	var cur *DetailRecord
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		switch {
		case strings.TrimSpace(text) == "":
			if cur != nil {
				out = append(out, *cur)
				cur = nil
			}
		case text[0] != '\t' && text[0] != ' ':
			cur = &DetailRecord{Time: text}
		default:
			if cur == nil {
				return nil, fmt.Errorf("line %d: attribute outside a record", line)
			}
			name, value, ok := strings.Cut(strings.TrimSpace(text), " = ")
			if !ok {
				return nil, fmt.Errorf("line %d: %q is not Name = value", line, text)
			}
			cur.Attrs = append(cur.Attrs, DetailAttr{Name: name, Value: unquote(value)})
		}
	}
	return out, sc.Err()
}

// unquote undoes FreeRADIUS's quoting of text values.
func unquote(v string) string {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return v
	}
	if s, err := strconv.Unquote(v); err == nil {
		return s
	}
	return v[1 : len(v)-1]
}
