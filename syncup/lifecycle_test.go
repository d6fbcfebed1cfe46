package syncup

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

// renewGate holds the node's own (non-replicated) self renew, once armed,
// until either its own record is cancelled or the background loops are
// told to stop, whichever Shutdown does first.
type renewGate struct {
	Registry
	c         atomic.Pointer[Cluster]
	armed     atomic.Bool
	entered   chan struct{}
	cancelled chan struct{}
	once      sync.Once
}

func newRenewGate(r Registry) *renewGate {
	return &renewGate{Registry: r, entered: make(chan struct{}, 1), cancelled: make(chan struct{})}
}

func (g *renewGate) Renew(k registry.Key, replicated bool, dirty int64) (registry.Instance, error) {
	if c := g.c.Load(); c != nil && !replicated && k == c.recs.key && g.armed.CompareAndSwap(true, false) {
		g.entered <- struct{}{}
		select {
		case <-g.cancelled: // the graceful cancel ran while this renew was in flight
		case <-c.loopCtx.Done(): // the loops were stopped first
		}
	}
	return g.Registry.Renew(k, replicated, dirty)
}

func (g *renewGate) Cancel(k registry.Key, at int64) (registry.Tombstone, error) {
	t, err := g.Registry.Cancel(k, at)
	if c := g.c.Load(); c != nil && k == c.recs.key {
		g.once.Do(func() { close(g.cancelled) })
	}
	return t, err
}

// C62 / spec 7.5.3: a self renew in flight when Shutdown starts must not
// re-register the record the graceful shutdown cancels (it would reach the
// peers after the cancel, and a leave is never evicted as a crash).
func TestShutdown_SelfRenewDoesNotResurrectCancelledRecord(t *testing.T) {
	net := NewMemNetwork()
	a := startNode(t, nodeOpt{net: net})
	var gate *renewGate
	b := startNode(t, nodeOpt{net: net, join: []*tnode{a},
		cfg:  func(c *Config) { c.RenewInterval = 10 * time.Millisecond },
		wrap: func(r Registry) Registry { gate = newRenewGate(r); return gate }})
	gate.c.Store(b.c)
	k := b.c.recs.key
	testkit.EventuallyTrue(t, waitTimeout, "B's record on A", func() bool { return a.has(k) })

	gate.armed.Store(true)
	<-gate.entered // B's renew loop is inside a self renew
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if b.has(k) {
		t.Fatal("B's own record is registered again after its graceful cancel")
	}
	quiet(t, a)
	if a.has(k) {
		t.Fatal("A holds B's record after B's graceful leave (re-registered behind the cancel)")
	}
}

// Durability at a graceful stop: between BeginShutdown (leave announced,
// own record cancelled) and Shutdown the caller stops taking client writes
// (cmd closes HTTP). A write accepted in that window is still forwarded,
// and Shutdown returns only once it is delivered.
func TestShutdown_WritesAcceptedBeforeDrainAreDelivered(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", nil)
	a, b := nodes[0], nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.c.BeginShutdown(ctx); err != nil {
		t.Fatalf("BeginShutdown: %v", err)
	}
	if err := a.c.BeginShutdown(ctx); err != nil {
		t.Fatalf("second BeginShutdown must be a no-op: %v", err)
	}
	if a.has(a.c.recs.key) {
		t.Fatal("BeginShutdown did not cancel the node's own record")
	}
	testkit.EventuallyTrue(t, waitTimeout, "B sees A leaving", func() bool { return statusOf(b.c.Nodes(), a.addr) == NodeLost })

	late := a.clientRegister(t, testInstance("demo.late", "z1")) // in flight on HTTP during its shutdown
	if err := a.c.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if !b.has(late.Key()) {
		t.Fatal("a write accepted before the drain was not delivered by Shutdown")
	}
	if b.has(a.c.recs.key) {
		t.Fatal("A's own record still on B after the graceful stop")
	}
	// After Shutdown the Replicator is inert.
	after := a.clientRegister(t, testInstance("demo.after", "z1"))
	quiet(t, a, b)
	if b.has(after.Key()) {
		t.Fatal("a write after Shutdown was forwarded")
	}
}

// A peer that gossip declares dead while Shutdown drains its queue stops
// holding the drain: Shutdown returns without waiting for its deadline.
func TestShutdown_DrainReleasedByPeerDeath(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", nil)
	a, b := nodes[0], nodes[1]
	quiet(t, a, b)
	net.SetDown(b.addr, true) // B's HTTP is unreachable, its gossip still alive
	a.clientRegister(t, testInstance("demo.stuck", "z1"))
	p := a.peerNamed(b.c.Name())
	testkit.EventuallyTrue(t, waitTimeout, "A's link to B failing", p.failing.Load)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.c.Shutdown(ctx) }()
	testkit.EventuallyTrue(t, waitTimeout, "A draining", func() bool {
		a.c.repl.mu.RLock()
		defer a.c.repl.mu.RUnlock()
		return a.c.repl.closed
	})
	b.kill(t) // crash: A's gossip declares B dead within about a second
	if err := <-done; err != nil {
		t.Fatalf("Shutdown waited for a peer gossip had declared dead: %v", err)
	}
}

// Start after Shutdown is refused: nothing would ever stop the gossip
// listeners and loops it starts.
func TestCluster_StartAfterShutdownFails(t *testing.T) {
	reg := newReg(t)
	self := Self{Env: "test", Zone: "z1", Hostname: "h", HTTPAddr: "10.0.0.1:7171"}
	c, err := New(testConfig(), self, reg, Deps{Transport: NewMemNetwork().Transport(self.HTTPAddr)})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Shutdown(t.Context()); err != nil {
		t.Fatalf("Shutdown before Start: %v", err)
	}
	if err := c.Start(t.Context()); err == nil {
		_ = c.Shutdown(t.Context()) // no-op: the gossip started here leaks
		t.Fatal("Start after Shutdown succeeded")
	}
	c.Register(testInstance("demo.x", "z1"), false) // inert, no panic
}

// Starting and stopping clusters repeatedly (real HTTP between the nodes)
// leaves no goroutine behind: senders, loops, gossip, keep-alive
// connections.
func TestCluster_RepeatedStartStopLeavesNoGoroutine(t *testing.T) {
	testkit.NoLeaks(t)
	for i := range 3 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			a := startHTTPNode(t, nil, nil)
			b := startHTTPNode(t, []*tnode{a}, nil)
			testkit.EventuallyTrue(t, waitTimeout, "mesh", func() bool { return len(a.c.repl.same()) == 1 && len(b.c.repl.same()) == 1 && b.c.Ready() })
			st := a.clientRegister(t, testInstance("demo.cycle", "z1"))
			testkit.EventuallyTrue(t, waitTimeout, "replicated", func() bool { return b.has(st.Key()) })
			if i == 1 {
				b.kill(t) // one crash among the clean stops
			}
		})
	}
}
