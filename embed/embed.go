// Package embed runs a discovery node inside a Go program: the registry,
// the cluster layer and the HTTP API wired exactly as the discovery binary
// runs them (cmd/discovery is a thin main around this package), the way
// etcd's embed package starts an etcd server.
//
//	cfg := configs.DefaultConfig()
//	cfg.HTTP.Addr, cfg.Cluster.Bind = "127.0.0.1:0", "127.0.0.1:0"
//	n, err := embed.New(cfg, embed.Options{Logger: logger})
//	if err != nil { ... }
//	if err := n.Start(ctx); err != nil { ... }
//	<-n.Ready()                   // synced, serving reads
//	addr := n.Addrs().HTTP        // what clients and peers use
//	defer n.Shutdown(context.Background())
//
// A Node owns every goroutine it starts; Shutdown stops them in order (the
// leave is announced and the node's own record cancelled, HTTP drains and
// answers parked polls, replication drains, gossip leaves, the evictor
// stops) and returns when they are gone. Several nodes can run in one
// process: each has its own Prometheus registry and no package-level state
// is shared.
package embed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/discovery-go/discovery/api"
	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/configs"
	"github.com/discovery-go/discovery/registry"
	"github.com/discovery-go/discovery/syncup"
)

// Options are the collaborators of a Node; the zero value is a production
// node logging nowhere.
type Options struct {
	// Logger nil: discard.
	Logger *slog.Logger
	// Version and Commit label discovery_build_info and the node's gossip
	// meta; empty: "dev" and "unknown".
	Version, Commit string
	// Listener, if set, is the HTTP listener (cfg.HTTP.Addr is then only
	// used for the health subcommand's default). The node closes it.
	Listener net.Listener
	// TLSListener, if set, is the HTTPS listener (TCP; http.tls.addr must
	// be set, and only names the certificate's use). The node closes it.
	TLSListener net.Listener
	// Transport, if set, reaches the peers instead of HTTP (tests: a
	// syncup.MemNetwork; Attach the node with AttachTo).
	Transport syncup.Transport
	// Memberlist adjusts the gossip configuration (tests: fast timings).
	Memberlist func(*memberlist.Config)
	// Resolver resolves gossip seed names; nil: net.DefaultResolver.
	Resolver syncup.Resolver
	// Clock is the registry's clock; nil: the system clock.
	Clock registry.Clock
}

// Addrs are the addresses a started node bound and publishes.
type Addrs struct {
	HTTP       string // advertised HTTP host:port (clients, peers, infra.discovery)
	HTTPListen string // bound HTTP host:port
	Gossip     string // advertised gossip host:port
	GossipBind string // bound gossip host:port
	// HTTPS and HTTPSListen are the advertised and bound HTTPS host:port;
	// empty without http.tls.addr.
	HTTPS, HTTPSListen string
}

// Node is one discovery node. Its methods are safe for concurrent use.
type Node struct {
	cfg     configs.Config
	opts    Options
	log     *slog.Logger
	metrics *prometheus.Registry
	reg     *registry.Registry

	// Set by Start.
	ln      net.Listener
	addrs   Addrs
	cluster *syncup.Cluster
	srv     *api.Server

	mu      sync.Mutex // guards started and stopped
	started bool
	stopped bool

	loopCancel context.CancelFunc // the registry's evictor
	wg         sync.WaitGroup     // Serve and the evictor

	stopOnce sync.Once
	stopErr  error
	done     chan struct{} // closed when the node has stopped
	errMu    sync.Mutex    // guards err
	err      error         // why the node stopped on its own
}

