package resolver_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/client/clienttest"
	dresolver "github.com/discovery-go/discovery/api/client/resolver"
	"github.com/discovery-go/discovery/internal/testkit"
)

// startBackend runs a gRPC server with the health service on 127.0.0.1:0.
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

// callPeers makes n calls and returns the backends that served them.
func callPeers(t *testing.T, hc healthpb.HealthClient, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range n {
		ctx, cancel := context.WithTimeout(testkit.Context(t), 5*time.Second)
		var p peer.Peer
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p), grpc.WaitForReady(true))
		cancel()
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		seen[p.Addr.String()]++
	}
	return seen
}

func waitPeers(t *testing.T, hc healthpb.HealthClient, want ...string) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, "calls reach exactly the backends", func() error {
		seen := callPeers(t, hc, 3*len(want))
		ok := len(seen) == len(want)
		for _, w := range want {
			ok = ok && seen[w] > 0
		}
		return testkit.State(ok, fmt.Sprintf("calls reached %v, want exactly %v", seen, want))
	})
}

func TestGRPC_RoundRobinFollowsRegistrations(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, n)
	b1, b2, b3 := startBackend(t), startBackend(t), startBackend(t)

	reg := func(host, addr string) func() error {
		cancel, err := c.Register(testkit.Context(t), client.Instance{AppID: "health.svc", Hostname: host, Addrs: []string{"grpc://" + addr}})
		if err != nil {
			t.Fatal(err)
		}
		return cancel
	}
	reg("b1", b1)
	cancel2 := reg("b2", b2)

	conn, err := grpc.NewClient("discovery:///health.svc",
		grpc.WithResolvers(dresolver.NewBuilder(c)),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)

	waitPeers(t, hc, b1, b2)
	// A newly registered backend receives calls.
	reg("b3", b3)
	waitPeers(t, hc, b1, b2, b3)
	// A cancelled one stops receiving them.
	if err := cancel2(); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, hc, b1, b3)
}

func TestGRPC_KratosTargetForm(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, n)
	b1 := startBackend(t)
	if _, err := c.Register(testkit.Context(t), client.Instance{AppID: "health.svc", Hostname: "b1", Addrs: []string{"grpc://" + b1}}); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("discovery://default/health.svc",
		grpc.WithResolvers(dresolver.NewBuilder(c)),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitPeers(t, healthpb.NewHealthClient(conn), b1)
}
