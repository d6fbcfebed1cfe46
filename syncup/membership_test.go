package syncup

import (
	"context"
	stdnet "net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

func selfRecordKey(n *tnode) registry.Key { return n.c.recs.key }

// C38 / 4.10.2: the node list comes from gossip: same-zone members with
// their advertised HTTP address, self included, all UP.
func TestMembership_NodesListsAliveMembers(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 3, "z1", nil)
	other := startNode(t, nodeOpt{net: net, zone: "z2", join: nodes[:1]}) // same gossip, other zone
	testkit.EventuallyTrue(t, waitTimeout, "other-zone member known", func() bool { return len(nodes[0].c.members.table()) == 3 })
	for _, n := range nodes {
		ms := n.c.Nodes()
		if len(ms) != 3 {
			t.Fatalf("%s: Nodes() = %+v, want 3 same-zone members", n.addr, ms)
		}
		selfSeen := false
		for _, m := range ms {
			if m.Status != NodeUp || m.Zone != "z1" || m.Addr == other.addr {
				t.Fatalf("%s: bad member %+v", n.addr, m)
			}
			if strings.HasPrefix(m.Addr, "127.0.0.1") {
				t.Fatalf("Nodes() must give the HTTP address, not the gossip one: %+v", m)
			}
			selfSeen = selfSeen || (m.Self && m.Addr == n.addr)
		}
		if !selfSeen {
			t.Fatalf("%s: self missing from %+v", n.addr, ms)
		}
	}
	// C62: every node's infra.discovery record reached every node (pushed on join).
	testkit.EventuallyTrue(t, waitTimeout, "every infra.discovery record everywhere", func() bool {
		for _, n := range nodes {
			for _, m := range nodes {
				ins, ok := n.reg.Get(selfRecordKey(m))
				if !ok || len(ins.Addrs) != 1 || ins.Addrs[0] != "http://"+m.addr || ins.Status != registry.StatusUp {
					return false
				}
			}
		}
		return true
	})
}

// A node that dies without leaving is removed from Nodes() and its
// infra.discovery record is evicted on the survivors, without a tombstone.
func TestMembership_CrashEvictsSelfRecord(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 3, "z1", nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	k := selfRecordKey(c)
	testkit.EventuallyTrue(t, waitTimeout, "C's record on A and B", func() bool { return a.has(k) && b.has(k) })

	start := time.Now()
	c.kill(t)
	net.Detach(c.addr)
	testkit.EventuallyTrue(t, waitTimeout, "C's record evicted on the survivors", func() bool { return !a.has(k) && !b.has(k) })
	t.Logf("record evicted %s after the crash", time.Since(start))
	for _, n := range []*tnode{a, b} {
		if len(n.c.Nodes()) != 2 {
			t.Fatalf("Nodes() after crash: %+v", n.c.Nodes())
		}
		for _, tb := range n.reg.Snapshot().Tombstones {
			if tb.Key == k {
				t.Fatal("a crash must not leave a tombstone (eviction, not cancel)")
			}
		}
	}
	if v := testutil.ToFloat64(a.c.met.evicted); v != 1 {
		t.Fatalf("dead-node evictions on A = %v", v)
	}

	// A node that comes back (same hostname, new gossip name) registers itself again.
	back := startNode(t, nodeOpt{net: net, addr: c.addr, join: []*tnode{a}})
	testkit.EventuallyTrue(t, waitTimeout, "restarted node's record is back on A and B", func() bool { return a.has(k) && b.has(k) && back.has(k) })
}

// C62: a graceful leave cancels the node's record (replicated, tombstone)
// and is not mistaken for a crash.
func TestMembership_GracefulLeaveCancelsRecord(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 3, "z1", nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	k := selfRecordKey(c)
	testkit.EventuallyTrue(t, waitTimeout, "C's record on A and B", func() bool { return a.has(k) && b.has(k) })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.c.Shutdown(ctx); err != nil {
		t.Fatalf("graceful shutdown: %v", err)
	}
	if err := c.c.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown must be a no-op: %v", err)
	}
	for _, n := range []*tnode{a, b} {
		if n.has(k) {
			t.Fatalf("%s still has the record right after the graceful shutdown (cancel drained before leave)", n.addr)
		}
		found := false
		for _, tb := range n.reg.Snapshot().Tombstones {
			found = found || tb.Key == k
		}
		if !found {
			t.Fatalf("%s: no tombstone for a graceful cancel", n.addr)
		}
	}
	testkit.EventuallyTrue(t, waitTimeout, "C gone from the node lists", func() bool { return len(a.c.Nodes()) == 2 && len(b.c.Nodes()) == 2 })
	if v := testutil.ToFloat64(a.c.met.evicted); v != 0 {
		t.Fatalf("a graceful leave was treated as a crash (%v evictions)", v)
	}
	// C's own Replicator is inert after Shutdown.
	c.c.Register(testInstance("demo.late", "z1"), false)
}

