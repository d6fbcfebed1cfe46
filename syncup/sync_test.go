package syncup

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

// Anti-entropy repairs divergence in both directions, and a cancel made
// during a partition wins over the stale copy after the heal (D18).
func TestAntiEntropy_RepairsBothWaysAndTombstonesWin(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", nil)
	a, b := nodes[0], nodes[1]

	shared := a.clientRegister(t, testInstance("demo.ae", "z1"))
	testkit.EventuallyTrue(t, waitTimeout, "shared instance replicated", func() bool { return b.has(shared.Key()) })
	quiet(t, nodes...)

	net.Partition(a.addr, b.addr)
	onlyA, _, _ := a.reg.Register(testInstance("demo.ae", "z1"), 0)
	onlyB, _, _ := b.reg.Register(testInstance("demo.other", "z1"), 0)
	tomb, err := a.reg.Cancel(shared.Key(), 0)
	if err != nil {
		t.Fatal(err)
	}
	// The cancel's forward is lost (as when the member is removed while the
	// link is cut): it is never handed to the Replicator, so no sender can
	// still hold it in flight and deliver it after the heal. Only
	// anti-entropy can carry it now.
	_ = tomb
	net.Heal()

	a.c.syncer.trigger(b.c.Name())
	testkit.EventuallyTrue(t, waitTimeout, "both sides converged", func() bool {
		return b.has(onlyA.Key()) && a.has(onlyB.Key()) && !a.has(shared.Key()) && !b.has(shared.Key())
	})
	got, _ := b.reg.Get(onlyA.Key())
	if got.DirtyTimestamp != onlyA.DirtyTimestamp || got.RegTimestamp != onlyA.RegTimestamp {
		t.Fatalf("anti-entropy must keep the timestamps: got %+v want %+v", got, onlyA)
	}
	if r := testutil.ToFloat64(a.c.met.aeRepairs); r < 3 {
		t.Fatalf("repairs = %v, want >= 3", r)
	}
	// Digests now agree: another round repairs nothing.
	n, err := a.c.syncer.round(t.Context(), a.peerNamed(b.c.Name()))
	if err != nil || n != 0 {
		t.Fatalf("second round: repairs %d err %v", n, err)
	}
}

// A periodic round runs without a trigger (interval + jitter).
func TestAntiEntropy_Periodic(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", func(c *Config) { c.AntiEntropyInterval = 50 * time.Millisecond })
	a, b := nodes[0], nodes[1]
	only, _, _ := a.reg.Register(testInstance("demo.periodic", "z1"), 0)
	testkit.EventuallyTrue(t, waitTimeout, "periodic anti-entropy copied the instance", func() bool { return b.has(only.Key()) })
	if testutil.ToFloat64(a.c.met.aeRounds.WithLabelValues("ok"))+testutil.ToFloat64(b.c.met.aeRounds.WithLabelValues("ok")) < 1 {
		t.Fatal("no anti-entropy round counted")
	}
}

func fill(t testing.TB, n *tnode, count int) {
	t.Helper()
	for i := range count {
		ins := testInstance(fmt.Sprintf("demo.fill.%d", i%50), "z1")
		if _, _, err := n.reg.Register(ins, 0); err != nil {
			t.Fatal(err)
		}
	}
}

func instanceCount(n *tnode) int {
	total := 0
	for _, v := range n.reg.Stats().Instances {
		total += v
	}
	return total
}

// C61: a node joining a cluster copies the full registry of a peer before
// it reports ready.
func TestStartupSync_NotReadyUntilHoldingAll(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", nil)
	const N = 3000
	fill(t, nodes[0], N)
	// a tombstone travels with the snapshot too
	gone := registry.Key{Env: "test", AppID: "demo.gone", Zone: "z1", Hostname: "x"}
	_, _ = nodes[0].reg.Cancel(gone, time.Now().UnixNano())
	want := instanceCount(nodes[0])
	// The joining node syncs from either peer: both must hold everything,
	// as they would in a running cluster.
	nodes[0].c.syncer.trigger(nodes[1].c.Name())
	testkit.EventuallyTrue(t, waitTimeout, "second peer holds the filled registry", func() bool {
		_, ok := nodes[1].reg.Get(gone)
		return instanceCount(nodes[1]) == want && !ok && nodes[1].reg.Stats().Tombstones > 0
	})
	for _, n := range nodes {
		net.SetDelay(n.addr, 200*time.Millisecond) // snapshots take a while
	}
	c := startNode(t, nodeOpt{net: net, join: nodes[:1]})
	if c.c.Ready() {
		t.Fatal("joining node ready before its sync")
	}
	testkit.EventuallyTrue(t, waitTimeout, "new node ready", c.c.Ready)
	if got := instanceCount(c); got < want {
		t.Fatalf("ready with %d instances, want >= %d", got, want)
	}
	late := testInstance("demo.gone", "z1")
	late.Hostname, late.DirtyTimestamp = "x", 1 // older than the cancel
	if c.reg.Import(late) {
		t.Fatal("the synced tombstone must block an older copy")
	}
	if g := testutil.ToFloat64(c.c.met.syncDur); g <= 0 {
		t.Fatalf("startup sync duration gauge = %v", g)
	}
}

