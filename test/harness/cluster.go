package harness

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
)

// InfraAppID is the appid every node registers itself under (spec 7.5).
const InfraAppID = "infra.discovery"

// Cluster is a set of node processes that gossip with each other, plus the
// fault fabric their peer traffic goes through (for nodes with
// Options.Faults). Methods may be called from the test goroutine only.
type Cluster struct {
	// Fabric cuts traffic between nodes started with Options.Faults.
	Fabric *Fabric

	tb    testing.TB
	bin   string
	opts  Options
	mu    sync.Mutex
	nodes []*Node // slot i holds the latest generation of node i
}

// FormTimeout bounds how long StartCluster waits for the cluster to form.
const FormTimeout = 45 * time.Second

// StartCluster starts n nodes with opts (Hostname is made unique per node):
// the first alone, the others concurrently with only the first as their
// join seed. It returns once every node is ready and every node lists all of
// them in /discovery/nodes and in infra.discovery.
func StartCluster(tb testing.TB, n int, opts Options) *Cluster {
	tb.Helper()
	c := &Cluster{Fabric: NewFabric(), tb: tb, bin: BuildBinary(tb), opts: opts}
	// Registered before any node, so it runs after the nodes' cleanups.
	tb.Cleanup(c.Fabric.Close)

	first := opts
	first.Hostname = ""
	n0, err := startNode(tb, c.bin, first, c.Fabric)
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	c.nodes = append(c.nodes, n0)
	if n > 1 {
		c.addConcurrently(tb, n-1, []string{n0.AdvertisedGossip})
	}
	c.WaitFormed(tb, FormTimeout)
	return c
}

func (c *Cluster) addConcurrently(tb testing.TB, k int, join []string) {
	tb.Helper()
	nodes := make([]*Node, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		o := c.opts
		o.Hostname = ""
		if len(o.Join) == 0 {
			o.Join = join
		}
		wg.Go(func() { nodes[i], errs[i] = startNode(tb, c.bin, o, c.Fabric) })
	}
	wg.Wait()
	for _, n := range nodes {
		if n != nil {
			c.nodes = append(c.nodes, n)
		}
	}
	if err := errors.Join(errs...); err != nil {
		tb.Fatalf("harness: %v", err)
	}
}

// Add starts one more node joining the live nodes (opts.Join empty) and
// waits until it is ready.
func (c *Cluster) Add(tb testing.TB, opts Options) *Node {
	tb.Helper()
	if len(opts.Join) == 0 {
		opts.Join = c.liveGossip()
	}
	n, err := startNode(tb, c.bin, opts, c.Fabric)
	if n != nil {
		c.mu.Lock()
		c.nodes = append(c.nodes, n)
		c.mu.Unlock()
	}
	if err != nil {
		tb.Fatalf("harness: %v", err)
	}
	return n
}

// Nodes returns the latest generation of every node slot, dead or alive.
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.nodes)
}