// A node started before its seed starts alone after join_timeout and
// keeps rejoining every rejoin_interval until the seed is up.
func TestMembership_RejoinWhenSeedAppears(t *testing.T) {
	net := NewMemNetwork()
	ln, err := stdnet.Listen("tcp", "127.0.0.1:0") // reserve a port for the late seed
	if err != nil {
		t.Fatal(err)
	}
	seedAddr := ln.Addr().String()
	_ = ln.Close()
	lone := startNode(t, nodeOpt{net: net, cfg: func(c *Config) {
		c.Join = []string{seedAddr} // nothing listens there yet
		c.JoinTimeout = 200 * time.Millisecond
	}})
	testkit.EventuallyTrue(t, waitTimeout, "lone node ready after join_timeout", lone.c.Ready)
	if len(lone.c.repl.same()) != 0 {
		t.Fatal("lone node has peers")
	}
	seed := startNode(t, nodeOpt{net: net, cfg: func(c *Config) { c.Bind = seedAddr }})
	testkit.EventuallyTrue(t, waitTimeout, "lone node rejoined the late seed", func() bool {
		return len(lone.c.repl.same()) == 1 && len(seed.c.repl.same()) == 1
	})
}

// Nodes sharing the secret and label form a cluster; a node with another
// label (another stack on the same network) stays out.
func TestMembership_SecretAndLabel(t *testing.T) {
	net := NewMemNetwork()
	secret := func(c *Config) { c.Secret = "MDEyMzQ1Njc4OWFiY2RlZg==" }
	a := startNode(t, nodeOpt{net: net, cfg: secret})
	b := startNode(t, nodeOpt{net: net, cfg: secret, join: []*tnode{a}})
	testkit.EventuallyTrue(t, waitTimeout, "encrypted cluster formed", func() bool { return len(a.c.repl.same()) == 1 && len(b.c.repl.same()) == 1 })
	other := startNode(t, nodeOpt{net: net, join: []*tnode{a}, cfg: func(c *Config) {
		secret(c)
		c.Label = "other-stack"
		c.JoinTimeout = 300 * time.Millisecond
	}})
	testkit.EventuallyTrue(t, waitTimeout, "foreign node gave up joining", other.c.Ready)
	if len(other.c.repl.same()) != 0 || len(a.c.repl.same()) != 1 {
		t.Fatalf("label did not keep the clusters apart: %d / %d peers", len(other.c.repl.same()), len(a.c.repl.same()))
	}
}

// Members that failed without leaving are retried: a node that comes back
// on the same gossip address without any seed is merged back in (the way
// two halves of a healed partition find each other again).
func TestMembership_ReconnectsToFailedMember(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", nil)
	a, b := nodes[0], nodes[1]
	gossip := b.c.GossipAddr()
	b.kill(t)
	net.Detach(b.addr)
	testkit.EventuallyTrue(t, waitTimeout, "B declared dead", func() bool { return len(a.c.repl.same()) == 0 })
	back := startNode(t, nodeOpt{net: net, cfg: func(c *Config) { c.Bind = gossip }}) // no seeds
	testkit.EventuallyTrue(t, waitTimeout, "A reconnected to the failed address", func() bool {
		return len(a.c.repl.same()) == 1 && len(back.c.repl.same()) == 1
	})
	// The address is a live member's again: A stops retrying it (a Join,
	// a full state exchange, every rejoin_interval for 30 minutes).
	testkit.EventuallyTrue(t, waitTimeout, "failed entry dropped once its address is live again", func() bool {
		a.c.members.mu.RLock()
		defer a.c.members.mu.RUnlock()
		return len(a.c.members.failed) == 0
	})
}

