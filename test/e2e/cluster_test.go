package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/test/harness"
)

// TestCluster_Healthy runs the checks that need a stable 3-node cluster on
// one cluster. Anti-entropy is set to an hour so that "this write stays on
// one node" is not undone by a periodic sync during the test.
func TestCluster_Healthy(t *testing.T) {
	c := harness.StartCluster(t, 3, harness.Options{
		ExtraEnv: map[string]string{"DISCOVERY_CLUSTER_ANTI_ENTROPY_INTERVAL": "1h"},
	})
	nodes := c.Nodes()
	env := harness.DefaultEnv

	t.Run("FormsFromOneSeed", func(t *testing.T) {
		// C38, C62: nodes 2 and 3 were given only node 1 as their seed; each
		// node lists all three (self included, status 0, advertised HTTP
		// address, own zone) and holds the three infra.discovery records.
		var want []harness.NodeInfo
		for _, n := range nodes {
			want = append(want, harness.NodeInfo{Addr: n.AdvertisedHTTP, Status: 0, Zone: harness.DefaultZone})
		}
		sortNodes(want)
		for _, n := range nodes {
			got, _, err := n.Client.Nodes(ctxT(t))
			if err != nil {
				t.Fatalf("%s: nodes: %v", n.Name, err)
			}
			sortNodes(got)
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("%s /discovery/nodes (-want +got):\n%s", n.Name, d)
			}
			recs, err := instances(n, env, harness.InfraAppID)
			if err != nil {
				t.Fatal(err)
			}
			for _, peer := range nodes {
				r, ok := recs[peer.Name]
				if !ok {
					t.Errorf("%s: no infra.discovery record of %s (has %v)", n.Name, peer.Name, recs)
					continue
				}
				// C62, spec 7.5.1: one http:// addr, status 1, own zone/env.
				if !slices.Equal(r.Addrs, []string{"http://" + peer.AdvertisedHTTP}) || r.Status != 1 ||
					r.Zone != harness.DefaultZone || r.Env != env || r.Region != harness.DefaultRegion {
					t.Errorf("%s: infra.discovery record of %s = %+v", n.Name, peer.Name, r)
				}
			}
			if len(recs) != len(nodes) {
				t.Errorf("%s: %d infra.discovery records, want %d", n.Name, len(recs), len(nodes))
			}
		}
	})

	t.Run("WriteReachesEveryPeer", func(t *testing.T) {
		// C56, C58: a client write (replication=false, through the public
		// endpoint) on one node reaches both peers; a two-address instance
		// arrives with both addrs as separate elements, in order, with its
		// metadata and the origin's dirty_timestamp.
		in := instance("e2e.replicate", "host-a", "grpc://127.0.0.1:9000", "http://127.0.0.1:8000")
		in.Version = "v1.2.3"
		in.Metadata = map[string]string{"weight": "10", "color": "red"}
		mustOK(t, "register on "+nodes[1].Name)(nodes[1].Client.Register(ctxT(t), in))
		origin, err := instances(nodes[1], env, in.AppID)
		if err != nil {
			t.Fatal(err)
		}
		want := origin[in.Hostname]
		if !slices.Equal(want.Addrs, in.Addrs) {
			t.Fatalf("origin stored addrs %v, want %v", want.Addrs, in.Addrs)
		}
		testkit.Eventually(t, 10*time.Second, "register replicated", func() error {
			return wantHosts(nodes, env, in.AppID, []string{in.Hostname})
		})
		for _, n := range nodes {
			m, err := instances(n, env, in.AppID)
			if err != nil {
				t.Fatal(err)
			}
			got := m[in.Hostname]
			if !slices.Equal(got.Addrs, in.Addrs) || got.Version != in.Version ||
				!cmp.Equal(got.Metadata, in.Metadata) || got.DirtyTimestamp != want.DirtyTimestamp || got.Status != 1 {
				t.Errorf("%s holds %+v, want addrs %v version %s metadata %v dirty %d", n.Name, got, in.Addrs, in.Version, in.Metadata, want.DirtyTimestamp)
			}
		}

		// set through another node (status 2, new metadata) reaches all.
		set := url.Values{
			"zone": {in.Zone}, "env": {env}, "appid": {in.AppID}, "hostname": {in.Hostname},
			"status": {"2"}, "metadata": {`{"weight":"5"}`},
		}
		mustOK(t, "set on "+nodes[2].Name)(nodes[2].Client.Set(ctxT(t), set))
		testkit.Eventually(t, 10*time.Second, "set replicated", func() error {
			var errs []error
			for _, n := range nodes {
				m, err := instances(n, env, in.AppID)
				if err != nil {
					return err
				}
				if got := m[in.Hostname]; got.Status != 2 || !cmp.Equal(got.Metadata, map[string]string{"weight": "5"}) {
					errs = append(errs, fmt.Errorf("%s: status %d metadata %v", n.Name, got.Status, got.Metadata))
				}
			}
			return errors.Join(errs...)
		})

		// cancel through the third node removes it everywhere.
		mustOK(t, "cancel on "+nodes[0].Name)(nodes[0].Client.Cancel(ctxT(t), in))
		testkit.Eventually(t, 10*time.Second, "cancel replicated", func() error {
			return wantHosts(nodes, env, in.AppID, nil)
		})
	})

	t.Run("ReplicatedWriteIsNotForwarded", func(t *testing.T) {
		// Spec 4.0/10.1: a write marked replication=true through the public
		// endpoint is applied locally and not forwarded. Peer queues are
		// FIFO, so once a later client write on the same node has reached
		// the peers, a forward of the earlier one would have too.
		// Signed with the cluster secret, as a peer's forward is: a
		// client's replication=true has no effect (issue #11).
		// Anti-entropy may copy the local-only instance to the peers too
		// (a round starts whenever gossip sees a peer join again, as a
		// loaded machine can make it): an attempt during which any node
		// repaired something proves nothing and is repeated.
		peer, err := nodes[0].Client.AsPeer(harness.DefaultSecret)
		if err != nil {
			t.Fatal(err)
		}
		const attempts = 3
		for attempt := 1; ; attempt++ {
			before := repairs(t, nodes)
			local := instance("e2e.localonly", fmt.Sprintf("only-here-%d", attempt), "grpc://127.0.0.1:9001")
			mustOK(t, "replicated register")(peer.Register(ctxT(t), local, url.Values{"replication": {"true"}}))
			barrier := instance("e2e.localonly", fmt.Sprintf("barrier-%d", attempt), "grpc://127.0.0.1:9002")
			mustOK(t, "barrier register")(nodes[0].Client.Register(ctxT(t), barrier))
			testkit.Eventually(t, 10*time.Second, "barrier replicated", func() error {
				var errs []error
				for _, n := range nodes[1:] {
					m, err := instances(n, env, barrier.AppID)
					if err != nil {
						return err
					}
					if _, ok := m[barrier.Hostname]; !ok {
						errs = append(errs, fmt.Errorf("%s: no %s", n.Name, barrier.Hostname))
					}
				}
				return errors.Join(errs...)
			})
			if err := wantHosts(nodes[:1], env, local.AppID, []string{barrier.Hostname, local.Hostname}); err != nil {
				t.Fatal(err)
			}
			var leaked []error
			for _, n := range nodes[1:] {
				m, err := instances(n, env, local.AppID)
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := m[local.Hostname]; ok {
					leaked = append(leaked, fmt.Errorf("%s holds %s", n.Name, local.Hostname))
				}
			}
			err := errors.Join(leaked...)
			mustOK(t, "cleanup")(peer.Cancel(ctxT(t), local, url.Values{"replication": {"true"}}))
			mustOK(t, "cleanup")(nodes[0].Client.Cancel(ctxT(t), barrier))
			if err == nil {
				break
			}
			if after := repairs(t, nodes); after == before || attempt == attempts {
				t.Fatalf("replication=true write reached a peer (anti-entropy repairs %v -> %v): %v", before, after, err)
			}
			t.Logf("attempt %d: anti-entropy ran (%v); again", attempt, err)
			// A peer may keep the copy until a later round carries the
			// cancel; the next attempt uses new hostnames.
		}
	})

	t.Run("PollsInfraDiscoveryAnswersAtOnce", func(t *testing.T) {
		// C63, spec 8.1.1: a kratos client's first poll (latest_timestamp=0)
		// for infra.discovery is answered at once, with every live node. The
		// request deadline (5 s) is far below the 30 s hold, so a held
		// request fails the test.
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			res, e, err := n.Client.Polls(ctx, env, "e2e-poller", []string{harness.InfraAppID}, []int64{0})
			cancel()
			if err != nil || res == nil {
				t.Fatalf("%s: polls: %v (%v)", n.Name, err, e)
			}
			ii := res.Data[harness.InfraAppID]
			if ii == nil || ii.LatestTimestamp == 0 {
				t.Fatalf("%s: polls data %s", n.Name, e.Body)
			}
			got := addrsOf(ii.All())
			want := advertisedURLs(nodes)
			if !slices.Equal(got, want) {
				t.Errorf("%s: polls infra.discovery addrs %v, want %v", n.Name, got, want)
			}
		}
	})
}

