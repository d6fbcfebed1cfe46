package api

import (
	"context"
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discovery-go/discovery/registry"
)

// Replicator forwards writes this node accepted from a client (replication
// = false) to its peers. Implemented by syncup.Cluster. Calls never block:
// the request is answered without waiting for peers (spec 7.2.2).
// fromZone is the request's from_zone flag: true means the write came from
// another zone and must be forwarded only inside this node's zone.
type Replicator interface {
	Register(ins registry.Instance, fromZone bool)
	Renew(ins registry.Instance, fromZone bool)
	Cancel(t registry.Tombstone, fromZone bool)
	Set(req registry.SetRequest, fromZone bool)
}

// Node is one entry of /discovery/nodes (spec 4.10).
type Node struct {
	Addr   string `json:"addr"`
	Status int    `json:"status"` // 0 UP, 1 LOST (suspect)
	Zone   string `json:"zone"`
}

// Deps are the collaborators of the HTTP layer. Only Registry is required.
type Deps struct {
	Registry *registry.Registry
	// Replicator nil: standalone node, nothing is forwarded.
	Replicator Replicator
	// Nodes lists live same-zone nodes including self; nil: Self only.
	Nodes func() []Node
	// Ready reports whether init-protect / startup sync has ended; nil:
	// always ready. While false, read-gated routes answer -503 and /readyz 503.
	Ready func() bool
	// Internal, if set, is mounted at /discovery/internal/ (peer protocol).
	Internal http.Handler
	// Self is this node (addr = advertised HTTP host:port, zone).
	Self Node
	Logger *slog.Logger
	// Metrics receives the HTTP and registry metrics; Gatherer serves
	// /metrics. Usually the same *prometheus.Registry.
	Metrics  prometheus.Registerer
	Gatherer prometheus.Gatherer
}

// Server is the discovery HTTP API.
type Server struct{}

// New builds the HTTP API (echo v4) and registers its metrics.
func New(cfg Config, deps Deps) (*Server, error) { panic("unimplemented") }

// Handler returns the root handler (all /discovery routes, /metrics,
// /healthz, /readyz).
func (s *Server) Handler() http.Handler { panic("unimplemented") }

// Serve serves on ln until Shutdown. It returns nil after a Shutdown.
func (s *Server) Serve(ln net.Listener) error { panic("unimplemented") }

// Shutdown answers every parked poll at once (-304), stops accepting new
// connections and waits (bounded by ctx) for in-flight requests.
func (s *Server) Shutdown(ctx context.Context) error { panic("unimplemented") }
