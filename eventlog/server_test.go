package eventlog_test

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/carrier-core/carrier/eventlog"
	"github.com/carrier-core/carrier/tools/testkit"
)

// A server that cannot start says why, instead of timing out.
func TestStartServerReportsWhy(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	t.Run("store not writable", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := eventlog.StartServer(eventlog.ServerConfig{Port: testkit.FreeTCPPort(t), StoreDir: filepath.Join(file, "store"), Logger: quiet})
		if err == nil || strings.Contains(err.Error(), "not ready") {
			t.Fatalf("StartServer with a file as store parent: %v", err)
		}
	})
	t.Run("port taken", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		_, err = eventlog.StartServer(eventlog.ServerConfig{Port: l.Addr().(*net.TCPAddr).Port, StoreDir: t.TempDir(), Logger: quiet})
		if err == nil || strings.Contains(err.Error(), "not ready") {
			t.Fatalf("StartServer on a taken port: %v", err)
		}
	})
}
