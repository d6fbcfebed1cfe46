package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/discovery-go/discovery/api/client"
)

// Register a service and keep it registered until the process stops.
// Nodes, zone, env and hostname come from DISCOVERY_NODES, ZONE,
// DEPLOY_ENV and HOSTNAME, as for a kratos client.
func ExampleClient_Register() {
	dc, err := client.New(client.Config{}, client.WithLogger(slog.Default()))
	if err != nil {
		log.Fatal(err)
	}
	defer dc.Close() // cancels the registration too

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cancel, err := dc.Register(ctx, client.Instance{
		AppID:    "demo.account.service",
		Addrs:    []string{"grpc://10.0.0.5:9000", "http://10.0.0.5:8000"},
		Version:  "v1.4.2",
		Metadata: map[string]string{"weight": "10"},
	})
	if err != nil {
		log.Fatal(err)
	}
	<-ctx.Done()
	if err := cancel(); err != nil {
		log.Print(err)
	}
}

// Watch an appid: the first set arrives as soon as it is known, then each
// change. Transient errors mean the client is failing over; keep reading.
func ExampleClient_Watch() {
	dc, err := client.New(client.Config{Nodes: []string{"127.0.0.1:7171"}, Env: "dev", Zone: "sh001"})
	if err != nil {
		log.Fatal(err)
	}
	defer dc.Close()

	w, err := dc.Watch("demo.account.service")
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		set, err := w.Next(ctx)
		switch {
		case errors.Is(err, client.ErrClosed) || ctx.Err() != nil:
			return
		case err != nil:
			log.Printf("discovery: %v (retrying)", err)
			continue
		}
		for _, in := range set.All() {
			fmt.Println(in.Zone, in.Hostname, in.HostPorts("grpc"))
		}
	}
}

// A missing node list is an error, not a panic.
func ExampleNew_noNodes() {
	_, err := client.New(client.Config{}, client.WithEnv(func(string) string { return "" }))
	fmt.Println(errors.Is(err, client.ErrNoNodes))
	// Output: true
}

func ExampleInstance_HostPorts() {
	in := client.Instance{Addrs: []string{"grpc://10.0.0.5:9000", "http://10.0.0.5:8000", "grpc://10.0.0.6:9000"}}
	fmt.Println(in.HostPorts("grpc"), in.HostPorts("http"))
	// Output: [10.0.0.5:9000 10.0.0.6:9000] [10.0.0.5:8000]
}
