package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	oklog "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/discovery-go/discovery/api"
	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/configs"
	"github.com/discovery-go/discovery/registry"
	"github.com/discovery-go/discovery/syncup"
)

func serveCmd(args, environ []string, _, stderr io.Writer) int {
	// Catch signals before anything else: a SIGTERM during start-up then
	// leads to the ordered shutdown instead of the default abrupt exit.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigc)

	fs := newFlagSet("serve", stderr)
	addrFile := fs.String("addr-file", "", `once listening, write {"http":"<advertised host:port>","gossip":"<advertised host:port>","http_listen":"<bound host:port>","gossip_bind":"<bound host:port>"} to this file (atomically)`)
	cfg, code, ok := parseConfig(fs, args, environ, stderr)
	if !ok {
		return code
	}
	logger, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "discovery: %v\n", err)
		return exitUsage
	}
	if err := runNode(cfg, nodeOptions{addrFile: *addrFile, signals: sigc, logger: logger}); err != nil {
		logger.Error("node stopped with an error", "err", err)
		return exitFailure
	}
	return exitOK
}

// newLogger builds the process logger: text or JSON on w, level from cfg.
func newLogger(cfg configs.LogConfig, w io.Writer) (*slog.Logger, error) {
	lv, err := cfg.SlogLevel()
	if err != nil {
		return nil, err
	}
	var level slog.LevelVar
	level.Set(lv)
	opts := &slog.HandlerOptions{Level: &level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// newMetrics returns the node's own Prometheus registry (never the global
// one) with the Go and process collectors and discovery_build_info.
func newMetrics() (*prometheus.Registry, error) {
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

type nodeOptions struct {
	addrFile string
	signals  <-chan os.Signal
	logger   *slog.Logger
}

// errSignal ends the run group when a termination signal arrives; it is the
// one normal way for a node to stop.
var errSignal = errors.New("termination signal")

// runNode builds the node's components, serves until a signal arrives and
// shuts down in order. It returns nil after a signal (an incomplete drain is
// logged, not returned) and an error when start-up fails or a component
// stops on its own.
func runNode(cfg configs.Config, opt nodeOptions) (err error) {
	log := opt.logger
	metrics, err := newMetrics()
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	reg, err := registry.New(cfg.Registry, registry.SystemClock{}, log.With("component", "registry"))
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}

	// Listen first: the advertised address (port 0 → the bound port) is
	// needed by everything that publishes this node.
	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	served := false
	defer func() {
		if !served {
			_ = ln.Close()
		}
	}()
	advertise, err := api.AdvertiseAddr(cfg.HTTP.Advertise, ln.Addr())
	if err != nil {
		return fmt.Errorf("http.advertise: %w", err)
	}

	cluster, err := syncup.New(cfg.Cluster, syncup.Self{
		Env:      cfg.Node.Env,
		Zone:     cfg.Node.Zone,
		Region:   cfg.Node.Region,
		Hostname: cfg.Node.Hostname,
		HTTPAddr: advertise,
		Version:  version,
	}, reg, syncup.Deps{Logger: log.With("component", "syncup"), Metrics: metrics, EvictAfter: cfg.Registry.EvictAfter})
	if err != nil {
		return err
	}

	srv, err := api.New(cfg.HTTP, api.Deps{
		Registry:   reg,
		Replicator: cluster,
		Nodes:      func() []wire.Node { return apiNodes(cluster.Nodes()) },
		Ready:      cluster.Ready,
		Internal:   cluster.Handler(),
		Self:       wire.Node{Addr: advertise, Status: syncup.NodeUp, Zone: cfg.Node.Zone},
		Logger:     log.With("component", "api"),
		Metrics:    metrics,
		Gatherer:   metrics,
	})
	if err != nil {
		return err
	}

	// Gossip binds here; joining, the startup sync and the node's own
	// infra.discovery record continue in the background. Writes from peers
	// queue on the bound HTTP listener until Serve starts just below.
	if err := cluster.Start(context.Background()); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	clusterUp := true
	defer func() {
		if clusterUp { // start-up failed after Start
			ctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
			defer cancel()
			_ = cluster.Shutdown(ctx)
		}
	}()

	log.Info("listening", "http", ln.Addr().String(), "gossip", cluster.GossipAddr(), "advertise", advertise,
		"env", cfg.Node.Env, "zone", cfg.Node.Zone, "hostname", cfg.Node.Hostname, "node", cluster.Name(), "version", version)

	if opt.addrFile != "" {
		if err := writeAddrFile(opt.addrFile, listenAddrs{
			HTTP: advertise, Gossip: cluster.GossipAddr(),
			HTTPListen: ln.Addr().String(), GossipBind: cluster.GossipBindAddr(),
		}); err != nil {
			return fmt.Errorf("--addr-file: %w", err)
		}
		defer func() { _ = os.Remove(opt.addrFile) }()
	}

	// The long-lived parts run as one group; the first to return (normally
	// the signal handler) interrupts the others. Every interrupt runs the
	// same ordered shutdown, once.
	loopCtx, stopLoops := context.WithCancel(context.Background())
	defer stopLoops()
	clusterDone := make(chan struct{})
	var once sync.Once
	shutdown := func(error) {
		once.Do(func() {
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.ShutdownTimeout)
			defer cancel()
			var errs []error
			// 1. Announce the leave and cancel our infra.discovery record
			// (replicated). Writes are still forwarded.
			if err := cluster.BeginShutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("cluster leave announcement: %w", err))
			}
			// 2. HTTP: no new client writes, parked polls answer at once,
			// in-flight requests finish and queue their forwards. At most
			// half the budget: the replication drain comes after it.
			hctx, hcancel := context.WithTimeout(ctx, cfg.HTTP.ShutdownTimeout/2)
			if err := srv.Shutdown(hctx); err != nil {
				errs = append(errs, fmt.Errorf("http shutdown: %w", err))
			}
			hcancel()
			// 3. Drain the replication queues (every acknowledged write is
			// in them now), leave gossip.
			if err := cluster.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("cluster shutdown: %w", err))
			}
			close(clusterDone)
			// Last, the registry's eviction loop (and the signal actor).
			stopLoops()
			// An incomplete drain (e.g. a peer that is already gone) is
			// reported but is not a failure of the node.
			if err := errors.Join(errs...); err != nil {
				log.Warn("shutdown incomplete", "took", time.Since(start), "err", err)
				return
			}
			log.Info("shutdown complete", "took", time.Since(start))
		})
	}

	var g oklog.Group
	g.Add(func() error {
		select {
		case sig := <-opt.signals:
			log.Info("shutting down", "signal", sig.String())
			return errSignal
		case <-loopCtx.Done():
			return nil
		}
	}, shutdown)
	g.Add(func() error {
		if err := srv.Serve(ln); err != nil {
			return fmt.Errorf("http serve: %w", err)
		}
		return errors.New("http server stopped")
	}, shutdown)
	g.Add(func() error {
		// The cluster runs in its own goroutines since Start; this member
		// stands for it and ends when it has been shut down.
		<-clusterDone
		return errors.New("cluster stopped")
	}, shutdown)
	g.Add(func() error {
		if err := reg.Run(loopCtx); err != nil {
			return fmt.Errorf("registry: %w", err)
		}
		return errors.New("registry loop stopped")
	}, shutdown)
	served, clusterUp = true, false

	if err := g.Run(); !errors.Is(err, errSignal) {
		return err
	}
	return nil
}

// apiNodes adapts the cluster's member list to the HTTP layer's node list.
func apiNodes(ms []syncup.Member) []wire.Node {
	out := make([]wire.Node, len(ms))
	for i, m := range ms {
		out[i] = wire.Node{Addr: m.Addr, Status: m.Status, Zone: m.Zone}
	}
	return out
}

// listenAddrs is the --addr-file content: the advertised addresses (what
// peers and clients use) and the bound ones (they differ behind a proxy or
// NAT, with http.advertise / cluster.advertise).
type listenAddrs struct {
	HTTP       string `json:"http"`
	Gossip     string `json:"gossip"`
	HTTPListen string `json:"http_listen"`
	GossipBind string `json:"gossip_bind"`
}

// writeAddrFile writes a into path atomically (temporary file + rename), so
// a reader polling for the file never sees it half written.
func writeAddrFile(path string, a listenAddrs) error {
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // no-op after the rename
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
