package sdk

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/test/harness"
)

// TestRealNode_RegisterWatchCancel: against one real node, a register is
// watched, a second one too, cancels remove them; once the last instance
// is gone the server holds the poll (spec 5.3.3), so the watch keeps its
// last set until an answer lists the app as missing.
func TestRealNode_RegisterWatchCancel(t *testing.T) {
	n := startRealNode(t)
	watcher := newClient(t, clientConfig("watcher", n.Addr))
	w, err := watcher.Watch("real.svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	a, b := newClient(t, clientConfig("pod-a", n.Addr)), newClient(t, clientConfig("pod-b", n.Addr))

	start := time.Now()
	cancelA, err := a.Register(t.Context(), client.Instance{AppID: "real.svc", Addrs: []string{"grpc://127.0.0.1:9001"}, Metadata: map[string]string{"weight": "3"}})
	if err != nil {
		t.Fatal(err)
	}
	s := waitHosts(t, w, 5*time.Second, "pod-a")
	t.Logf("register → watch: %s", time.Since(start))
	in := s.Zones[harness.DefaultZone][0]
	if in.Metadata["weight"] != "3" || in.Addrs[0] != "grpc://127.0.0.1:9001" || in.Env != harness.DefaultEnv || in.Status != client.StatusUp {
		t.Errorf("instance as watched: %+v", in)
	}
	cancelB, err := b.Register(t.Context(), client.Instance{AppID: "real.svc", Addrs: []string{"grpc://127.0.0.1:9002"}})
	if err != nil {
		t.Fatal(err)
	}
	waitHosts(t, w, 5*time.Second, "pod-a", "pod-b")

	if err := cancelA(); err != nil {
		t.Fatal(err)
	}
	waitHosts(t, w, 5*time.Second, "pod-b")

	if err := cancelB(); err != nil {
		t.Fatal(err)
	}
	if _, err := watcher.Fetch(t.Context(), "real.svc"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Fetch after the last cancel: %v", err)
	}
	// The next answer of the shared poll (another appid appears) reports
	// the app unknown and the watcher delivers the empty set.
	cancelO, err := a.Register(t.Context(), client.Instance{AppID: "real.other", Addrs: []string{"grpc://127.0.0.1:9003"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cancelO()
	wo, _ := watcher.Watch("real.other")
	defer wo.Close()
	if s := nextSet(t, w, 5*time.Second); s.Len() != 0 {
		t.Fatalf("after the app vanished: %v", hosts(s))
	}
}

// TestRealNode_EvictedInstanceIsRegisteredAgain: the node evicts the
// instance; the next renew gets -404 and the SDK registers again.
func TestRealNode_EvictedInstanceIsRegisteredAgain(t *testing.T) {
	n := startRealNode(t)
	cfg := clientConfig("pod-e", n.Addr)
	cfg.RenewInterval = 20 * time.Millisecond
	c := newClient(t, cfg)
	cancel, err := c.Register(t.Context(), client.Instance{AppID: "real.svc", Addrs: []string{"grpc://127.0.0.1:9001"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	key := wire.Key{Env: harness.DefaultEnv, AppID: "real.svc", Zone: harness.DefaultZone, Hostname: "pod-e"}
	if _, err := n.Registry.Evict(key); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, 5*time.Second, "re-registration after -404", func() bool {
		_, ok := n.Registry.Get(key)
		return ok
	})
}

// TestRealNode_FetchAndFailoverFromDeadSeed: a dead seed next to a live
// node costs a failover, never a failed call.
func TestRealNode_FetchAndFailoverFromDeadSeed(t *testing.T) {
	n := startRealNode(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	c := newClient(t, clientConfig("pod-f", n.Addr, dead))
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
	waitHosts(t, w, 5*time.Second, "pod-f")
}

// BenchmarkRealNode_RegisterToWatch measures the time from a register call
// to the watcher seeing the new instance through a real node.
//
//	go test -run '^$' -bench RealNode -benchtime 200x ./test/sdk/
func BenchmarkRealNode_RegisterToWatch(b *testing.B) {
	n := startRealNode(b)
	wc := newClient(b, clientConfig("watcher", n.Addr))
	w, _ := wc.Watch("bench.svc")
	defer w.Close()
	rc := newClient(b, clientConfig("registrar", n.Addr))
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		host := "h" + time.Now().Format("150405.000000000")
		cancel, err := rc.Register(ctx, client.Instance{AppID: "bench.svc", Hostname: host, Addrs: []string{"grpc://127.0.0.1:1"}})
		if err != nil {
			b.Fatal(err)
		}
		for !hasHost(nextSet(b, w, 5*time.Second), host) {
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
