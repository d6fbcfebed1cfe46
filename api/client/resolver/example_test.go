package resolver_test

import (
	"context"
	"log"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/client/resolver"
)

// Dial an appid over gRPC, balancing round-robin over its UP instances of
// the client's zone (all zones when that zone has none).
func ExampleNewBuilder() {
	dc, err := client.New(client.Config{}) // DISCOVERY_NODES, ZONE, DEPLOY_ENV, ...
	if err != nil {
		log.Fatal(err)
	}
	defer dc.Close() // after every channel using it is closed

	conn, err := grpc.NewClient("discovery:///demo.account.service",
		grpc.WithResolvers(resolver.NewBuilder(dc)),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		log.Fatal(err)
	}
	log.Print(resp.GetStatus())
}