// A node with no peer configured is ready at once, and its own
// infra.discovery record is there before anything is served (C62, C63).
func TestStartupSync_NoPeersReadyAtOnce(t *testing.T) {
	n := startNode(t, nodeOpt{net: NewMemNetwork()})
	if !n.c.Ready() {
		t.Fatal("lone node not ready right after Start")
	}
	if _, ok := n.reg.Get(n.c.recs.key); !ok {
		t.Fatal("self record missing right after Start (C63)")
	}
}

// C55: init_protect keeps a lone node unready until the timeout.
func TestInitProtect_LoneNodeWaitsForTimeout(t *testing.T) {
	n := startNode(t, nodeOpt{net: NewMemNetwork(), cfg: func(c *Config) {
		c.InitProtect = true
		c.InitProtectTimeout = 300 * time.Millisecond
	}})
	if n.c.Ready() {
		t.Fatal("init-protected node ready at once")
	}
	start := time.Now()
	testkit.EventuallyTrue(t, waitTimeout, "protect timeout ends the gate", n.c.Ready)
	if time.Since(n.c.syncer.startAt) < 300*time.Millisecond {
		t.Fatalf("ready after %s, before init_protect_timeout", time.Since(start))
	}
}

// C55: init_protect ends at the first successful sync from a peer.
func TestInitProtect_EndsAtFirstSync(t *testing.T) {
	net := NewMemNetwork()
	first := startNode(t, nodeOpt{net: net})
	fill(t, first, 100)
	n := startNode(t, nodeOpt{net: net, join: []*tnode{first}, cfg: func(c *Config) { c.InitProtect = true }})
	testkit.EventuallyTrue(t, waitTimeout, "synced node ready", n.c.Ready)
	if got, want := instanceCount(n), instanceCount(first); got < want {
		t.Fatalf("ready with %d instances, want %d", got, want)
	}
}

// Without init_protect, a sync that keeps failing ends at sync_timeout.
func TestStartupSync_TimeoutMakesReady(t *testing.T) {
	net := NewMemNetwork()
	first := startNode(t, nodeOpt{net: net})
	net.SetHook(func(from, to, call string) error {
		if call == "snapshot" {
			return ErrUnreachable
		}
		return nil
	})
	n := startNode(t, nodeOpt{net: net, join: []*tnode{first}, cfg: func(c *Config) { c.SyncTimeout = 300 * time.Millisecond }})
	if n.c.Ready() {
		t.Fatal("ready before any sync")
	}
	testkit.EventuallyTrue(t, waitTimeout, "sync_timeout ends the sync", n.c.Ready)
}

// Evictions are local and leave no tombstone, and nodes scan at different
// times. Anti-entropy and startup sync must not copy an instance that is
// already past evict_after: the node that evicted it would take it back
// from a peer that has not scanned yet, that peer would later take it back
// in turn, and a dead instance would bounce between nodes for ever.
func TestAntiEntropy_DoesNotResurrectEvictedInstances(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", nil)
	a, b := nodes[0], nodes[1]
	quiet(t, a, b)

	dead := testInstance("demo.dead", "z1")
	silent := time.Now().Add(-registry.DefaultConfig().EvictAfter - time.Minute).UnixNano()
	dead.RegTimestamp, dead.UpTimestamp, dead.DirtyTimestamp, dead.LatestTimestamp = silent, silent, silent, silent
	dead.RenewTimestamp = silent
	if !b.reg.Import(dead) { // A already evicted it; B has not scanned yet
		t.Fatal("setup: import")
	}
	alive := testInstance("demo.dead", "z1") // same app, renewing
	if _, _, err := b.reg.Register(alive, 0); err != nil {
		t.Fatal(err)
	}

	// Pull (A asks B) and push (B sends its state to A).
	for _, from := range []*tnode{a, b} {
		to := b
		if from == b {
			to = a
		}
		if _, err := from.c.syncer.round(t.Context(), from.peerNamed(to.c.Name())); err != nil {
			t.Fatal(err)
		}
		if !a.has(alive.Key()) {
			t.Fatal("anti-entropy did not copy the live instance")
		}
		if a.has(dead.Key()) {
			t.Fatal("anti-entropy copied an instance silent for longer than evict_after")
		}
	}

	// Startup sync of a new node skips it too (synced from B, which has it).
	addr := nextHTTPAddr()
	net.SetHook(func(from, to, call string) error {
		if from == addr && to == a.addr && call == "snapshot" {
			return ErrUnreachable
		}
		return nil
	})
	c := startNode(t, nodeOpt{net: net, addr: addr, join: []*tnode{b}})
	testkit.EventuallyTrue(t, waitTimeout, "new node synced", c.c.Ready)
	testkit.EventuallyTrue(t, waitTimeout, "live instance on the new node", func() bool { return c.has(alive.Key()) })
	if c.has(dead.Key()) {
		t.Fatal("startup sync copied an instance silent for longer than evict_after")
	}
}

