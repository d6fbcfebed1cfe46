package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"sync"
	"time"
)

// Client talks to a discovery cluster. Create it with New; it is safe for
// concurrent use and meant to be shared by the whole process (it runs one
// long-poll for all watched appids). Close must be called to cancel its
// registrations and stop its goroutines.
type Client struct {
	cfg     Config
	log     *slog.Logger
	hc      *http.Client
	ownHC   bool
	scheme  string // of every request and of the learned node addrs: http, or https with Config.TLS
	nodes   *nodeSet
	metrics *metrics

	// ctx ends (cause ErrClosed) when Close starts; every call is bound to it.
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	closed   bool
	regs     map[string]*registration
	inflight sync.WaitGroup // Register calls in progress
	wg       sync.WaitGroup // renew loops and the poll loop

	hub hub

	closeOnce sync.Once
	closeErr  error
}

// New builds a Client from cfg (zero fields come from the environment and
// DefaultConfig, see Config) and starts its long-poll on infra.discovery. It
// does not wait for any node: a cluster that is down at start is reached
// once it is up. A missing node list is ErrNoNodes; other invalid settings
// are ErrInvalidConfig.
func New(cfg Config, opts ...Option) (*Client, error) {
	o := options{getenv: os.Getenv, hostname: os.Hostname}
	for _, opt := range opts {
		opt(&o)
	}
	cfg, err := cfg.resolve(o.getenv, o.hostname)
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: o.logger, hc: o.httpClient, nodes: newNodeSet(cfg.Nodes), regs: map[string]*registration{}, scheme: "http"}
	var tlsConf *tls.Config
	if cfg.TLS != nil {
		c.scheme, tlsConf = "https", cfg.TLS.Clone()
	}
	if c.log == nil {
		c.log = DiscardLogger()
	}
	if c.hc == nil {
		c.ownHC = true
		c.hc = &http.Client{Transport: &http.Transport{
			Proxy:               nil, // discovery nodes are addressed directly
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 40 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 8,
			IdleConnTimeout:     40 * time.Second,
			TLSClientConfig:     tlsConf,
		}}
	}
	c.hub.init()
	c.metrics, err = newMetrics(o.registerer,
		func() float64 { return float64(len(c.nodes.snapshot())) },
		func() float64 { return float64(c.hub.size()) })
	if err != nil {
		return nil, fmt.Errorf("%w: metrics: %w", ErrInvalidConfig, err)
	}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	// The client's own watch of the node list; never removed.
	c.hub.addRef(InfraAppID)
	c.wg.Add(1)
	go c.pollLoop()
	return c, nil
}

// Config returns the resolved configuration (environment fallbacks and
// defaults applied).
func (c *Client) Config() Config {
	cfg := c.cfg
	cfg.Nodes = append([]string(nil), cfg.Nodes...)
	return cfg
}

// Nodes returns the nodes the client currently may use, in failover order
// starting with the current one's list position (learned nodes first, then
// seeds not among them).
func (c *Client) Nodes() []string { return c.nodes.snapshot() }

// CurrentNode returns the node (host:port) the client sends its next
// request to; it changes on failover and when the learned list changes.
func (c *Client) CurrentNode() string { return c.nodes.current() }

// Close cancels every registration still held (one cancel request each, in
// parallel, bounded by RetryTimeout), ends every watcher (Next returns
// ErrClosed) and waits for all goroutines of the client. Calls in progress
// return ErrClosed. Safe to call more than once; later calls return the
// first result.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.cancel(ErrClosed)
		c.inflight.Wait() // no Register adds a registration after this

		c.mu.Lock()
		regs := make([]*registration, 0, len(c.regs))
		for _, r := range c.regs {
			regs = append(regs, r)
		}
		c.mu.Unlock()
		errs := make([]error, len(regs))
		var wg sync.WaitGroup
		for i, r := range regs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = r.cancel() }()
		}
		wg.Wait()

		c.hub.close()
		c.wg.Wait()
		if c.ownHC {
			c.hc.CloseIdleConnections()
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// DiscardLogger is a logger that writes nothing (slog.DiscardHandler needs
// Go 1.24; this module builds with Go 1.22).
func DiscardLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.Level(math.MaxInt)}))
}
