package client_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api"
	"github.com/discovery-go/discovery/api/apitest"
	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/registry"
)

// startRealNode runs one real standalone node in process.
func startRealNode(t testing.TB) *apitest.Node {
	t.Helper()
	return apitest.StartNode(t, apitest.Options{Deps: api.Deps{Self: wire.Node{Zone: testZone}}})
}

func realConfig(nodes ...*apitest.Node) client.Config {
	cfg := testConfig()
	for _, n := range nodes {
		cfg.Nodes = append(cfg.Nodes, n.Addr)
	}
	return cfg
}

func TestRealNode_RegisterWatchCancel(t *testing.T) {
	n := startRealNode(t)
	watcherCfg := realConfig(n)
	watcherCfg.Hostname = "watcher"
	watcher := newClient(t, watcherCfg)
	w, err := watcher.Watch("real.svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	cfgA, cfgB := realConfig(n), realConfig(n)
	cfgA.Hostname, cfgB.Hostname = "pod-a", "pod-b"
	a, b := newClient(t, cfgA), newClient(t, cfgB)

	start := time.Now()
	cancelA, err := a.Register(t.Context(), client.Instance{AppID: "real.svc", Addrs: []string{"grpc://127.0.0.1:9001"}, Metadata: map[string]string{"weight": "3"}})
	if err != nil {
		t.Fatal(err)
	}
	s := waitHosts(t, w, 5*time.Second, "pod-a")
	t.Logf("register → watch: %s", time.Since(start))
	in := s.Zones[testZone][0]
	if in.Metadata["weight"] != "3" || in.Addrs[0] != "grpc://127.0.0.1:9001" || in.Env != testEnv || in.Status != client.StatusUp {
		t.Errorf("instance as watched: %+v", in)
	}
	cancelB, err := b.Register(t.Context(), client.Instance{AppID: "real.svc", Addrs: []string{"grpc://127.0.0.1:9002"}})
	if err != nil {
		t.Fatal(err)
	}
	waitHosts(t, w, 5*time.Second, "pod-a", "pod-b")

	// Cancel while another instance remains: the watch drops it.
	if err := cancelA(); err != nil {
		t.Fatal(err)
	}
	waitHosts(t, w, 5*time.Second, "pod-b")

	// Cancel of the last instance: the server holds the poll (the app is
	// gone, spec 5.3.3), so the watch keeps its last set; Fetch tells.
	if err := cancelB(); err != nil {
		t.Fatal(err)
	}
	if _, err := watcher.Fetch(t.Context(), "real.svc"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Fetch after the last cancel: %v", err)
	}
	// The next answer of the shared poll (here: another appid appears)
	// reports the app unknown and the watcher delivers the empty set.
	cancelO, err := a.Register(t.Context(), client.Instance{AppID: "real.other", Addrs: []string{"grpc://127.0.0.1:9003"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cancelO()
	wo, _ := watcher.Watch("real.other")
	defer wo.Close()
	if s := nextSet(t, w, 5*time.Second); s.Len() != 0 {
		t.Fatalf("after the app vanished: %v", hostsOf(s))
	}
}

func TestRealNode_EvictedInstanceIsRegisteredAgain(t *testing.T) {
	n := startRealNode(t)
	cfg := realConfig(n)
	cfg.RenewInterval = 20 * time.Millisecond
	c := newClient(t, cfg)
	cancel, err := c.Register(t.Context(), client.Instance{AppID: "real.svc", Addrs: []string{"grpc://127.0.0.1:9001"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	key := registry.Key{Env: testEnv, AppID: "real.svc", Zone: testZone, Hostname: testHost}
	if _, err := n.Registry.Evict(key); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "re-registration after -404", func() (bool, string) {
		_, ok := n.Registry.Get(key)
		return ok, ""
	})
}

func TestRealNode_FetchAndFailoverFromDeadSeed(t *testing.T) {
	n := startRealNode(t)
	// A dead seed next to the live node: a closed port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	cfg := realConfig(n)
	cfg.Nodes = append(cfg.Nodes, dead)
	c := newClient(t, cfg)
	cancel, err := c.Register(t.Context(), client.Instance{AppID: "real.svc", Addrs: []string{"grpc://127.0.0.1:9001"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	for range 3 {
		s, err := c.Fetch(t.Context(), "real.svc")
		if err != nil || s.Len() != 1 {
			t.Fatalf("Fetch: %v %v", s, err)
		}
	}
	w, _ := c.Watch("real.svc")
	defer w.Close()
	waitHosts(t, w, 5*time.Second, testHost)
}

// BenchmarkRealNode_RegisterToWatch measures the time from a register call
// to the watcher seeing the new instance through the real node.
func BenchmarkRealNode_RegisterToWatch(b *testing.B) {
	n := startRealNode(b)
	cfg := realConfig(n)
	cfg.Hostname = "watcher"
	wc := newClient(b, cfg)
	w, _ := wc.Watch("bench.svc")
	defer w.Close()
	rcfg := realConfig(n)
	rc := newClient(b, rcfg)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		host := "h" + time.Now().Format("150405.000000000")
		cancel, err := rc.Register(ctx, client.Instance{AppID: "bench.svc", Hostname: host, Addrs: []string{"grpc://127.0.0.1:1"}})
		if err != nil {
			b.Fatal(err)
		}
		for {
			s := nextSet(b, w, 5*time.Second)
			if s.Len() > 0 && hasHost(s, host) {
				break
			}
		}
		_ = cancel()
	}
}

func hasHost(s *client.Instances, h string) bool {
	for _, in := range s.All() {
		if in.Hostname == h {
			return true
		}
	}
	return false
}
