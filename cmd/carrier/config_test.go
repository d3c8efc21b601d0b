package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// settingsCmd is a command with the shapes of flag the real ones use.
func settingsCmd(got *[]string, url *string) *cobra.Command {
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	cmd.Flags().StringVar(url, "nats-url", "nats://default:4222", "")
	cmd.Flags().StringSliceVar(got, "sip-listen", []string{"127.0.0.1:5060"}, "")
	return cmd
}

func TestConfigPrecedenceFlagThenEnvThenFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "carrier.yaml")
	if err := os.WriteFile(file, []byte("nats-url: nats://file:4222\nsip-listen: [udp:10.0.0.1:5060, tcp:10.0.0.1:5060]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, env, flag, want string
		wantListen            string
	}{
		{name: "file only", want: "nats://file:4222", wantListen: "udp:10.0.0.1:5060,tcp:10.0.0.1:5060"},
		{name: "env beats file", env: "nats://env:4222", want: "nats://env:4222", wantListen: "udp:10.0.0.1:5060,tcp:10.0.0.1:5060"},
		{name: "flag beats env", env: "nats://env:4222", flag: "nats://flag:4222", want: "nats://flag:4222", wantListen: "udp:10.0.0.1:5060,tcp:10.0.0.1:5060"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env != "" {
				t.Setenv("CARRIER_NATS_URL", c.env)
			}
			var listen []string
			var url string
			cmd := settingsCmd(&listen, &url)
			args := []string{}
			if c.flag != "" {
				args = append(args, "--nats-url", c.flag)
			}
			if err := cmd.ParseFlags(args); err != nil {
				t.Fatal(err)
			}
			if err := applyConfig(cmd, file); err != nil {
				t.Fatal(err)
			}
			if url != c.want {
				t.Errorf("nats-url = %q, want %q", url, c.want)
			}
			if got := strings.Join(listen, ","); got != c.wantListen {
				t.Errorf("sip-listen = %q, want %q", got, c.wantListen)
			}
		})
	}
}

func TestConfigErrorsNameTheSource(t *testing.T) {
	t.Setenv("CARRIER_METRICS_PORT", "not-a-number")
	cmd := &cobra.Command{Use: "x"}
	cmd.Flags().Int("metrics-port", 1, "")
	err := applyConfig(cmd, "")
	if err == nil || !strings.Contains(err.Error(), "CARRIER_METRICS_PORT") {
		t.Fatalf("error does not name the variable: %v", err)
	}

	file := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(file, []byte("proxy:\n  gateway: x\n"), 0o600)
	if err := applyConfig(&cobra.Command{Use: "y"}, file); err == nil || !strings.Contains(err.Error(), "flag names as top-level keys") {
		t.Fatalf("nested config not refused clearly: %v", err)
	}
	if err := applyConfig(&cobra.Command{Use: "y"}, filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing config file accepted")
	}
}

func TestParseListeners(t *testing.T) {
	ls, err := parseListeners([]string{"127.0.0.1:5060", "tcp:[::1]:5061", "udp:10.0.0.1:5062"})
	if err != nil {
		t.Fatal(err)
	}
	if got := describeListeners(ls); got != "udp:127.0.0.1:5060 tcp:127.0.0.1:5060 tcp:[::1]:5061 udp:10.0.0.1:5062" {
		t.Fatalf("listeners = %s", got)
	}
	for _, bad := range []string{"5060", "sctp:1.2.3.4", ""} {
		if _, err := parseListeners([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := parseListeners(nil); err == nil {
		t.Error("no listeners accepted")
	}
}

func TestHelpListsTheCommands(t *testing.T) {
	var out bytes.Buffer
	root := newRootCmd(&out, &out, nil)
	root.SetArgs([]string{"--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"up", "nats", "proxy", "correlator", "analytics", "cdr"} {
		if !strings.Contains(out.String(), "\n  "+name+" ") {
			t.Errorf("--help does not list %q:\n%s", name, out.String())
		}
	}
}

func TestUnknownLogLevelIsAClearError(t *testing.T) {
	var out bytes.Buffer
	root := newRootCmd(&out, &out, nil)
	root.SetArgs([]string{"cdr", "list", "--log-level", "loud"})
	err := root.Execute()
	if err == nil || !strings.Contains(err.Error(), "--log-level") {
		t.Fatalf("err = %v", err)
	}
}