// C62: the node renews its record every renew_interval (replicated) and
// registers it again when its registry lost it (spec 7.5.2).
func TestSelfRegistration_RenewAndReregister(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", func(c *Config) { c.RenewInterval = 30 * time.Millisecond })
	a, b := nodes[0], nodes[1]
	k := a.c.recs.key
	testkit.EventuallyTrue(t, waitTimeout, "A's record on B", func() bool { return b.has(k) })
	before, _ := b.reg.Get(k)
	testkit.EventuallyTrue(t, waitTimeout, "B sees A's renews", func() bool {
		got, ok := b.reg.Get(k)
		return ok && got.RenewTimestamp > before.RenewTimestamp
	})
	if _, err := a.reg.Evict(k); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, waitTimeout, "A registered itself again", func() bool { return a.has(k) })
	// A peer that evicted A's record gets it back from A's next renew
	// (-404 → A pushes its copy, spec 7.3).
	// Once B holds A's new version the re-register has landed: only
	// renews follow.
	testkit.EventuallyTrue(t, waitTimeout, "A's re-registered record on B", func() bool {
		ai, okA := a.reg.Get(k)
		bi, okB := b.reg.Get(k)
		return okA && okB && ai.DirtyTimestamp == bi.DirtyTimestamp && bi.DirtyTimestamp != before.DirtyTimestamp
	})
	if _, err := b.reg.Evict(k); err != nil {
		t.Fatal(err)
	}
	testkit.EventuallyTrue(t, waitTimeout, "B has A's record again after evicting it", func() bool { return b.has(k) })
	if v := testutil.ToFloat64(a.c.met.handshakes.WithLabelValues("404")); v < 1 {
		t.Fatalf("404 handshakes on A = %v, want >= 1", v)
	}
}

// A survivor that evicted a crashed node's record does not take that same
// record back from a peer that has not processed the death yet (anti-
// entropy), which would keep it for the 90-150 s of a normal eviction. A
// newer record (the node restarted) is accepted.
func TestMembership_EvictedRecordOfDeadNodeNotReimported(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 3, "z1", nil)
	a, b, c := nodes[0], nodes[1], nodes[2]
	k := selfRecordKey(c)
	testkit.EventuallyTrue(t, waitTimeout, "C's record on A and B", func() bool { return a.has(k) && b.has(k) })
	old, _ := b.reg.Get(k)

	c.kill(t)
	net.Detach(c.addr)
	testkit.EventuallyTrue(t, waitTimeout, "C's record evicted on the survivors", func() bool { return !a.has(k) && !b.has(k) })
	if !b.reg.Import(old) { // B, late: it still holds the dead node's record
		t.Fatal("setup: import")
	}
	if _, err := a.c.syncer.round(t.Context(), a.peerNamed(b.c.Name())); err != nil {
		t.Fatal(err)
	}
	if a.has(k) {
		t.Fatal("anti-entropy brought back the record of a node gossip declared dead")
	}
	// The same node alive again (a healed partition: same name, same
	// record version) gets its record back at once.
	a.c.members.mu.Lock()
	a.c.members.members[c.c.Name()] = memberState{meta: c.c.members.meta, gossip: c.c.GossipAddr()}
	a.c.members.mu.Unlock()
	if _, err := a.c.syncer.round(t.Context(), a.peerNamed(b.c.Name())); err != nil {
		t.Fatal(err)
	}
	if !a.has(k) {
		t.Fatal("the record of a member that is alive again was refused")
	}
	if _, err := a.reg.Evict(k); err != nil {
		t.Fatal(err)
	}
	a.c.members.mu.Lock()
	delete(a.c.members.members, c.c.Name())
	a.c.members.mu.Unlock()
	newer := old
	newer.DirtyTimestamp++
	newer.RenewTimestamp = time.Now().UnixNano()
	if !b.reg.Import(newer) {
		t.Fatal("setup: import newer")
	}
	if _, err := a.c.syncer.round(t.Context(), a.peerNamed(b.c.Name())); err != nil {
		t.Fatal(err)
	}
	if !a.has(k) {
		t.Fatal("a newer record of the same node (restarted) was refused")
	}
}

// A node is the authority for its own infra.discovery record. When a peer
// holds a "newer" version of it (a restart on a clock behind the old run,
// possibly with another address), the renew's -409 must not make the node
// adopt that copy: it registers itself again, newer, and the peer takes it.
func TestSelfRegistration_OwnRecordWinsConflict(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", func(c *Config) { c.RenewInterval = 30 * time.Millisecond })
	a, b := nodes[0], nodes[1]
	k := a.c.recs.key
	testkit.EventuallyTrue(t, waitTimeout, "A's record on B", func() bool { return b.has(k) })
	quiet(t, a, b)
	stale, _ := b.reg.Get(k)
	stale.Addrs = []string{"http://10.255.0.1:7171"}                   // the previous run's address
	stale.DirtyTimestamp = time.Now().Add(30 * time.Second).UnixNano() // a clock ahead, within max_clock_skew
	if !b.reg.Import(stale) {
		t.Fatal("setup: import")
	}
	want := "http://" + a.addr
	testkit.EventuallyTrue(t, waitTimeout, "B holds A's real record again", func() bool {
		got, ok := b.reg.Get(k)
		return ok && len(got.Addrs) == 1 && got.Addrs[0] == want
	})
	if got, _ := a.reg.Get(k); len(got.Addrs) != 1 || got.Addrs[0] != want {
		t.Fatalf("A adopted a foreign copy of its own record: %v", got.Addrs)
	}
}

