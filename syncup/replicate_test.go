package syncup

import (
	"bytes"
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

// apiReplicator is the shape of api.Replicator; package api is not imported
// here (syncup must not depend on it), so the same method set is asserted.
type apiReplicator interface {
	Register(ins registry.Instance, fromZone bool)
	Renew(k registry.Key, dirty int64, fromZone bool)
	Cancel(t registry.Tombstone, fromZone bool)
	Set(req registry.SetRequest, fromZone bool)
}

var _ apiReplicator = (*Cluster)(nil)

// C56: a client write reaches every same-zone peer as a replicated write,
// with the sender's dirty_timestamp.
func TestReplication_RegisterRenewSetCancelReachAllPeers(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 3, "z1", nil)
	a, b, c := nodes[0], nodes[1], nodes[2]

	stored := a.clientRegister(t, testInstance("demo.svc", "z1"))
	k := stored.Key()
	testkit.EventuallyTrue(t, waitTimeout, "register on B and C", func() bool { return b.has(k) && c.has(k) })
	for _, n := range []*tnode{b, c} {
		got, _ := n.reg.Get(k)
		if got.DirtyTimestamp != stored.DirtyTimestamp {
			t.Fatalf("dirty_timestamp on peer %d, want %d", got.DirtyTimestamp, stored.DirtyTimestamp)
		}
		if len(got.Addrs) != 2 || got.Addrs[1] != "http://10.9.9.9:8000" { // C58: addrs stay a list, never comma-joined (D4)
			t.Fatalf("addrs on peer: %v", got.Addrs)
		}
	}

	// set with one set_timestamp for all nodes (spec 4.4.5)
	req := registry.SetRequest{Env: k.Env, AppID: k.AppID, Zone: k.Zone, Hostnames: []string{k.Hostname},
		Statuses: []uint32{registry.StatusWaiting}, SetTimestamp: stored.DirtyTimestamp + 1000}
	if _, err := a.reg.Set(req); err != nil {
		t.Fatal(err)
	}
	a.c.Set(req, false)
	testkit.EventuallyTrue(t, waitTimeout, "set on B and C", func() bool {
		for _, n := range []*tnode{b, c} {
			got, _ := n.reg.Get(k)
			if got.Status != registry.StatusWaiting || got.DirtyTimestamp != req.SetTimestamp {
				return false
			}
		}
		return true
	})

	// renew: equal dirty on every node → plain success, no handshake
	ins, err := a.reg.Renew(k, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	a.c.Renew(ins.Key(), ins.DirtyTimestamp, false)
	quiet(t, nodes...)
	if v := testutil.ToFloat64(a.c.met.handshakes.WithLabelValues("404")) + testutil.ToFloat64(a.c.met.handshakes.WithLabelValues("409")); v != 0 {
		t.Fatalf("handshakes after an in-sync renew: %v", v)
	}

	tomb, err := a.reg.Cancel(k, 0)
	if err != nil {
		t.Fatal(err)
	}
	a.c.Cancel(tomb, false)
	testkit.EventuallyTrue(t, waitTimeout, "cancel on B and C", func() bool { return !b.has(k) && !c.has(k) })
	quiet(t, nodes...)
	if got := testutil.ToFloat64(a.c.met.sent); got < 4*2 {
		t.Fatalf("sent ops = %v, want >= 8", got)
	}
}

// C60: -404 to a replicated renew → the sender pushes its copy.
func TestReplication_RenewHandshake404SendsCopy(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", nil)
	a, b := nodes[0], nodes[1]

	// Only A has it (as if the register to B had been lost).
	stored, _, err := a.reg.Register(testInstance("demo.svc", "z1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	ins, err := a.reg.Renew(stored.Key(), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	a.c.Renew(ins.Key(), ins.DirtyTimestamp, false)
	testkit.EventuallyTrue(t, waitTimeout, "B got A's copy", func() bool {
		got, ok := b.reg.Get(stored.Key())
		return ok && got.DirtyTimestamp == stored.DirtyTimestamp
	})
	quiet(t, nodes...)
	if v := testutil.ToFloat64(a.c.met.handshakes.WithLabelValues("404")); v != 1 {
		t.Fatalf("404 handshakes = %v, want 1", v)
	}
}

// C60: -409 → the sender adopts the peer's newer copy.
func TestReplication_RenewHandshake409AdoptsNewer(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", nil)
	a, b := nodes[0], nodes[1]

	old := testInstance("demo.svc", "z1")
	old.DirtyTimestamp = 1_000
	if _, _, err := a.reg.Register(old, 0); err != nil {
		t.Fatal(err)
	}
	newer := old
	newer.DirtyTimestamp = 2_000
	newer.Addrs = []string{"grpc://10.1.1.1:1"}
	if _, _, err := b.reg.Register(newer, 0); err != nil {
		t.Fatal(err)
	}
	ins, err := a.reg.Renew(old.Key(), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	a.c.Renew(ins.Key(), ins.DirtyTimestamp, false)
	testkit.EventuallyTrue(t, waitTimeout, "A adopted B's copy", func() bool {
		got, _ := a.reg.Get(old.Key())
		return got.DirtyTimestamp == 2_000 && len(got.Addrs) == 1 && got.Addrs[0] == "grpc://10.1.1.1:1"
	})
	if v := testutil.ToFloat64(a.c.met.handshakes.WithLabelValues("409")); v != 1 {
		t.Fatalf("409 handshakes = %v, want 1", v)
	}
}

// A replicated op is never re-sent: with three nodes one client register
// produces exactly two deliveries.
func TestReplication_ReplicatedOpsAreNotForwarded(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 3, "z1", nil)
	quiet(t, nodes...)
	var mu sync.Mutex
	count := map[string]int{}
	// Forwarded registers only: an anti-entropy round that compared digests
	// before the write may push the instance as an import to any node, the
	// writer included, and that is no forward.
	net.SetObserver(func(from, to string, op Op) {
		if op.Kind == OpRegister && op.Instance != nil && op.Instance.AppID == "demo.once" {
			mu.Lock()
			count[to]++
			mu.Unlock()
		}
	})
	nodes[1].clientRegister(t, testInstance("demo.once", "z1"))
	quiet(t, nodes...)
	mu.Lock()
	defer mu.Unlock()
	if count[nodes[0].addr] != 1 || count[nodes[2].addr] != 1 || count[nodes[1].addr] != 0 {
		t.Fatalf("deliveries per node: %v", count)
	}
}

// C57: a client write reaches one node per other zone as an original
// from-zone op; that zone forwards it inside itself only, never back.
func TestReplication_CrossZoneNoLoops(t *testing.T) {
	net := NewMemNetwork()
	addrA1, addrB1 := nextHTTPAddr(), nextHTTPAddr()
	zoneCfg := func(other string, seed string) func(*Config) {
		return func(c *Config) { c.Zones = map[string][]string{other: {seed}} }
	}
	a1 := startNode(t, nodeOpt{net: net, zone: "za", addr: addrA1, cfg: zoneCfg("zb", addrB1)})
	a2 := startNode(t, nodeOpt{net: net, zone: "za", join: []*tnode{a1}, cfg: zoneCfg("zb", addrB1)})
	b1 := startNode(t, nodeOpt{net: net, zone: "zb", addr: addrB1, cfg: zoneCfg("za", addrA1)})
	b2 := startNode(t, nodeOpt{net: net, zone: "zb", join: []*tnode{b1}, cfg: zoneCfg("za", addrA1)})
	all := []*tnode{a1, a2, b1, b2}
	testkit.EventuallyTrue(t, waitTimeout, "two zones formed", func() bool {
		for _, n := range all {
			if len(n.c.repl.same()) != 1 {
				return false
			}
		}
		return true
	})
	quiet(t, all...)

	type key struct {
		to   string
		kind OpKind
		repl bool
	}
	var mu sync.Mutex
	seen := map[key]int{}
	net.SetObserver(func(from, to string, op Op) {
		if op.Kind == OpImport {
			return // an anti-entropy repair racing a write, not a forward
		}
		app := ""
		switch {
		case op.Instance != nil:
			app = op.Instance.AppID
		case op.Key != nil:
			app = op.Key.AppID
		case op.Set != nil:
			app = op.Set.AppID
		}
		if app == "demo.zone" {
			mu.Lock()
			seen[key{to, op.Kind, op.Replication}]++
			mu.Unlock()
		}
	})
	snapshot := func() map[key]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[key]int{}
		for k, v := range seen {
			out[k] = v
		}
		clear(seen)
		return out
	}
	expect := func(what string, want map[key]int) {
		t.Helper()
		quiet(t, all...)
		got := snapshot()
		if len(got) != len(want) {
			t.Fatalf("%s: deliveries %v, want %v", what, got, want)
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("%s: deliveries %v, want %v", what, got, want)
			}
		}
	}

	// discovery_replication_ops_received_total{op,origin} counts the same.
	recv := func() map[string]float64 {
		out := map[string]float64{}
		for _, n := range all {
			for _, origin := range []string{"peer", "zone"} {
				out[n.addr+" "+origin] = testutil.ToFloat64(n.c.met.received.WithLabelValues(string(OpRegister), origin))
			}
		}
		return out
	}
	before := recv()
	stored := a1.clientRegister(t, testInstance("demo.zone", "za"))
	k := stored.Key()
	expect("register", map[key]int{
		{a2.addr, OpRegister, true}:  1, // same zone, replicated
		{b1.addr, OpRegister, false}: 1, // other zone, original from-zone
		{b2.addr, OpRegister, true}:  1, // forwarded inside zb only
	})
	after := recv()
	for _, n := range all {
		for _, origin := range []string{"peer", "zone"} {
			want := 0.0
			switch {
			case origin == "peer" && (n == a2 || n == b2), origin == "zone" && n == b1:
				want = 1
			}
			if d := after[n.addr+" "+origin] - before[n.addr+" "+origin]; d != want {
				t.Errorf("%s received %v register ops from origin %s, want %v", n.addr, d, origin, want)
			}
		}
	}
	for _, n := range all {
		if got, ok := n.reg.Get(k); !ok || got.DirtyTimestamp != stored.DirtyTimestamp {
			t.Fatalf("node %s: %v %v", n.addr, ok, got.DirtyTimestamp)
		}
	}

	ins, _ := a1.reg.Renew(k, false, 0)
	a1.c.Renew(ins.Key(), ins.DirtyTimestamp, false)
	expect("renew of own-zone instance", map[key]int{
		{a2.addr, OpRenew, true}: 1, {b1.addr, OpRenew, false}: 1, {b2.addr, OpRenew, true}: 1,
	})

	// A client in zb renewing the za instance at b1: not sent across zones.
	ins, _ = b1.reg.Renew(k, false, 0)
	b1.c.Renew(ins.Key(), ins.DirtyTimestamp, false)
	expect("renew of other-zone instance", map[key]int{{b2.addr, OpRenew, true}: 1})

	// An original write that itself came from another zone (fromZone) is
	// never sent to other zones again.
	again := testInstance("demo.zone", "zb")
	st, _, _ := b1.reg.Register(again, 0)
	b1.c.Register(st, true)
	expect("register marked from_zone", map[key]int{{b2.addr, OpRegister, true}: 1})

	req := registry.SetRequest{Env: k.Env, AppID: k.AppID, Zone: k.Zone, Hostnames: []string{k.Hostname},
		Metadata: []map[string]string{{"color": "red"}}, SetTimestamp: stored.DirtyTimestamp + 10}
	if _, err := a2.reg.Set(req); err != nil {
		t.Fatal(err)
	}
	a2.c.Set(req, false)
	expect("set", map[key]int{
		{a1.addr, OpSet, true}: 1, {b1.addr, OpSet, false}: 1, {b2.addr, OpSet, true}: 1,
	})
	got, _ := b2.reg.Get(k)
	if got.Metadata["color"] != "red" {
		t.Fatalf("set not applied in zb: %v", got.Metadata)
	}

	tomb, err := a1.reg.Cancel(k, 0)
	if err != nil {
		t.Fatal(err)
	}
	a1.c.Cancel(tomb, false)
	expect("cancel", map[key]int{
		{a2.addr, OpCancel, true}: 1, {b1.addr, OpCancel, false}: 1, {b2.addr, OpCancel, true}: 1,
	})
	for _, n := range all {
		if n.has(k) {
			t.Fatalf("node %s still has the cancelled instance", n.addr)
		}
	}
}

// A partitioned peer's queue is kept and delivered after the heal; what
// overflowed is counted and repaired by anti-entropy.
func TestReplication_PartitionOverflowRecovers(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", func(c *Config) { c.QueueSize = 4; c.BatchSize = 2 })
	a, b := nodes[0], nodes[1]
	quiet(t, nodes...)

	net.Partition(a.addr, b.addr)
	var keys []registry.Key
	for range 20 {
		st := a.clientRegister(t, testInstance("demo.part", "z1"))
		keys = append(keys, st.Key())
	}
	if d := testutil.ToFloat64(a.c.met.dropped.WithLabelValues(dropOverflow)); d < 1 {
		t.Fatalf("overflow drops = %v, want > 0 (queue 4, 20 ops, peer unreachable)", d)
	}
	p := a.peerNamed(b.c.Name())
	testkit.EventuallyTrue(t, waitTimeout, "link marked failing", func() bool { return p.failing.Load() })
	if st := statusOf(a.c.Nodes(), b.addr); st != NodeLost {
		t.Fatalf("partitioned peer status %d, want LOST", st)
	}

	net.Heal()
	quiet(t, nodes...) // what the queue kept is delivered
	lastIns := a.clientRegister(t, testInstance("demo.part", "z1"))
	last := lastIns.Key()
	testkit.EventuallyTrue(t, waitTimeout, "op after heal delivered", func() bool { return b.has(last) })
	quiet(t, nodes...)
	kept := 0
	for _, k := range keys {
		if b.has(k) {
			kept++
		}
	}
	if kept == 0 {
		t.Fatal("ops queued during the partition were not delivered after the heal")
	}
	// The overflowed ops (counted above) come back only by anti-entropy:
	// a round triggered here, or one that already ran after the heal (the
	// healed member's rejoin triggers one).
	a.c.syncer.trigger(b.c.Name())
	testkit.EventuallyTrue(t, waitTimeout, "anti-entropy repaired the dropped ops", func() bool {
		for _, k := range keys {
			if !b.has(k) {
				return false
			}
		}
		return true
	})
	if r := testutil.ToFloat64(a.c.met.aeRepairs) + testutil.ToFloat64(b.c.met.aeRepairs); r < 1 {
		t.Fatalf("anti-entropy repairs = %v, want the overflowed ops", r)
	}
	if st := statusOf(a.c.Nodes(), b.addr); st != NodeUp {
		t.Fatalf("healed peer status %d, want UP", st)
	}
}

func statusOf(ms []Member, addr string) int {
	for _, m := range ms {
		if m.Addr == addr {
			return m.Status
		}
	}
	return -1
}

// A remote zone whose first seed is down is still reached through another
// of its nodes: the link moves on after a failure.
func TestReplication_CrossZoneSkipsDeadSeed(t *testing.T) {
	net := NewMemNetwork()
	dead := nextHTTPAddr() // never attached
	b1 := startNode(t, nodeOpt{net: net, zone: "zb"})
	a1 := startNode(t, nodeOpt{net: net, zone: "za", cfg: func(c *Config) {
		// One file may list every zone: the node's own entry is ignored.
		c.Zones = map[string][]string{"zb": {dead, b1.addr}, "za": {nextHTTPAddr()}}
	}})
	if links := a1.c.repl.links(); len(links) != 1 || links[0].zone != "zb" {
		t.Fatalf("zone links %d, want only zb", len(links))
	}
	stored := a1.clientRegister(t, testInstance("demo.rotate", "za"))
	testkit.EventuallyTrue(t, waitTimeout, "zb reached through its live node", func() bool { return b1.has(stored.Key()) })
	// a1's own infra.discovery record went across too (cross-zone register).
	testkit.EventuallyTrue(t, waitTimeout, "self record across zones", func() bool { return b1.has(a1.c.recs.key) })
}

// C59: every request to a peer is bounded by peer_timeout (validated < 30 s)
// and the write itself never waits for peers.
func TestReplication_PeerTimeoutBoundsEachRequest(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", func(c *Config) { c.PeerTimeout = 100 * time.Millisecond })
	a, b := nodes[0], nodes[1]
	quiet(t, nodes...)
	var attempts atomic.Int32
	net.SetHook(func(from, to, call string) error {
		if call == "replicate" && to == b.addr {
			attempts.Add(1)
		}
		return nil
	})
	net.SetDelay(b.addr, time.Hour)                                // a peer that never answers
	stored := a.clientRegister(t, testInstance("demo.slow", "z1")) // returns at once
	p := a.peerNamed(b.c.Name())
	testkit.EventuallyTrue(t, waitTimeout, "requests time out and are retried", func() bool { return attempts.Load() >= 3 && p.failing.Load() })
	net.SetDelay(b.addr, 0)
	testkit.EventuallyTrue(t, waitTimeout, "delivered once the peer answers", func() bool { return b.has(stored.Key()) })
}

// startUnevenLimits starts A (batches of 1024) and B (takes 16 ops per
// request), joined, ready and quiet.
func startUnevenLimits(t *testing.T, net *MemNetwork) (a, b *tnode) {
	t.Helper()
	a = startNode(t, nodeOpt{net: net, cfg: func(c *Config) { c.BatchSize = 1024; c.MaxBatchOps = 1024 }})
	b = startNode(t, nodeOpt{net: net, join: []*tnode{a}, cfg: func(c *Config) { c.BatchSize = 16; c.MaxBatchOps = 16 }})
	testkit.EventuallyTrue(t, waitTimeout, "mesh", func() bool { return len(a.c.repl.same()) == 1 && b.c.Ready() })
	quiet(t, a, b)
	return a, b
}

// A peer refusing a batch as a whole (here: more ops than its
// max_batch_ops; over HTTP also a body over its max_body_bytes) must not
// cost the ops: the sender halves the batch until the peer takes it.
// Nodes may run with different limits (a rolling config change).
func TestReplication_RefusedBatchIsSplit(t *testing.T) {
	net := NewMemNetwork()
	a, b := startUnevenLimits(t, net)

	net.Partition(a.addr, b.addr) // ops pile up behind the first, failing batch
	var keys []registry.Key
	for range 300 {
		st := a.clientRegister(t, testInstance("demo.split", "z1"))
		keys = append(keys, st.Key())
	}
	net.Heal()
	quiet(t, a, b)
	for _, k := range keys {
		if !b.has(k) {
			t.Fatalf("op lost: %v (failed ops %v)", k, testutil.ToFloat64(a.c.met.failed))
		}
	}
	if f := testutil.ToFloat64(a.c.met.failed); f != 0 {
		t.Fatalf("failed ops = %v, want 0", f)
	}
}

// clientRenew renews k on n as the api does for a client renew.
func (n *tnode) clientRenew(t testing.TB, k registry.Key) {
	t.Helper()
	ins, err := n.reg.Renew(k, false, 0)
	if err != nil {
		t.Fatal(err)
	}
	n.c.Renew(ins.Key(), ins.DirtyTimestamp, false)
}

// Below saturation renews wait up to cluster.renew_linger for company, and
// an op that is not a renew ends the wait at once, taking them along: 5
// renews and a register reach the peer as one replicate request. (With a
// 1 s linger the renews cannot have left before the register was queued
// unless the test goroutine stalled that long between two calls.)
func TestReplication_RenewsLingerAndARegisterEndsTheWait(t *testing.T) {
	net := NewMemNetwork()
	cfg := func(c *Config) { c.RenewLinger = time.Second }
	nodes := startCluster(t, net, 2, "z1", cfg)
	a, b := nodes[0], nodes[1]
	var keys []registry.Key
	for range 5 {
		st := a.clientRegister(t, testInstance("demo.linger", "z1"))
		keys = append(keys, st.Key())
	}
	quiet(t, a, b)
	batches, renews := net.Batches(), net.Delivered(b.addr, OpRenew, true)
	hist := histCount(t, a, "discovery_replication_batch_ops")

	// The sender waits with the first renew before the others are queued
	// (else they could all be queued before it woke, lingering or not).
	a.clientRenew(t, keys[0])
	testkit.EventuallyTrue(t, waitTimeout, "sender lingering with the first renew", func() bool {
		buf := make([]byte, 1<<20)
		return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("(*link).linger("))
	})
	for _, k := range keys[1:] {
		a.clientRenew(t, k)
	}
	last := a.clientRegister(t, testInstance("demo.linger", "z1"))
	testkit.EventuallyTrue(t, waitTimeout, "register replicated", func() bool { return b.has(last.Key()) })
	quiet(t, a, b)
	if got := net.Delivered(b.addr, OpRenew, true) - renews; got != 5 {
		t.Fatalf("renews delivered = %d, want 5", got)
	}
	if got := net.Batches() - batches; got != 1 {
		t.Fatalf("replicate requests = %d, want 1 (5 renews and the register together)", got)
	}
	if got := histCount(t, a, "discovery_replication_batch_ops") - hist; got != 1 {
		t.Fatalf("batch histogram observed %d batches, want 1", got)
	}
	// The register did not wait out the second: every op of the batch was
	// acknowledged within half of it (the first renew's lag includes the
	// test's wait for the sender above, some ms).
	if slow := histCount(t, a, "discovery_replication_lag_seconds") - histBelow(t, a, "discovery_replication_lag_seconds", 0.5); slow != 0 {
		t.Fatalf("%d ops took over 0.5 s: the register waited for the linger", slow)
	}
}