// TestCluster_KillUnderLoad: C60, C61, C63, spec 7.1/7.7. While clients
// register and renew through all three nodes, one node is SIGKILLed. After
// one operation round of every client that started after the kill, no
// acknowledged instance is missing on the survivors (clients fail over and
// re-register on -404). The dead node leaves /discovery/nodes and
// infra.discovery on the survivors within about 10 s. Restarted with new
// ports, it reports ready only once synced and then holds every instance.
func TestCluster_KillUnderLoad(t *testing.T) {
	c := harness.StartCluster(t, 3, harness.Options{Faults: true})
	nodes := c.Nodes()
	env := harness.DefaultEnv
	victim, survivors := nodes[2], nodes[:2]

	clients := 30
	if soak() {
		clients = 200
	}
	l := startLoad(t, c.Nodes, "e2e.load", "load", clients, 100*time.Millisecond, true)
	l.waitAllAcked(t, 30*time.Second)
	// Everything registered so far has reached every node.
	testkit.Eventually(t, 20*time.Second, "load replicated before the kill", func() error {
		return wantHosts(nodes, env, "e2e.load", l.hostnames())
	})

	// A burst acknowledged by the victim that never reaches the survivors:
	// the victim is cut off from its peers (not from clients) just before,
	// so its forwards fail, and it dies before gossip notices the cut.
	// Only the clients' failover and re-register on -404 can save these.
	c.Isolate(t, victim)
	late := startLoad(t, func() []*harness.Node { return []*harness.Node{victim, survivors[0], survivors[1]} }, "e2e.load", "late", 10, 100*time.Millisecond, false)
	late.waitAllAcked(t, 10*time.Second)
	c.Kill(t, victim)
	killed := time.Now()
	c.Heal()
	// Precondition: the burst exists on the dead node only.
	for _, n := range survivors {
		hs, err := hostSet(n, env, "e2e.load")
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hs {
			if strings.HasPrefix(h, "late-") {
				t.Errorf("%s holds %s, registered on the cut-off victim only", n.Name, h)
			}
		}
	}

	// The dead node leaves the survivors' views (spec 7.1: about 10 s).
	deadOut := testkit.Eventually(t, 30*time.Second, "dead node out of /discovery/nodes and infra.discovery", func() error {
		return c.CheckFormed(survivors)
	})
	t.Logf("FIGURE dead node out of nodes+infra.discovery on both survivors %.1f s after SIGKILL", deadOut.Seconds())

	// C63 with a dead node: the first poll lists exactly the live nodes.
	for _, n := range survivors {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		res, e, err := n.Client.Polls(ctx, env, "e2e-poller", []string{harness.InfraAppID}, []int64{0})
		cancel()
		if err != nil || res == nil || res.Data[harness.InfraAppID] == nil {
			t.Fatalf("%s: polls infra.discovery: %v %v", n.Name, err, e)
		}
		if got, want := addrsOf(res.Data[harness.InfraAppID].All()), advertisedURLs(survivors); !slices.Equal(got, want) {
			t.Errorf("%s: polls infra.discovery %v, want %v", n.Name, got, want)
		}
	}

	// One successful round of every client after the kill.
	for _, ld := range []*load{l, late} {
		testkit.Eventually(t, 30*time.Second, "one round of every client after the kill", func() error {
			if b := ld.behind(killed); len(b) > 0 {
				return fmt.Errorf("%d clients without a round since the kill: %v", len(b), b)
			}
			return nil
		})
	}
	l.stop()
	late.stop()
	acked := append(l.hostnames(), late.hostnames()...)
	if len(acked) != clients+10 {
		t.Fatalf("%d acknowledged instances, want %d", len(acked), clients+10)
	}
	// Renews sent to a survivor are forwarded to the other one, and the
	// -404 handshake (C60) repairs what only one of them had; allow for it.
	testkit.Eventually(t, 10*time.Second, "every acknowledged instance on every survivor", func() error {
		return wantHosts(survivors, env, "e2e.load", acked)
	})
	for name, ld := range map[string]*load{"load": l, "late": late} {
		ops, fo, rr, errs := ld.stats()
		t.Logf("%s clients: %d ops, %d failovers, %d re-registers after -404, %d errors", name, ops, fo, rr, len(errs))
		for _, err := range errs[:min(len(errs), 5)] {
			t.Logf("  client error: %v", err)
		}
		if name == "late" && rr < int64(len(ld.clients)) {
			// Each late instance existed only on the victim: every client
			// must have met -404 on a survivor, or the test proved nothing.
			t.Errorf("late clients re-registered %d times, want >= %d", rr, len(ld.clients))
			for _, lc := range ld.clients {
				t.Logf("  %s: %d failovers, %d re-registers", lc.ins.Hostname, lc.failovers.Load(), lc.reregs.Load())
			}
		}
	}

	// Registered while the victim is down: only a startup sync can bring
	// these to it (no client renews any more, anti-entropy is 30 s).
	var during []string
	for i := range 20 {
		in := instance("e2e.during", fmt.Sprintf("during-%02d", i), fmt.Sprintf("grpc://127.0.0.1:%d", 40000+i))
		mustOK(t, "register during downtime")(survivors[i%2].Client.Register(ctxT(t), in))
		during = append(during, in.Hostname)
	}
	testkit.Eventually(t, 10*time.Second, "downtime registrations replicated", func() error {
		return wantHosts(survivors, env, "e2e.during", during)
	})

	// C61: restart with new ports. Until it has synced the node serves no
	// read (-503) or a complete one; from its first /readyz 200 on, it
	// holds everything.
	restarted := c.RestartWith(t, victim, func(o *harness.Options) { o.NoWaitReady = true })
	complete := func(stage string) (gated bool) {
		t.Helper()
		for app, want := range map[string][]string{"e2e.load": acked, "e2e.during": during} {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			ii, e, err := restarted.Client.Fetch(ctx, env, app, 3, "")
			cancel()
			if e != nil && e.Code == -503 {
				gated = true
				continue
			}
			if err != nil {
				t.Fatalf("C61 %s: fetch %s: %v", stage, app, err)
			}
			var got []string
			for _, in := range ii.All() {
				got = append(got, in.Hostname)
			}
			if slices.Sort(got); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
				t.Fatalf("C61 %s: %s served %d of %d instances", stage, app, len(got), len(want))
			}
		}
		return gated
	}
	readyIn := testkit.Eventually(t, 45*time.Second, "restarted node ready", func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		ok, err := restarted.Client.Ready(ctx)
		cancel()
		if !ok {
			complete("before ready")
			return fmt.Errorf("/readyz not 200 (%w)", err)
		}
		return nil
	})
	if complete("right after ready") {
		t.Errorf("C61: reads still gated (-503) after /readyz answered 200")
	}
	ready := time.Since(restarted.Started())
	t.Logf("FIGURE restarted node ready (synced) %.2f s after process start (%.2f s of polling)", ready.Seconds(), readyIn.Seconds())
	formed := c.WaitFormed(t, 30*time.Second)
	t.Logf("FIGURE cluster re-formed %.2f s after the restarted node was ready", formed.Seconds())
	if restarted.HTTP == victim.HTTP {
		t.Errorf("restarted node reuses HTTP address %s", victim.HTTP)
	}
}

