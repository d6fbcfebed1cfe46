package resolver_test

import (
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/discovery-go/discovery/api"
	"github.com/discovery-go/discovery/api/apitest"
	"github.com/discovery-go/discovery/api/client"
	dresolver "github.com/discovery-go/discovery/api/client/resolver"
	"github.com/discovery-go/discovery/api/wire"
)

// startRealNode runs a real standalone node in process and returns its
// address.
func startRealNode(t *testing.T) string {
	t.Helper()
	return apitest.StartNode(t, apitest.Options{Deps: api.Deps{Self: wire.Node{Zone: testZone}}}).Addr
}

func TestGRPC_RealNodeRoundRobin(t *testing.T) {
	node := startRealNode(t)
	newReg := func(host string) *client.Client {
		c, err := client.New(client.Config{Nodes: []string{node}, Region: "region01", Zone: testZone, Env: testEnv, Hostname: host,
			BackoffInitial: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	b1, b2, b3 := startBackend(t), startBackend(t), startBackend(t)
	register := func(c *client.Client, addr string) func() error {
		cancel, err := c.Register(t.Context(), client.Instance{AppID: "health.svc", Addrs: []string{"grpc://" + addr}})
		if err != nil {
			t.Fatal(err)
		}
		return cancel
	}
	register(newReg("pod-1"), b1)
	cancel2 := register(newReg("pod-2"), b2)

	dc := newReg("caller")
	conn, err := grpc.NewClient("discovery:///health.svc",
		grpc.WithResolvers(dresolver.NewBuilder(dc)),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	waitPeers(t, hc, b1, b2)
	register(newReg("pod-3"), b3)
	waitPeers(t, hc, b1, b2, b3)
	if err := cancel2(); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, hc, b1, b3)
}
