package legacy

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
)

// TestBinary runs cmd/legacynode as real processes: the addr file, forming a
// pair from --nodes, SIGTERM cancelling the own record on the peer, kill -9.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "legacynode")
	if out, err := exec.Command(goBin, "build", "-o", bin, "./cmd/legacynode").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	run := func(name string, args ...string) (*exec.Cmd, string) {
		addrFile := filepath.Join(dir, name+".json")
		cmd := exec.Command(bin, append([]string{"--env", testEnv, "--zone", testZone, "--hostname", name, "--addr-file", addrFile}, args...)...)
		if os.Getenv("LEGACY_TEST_LOGS") == "1" {
			cmd.Stderr = tWriter{t}
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Kill() // by pid; harmless when it already exited
			<-done
		})
		var addr string
		testkit.Eventually(t, 10*time.Second, name+" addr file", func() error {
			b, err := os.ReadFile(addrFile)
			if err != nil {
				return err
			}
			var m map[string]string
			if err := json.Unmarshal(b, &m); err != nil {
				return err
			}
			if addr = m["http"]; addr == "" {
				return errors.New("no http key")
			}
			return nil
		})
		return cmd, addr
	}
	w := newWire(t)
	hasRecord := func(on, host string) bool {
		info, _ := w.fetchInfo(on, AppIDDiscovery)
		for _, i := range info.Instances[testZone] {
			if i.Hostname == host {
				return true
			}
		}
		return false
	}

	procA, addrA := run("pa")
	procB, addrB := run("pb", "--nodes", addrA, "--zones", "zoneB=127.0.0.1:1|127.0.0.1:2")
	if !hasRecord(addrA, "pb") || !hasRecord(addrB, "pa") {
		t.Fatal("pair did not form")
	}

	if err := procB.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "B's record cancelled on A", func() error {
		if hasRecord(addrA, "pb") {
			return fmt.Errorf("still there")
		}
		return nil
	})

	if err := procA.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "A gone", func() error {
		if _, err := w.do(t.Context(), "GET", addrA, "/discovery/nodes", nil, nil); err == nil {
			return errors.New("still answers")
		}
		return nil
	})
}