// TestCluster_GracefulStopCancelsRecord: C62, spec 7.5.3. SIGTERM makes a
// node cancel its own infra.discovery record (forwarded) before it exits with
// status 0; the survivors drop it at once, well before gossip failure
// detection (several seconds) could.
func TestCluster_GracefulStopCancelsRecord(t *testing.T) {
	c := harness.StartCluster(t, 3, harness.Options{})
	nodes := c.Nodes()
	stopped, survivors := nodes[1], []*harness.Node{nodes[0], nodes[2]}

	// A poller parked on a survivor with its current infra.discovery
	// timestamp must be woken by the cancel.
	ii, _, err := survivors[0].Client.Fetch(ctxT(t), harness.DefaultEnv, harness.InfraAppID, 1, "")
	if err != nil {
		t.Fatal(err)
	}
	type pollOut struct {
		res *harness.PollsResult
		err error
		at  time.Time
	}
	woke := make(chan pollOut, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		res, e, err := survivors[0].Client.Polls(ctx, harness.DefaultEnv, "e2e-poller", []string{harness.InfraAppID}, []int64{ii.LatestTimestamp})
		if err == nil && res == nil {
			err = fmt.Errorf("held until -304: %s", e.Body)
		}
		woke <- pollOut{res, err, time.Now()}
	}()

	sigterm := time.Now()
	c.Stop(t, stopped)
	exited := time.Now()
	t.Logf("FIGURE graceful stop: exit %.2f s after SIGTERM", exited.Sub(sigterm).Seconds())
	gone := testkit.Eventually(t, 5*time.Second, "stopped node's record gone from the survivors", func() error {
		return c.CheckFormed(survivors)
	})
	t.Logf("FIGURE after graceful stop: record and node gone on both survivors %.2f s after exit", gone.Seconds())

	select {
	case p := <-woke:
		if p.err != nil {
			t.Fatalf("parked poll: %v", p.err)
		}
		// The wake-up may come from the stop (cancel) only: nothing else
		// changed infra.discovery.
		if got, want := addrsOf(p.res.Data[harness.InfraAppID].All()), advertisedURLs(survivors); !slices.Equal(got, want) {
			t.Errorf("parked poll answered %v, want %v", got, want)
		}
		t.Logf("parked poll woken %.2f s after exit", p.at.Sub(exited).Seconds())
	case <-time.After(10 * time.Second):
		t.Fatal("parked infra.discovery poll not woken by the graceful stop")
	}
}

