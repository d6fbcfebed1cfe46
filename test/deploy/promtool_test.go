package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// promtool returns the path of promtool (Debian package "prometheus"). It is
// optional on a developer machine but required in CI.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found; CI must install it: apt-get install -y --no-install-recommends prometheus")
		}
		t.Skip("promtool not found (apt-get install prometheus)")
	}
	return p
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	cmd.Dir = deployDir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %v: %v\n%s", args, err, out)
	}
	t.Logf("promtool %v:\n%s", args, out)
}

func TestPrometheus_ConfigValid(t *testing.T) { runPromtool(t, "check", "config", "prometheus.yml") }

func TestPrometheus_RulesValid(t *testing.T) { runPromtool(t, "check", "rules", "alerts.yml") }

// TestPrometheus_RuleUnitTests runs deploy/alerts_test.yml: each alert fires
// on the series that should trigger it and stays quiet otherwise.
func TestPrometheus_RuleUnitTests(t *testing.T) { runPromtool(t, "test", "rules", "alerts_test.yml") }

// TestPrometheus_BrokenConfigFails proves the check can fail.
func TestPrometheus_BrokenConfigFails(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(bad, []byte("scrape_configs:\n  - job_name: x\n    http_sd_configs:\n      - url: not-a-url\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool(t), "check", "config", bad).CombinedOutput(); err == nil {
		t.Fatalf("promtool accepted a config with an invalid http_sd url:\n%s", out)
	}
}
