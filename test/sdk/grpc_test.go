package sdk

import (
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/client/resolver"
	"github.com/discovery-go/discovery/test/harness"
)

// TestSDK_GRPCThroughClusterNodeDeath: a gRPC channel resolved through the
// cluster keeps following registrations after the node its client polls
// dies.
func TestSDK_GRPCThroughClusterNodeDeath(t *testing.T) {
	c := harness.StartCluster(t, 3, harness.Options{})
	nodes := c.Nodes()
	caller := newClient(t, clientConfig("grpc-caller", addrsOf(nodes...)...))
	b1, b2 := startBackend(t), startBackend(t)
	r1 := newClient(t, clientConfig("backend-1", addrsOf(nodes...)...))
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
	r2 := newClient(t, clientConfig("backend-2", addrsOf(c.Others(victim)...)...))
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

// TestSDK_GRPCRealNodeRoundRobin: a round_robin channel resolved through a
// real node reaches every registered backend, a new one as soon as it
// registers, and stops using a cancelled one.
func TestSDK_GRPCRealNodeRoundRobin(t *testing.T) {
	node := startRealNode(t).Addr
	register := func(host, addr string) func() error {
		c := newClient(t, clientConfig(host, node))
		cancel, err := c.Register(t.Context(), client.Instance{AppID: "health.svc", Addrs: []string{"grpc://" + addr}})
		if err != nil {
			t.Fatal(err)
		}
		return cancel
	}
	b1, b2, b3 := startBackend(t), startBackend(t), startBackend(t)
	register("pod-1", b1)
	cancel2 := register("pod-2", b2)

	conn, err := grpc.NewClient("discovery:///health.svc",
		grpc.WithResolvers(resolver.NewBuilder(newClient(t, clientConfig("caller", node)))),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	waitPeers(t, hc, 10*time.Second, b1, b2)
	register("pod-3", b3)
	waitPeers(t, hc, 10*time.Second, b1, b2, b3)
	if err := cancel2(); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, hc, 10*time.Second, b1, b3)
}