// TestCluster_PartitionHeals: spec 7.3, 10.1, D18. A node cut off from its
// peers (gossip and peer HTTP, both directions) diverges: writes on either
// side stay there, a cancel on the majority side does not reach it. After
// the partition heals, all nodes hold the same instances (cancel included)
// within the anti-entropy interval plus rejoin and a margin.
func TestCluster_PartitionHeals(t *testing.T) {
	const antiEntropy = 2 * time.Second
	c := harness.StartCluster(t, 3, harness.Options{
		Faults: true,
		ExtraEnv: map[string]string{
			"DISCOVERY_CLUSTER_ANTI_ENTROPY_INTERVAL": antiEntropy.String(),
			"DISCOVERY_CLUSTER_REJOIN_INTERVAL":       "1s",
			"DISCOVERY_CLUSTER_RETRY_MAX_BACKOFF":     "1s",
			"DISCOVERY_CLUSTER_PEER_TIMEOUT":          "2s",
		},
	})
	nodes := c.Nodes()
	env := harness.DefaultEnv
	cut, majority := nodes[2], nodes[:2]
	const app = "e2e.partition"

	keep := instance(app, "keep", "grpc://127.0.0.1:9100")
	old := instance(app, "old", "grpc://127.0.0.1:9101")
	mustOK(t, "register keep")(nodes[0].Client.Register(ctxT(t), keep))
	mustOK(t, "register old")(nodes[0].Client.Register(ctxT(t), old))
	testkit.Eventually(t, 10*time.Second, "initial instances everywhere", func() error {
		return wantHosts(nodes, env, app, []string{"keep", "old"})
	})

	c.Isolate(t, cut)
	isolated := time.Now()
	// Both sides notice: the majority drops the cut node, the cut node is
	// left alone. This proves the cut works in both directions.
	detect := testkit.Eventually(t, 40*time.Second, "both sides see the partition", func() error {
		return errors.Join(c.CheckFormed(majority), c.CheckFormed([]*harness.Node{cut}))
	})
	t.Logf("FIGURE partition detected on both sides %.1f s after the cut", detect.Seconds())

	a := instance(app, "a-majority", "grpc://127.0.0.1:9102")
	z := instance(app, "z-cut", "grpc://127.0.0.1:9103")
	mustOK(t, "register on majority")(majority[0].Client.Register(ctxT(t), a))
	mustOK(t, "cancel on majority")(majority[0].Client.Cancel(ctxT(t), old))
	mustOK(t, "register on cut node")(cut.Client.Register(ctxT(t), z))
	testkit.Eventually(t, 10*time.Second, "majority converged during the partition", func() error {
		return wantHosts(majority, env, app, []string{"a-majority", "keep"})
	})
	// The cut node's side stays as it was, plus its own write.
	if err := wantHosts([]*harness.Node{cut}, env, app, []string{"keep", "old", "z-cut"}); err != nil {
		t.Fatalf("writes crossed the partition: %v", err)
	}

	c.Heal()
	healed := time.Now()
	d := testkit.Eventually(t, 30*time.Second, "converged after heal", func() error {
		return errors.Join(
			c.CheckFormed(nodes),
			wantHosts(nodes, env, app, []string{"a-majority", "keep", "z-cut"}),
			sameContent(nodes, env, app),
		)
	})
	t.Logf("FIGURE partitioned %.1f s; converged %.2f s after heal (anti-entropy interval %s)", healed.Sub(isolated).Seconds(), d.Seconds(), antiEntropy)
	// Rejoin (1 s), one anti-entropy round (2 s, jittered) and a margin.
	if limit := 5*antiEntropy + 5*time.Second; d > limit {
		t.Errorf("convergence took %s, more than %s", d, limit)
	}
}