// Anti-entropy pushes within the peer's limits too (halving a refused
// batch), so nodes with different limits still converge.
func TestAntiEntropy_PushSplitsRefusedBatch(t *testing.T) {
	a, b := startUnevenLimits(t, NewMemNetwork())
	fill(t, a, 200) // local only: anti-entropy must carry them
	if _, err := a.c.syncer.round(t.Context(), a.peerNamed(b.c.Name())); err != nil {
		t.Fatalf("anti-entropy round: %v", err)
	}
	if got, want := instanceCount(b), instanceCount(a); got != want {
		t.Fatalf("B holds %d instances after the push, want %d", got, want)
	}
}

// A joining node receives the registry once, by its startup sync: while it
// is not ready it runs no anti-entropy round (which would pull every app
// again, as its digests are all missing) and refuses peers' rounds (which
// would push every instance again), competing with the sync for CPU. Once
// ready it reconciles with the peers that joined.
func TestStartupSync_NoAntiEntropyBeforeReady(t *testing.T) {
	net := NewMemNetwork()
	a := startNode(t, nodeOpt{net: net})
	fill(t, a, 300)
	bAddr := nextHTTPAddr()
	var bNode atomic.Pointer[tnode]
	aDigestedB := make(chan struct{})
	var once sync.Once
	var earlyDigests atomic.Int32
	net.SetHook(func(from, to, call string) error {
		switch {
		case call == "digest" && from == bAddr && (bNode.Load() == nil || !bNode.Load().c.Ready()):
			earlyDigests.Add(1)
		case call == "digest" && from == a.addr && to == bAddr:
			once.Do(func() { close(aDigestedB) })
		case call == "snapshot" && from == bAddr:
			// Hold b's startup sync until a has tried its round with b
			// (a triggers it as soon as b joins).
			select {
			case <-aDigestedB:
			case <-time.After(5 * time.Second):
			}
		}
		return nil
	})
	b := startNode(t, nodeOpt{net: net, addr: bAddr, join: []*tnode{a}})
	bNode.Store(b)
	testkit.EventuallyTrue(t, waitTimeout, "b ready", b.c.Ready)
	testkit.EventuallyTrue(t, waitTimeout, "b's round with a after ready", func() bool { return testutil.ToFloat64(b.c.met.aeRounds.WithLabelValues("ok")) >= 1 })
	quiet(t, a, b)
	if n := net.Delivered(b.addr, OpImport, true); n != 0 {
		t.Errorf("anti-entropy pushed %d instances to the syncing node", n)
	}
	if n := earlyDigests.Load(); n != 0 {
		t.Errorf("the syncing node ran %d anti-entropy rounds before it was ready", n)
	}
	if r := testutil.ToFloat64(b.c.met.aeRepairs); r != 0 {
		t.Errorf("b's round after the sync repaired %v items, want 0", r)
	}
	if got, want := instanceCount(b), instanceCount(a); got != want {
		t.Fatalf("b holds %d instances, a %d", got, want)
	}
}

