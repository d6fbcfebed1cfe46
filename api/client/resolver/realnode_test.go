package resolver_test

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/discovery-go/discovery/api"
	"github.com/discovery-go/discovery/api/client"
	dresolver "github.com/discovery-go/discovery/api/client/resolver"
	"github.com/discovery-go/discovery/registry"
)

// startRealNode runs a real standalone node (registry + HTTP API) on
// 127.0.0.1:0 and returns its address.
func startRealNode(t *testing.T) string {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg, err := registry.New(registry.DefaultConfig(), nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	cfg := api.DefaultConfig()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = ln.Addr().String()
	srv, err := api.New(cfg, api.Deps{Registry: reg, Logger: logger, Self: api.Node{Addr: cfg.Addr, Zone: testZone}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return cfg.Addr
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
