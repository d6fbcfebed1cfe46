package syncup

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

func TestMain(m *testing.M) {
	testkit.VerifyTestMain(m)
}

// testConfig: background timers long (tests trigger what they need),
// network timeouts short.
// testSecret is the cluster secret of the test clusters (base64 of 32 bytes).
const testSecret = "dGVzdC1zZWNyZXQtb2YtMzItYnl0ZXMtZm9yLXRlc3Q="

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Secret = testSecret
	cfg.Bind = "127.0.0.1:0"
	cfg.Label = "test"
	cfg.JoinTimeout = 5 * time.Second
	cfg.RejoinInterval = 200 * time.Millisecond
	cfg.SyncTimeout = 5 * time.Second
	cfg.InitProtectTimeout = time.Hour
	cfg.AntiEntropyInterval = time.Hour
	cfg.RenewInterval = time.Hour
	cfg.QueueSize = 1024
	cfg.BatchSize = 64
	cfg.PeerTimeout = time.Second
	cfg.RetryMaxBackoff = 100 * time.Millisecond
	return cfg
}

var addrSeq atomic.Int64

// nextHTTPAddr invents a unique HTTP address for in-memory nodes.
func nextHTTPAddr() string {
	n := addrSeq.Add(1)
	return fmt.Sprintf("10.%d.%d.%d:7171", n>>16&255, n>>8&255, n&255)
}

type tnode struct {
	c    *Cluster
	reg  *registry.Registry
	addr string
	prom *prometheus.Registry
	lh   *lateHandler // HTTP nodes: the internal handler's switch
}

type nodeOpt struct {
	zone string
	join []*tnode
	cfg  func(*Config)
	net  *MemNetwork
	tr   Transport // overrides net
	addr string
	http bool // use the default HTTP transport (addr must be served)
	// wrap, if set, wraps the node's registry as the Cluster sees it (fault
	// and ordering hooks); tnode.reg stays the real registry.
	wrap func(Registry) Registry
	// hostname overrides the node's hostname ("h-" + addr).
	hostname string
}

func startNode(t testing.TB, o nodeOpt) *tnode {
	t.Helper()
	if o.zone == "" {
		o.zone = "z1"
	}
	if o.addr == "" {
		o.addr = nextHTTPAddr()
	}
	cfg := testConfig()
	for _, j := range o.join {
		cfg.Join = append(cfg.Join, j.c.GossipAddr())
	}
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	reg, err := registry.New(registry.DefaultConfig(), nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	prom := prometheus.NewRegistry()
	tr := o.tr
	if tr == nil && !o.http {
		tr = o.net.Transport(o.addr)
	}
	self := Self{Env: "test", Zone: o.zone, Region: "r1", Hostname: "h-" + o.addr, HTTPAddr: o.addr, Version: "v0"}
	if o.hostname != "" {
		self.Hostname = o.hostname
	}
	var creg Registry = reg
	if o.wrap != nil {
		creg = o.wrap(reg)
	}
	c, err := New(cfg, self, creg, Deps{Logger: logger.With("addr", o.addr), Metrics: prom, Transport: tr, Memberlist: LocalGossip})
	if err != nil {
		t.Fatal(err)
	}
	if o.net != nil {
		o.net.Attach(o.addr, c)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	n := &tnode{c: c, reg: reg, addr: o.addr, prom: prom}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Shutdown(ctx)
	})
	return n
}

// startCluster starts n same-zone nodes on one memory network, all joined
// to the first, and waits until every node sees every other as a peer and
// is ready.
func startCluster(t testing.TB, net *MemNetwork, n int, zone string, cfg func(*Config)) []*tnode {
	t.Helper()
	nodes := []*tnode{startNode(t, nodeOpt{net: net, zone: zone, cfg: cfg})}
	for i := 1; i < n; i++ {
		nodes = append(nodes, startNode(t, nodeOpt{net: net, zone: zone, cfg: cfg, join: nodes[:1]}))
	}
	testkit.EventuallyTrue(t, waitTimeout, "full mesh and ready", func() bool {
		for _, nd := range nodes {
			if len(nd.c.repl.same()) != n-1 || !nd.c.Ready() {
				return false
			}
		}
		return true
	})
	return nodes
}

// waitTimeout bounds the waits of these tests (generous: CI shares 2 cores).
const waitTimeout = 20 * time.Second

// quiet waits until no replication op is pending anywhere. Forwards are
// enqueued before the batch that caused them is acknowledged, so "all
// pending zero" is a stable state.
func quiet(t testing.TB, nodes ...*tnode) {
	t.Helper()
	testkit.EventuallyTrue(t, waitTimeout, "replication queues empty", func() bool {
		for _, n := range nodes {
			for _, p := range n.c.repl.links() {
				if p.pending.Load() != 0 {
					return false
				}
			}
		}
		return true
	})
}

// kill stops a node without announcing a leave, like a crash.
func (n *tnode) kill(t testing.TB) {
	t.Helper()
	n.c.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.c.shutdownErr = n.c.shutdown(ctx, false)
	})
}

func (n *tnode) peerNamed(name string) *link {
	n.c.repl.mu.RLock()
	defer n.c.repl.mu.RUnlock()
	return n.c.repl.peers[name]
}

var instSeq atomic.Int64

func testInstance(appid, zone string) registry.Instance {
	return registry.Instance{
		Region: "r1", Zone: zone, Env: "test", AppID: appid,
		Hostname: fmt.Sprintf("host-%d", instSeq.Add(1)),
		Addrs:    []string{"grpc://10.9.9.9:9000", "http://10.9.9.9:8000"},
		Version:  "v1", Metadata: map[string]string{"weight": "10"}, Status: registry.StatusUp,
	}
}

// clientRegister does what the api does for a client register: local
// register, then replicate the stored copy.
func (n *tnode) clientRegister(t testing.TB, ins registry.Instance) registry.Instance {
	t.Helper()
	stored, _, err := n.reg.Register(ins, 0)
	if err != nil {
		t.Fatal(err)
	}
	n.c.Register(stored, false)
	return stored
}

func (n *tnode) has(k registry.Key) bool {
	_, ok := n.reg.Get(k)
	return ok
}
