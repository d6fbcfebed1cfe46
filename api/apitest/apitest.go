// Package apitest runs a real discovery node in process for tests, the way
// net/http/httptest runs an http.Handler: a registry and the HTTP API served
// on 127.0.0.1:0 until the test ends. The node is standalone (no cluster, no
// self-registration, no evictor) unless Options supply a Replicator.
//
// Tests of package api itself cannot use it (import cycle); tests of the
// SDK, the resolver and the load generator do, so they all exercise the
// server the same way.
package apitest

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api"
	"github.com/discovery-go/discovery/registry"
)

// Options adjust the node. The zero value is a default standalone node.
type Options struct {
	// Config is the API configuration; nil means api.DefaultConfig(). Its
	// Addr is ignored: the node always listens on 127.0.0.1:0.
	Config *api.Config
	// Deps are passed to api.New. Registry nil: a fresh registry with
	// registry.DefaultConfig(). Logger nil: warnings and errors go to the
	// test's output. Self.Addr empty: the bound address.
	Deps api.Deps
}

// Node is a running node. Its fields are read-only.
type Node struct {
	Addr     string // host:port of the HTTP API
	Registry *registry.Registry
	Server   *api.Server
}

// StartNode starts a node and registers its shutdown with tb.Cleanup;
// Shutdown or Serve failing then fails the test.
func StartNode(tb testing.TB, opts Options) *Node {
	tb.Helper()
	deps := opts.Deps
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if deps.Registry == nil {
		reg, err := registry.New(registry.DefaultConfig(), nil, deps.Logger)
		if err != nil {
			tb.Fatal(err)
		}
		deps.Registry = reg
	}
	cfg := api.DefaultConfig()
	if opts.Config != nil {
		cfg = *opts.Config
	}
	ln, err := (&net.ListenConfig{}).Listen(tb.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Addr = ln.Addr().String()
	if deps.Self.Addr == "" {
		deps.Self.Addr = cfg.Addr
	}
	srv, err := api.New(cfg, deps)
	if err != nil {
		_ = ln.Close()
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	tb.Cleanup(func() {
		// Bounded so that a stuck shutdown fails the test instead of hanging it.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return &Node{Addr: cfg.Addr, Registry: deps.Registry, Server: srv}
}