// New validates cfg and builds a node. Nothing listens until Start.
func New(cfg configs.Config, opts Options) (*Node, error) {
	cfg.Registry.Limits = cfg.RecordLimits()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.Commit == "" {
		opts.Commit = "unknown"
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	metrics, err := newMetrics(opts.Version, opts.Commit)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	// Every stored record passes the public input limits, whatever path
	// it came by (spec 10.5).
	cfg.Registry.Limits = cfg.RecordLimits()
	reg, err := registry.New(cfg.Registry, opts.Clock, log.With("component", "registry"))
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	return &Node{cfg: cfg, opts: opts, log: log, metrics: metrics, reg: reg, done: make(chan struct{})}, nil
}

// newMetrics returns the node's own Prometheus registry (never the global
// one) with the Go and process collectors and discovery_build_info.
func newMetrics(version, commit string) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "discovery_build_info",
		Help: "Build of this discovery node; the value is always 1.",
		ConstLabels: prometheus.Labels{
			"version":   version,
			"commit":    commit,
			"goversion": runtime.Version(),
		},
	})
	build.Set(1)
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		build,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// Start listens (HTTP, then gossip) and returns once both are bound;
// joining, the startup sync and the node's own infra.discovery record
// continue in the background (Ready tells when reads are served). Writes
// from peers queue on the bound HTTP listener until serving starts, just
// after the cluster layer. Start may be called once.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.stopped:
		return errors.New("embed: node was shut down")
	case n.started:
		return errors.New("embed: node already started")
	}
	ln := n.opts.Listener
	if ln == nil {
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", n.cfg.HTTP.Addr); err != nil {
			return fmt.Errorf("http listen: %w", err)
		}
	}
	defer func() {
		if err != nil {
			_ = ln.Close()
		}
	}()
	tlsLn := n.opts.TLSListener
	if tlsLn == nil && n.cfg.HTTP.TLS.Addr != "" {
		if tlsLn, err = (&net.ListenConfig{}).Listen(ctx, "tcp", n.cfg.HTTP.TLS.Addr); err != nil {
			return fmt.Errorf("https listen: %w", err)
		}
	}
	if tlsLn != nil {
		defer func() {
			if err != nil {
				_ = tlsLn.Close()
			}
		}()
		if n.cfg.HTTP.TLS.Addr == "" {
			return errors.New("embed: Options.TLSListener without http.tls.addr and a certificate")
		}
	}
	// The advertised address (port 0 → the bound port) is needed by
	// everything that publishes this node.
	advertise, err := api.AdvertiseAddr(n.cfg.HTTP.Advertise, ln.Addr())
	if err != nil {
		return fmt.Errorf("http.advertise: %w", err)
	}
	var advertiseTLS string
	if tlsLn != nil {
		if advertiseTLS, err = api.AdvertiseAddr(n.cfg.HTTP.TLS.Advertise, tlsLn.Addr()); err != nil {
			return fmt.Errorf("http.tls.advertise: %w", err)
		}
	}
	cl, err := syncup.New(n.cfg.Cluster, syncup.Self{
		Env: n.cfg.Node.Env, Zone: n.cfg.Node.Zone, Region: n.cfg.Node.Region, Hostname: n.cfg.Node.Hostname,
		HTTPAddr: advertise, HTTPSAddr: advertiseTLS, Version: n.opts.Version,
	}, n.reg, syncup.Deps{
		Logger: n.log.With("component", "syncup"), Metrics: n.metrics, Transport: n.opts.Transport,
		Memberlist: n.opts.Memberlist, Resolver: n.opts.Resolver, EvictAfter: n.cfg.Registry.EvictAfter,
	})
	if err != nil {
		return err
	}
	var peers api.PeerCheck
	if a := cl.PeerAuth(); a != nil {
		peers = a
	}
	srv, err := api.New(n.cfg.HTTP, api.Deps{
		Registry:   n.reg,
		Peers:      peers,
		Legacy:     cl,
		Security:   n.cfg.Security,
		Replicator: cl,
		Nodes:      func() []wire.Node { return wireNodes(cl.Nodes()) },
		Ready:      cl.Ready,
		Internal:   cl.Handler(),
		Self:       wire.Node{Addr: advertise, Status: wire.NodeUp, Zone: n.cfg.Node.Zone},
		Node: wire.NodeStatus{
			Hostname: n.cfg.Node.Hostname, Env: n.cfg.Node.Env, Zone: n.cfg.Node.Zone, Region: n.cfg.Node.Region,
			Version: n.opts.Version, Addr: advertise, HTTPS: advertiseTLS, Started: time.Now().UnixNano(),
		},
		Cluster:  cl.Status,
		Logger:   n.log.With("component", "api"),
		Metrics:  n.metrics,
		Gatherer: n.metrics,
	})
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	insecure := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "discovery_security_insecure",
		Help: "1 when the node runs with cluster.insecure and no cluster.secret (peers unauthenticated, gossip in clear).",
	})
	if cl.Insecure() {
		insecure.Set(1)
	}
	if err := n.metrics.Register(insecure); err != nil {
		return err
	}
	if n.cfg.Security.AdminToken == "" && n.cfg.Security.AdminTokenFile == "" && !loopbackOnly(ln.Addr()) {
		n.log.Warn("no security.admin_token: set, fetch/all and the admin API are open to every host that reaches the HTTP port")
	}
	if err := cl.Start(ctx); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	n.ln, n.cluster, n.srv, n.started = ln, cl, srv, true
	n.addrs = Addrs{HTTP: advertise, HTTPListen: ln.Addr().String(), Gossip: cl.GossipAddr(), GossipBind: cl.GossipBindAddr()}
	if tlsLn != nil {
		n.addrs.HTTPS, n.addrs.HTTPSListen = advertiseTLS, tlsLn.Addr().String()
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := srv.ServeTLS(tlsLn); err != nil {
				n.fail(fmt.Errorf("https serve: %w", err))
			}
		}()
	}

	lctx, cancel := context.WithCancel(context.Background())
	n.loopCancel = cancel
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		if err := srv.Serve(ln); err != nil {
			n.fail(fmt.Errorf("http serve: %w", err))
		}
	}()
	go func() {
		defer n.wg.Done()
		if err := n.reg.Run(lctx); err != nil {
			n.fail(fmt.Errorf("registry: %w", err))
		}
	}()
	n.log.Info("listening", "http", n.addrs.HTTPListen, "https", n.addrs.HTTPSListen, "gossip", n.addrs.Gossip, "advertise", advertise,
		"env", n.cfg.Node.Env, "zone", n.cfg.Node.Zone, "hostname", n.cfg.Node.Hostname, "node", cl.Name(), "version", n.opts.Version)
	return nil
}