// An impostor holding the key cannot take a live member's place: a second
// member under a live node's gossip name (memberlist's conflict check) is
// refused, counted, and the real member is still the one listed,
// replicated to and published. A member under this node's identity (its
// env, zone and hostname: the key of its infra.discovery record; two nodes
// configured with one hostname) is refused by the node it copies, which
// logs the misconfiguration.
func TestMembership_ImpostorRefused(t *testing.T) {
	for _, tc := range []string{"name", "identity"} {
		t.Run(tc, func(t *testing.T) {
			net := NewMemNetwork()
			nodes := startCluster(t, net, 2, "z1", nil)
			a, b := nodes[0], nodes[1]
			reason := "name_conflict"
			o := nodeOpt{net: net, join: []*tnode{a}}
			if tc == "name" {
				o.cfg = func(c *Config) { c.NodeName = b.c.Name(); c.JoinTimeout = 500 * time.Millisecond }
			} else {
				reason = "identity"
				o.hostname = a.c.recs.self.Hostname
			}
			startNode(t, o)
			testkit.EventuallyTrue(t, waitTimeout, "impostor refused by a", func() bool {
				return testutil.ToFloat64(a.c.met.refused.WithLabelValues(reason)) > 0
			})
			table := a.c.members.table()
			if tc == "name" {
				if m, ok := table[b.c.Name()]; !ok || len(table) != 1 {
					t.Fatalf("a's members %v, want only the real b", table)
				} else if m.meta.HTTPAddr != b.addr {
					t.Fatalf("a lists b at %s, want %s", m.meta.HTTPAddr, b.addr)
				}
			} else if len(table) != 1 {
				t.Fatalf("a's members %v, want only b", table)
			}
			if peers := a.c.repl.same(); len(peers) != 1 || peers[0].name != b.c.Name() {
				t.Fatalf("a replicates to %v, want only b", peers)
			}
			if tc == "name" {
				if got, ok := b.reg.Get(a.c.recs.key); !ok || !slices.Equal(got.Addrs, []string{"http://" + a.addr}) {
					t.Fatalf("b holds a's record as %v, want a's own address", got.Addrs)
				}
			}
		})
	}
}

// A node re-asserts its own record whenever the stored copy differs from
// what it publishes (issue #11): a set that took it out of rotation, a
// register with a foreign address, here straight into the registry (the
// public paths refuse both), is undone at the next renew, on every node.
func TestSelfRegistration_ReassertsChangedRecord(t *testing.T) {
	for _, tc := range []string{"set", "register"} {
		t.Run(tc, func(t *testing.T) {
			net := NewMemNetwork()
			nodes := startCluster(t, net, 2, "z1", func(c *Config) { c.RenewInterval = 30 * time.Millisecond })
			a, b := nodes[0], nodes[1]
			k := a.c.recs.key
			testkit.EventuallyTrue(t, waitTimeout, "A's record on B", func() bool { return b.has(k) })
			if tc == "set" {
				if _, err := a.reg.Set(registry.SetRequest{Env: k.Env, AppID: k.AppID, Zone: k.Zone, Hostnames: []string{k.Hostname}, Statuses: []uint32{2}}); err != nil {
					t.Fatal(err)
				}
			} else {
				cur, _ := a.reg.Get(k)
				cur.Addrs, cur.DirtyTimestamp = []string{"http://6.6.6.6:7171"}, 0
				if _, _, err := a.reg.Register(cur, 0); err != nil {
					t.Fatal(err)
				}
			}
			want := "http://" + a.addr
			for _, n := range nodes {
				testkit.EventuallyTrue(t, waitTimeout, n.c.Name()+" holds A's published record", func() bool {
					got, ok := n.reg.Get(k)
					return ok && got.Status == registry.StatusUp && slices.Equal(got.Addrs, []string{want})
				})
			}
		})
	}
}

