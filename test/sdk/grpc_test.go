package sdk

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/client/resolver"
	"github.com/discovery-go/discovery/test/harness"
)

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
	deadline := time.Now().Add(timeout)
	for {
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
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls reached %v, want exactly %v", seen, want)
		}
	}
}

// TestSDK_GRPCThroughClusterNodeDeath: a gRPC channel resolved through the
// cluster keeps following registrations after the node its client polls
// dies.
func TestSDK_GRPCThroughClusterNodeDeath(t *testing.T) {
	c := harness.StartCluster(t, 3, harness.Options{})
	nodes := c.Nodes()
	caller := newClient(t, "grpc-caller", nodes...)
	b1, b2 := startBackend(t), startBackend(t)
	r1 := newClient(t, "backend-1", nodes...)
	if _, err := r1.Register(t.Context(), client.Instance{AppID: "sdk.grpc", Addrs: []string{"grpc://" + b1}}); err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("discovery:///sdk.grpc",
		grpc.WithResolvers(resolver.NewBuilder(caller)),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	waitPeers(t, hc, 10*time.Second, b1)

	victim := nodeByAddr(c, caller.CurrentNode())
	victim.Kill(t)
	r2 := newClient(t, "backend-2", c.Others(victim)...)
	cancel2, err := r2.Register(t.Context(), client.Instance{AppID: "sdk.grpc", Addrs: []string{"grpc://" + b2}})
	if err != nil {
		t.Fatal(err)
	}
	waitPeers(t, hc, 15*time.Second, b1, b2)
	if err := cancel2(); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, hc, 15*time.Second, b1)
}
