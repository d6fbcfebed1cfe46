package sdk

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/discovery-go/discovery/api"
	"github.com/discovery-go/discovery/api/apitest"
	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// clientConfig is an SDK configuration of the harness' env and zone seeded
// with addrs only, with short backoffs so failover shows quickly.
func clientConfig(hostname string, addrs ...string) client.Config {
	return client.Config{
		Nodes:  addrs,
		Region: harness.DefaultRegion, Zone: harness.DefaultZone, Env: harness.DefaultEnv, Hostname: hostname,
		RenewInterval:  time.Second,
		RequestTimeout: 3 * time.Second,
		BackoffInitial: 50 * time.Millisecond,
		BackoffMax:     500 * time.Millisecond,
	}
}

// newClient builds a client closed at the end of the test.
func newClient(t testing.TB, cfg client.Config) *client.Client {
	t.Helper()
	c, err := client.New(cfg, client.WithLogger(testkit.Logger(t, slog.LevelDebug).With("client", cfg.Hostname)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// startRealNode runs one real standalone node in process, in the harness'
// zone.
func startRealNode(t testing.TB) *apitest.Node {
	t.Helper()
	return apitest.StartNode(t, apitest.Options{Deps: api.Deps{Self: wire.Node{Zone: harness.DefaultZone}}})
}

func addrsOf(nodes ...*harness.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.AdvertisedHTTP)
	}
	return out
}

func want[T comparable](got, want []T) error {
	if slices.Equal(got, want) {
		return nil
	}
	return fmt.Errorf("got %v, want %v", got, want)
}

func hosts(s *client.Instances) []string {
	var out []string
	for _, in := range s.All() {
		out = append(out, in.Hostname)
	}
	slices.Sort(out)
	return out
}

// nextSet returns the watcher's next set, skipping transient errors.
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
			t.Fatalf("watch %s: no set within %s (last error %v)", w.AppID(), timeout, err)
		}
		t.Logf("watch %s: transient: %v", w.AppID(), err)
	}
}

// waitHosts reads the watcher until a set has exactly the wanted hosts.
func waitHosts(t testing.TB, w *client.Watcher, timeout time.Duration, want ...string) *client.Instances {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last []string
	for time.Now().Before(deadline) {
		s := nextSet(t, w, time.Until(deadline))
		if last = hosts(s); slices.Equal(last, want) {
			return s
		}
	}
	t.Fatalf("watch %s: no set %v within %s (last %v)", w.AppID(), want, timeout, last)
	return nil
}

func nodeByAddr(c *harness.Cluster, addr string) *harness.Node {
	for _, n := range c.Nodes() {
		if n.AdvertisedHTTP == addr {
			return n
		}
	}
	return nil
}

// startBackend serves gRPC health on 127.0.0.1:0 until the test ends.
func startBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, health.NewServer())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ln) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return ln.Addr().String()
}

// waitPeers calls until a round of calls reaches exactly want.
func waitPeers(t *testing.T, hc healthpb.HealthClient, timeout time.Duration, want ...string) {
	t.Helper()
	testkit.Eventually(t, timeout, "calls reach exactly the backends", func() error {
		seen := map[string]bool{}
		for range 3 * len(want) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			var p peer.Peer
			_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true))
			cancel()
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			seen[p.Addr.String()] = true
		}
		ok := len(seen) == len(want)
		for _, w := range want {
			ok = ok && seen[w]
		}
		if !ok {
			return fmt.Errorf("calls reached %v, want exactly %v", seen, want)
		}
		return nil
	})
}