// fail stops the node because a component stopped on its own.
func (n *Node) fail(err error) {
	n.errMu.Lock()
	if n.err == nil {
		n.err = err
	}
	n.errMu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.HTTP.ShutdownTimeout)
		defer cancel()
		_ = n.Shutdown(ctx)
	}()
}

// Ready is closed once the startup sync (or init-protect) phase has ended
// and reads are served. It is never closed for a node that was not started.
func (n *Node) Ready() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cluster == nil {
		return make(chan struct{})
	}
	return n.cluster.ReadyC()
}

// Done is closed when the node has stopped: after Shutdown, or after a
// component stopped on its own (Err says why).
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is why the node stopped on its own; nil while it runs or after a
// Shutdown it was asked for.
func (n *Node) Err() error {
	n.errMu.Lock()
	defer n.errMu.Unlock()
	return n.err
}

// Addrs returns the addresses bound and published (after Start).
func (n *Node) Addrs() Addrs {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.addrs
}

// Registry is the node's registry (read it; writes through it are neither
// replicated nor validated like the API's).
func (n *Node) Registry() *registry.Registry { return n.reg }

// Cluster is the node's cluster layer (nil before Start).
func (n *Node) Cluster() *syncup.Cluster {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cluster
}

// Metrics is the node's own Prometheus registry (what /metrics serves).
func (n *Node) Metrics() *prometheus.Registry { return n.metrics }

// Shutdown stops the node in order, bounded by ctx: announce the leave and
// cancel the own infra.discovery record (replicated); stop HTTP (no new
// client writes, parked polls answer at once, in-flight requests finish and
// queue their forwards; at most half of what is left of ctx, the drain
// comes after it); drain the replication queues and leave gossip; stop the
// evictor. An incomplete drain (a peer already gone) is returned but the
// node is stopped all the same. Safe to call more than once and
// concurrently; later calls wait for the first and return its result.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopOnce.Do(func() { n.stopErr = n.stop(ctx, true) })
	<-n.done
	return n.stopErr
}

// Kill stops the node like a crash (kill -9), for tests: no leave is
// announced, the own record is not cancelled and nothing is drained, so
// the peers see a member that failed. Connections are closed at once.
func (n *Node) Kill() {
	n.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		n.stopErr = n.stop(ctx, false)
	})
	<-n.done
}

func (n *Node) stop(ctx context.Context, graceful bool) error {
	defer close(n.done)
	n.mu.Lock()
	n.stopped = true
	started := n.started
	n.mu.Unlock()
	if !started {
		return nil
	}
	start := time.Now()
	var errs []error
	if graceful {
		if err := n.cluster.BeginShutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("cluster leave announcement: %w", err))
		}
		hctx, hcancel := context.WithTimeout(ctx, halfLeft(ctx))
		if err := n.srv.Shutdown(hctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
		hcancel()
		if err := n.cluster.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("cluster shutdown: %w", err))
		}
	} else {
		n.cluster.Kill()
		n.srv.Close()
	}
	n.loopCancel()
	n.wg.Wait()
	if err := errors.Join(errs...); err != nil {
		n.log.Warn("shutdown incomplete", "took", time.Since(start), "err", err)
		return err
	}
	n.log.Info("shutdown complete", "took", time.Since(start), "graceful", graceful)
	return nil
}

// loopbackOnly reports whether a listener takes connections from this host
// only.
func loopbackOnly(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// halfLeft is half the time left before ctx's deadline (5 s without one).
func halfLeft(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl)/2, time.Millisecond)
	}
	return 5 * time.Second
}

// wireNodes adapts the cluster's member list to the node list's wire form.
func wireNodes(ms []syncup.Member) []wire.Node {
	out := make([]wire.Node, len(ms))
	for i, m := range ms {
		out[i] = wire.Node{Addr: m.Addr, Status: m.Status, Zone: m.Zone}
	}
	return out
}