// One anti-entropy round carries at most max_repair_instances each way
// (whole apps, at least one), so two nodes that differ in every app never
// ship their whole registries at once; the following rounds repair the rest.
func TestAntiEntropy_RoundBoundedByMaxRepairInstances(t *testing.T) {
	const budget = 25
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", func(c *Config) { c.MaxRepairInstances = budget })
	a, b := nodes[0], nodes[1]
	quiet(t, nodes...)
	// Straight into each registry: nothing is replicated, and the peers
	// stay connected (a partition can flap membership, and a rejoin starts
	// a round of its own beside the test's, which doubles what one
	// measurement window carries).
	var onA, onB []registry.Key
	for app := range 20 {
		for range 10 { // 200 instances per side, 10 per app
			ia, _, _ := a.reg.Register(testInstance(fmt.Sprintf("demo.a%02d", app), "z1"), 0)
			ib, _, _ := b.reg.Register(testInstance(fmt.Sprintf("demo.b%02d", app), "z1"), 0)
			onA, onB = append(onA, ia.Key()), append(onB, ib.Key())
		}
	}
	missing := func(n *tnode, keys []registry.Key) int {
		c := 0
		for _, k := range keys {
			if !n.has(k) {
				c++
			}
		}
		return c
	}
	rounds := 0
	for missing(b, onA)+missing(a, onB) > 0 {
		beforeB, beforeA := missing(b, onA), missing(a, onB)
		if _, err := a.c.syncer.round(t.Context(), a.peerNamed(b.c.Name())); err != nil {
			t.Fatal(err)
		}
		rounds++
		gotB, gotA := beforeB-missing(b, onA), beforeA-missing(a, onB)
		if gotB > budget || gotA > budget {
			t.Fatalf("round %d carried %d to b and %d to a, budget %d", rounds, gotB, gotA, budget)
		}
		if gotB+gotA == 0 {
			t.Fatalf("round %d repaired nothing with %d+%d missing", rounds, missing(b, onA), missing(a, onB))
		}
		if rounds > 40 {
			t.Fatal("not converged after 40 rounds")
		}
	}
	if rounds < 200/budget {
		t.Fatalf("converged in %d rounds: the budget of %d was not applied", rounds, budget)
	}
}

// trickleTransport delivers a's snapshot to the syncing node slowly: a
// pause before every 100 items, and with stallAfter > 0 no item after that
// many until the request ends.
type trickleTransport struct {
	Transport
	gap        time.Duration
	stallAfter int
}

func (t *trickleTransport) Snapshot(ctx context.Context, addr string, sink func(SnapshotItem) error) (bool, error) {
	n := 0
	return t.Transport.Snapshot(ctx, addr, func(it SnapshotItem) error {
		if t.stallAfter > 0 && n == t.stallAfter {
			<-ctx.Done()
			return ctx.Err()
		}
		if n%100 == 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(t.gap):
			}
		}
		n++
		return sink(it)
	})
}

// A startup sync that keeps making progress is not cut at sync_timeout
// (a node cut there went ready without the rest of a 1 000 000-instance
// snapshot); one that stops delivering is cut after sync_timeout without
// progress, and the node goes ready with what it has.
func TestStartupSync_ProgressNotCutAtSyncTimeout(t *testing.T) {
	net := NewMemNetwork()
	a := startNode(t, nodeOpt{net: net})
	fill(t, a, 2000)
	cfg := func(c *Config) { c.SyncTimeout, c.PeerTimeout = 300*time.Millisecond, 300*time.Millisecond }

	bAddr := nextHTTPAddr()
	start := time.Now()
	b := startNode(t, nodeOpt{net: net, addr: bAddr, join: []*tnode{a}, cfg: cfg,
		tr: &trickleTransport{Transport: net.Transport(bAddr), gap: 40 * time.Millisecond}})
	testkit.EventuallyTrue(t, waitTimeout, "b ready", b.c.Ready)
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Fatalf("ready after %v, before the trickle (20 pauses of 40 ms) could end: the sync was cut", d)
	}
	if got, want := instanceCount(b), instanceCount(a); got != want {
		t.Fatalf("b went ready with %d of %d instances", got, want)
	}

	// The stalled transfer is cut after 300 ms without an item, not at the
	// whole transfer's bound (3 s), and c goes ready (anti-entropy then
	// brings the rest).
	cAddr := nextHTTPAddr()
	start = time.Now()
	c := startNode(t, nodeOpt{net: net, addr: cAddr, join: []*tnode{a}, cfg: cfg,
		tr: &trickleTransport{Transport: net.Transport(cAddr), gap: time.Millisecond, stallAfter: 500}})
	testkit.EventuallyTrue(t, waitTimeout, "c ready after the stalled sync", c.c.Ready)
	if d := time.Since(start); d >= 2500*time.Millisecond {
		t.Fatalf("c ready after %v: the stalled snapshot was held to the transfer's bound", d)
	}
}
