package syncup

import (
	"context"

	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// LocalGossip tightens memberlist's timings for clusters on one machine
// (tests, simulations): members converge and failures are detected in well
// under a second. Pass it as Deps.Memberlist.
func LocalGossip(mc *memberlist.Config) {
	mc.TCPTimeout = time.Second
	mc.IndirectChecks = 1
	mc.RetransmitMult = 2
	mc.SuspicionMult = 2
	mc.SuspicionMaxTimeoutMult = 2
	mc.PushPullInterval = 2 * time.Second
	mc.ProbeInterval = 150 * time.Millisecond
	mc.ProbeTimeout = 100 * time.Millisecond
	mc.GossipInterval = 20 * time.Millisecond
	mc.GossipToTheDeadTime = 2 * time.Second
	mc.DeadNodeReclaimTime = time.Second
}

// ErrUnreachable is returned by MemNetwork transports for a peer that is
// not attached, partitioned away, or down.
var ErrUnreachable = errors.New("memnet: peer unreachable")

// MemNetwork is an in-memory peer network for tests and simulations: each
// node gets a Transport bound to its HTTP address, and nodes attach their
// Cluster as the receiving side. Requests and answers are deep-copied, so
// nodes never share memory. Faults: partitions between addresses, a node
// marked down, per-destination delays, and a hook that can fail any call.
// All methods are safe for concurrent use.
type MemNetwork struct {
	mu      sync.RWMutex // guards every field below
	nodes   map[string]*Cluster
	cut     map[[2]string]bool
	down    map[string]bool
	delay   map[string]time.Duration
	hook    func(from, to, call string) error
	observe func(from, to string, op Op)
	counts  map[memCountKey]int
	batches int
}

type memCountKey struct {
	to          string
	kind        OpKind
	replication bool
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{
		nodes:  map[string]*Cluster{},
		cut:    map[[2]string]bool{},
		down:   map[string]bool{},
		delay:  map[string]time.Duration{},
		counts: map[memCountKey]int{},
	}
}

// Transport returns the transport a node at address from uses.
func (n *MemNetwork) Transport(from string) Transport { return &memTransport{n: n, from: from} }

// Attach makes c reachable at addr (its advertised HTTP address).
func (n *MemNetwork) Attach(addr string, c *Cluster) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.nodes[addr] = c
}

// Detach removes the node at addr.
func (n *MemNetwork) Detach(addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.nodes, addr)
}

// Partition cuts traffic between a and b, both directions.
func (n *MemNetwork) Partition(a, b string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[[2]string{a, b}] = true
	n.cut[[2]string{b, a}] = true
}

// Heal removes every partition and every down mark.
func (n *MemNetwork) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.cut)
	clear(n.down)
}

// SetDown makes every call to and from addr fail while down is true.
func (n *MemNetwork) SetDown(addr string, down bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.down[addr] = down
}

// SetDelay delays every call to addr by d (0 removes the delay).
func (n *MemNetwork) SetDelay(addr string, d time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.delay[addr] = d
}

// SetHook installs f, called before every call ("replicate", "snapshot",
// "digest"); a non-nil error fails the call. nil removes it.
func (n *MemNetwork) SetHook(f func(from, to, call string) error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.hook = f
}

// SetObserver installs f, called for every op delivered (after the
// receiver applied its batch). nil removes it.
func (n *MemNetwork) SetObserver(f func(from, to string, op Op)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.observe = f
}

// Delivered counts ops delivered to addr by kind and replication flag.
func (n *MemNetwork) Delivered(to string, kind OpKind, replication bool) int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.counts[memCountKey{to, kind, replication}]
}

// Batches counts replicate requests delivered.
func (n *MemNetwork) Batches() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.batches
}

// DeliveredTotal counts every op delivered to any node.
func (n *MemNetwork) DeliveredTotal() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	t := 0
	for _, v := range n.counts {
		t += v
	}
	return t
}

// route applies faults and returns the destination.
func (n *MemNetwork) route(ctx context.Context, from, to, call string) (*Cluster, error) {
	n.mu.RLock()
	c := n.nodes[to]
	blocked := n.cut[[2]string{from, to}] || n.down[to] || n.down[from]
	d := n.delay[to]
	hook := n.hook
	n.mu.RUnlock()
	if c == nil || blocked {
		return nil, fmt.Errorf("%w: %s -> %s", ErrUnreachable, from, to)
	}
	if hook != nil {
		if err := hook(from, to, call); err != nil {
			return nil, err
		}
	}
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return c, ctx.Err()
}

type memTransport struct {
	n    *MemNetwork
	from string
}

var _ Transport = (*memTransport)(nil)

func (t *memTransport) Replicate(ctx context.Context, addr string, req *ReplicateRequest) (*ReplicateResponse, error) {
	c, err := t.n.route(ctx, t.from, addr, "replicate")
	if err != nil {
		return nil, err
	}
	in := &ReplicateRequest{From: req.From, Ops: make([]Op, len(req.Ops))}
	for i, op := range req.Ops {
		in.Ops[i] = cloneOp(op)
	}
	resp, err := c.handler.replicate(ctx, in)
	if err != nil {
		if errors.Is(err, errBadRequest) {
			return nil, &PermanentError{Err: err}
		}
		return nil, err
	}
	t.n.mu.Lock()
	t.n.batches++
	for _, op := range req.Ops {
		t.n.counts[memCountKey{addr, op.Kind, op.Replication}]++
	}
	obs := t.n.observe
	t.n.mu.Unlock()
	if obs != nil {
		for _, op := range in.Ops {
			obs(t.from, addr, op)
		}
	}
	out := &ReplicateResponse{Results: make([]OpResult, len(resp.Results))}
	for i, r := range resp.Results {
		out.Results[i] = r
		if r.Instance != nil {
			out.Results[i].Instance = cloneInstance(*r.Instance)
		}
	}
	return out, nil
}

func (t *memTransport) Snapshot(ctx context.Context, addr string, sink func(SnapshotItem) error) (bool, error) {
	c, err := t.n.route(ctx, t.from, addr, "snapshot")
	if err != nil {
		return false, err
	}
	ready := c.Ready()
	// serveSnapshot hands out copies made by the registry.
	return ready, c.handler.snapshot(ctx, sink)
}

func (t *memTransport) Digest(ctx context.Context, addr string, req *DigestRequest) (*DigestResponse, error) {
	c, err := t.n.route(ctx, t.from, addr, "digest")
	if err != nil {
		return nil, err
	}
	in := &DigestRequest{From: req.From, Digests: append([]AppDigest(nil), req.Digests...)}
	resp, err := c.handler.digest(ctx, in)
	if err != nil {
		if errors.Is(err, errBadRequest) {
			return nil, &PermanentError{Err: err}
		}
		return nil, err
	}
	return resp, nil // AppState returned copies
}

func cloneOp(op Op) Op {
	out := op
	if op.Instance != nil {
		out.Instance = cloneInstance(*op.Instance)
	}
	if op.Key != nil {
		k := *op.Key
		out.Key = &k
	}
	if op.Set != nil {
		s := *op.Set
		s.Hostnames = append([]string(nil), op.Set.Hostnames...)
		s.Statuses = append([]uint32(nil), op.Set.Statuses...)
		s.Metadata = cloneMetaList(op.Set.Metadata)
		out.Set = &s
	}
	return out
}