// Same authority rule for anti-entropy (and startup sync): a peer's newer
// copy or tombstone of this node's own record never replaces or removes it
// here; the node registers itself again, newer.
func TestSelfRegistration_OwnRecordWinsAntiEntropy(t *testing.T) {
	for _, tc := range []string{"copy", "tombstone"} {
		t.Run(tc, func(t *testing.T) {
			net := NewMemNetwork()
			nodes := startCluster(t, net, 2, "z1", nil)
			a, b := nodes[0], nodes[1]
			k := a.c.recs.key
			testkit.EventuallyTrue(t, waitTimeout, "A's record on B", func() bool { return b.has(k) })
			quiet(t, a, b)
			future := time.Now().Add(30 * time.Second).UnixNano() // a clock ahead, within max_clock_skew
			if tc == "copy" {
				stale, _ := b.reg.Get(k)
				stale.Addrs = []string{"http://10.255.0.1:7171"}
				stale.DirtyTimestamp = future
				if !b.reg.Import(stale) {
					t.Fatal("setup: import")
				}
			} else if _, err := b.reg.Cancel(k, future); err != nil {
				t.Fatal(err)
			}
			if _, err := a.c.syncer.round(t.Context(), a.peerNamed(b.c.Name())); err != nil {
				t.Fatal(err)
			}
			want := "http://" + a.addr
			if got, ok := a.reg.Get(k); !ok || len(got.Addrs) != 1 || got.Addrs[0] != want {
				t.Fatalf("A's own record replaced or removed by anti-entropy: %v %v", ok, got.Addrs)
			}
			testkit.EventuallyTrue(t, waitTimeout, "B holds A's real record again", func() bool {
				got, ok := b.reg.Get(k)
				return ok && len(got.Addrs) == 1 && got.Addrs[0] == want
			})
		})
	}
}

// A node restarted on the same HTTP address under a new gossip name is, for
// a few seconds, two gossip members (the old one not yet declared dead).
// /discovery/nodes lists the address once.
func TestMembership_NodesListsEachAddressOnce(t *testing.T) {
	net := NewMemNetwork()
	nodes := startCluster(t, net, 2, "z1", nil)
	a, b := nodes[0], nodes[1]
	old := b.c.members.meta
	a.c.members.mu.Lock()
	a.c.members.members["b-previous-run"] = memberState{meta: old, gossip: "127.0.0.1:1"}
	a.c.members.mu.Unlock()
	ms := a.c.Nodes()
	if len(ms) != 2 || ms[0].Addr == ms[1].Addr {
		t.Fatalf("Nodes() = %+v, want each address once", ms)
	}
	if st := statusOf(ms, b.addr); st != NodeUp {
		t.Fatalf("status of the restarted node %d, want UP", st)
	}
	a.c.members.mu.Lock()
	delete(a.c.members.members, "b-previous-run")
	a.c.members.mu.Unlock()
}

// cluster.advertise is what peers learn even when cluster.bind asks for
// port 0: memberlist, binding port 0 itself, replaced the advertised port
// with the bound one.
func TestMembership_AdvertiseWithBindPortZero(t *testing.T) {
	// A port that is certainly not the one gossip binds: we hold it.
	hold, err := stdnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	adv := hold.Addr().String()

	net := NewMemNetwork()
	a := startNode(t, nodeOpt{net: net, cfg: func(c *Config) { c.Bind = "127.0.0.1:0"; c.Advertise = adv }})
	if got := a.c.GossipAddr(); got != adv {
		t.Fatalf("GossipAddr() = %s, want the advertised %s", got, adv)
	}
	bound := a.c.GossipBindAddr()
	if _, port, _ := stdnet.SplitHostPort(bound); port == "0" || bound == adv || !strings.HasPrefix(bound, "127.0.0.1:") {
		t.Fatalf("GossipBindAddr() = %s, want 127.0.0.1:<bound port>", bound)
	}
	// A peer reaching the bound address learns the advertised one.
	b := startNode(t, nodeOpt{net: net, cfg: func(c *Config) { c.Join = []string{bound} }})
	testkit.EventuallyTrue(t, waitTimeout, "b knows a", func() bool {
		for _, ms := range b.c.members.table() {
			if ms.meta.HTTPAddr == a.addr {
				return true
			}
		}
		return false
	})
	for name, ms := range b.c.members.table() {
		if ms.meta.HTTPAddr == a.addr && ms.gossip != adv {
			t.Fatalf("peer learnt gossip address %s for %s, want the advertised %s", ms.gossip, name, adv)
		}
	}
}