// Node returns slot i.
func (c *Cluster) Node(i int) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Live returns the nodes whose process is running.
func (c *Cluster) Live() []*Node {
	var out []*Node
	for _, n := range c.Nodes() {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// Others returns the live nodes except n.
func (c *Cluster) Others(n *Node) []*Node {
	var out []*Node
	for _, o := range c.Live() {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

func (c *Cluster) liveGossip() []string {
	var out []string
	for _, n := range c.Live() {
		out = append(out, n.AdvertisedGossip)
	}
	return out
}

// Kill SIGKILLs n and waits for it to exit.
func (c *Cluster) Kill(tb testing.TB, n *Node) { tb.Helper(); n.Kill(tb) }

// Stop stops n gracefully (SIGTERM) and expects exit status 0.
func (c *Cluster) Stop(tb testing.TB, n *Node) { tb.Helper(); n.Stop(tb) }

// Restart starts n again with the same options (hostname, zone, env, extra
// environment) but new ephemeral ports, joining the live nodes, and waits
// until it is ready. A running n is stopped gracefully first. The new
// generation replaces n in its slot and is returned; n itself stays dead.
func (c *Cluster) Restart(tb testing.TB, n *Node) *Node {
	tb.Helper()
	return c.RestartWith(tb, n, nil)
}

// RestartWith is Restart with the options adjusted by edit (may be nil),
// e.g. NoWaitReady to watch the node become ready.
func (c *Cluster) RestartWith(tb testing.TB, n *Node, edit func(*Options)) *Node {
	tb.Helper()
	if n.Running() {
		n.Stop(tb)
	}
	opts := n.Opts
	opts.Join = c.liveGossip()
	opts.HTTPAddr, opts.GossipAddr = c.opts.HTTPAddr, c.opts.GossipAddr
	opts.NoWaitReady = false
	if edit != nil {
		edit(&opts)
	}
	nn, err := startNode(tb, c.bin, opts, c.Fabric)
	if nn != nil {
		c.mu.Lock()
		if i := slices.Index(c.nodes, n); i >= 0 {
			c.nodes[i] = nn
		} else {
			c.nodes = append(c.nodes, nn)
		}
		c.mu.Unlock()
	}
	if err != nil {
		tb.Fatalf("harness: restart: %v", err)
	}
	return nn
}

// Isolate cuts n off from every other node (gossip and peer HTTP, both
// directions) until Heal. n must have been started with Options.Faults.
func (c *Cluster) Isolate(tb testing.TB, n *Node) {
	tb.Helper()
	others := c.Others(n)
	c.Partition(tb, []*Node{n}, others)
}

// Partition cuts every pair of nodes that are in different groups.
func (c *Cluster) Partition(tb testing.TB, groups ...[]*Node) {
	tb.Helper()
	for i, g := range groups {
		for _, a := range g {
			if a.ep == nil {
				tb.Fatalf("harness: node %s was not started with Options.Faults", a.Name)
			}
			for _, h := range groups[i+1:] {
				for _, b := range h {
					if b.ep == nil {
						tb.Fatalf("harness: node %s was not started with Options.Faults", b.Name)
					}
					c.Fabric.block(a.ep, b.ep)
				}
			}
		}
	}
}

// Heal lifts every partition.
func (c *Cluster) Heal() { c.Fabric.heal() }

// WaitFormed waits until every live node lists exactly the live nodes
// (status 0, advertised HTTP addresses) in /discovery/nodes and holds an UP
// infra.discovery record for each of them, and returns how long it took.
func (c *Cluster) WaitFormed(tb testing.TB, timeout time.Duration) time.Duration {
	tb.Helper()
	return testkit.Eventually(tb, timeout, "cluster formed", func() error { return c.CheckFormed(c.Live()) })
}

// CheckFormed reports how the view of the given nodes differs from "each
// sees exactly these nodes", in /discovery/nodes and in infra.discovery.
func (c *Cluster) CheckFormed(nodes []*Node) error {
	var want []string
	for _, n := range nodes {
		want = append(want, n.AdvertisedHTTP)
	}
	sort.Strings(want)
	var errs []error
	for _, n := range nodes {
		got, err := NodeAddrs(n, true)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s nodes: %w", n.Name, err))
		} else if !slices.Equal(got, want) {
			errs = append(errs, fmt.Errorf("%s nodes: got %v, want %v", n.Name, got, want))
		}
		got, err = InfraAddrs(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s infra.discovery: %w", n.Name, err))
		} else if !slices.Equal(got, want) {
			errs = append(errs, fmt.Errorf("%s infra.discovery: got %v, want %v", n.Name, got, want))
		}
	}
	return errors.Join(errs...)
}

// NodeAddrs returns the sorted addrs of n's /discovery/nodes; with upOnly,
// entries whose status is not 0 are left out.
func NodeAddrs(n *Node, upOnly bool) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	list, _, err := n.Client.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range list {
		if !upOnly || e.Status == 0 {
			out = append(out, e.Addr)
		}
	}
	sort.Strings(out)
	return out, nil
}

// InfraAddrs returns the sorted host:port of the UP infra.discovery records
// n holds in its own env and zone: their http:// addrs, scheme stripped
// (what kratos takes; https:// addrs of nodes with TLS are left out).
func InfraAddrs(n *Node) ([]string, error) {
	return infraAddrs(n.Client, n.Opts.Env, n.Opts.Zone)
}

// infraAddrs: the http:// host:port of the UP infra.discovery records c's
// node answers for env and zone, sorted.
func infraAddrs(c *Client, env, zone string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ii, _, err := c.Fetch(ctx, env, InfraAppID, 1, zone)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, in := range ii.All() {
		for _, a := range in.Addrs {
			if hp, ok := strings.CutPrefix(a, "http://"); ok {
				out = append(out, hp)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}