// Renews alone still leave when the linger ends.
func TestReplication_LoneRenewsLeaveAfterTheLinger(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", func(c *Config) { c.RenewLinger = 20 * time.Millisecond })
	a, b := nodes[0], nodes[1]
	st := a.clientRegister(t, testInstance("demo.linger", "z1"))
	k := st.Key()
	quiet(t, a, b)
	renews := net.Delivered(b.addr, OpRenew, true)
	start := time.Now()
	for range 3 {
		a.clientRenew(t, k)
	}
	testkit.EventuallyTrue(t, waitTimeout, "renews replicated", func() bool {
		return net.Delivered(b.addr, OpRenew, true)-renews == 3
	})
	// Nothing else ends the wait here, and a timer never fires early.
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("renews delivered after %s, before the 20ms linger", d)
	}
}

// A graceful shutdown does not wait out a linger: the lingering renews
// leave at once (with the cancel of the node's own record, which ends the
// wait; the drain would end it too), well within a shutdown deadline
// shorter than the linger.
func TestReplication_ShutdownSendsLingeringRenews(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", func(c *Config) { c.RenewLinger = time.Second })
	a, b := nodes[0], nodes[1]
	st := a.clientRegister(t, testInstance("demo.linger", "z1"))
	quiet(t, a, b)
	renews := net.Delivered(b.addr, OpRenew, true)
	a.clientRenew(t, st.Key())
	testkit.EventuallyTrue(t, waitTimeout, "sender lingering", func() bool {
		buf := make([]byte, 1<<20)
		return bytes.Contains(buf[:runtime.Stack(buf, true)], []byte("(*link).linger("))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	if err := a.c.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if got := net.Delivered(b.addr, OpRenew, true) - renews; got != 1 {
		t.Fatalf("renews delivered by the drain = %d, want 1", got)
	}
}

// histCount is the sample count of a histogram of n's metrics.
func histCount(t testing.TB, n *tnode, name string) uint64 {
	t.Helper()
	mfs, err := n.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// histBelow is the cumulative count of a histogram of n's metrics at the
// bucket with upper bound le.
func histBelow(t testing.TB, n *tnode, name string, le float64) uint64 {
	t.Helper()
	mfs, err := n.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, b := range mf.GetMetric()[0].GetHistogram().GetBucket() {
			if b.GetUpperBound() == le {
				return b.GetCumulativeCount()
			}
		}
	}
	t.Fatalf("no bucket le=%v in %s", le, name)
	return 0
}

// An original register from another zone that a local tombstone blocks is
// answered 0 and not forwarded: nothing is stored, so there is no copy to
// send (it used to forward a zero instance, which the peer refused).
func TestReplication_BlockedCrossZoneRegisterIsNotForwarded(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "zb", nil)
	quiet(t, nodes...)
	ins := testInstance("demo.blocked", "za")
	if _, _, err := nodes[0].reg.Register(ins, 0); err != nil { // local only: not replicated
		t.Fatal(err)
	}
	tomb, err := nodes[0].reg.Cancel(ins.Key(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var toPeer *link
	for _, l := range nodes[0].c.repl.links() {
		if l.zone == "" {
			toPeer = l
		}
	}
	if toPeer == nil {
		t.Fatal("no link to the peer")
	}
	sentBefore := toPeer.acked.Load() + toPeer.failedOps.Load()

	old := ins
	old.DirtyTimestamp = tomb.At - 1 // older than the tombstone
	resp, err := net.Transport("zone-a-node").Replicate(t.Context(), nodes[0].addr, &ReplicateRequest{
		From: "zone-a-node", Ops: []Op{{Kind: OpRegister, FromZone: true, Instance: &old}},
	})
	if err != nil || len(resp.Results) != 1 || resp.Results[0].Code != CodeOK || resp.Results[0].Applied {
		t.Fatalf("replicate: %v %+v", err, resp)
	}
	quiet(t, nodes...)
	if n := toPeer.acked.Load() + toPeer.failedOps.Load() - sentBefore; n != 0 {
		t.Fatalf("%d ops went to the peer (failed: %d)", n, toPeer.failedOps.Load())
	}
	if nodes[1].has(ins.Key()) {
		t.Fatal("the peer holds the blocked instance")
	}
}

// Forwards tells the API layer whether a register accepted now reaches a
// peer: not on a lone node; a write from another zone (fromZone) only
// when a same-zone peer is there, an original one also when another zone
// is configured.
func TestCluster_Forwards(t *testing.T) {
	net := NewMemNetwork()
	a := startNode(t, nodeOpt{net: net, zone: "z1"})
	if a.c.Forwards(false) || a.c.Forwards(true) {
		t.Fatal("a lone node forwards")
	}
	startNode(t, nodeOpt{net: net, zone: "z1", join: []*tnode{a}})
	testkit.EventuallyTrue(t, waitTimeout, "the same-zone peer is a target", func() bool { return a.c.Forwards(true) && a.c.Forwards(false) })

	z := startNode(t, nodeOpt{net: net, zone: "z1", cfg: func(c *Config) { c.Zones = map[string][]string{"z2": {"10.0.9.1:7171"}} }})
	if !z.c.Forwards(false) || z.c.Forwards(true) {
		t.Fatalf("a node with another zone and no peer: Forwards(false) %v, Forwards(true) %v; want true, false",
			z.c.Forwards(false), z.c.Forwards(true))
	}
}
