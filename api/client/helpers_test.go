package client_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/client/clienttest"
	"github.com/discovery-go/discovery/internal/testkit"
)

const (
	testEnv  = "test"
	testZone = "zone01"
	testHost = "client-host"
)

// testConfig has short timings so failover and backoff show in milliseconds.
func testConfig(nodes ...*clienttest.Node) client.Config {
	cfg := client.Config{
		Region: "region01", Zone: testZone, Env: testEnv, Hostname: testHost,
		RenewInterval:  time.Hour,
		PollTimeout:    5 * time.Second,
		RequestTimeout: 2 * time.Second,
		RetryTimeout:   5 * time.Second,
		BackoffInitial: 10 * time.Millisecond,
		BackoffMax:     100 * time.Millisecond,
	}
	for _, n := range nodes {
		cfg.Nodes = append(cfg.Nodes, n.Addr())
	}
	return cfg
}

func newClient(t testing.TB, cfg client.Config, opts ...client.Option) *client.Client {
	t.Helper()
	opts = append([]client.Option{client.WithLogger(testkit.Logger(t, slog.LevelInfo))}, opts...)
	c, err := client.New(cfg, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func instance(appid, hostname string, addrs ...string) client.Instance {
	return client.Instance{Region: "region01", Zone: testZone, Env: testEnv, AppID: appid, Hostname: hostname, Addrs: addrs}
}

// nextSet returns the next instance set, skipping transient errors, within
// the deadline.
func nextSet(t testing.TB, w *client.Watcher, timeout time.Duration) *client.Instances {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		s, err := w.Next(ctx)
		if err == nil {
			return s
		}
		if ctx.Err() != nil {
			t.Fatalf("Next(%s): no set within %s (last error %v)", w.AppID(), timeout, err)
		}
		t.Logf("Next(%s): transient error: %v", w.AppID(), err)
	}
}

// waitHosts reads sets until one has exactly the wanted hostnames.
func waitHosts(t testing.TB, w *client.Watcher, timeout time.Duration, want ...string) *client.Instances {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := nextSet(t, w, time.Until(deadline))
		if got := hostsOf(s); equalStrings(got, want) {
			return s
		}
		t.Logf("Next(%s): %v, waiting for %v", w.AppID(), hostsOf(s), want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// metricValue returns the value of a counter/gauge sample, selected by the
// value of its only label (or "" for an unlabelled metric).
func metricValue(t testing.TB, g prometheus.Gatherer, name, label string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return 0
}