// TestNode_AdvertiseNeverUnspecified: C64, spec 7.5.4. A node listening on
// 0.0.0.0 never advertises 0.0.0.0: not in /discovery/nodes, not in its
// infra.discovery record, not in the address it reports. (The advertised
// host is some interface address of this machine; the test does not dial it:
// it only checks the shape and the port.)
func TestNode_AdvertiseNeverUnspecified(t *testing.T) {
	n := harness.StartNode(t, harness.Options{HTTPAddr: "0.0.0.0:0"})
	_, port, _ := net.SplitHostPort(n.HTTP)
	check := func(where, addr string) {
		t.Helper()
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			t.Errorf("%s: %q is not ip:port: %v", where, addr, err)
			return
		}
		if ap.Addr().IsUnspecified() || !ap.Addr().IsValid() {
			t.Errorf("%s: advertises unspecified address %s", where, addr)
		}
		if fmt.Sprint(ap.Port()) != port {
			t.Errorf("%s: advertises port %d, node listens on %s", where, ap.Port(), port)
		}
	}
	t.Logf("listening on 0.0.0.0:%s, advertising %s", port, n.AdvertisedHTTP)
	check("address file", n.AdvertisedHTTP)
	list, _, err := n.Client.Nodes(ctxT(t))
	if err != nil || len(list) != 1 {
		t.Fatalf("nodes: %v %v", list, err)
	}
	check("/discovery/nodes", list[0].Addr)
	recs, err := instances(n, harness.DefaultEnv, harness.InfraAppID)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := recs[n.Name]
	if !ok || len(r.Addrs) != 1 || !strings.HasPrefix(r.Addrs[0], "http://") {
		t.Fatalf("infra.discovery record: %+v", recs)
	}
	check("infra.discovery", strings.TrimPrefix(r.Addrs[0], "http://"))
	if list[0].Addr != strings.TrimPrefix(r.Addrs[0], "http://") {
		t.Errorf("/discovery/nodes says %s, infra.discovery says %s", list[0].Addr, r.Addrs[0])
	}
}

func sortNodes(l []harness.NodeInfo) {
	slices.SortFunc(l, func(a, b harness.NodeInfo) int { return strings.Compare(a.Addr, b.Addr) })
}

func addrsOf(ins []harness.Instance) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.Addrs...)
	}
	slices.Sort(out)
	return out
}

func advertisedURLs(nodes []*harness.Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, "http://"+n.AdvertisedHTTP)
	}
	slices.Sort(out)
	return out
}
