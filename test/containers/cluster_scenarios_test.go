//go:build containers

package containers

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
)

// allAddrs is the sorted list of the three advertised HTTP addresses.
func (c *cluster) allAddrs(nodes ...string) []string {
	if len(nodes) == 0 {
		nodes = nodeNames
	}
	var out []string
	for _, n := range nodes {
		out = append(out, c.httpAddr(n))
	}
	sort.Strings(out)
	return out
}

// membershipIs reports whether node's /discovery/nodes (all UP) and its
// infra.discovery records both list exactly want.
func (c *cluster) membershipIs(node string, want []string) (bool, string) {
	ctx := c.t.Context()
	api := c.api(node)
	nodes, err := api.nodes(ctx)
	if err != nil {
		return false, fmt.Sprintf("%s: nodes: %v", node, err)
	}
	infra, err := api.infraAddrs(ctx)
	if err != nil {
		return false, fmt.Sprintf("%s: infra.discovery: %v", node, err)
	}
	up := []string{}
	for addr, st := range nodes {
		if st == 0 {
			up = append(up, addr)
		}
	}
	sort.Strings(up)
	ok := slices.Equal(up, want) && len(nodes) == len(want) && slices.Equal(infra, want)
	return ok, fmt.Sprintf("%s: nodes=%v infra.discovery=%v want %v", node, nodes, infra, want)
}

// TestClusterUp: `make image` (TestMain), compose up, all three nodes
// healthy; each lists three nodes; infra.discovery holds three instances.
func TestClusterUp(t *testing.T) {
	c := startCluster(t)
	want := c.allAddrs()
	for _, n := range nodeNames {
		testkit.Poll(t, 30*time.Second, 250*time.Millisecond, n+" sees all three nodes", func() error {
			return testkit.State(c.membershipIs(n, want))
		})
		if st := c.api(n).readyz(t.Context()); st != 200 {
			t.Errorf("%s: /readyz = %d on a healthy node", n, st)
		}
	}
	// The cluster runs with its secret: a host on the client network gets
	// HTTP 401 from the peer routes, and fetch/all wants the admin token.
	for _, n := range nodeNames {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, c.api(n).base+wire.PathDigest, strings.NewReader(`{"digests":[]}`))
		if resp, err := c.api(n).hc.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: unsigned digest: %v %v, want HTTP 401", n, err, resp)
		} else {
			resp.Body.Close()
		}
		if env, err := c.api(n).do(t.Context(), http.MethodGet, "/discovery/fetch/all", nil); err != nil || env.Code != wire.CodeUnauthorized {
			t.Errorf("%s: fetch/all without the token: %v %+v, want -401", n, err, env)
		}
	}
	// Started by the documented command without ulimits (issue #15): each
	// node reports the open-file limit it got and what it derived from it.
	logs, err := c.compose(time.Minute, "logs", "--no-color", "node1")
	if err != nil {
		t.Fatalf("compose logs: %v", err)
	}
	if !strings.Contains(string(logs), `"msg":"connection limits"`) || !strings.Contains(string(logs), `"fd_limit":`) || !strings.Contains(string(logs), `"max_pollers":`) {
		t.Errorf("node1 does not log its fd limit and max_pollers at start:\n%s", logs)
	}
	// The image runs as the unprivileged user and carries its healthcheck.
	user := c.docker(time.Minute, "inspect", "--format", "{{.Config.User}}", c.container("node1"))
	if user != "65532:65532" {
		t.Errorf("container user = %q, want 65532:65532", user)
	}
	hc := c.docker(time.Minute, "image", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", suite.image)
	if hc != `["CMD","/discovery","health"]` {
		t.Errorf("image HEALTHCHECK = %s, want exec form through /discovery health", hc)
	}
}

// TestKratosClient: the unmodified kratos v0.6.0 client, seeded with one
// node, registers; a second client seeded with another node watches and
// sees it; both learn all three nodes from infra.discovery.
func TestKratosClient(t *testing.T) {
	c := startCluster(t)
	want := c.allAddrs()
	const appid = "demo.kratos"

	reg := startKratos(t, c, "register", "kratos-reg-1", []string{c.httpAddr("node1")},
		"register", "--appid", appid, "--addr", "grpc://10.0.0.1:9000", "--addr", "http://10.0.0.1:8000", "--hold")
	reg.waitEvent(60*time.Second, "registered", func(ev kratosEvent) bool { return ev.Event == "registered" })

	watch := startKratos(t, c, "watch", "kratos-watch-1", []string{c.httpAddr("node2")}, "watch", "--appid", appid)
	ev := watch.waitEvent(60*time.Second, "instances with kratos-reg-1", func(ev kratosEvent) bool {
		return ev.Event == "instances" && slices.ContainsFunc(ev.Instances, func(in instance) bool { return in.Hostname == "kratos-reg-1" })
	})
	in := ev.Instances[slices.IndexFunc(ev.Instances, func(in instance) bool { return in.Hostname == "kratos-reg-1" })]
	if !slices.Equal(in.Addrs, []string{"grpc://10.0.0.1:9000", "http://10.0.0.1:8000"}) || in.Zone != testZone || in.Env != testEnv {
		t.Errorf("watched instance = %+v, want both addrs in zone %s env %s", in, testZone, testEnv)
	}

	for _, k := range []*kratosClient{reg, watch} {
		k.waitEvent(60*time.Second, "all three nodes learned", learnedAll(want))
	}
	// Replicated to every node, not only the one the client used.
	for _, n := range nodeNames {
		testkit.Poll(t, 15*time.Second, 250*time.Millisecond, n+" holds the kratos instance", func() error {
			got, err := c.api(n).fetch(t.Context(), appid)
			_, ok := got["kratos-reg-1"]
			return testkit.State(err == nil && ok, fmt.Sprintf("%v %v", sortedKeys(got), err))
		})
	}

	// Cancel on exit (kratos' cancel func) removes it everywhere.
	reg.stop(30 * time.Second)
	if !slices.ContainsFunc(reg.snapshot(), func(ev kratosEvent) bool { return ev.Event == "cancelled" }) {
		t.Errorf("register client did not report its cancel; events:\n%s", reg.dump())
	}
	for _, n := range nodeNames {
		testkit.Poll(t, 15*time.Second, 250*time.Millisecond, n+" dropped the cancelled instance", func() error {
			got, err := c.api(n).fetch(t.Context(), appid)
			return testkit.State(err == nil && len(got) == 0, fmt.Sprintf("%v %v", sortedKeys(got), err))
		})
	}
}

// TestKillNode: `docker kill` one node while registers and renews run
// through the other two. No acknowledged instance is missing on the
// survivors; the dead node leaves /discovery/nodes and infra.discovery
// within 10 s; after `docker start` it reports ready only once synced, and
// then holds every instance.
func TestKillNode(t *testing.T) {
	c := startCluster(t)
	const appid = "load.kill"
	survivors := []string{"node2", "node3"}
	load := startLoad(t, c, appid, survivors, 4, 20, 600)
	testkit.Poll(t, 30*time.Second, 100*time.Millisecond, "40 instances acknowledged", func() error {
		n := load.ackedCount()
		return testkit.State(n >= 40, fmt.Sprint(n))
	})

	killed := time.Now()
	c.kill("node1")
	want := c.allAddrs(survivors...)
	testkit.Poll(t, 30*time.Second, 100*time.Millisecond, "node1 gone from the survivors' nodes and infra.discovery", func() error {
		var states []string
		for _, n := range survivors {
			ok, st := c.membershipIs(n, want)
			if !ok {
				return testkit.State(false, st)
			}
			states = append(states, st)
		}
		return testkit.State(true, strings.Join(states, "; "))
	})
	gone := time.Since(killed)
	recordFigure(t, "kill: dead node out of nodes/infra.discovery", gone)
	if gone > 10*time.Second {
		t.Errorf("dead node left the survivors' lists after %s, want within 10 s", gone.Round(100*time.Millisecond))
	}

	// Keep writing on the survivors for a while with node1 down.
	base := load.ackedCount()
	testkit.Poll(t, 30*time.Second, 100*time.Millisecond, "40 more instances acknowledged with node1 down", func() error {
		n := load.ackedCount()
		return testkit.State(n >= base+40, fmt.Sprint(n))
	})
	load.stopRegistering()
	acked := load.ackedSet()
	t.Logf("load: %s", load.summary())
	waitHolds(t, c, survivors, appid, acked, 10*time.Second)

	// Restart: /readyz must not say 200 before the node holds everything.
	c.start("node1")
	started := time.Now()
	api := c.api("node1")
	testkit.Poll(t, 60*time.Second, 50*time.Millisecond, "restarted node1 ready", func() error {
		st := api.readyz(t.Context())
		return testkit.State(st == 200, fmt.Sprintf("/readyz %d", st))
	})
	ready := time.Since(started)
	missing, err := missingOn(t.Context(), c, "node1", appid, acked)
	if err != nil {
		t.Fatalf("fetch on node1 right after /readyz 200: %v", err)
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		t.Errorf("node1 answered /readyz 200 while missing %d of %d acknowledged instances (e.g. %v)", len(missing), len(acked), missing[:min(5, len(missing))])
	}
	recordFigure(t, "kill: restarted node ready (docker start -> /readyz 200)", ready)
	testkit.Poll(t, 30*time.Second, 250*time.Millisecond, "node1 back in every node's lists", func() error {
		for _, n := range nodeNames {
			if ok, st := c.membershipIs(n, c.allAddrs()); !ok {
				return testkit.State(false, st)
			}
		}
		return testkit.State(true, "")
	})
	load.stop()
	waitHolds(t, c, nodeNames, appid, acked, 10*time.Second)
}

// TestPartition: disconnect node3 from the cluster network, write on both
// sides, reconnect: every node converges within the anti-entropy interval
// (3 s in testdata/compose.test.yaml) plus rejoin (2 s) plus a margin.
func TestPartition(t *testing.T) {
	const (
		antiEntropy = 3 * time.Second
		rejoin      = 2 * time.Second
		margin      = 15 * time.Second
	)
	c := startCluster(t)
	ctx := t.Context()
	const appid = "part.app"
	majority, minority := []string{"node1", "node2"}, "node3"

	// Before: one instance everywhere, to be cancelled on the minority side.
	doomed := newInstance(appid, "before-cancelled-on-node3", "grpc://10.1.0.1:9000")
	kept := newInstance(appid, "before-kept", "grpc://10.1.0.2:9000")
	for _, in := range []instance{doomed, kept} {
		if code, err := c.api("node1").register(ctx, in); err != nil || code != 0 {
			t.Fatalf("register %s: code %d, %v", in.Hostname, code, err)
		}
	}
	waitHolds(t, c, nodeNames, appid, map[string]bool{doomed.Hostname: true, kept.Hostname: true}, 15*time.Second)

	heal := c.partition(minority)
	// Both sides notice: the majority drops node3, node3 sees only itself.
	testkit.Poll(t, 30*time.Second, 250*time.Millisecond, "both sides see the partition", func() error {
		for _, n := range majority {
			if ok, st := c.membershipIs(n, c.allAddrs(majority...)); !ok {
				return testkit.State(false, st)
			}
		}
		nodes, err := c.api(minority).nodes(ctx)
		if err != nil {
			return testkit.State(false, err.Error())
		}
		up := 0
		for _, st := range nodes {
			if st == 0 {
				up++
			}
		}
		return testkit.State(up == 1, fmt.Sprintf("%s nodes %v", minority, nodes))
	})

	// Writes on both sides.
	want := map[string]bool{kept.Hostname: true}
	write := func(node string, in instance) {
		t.Helper()
		if code, err := c.api(node).register(ctx, in); err != nil || code != 0 {
			t.Fatalf("register %s on %s: code %d, %v", in.Hostname, node, code, err)
		}
		want[in.Hostname] = true
	}
	for i := range 5 {
		write(majority[i%2], newInstance(appid, fmt.Sprintf("majority-%d", i), fmt.Sprintf("grpc://10.2.0.%d:9000", i+1)))
		write(minority, newInstance(appid, fmt.Sprintf("minority-%d", i), fmt.Sprintf("grpc://10.3.0.%d:9000", i+1)))
	}
	if code, err := c.api(minority).cancel(ctx, doomed); err != nil || code != 0 {
		t.Fatalf("cancel on %s: code %d, %v", minority, code, err)
	}

	// The sides really are apart: neither holds the other's writes.
	for _, n := range nodeNames {
		got, err := c.api(n).fetch(ctx, appid)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		other := "minority-0"
		if n == minority {
			other = "majority-0"
		}
		if _, ok := got[other]; ok {
			t.Fatalf("%s already holds %s before the partition healed: the partition leaks (holds %v)", n, other, sortedKeys(got))
		}
	}

	// Measured from the reconnect command, which itself takes a moment.
	reconnect := time.Now()
	heal()
	t.Logf("reconnect commands took %s", time.Since(reconnect).Round(10*time.Millisecond))
	// Two milestones, timed separately: membership back on every node
	// (/discovery/nodes and infra.discovery), and the data of both sides on
	// every node (sync / anti-entropy).
	var rejoined, synced time.Duration
	testkit.Poll(t, antiEntropy+rejoin+margin, 100*time.Millisecond, "every node converged", func() error {
		var state []string
		if rejoined == 0 {
			ok := true
			for _, n := range nodeNames {
				if good, st := c.membershipIs(n, c.allAddrs()); !good {
					ok = false
					state = append(state, st)
				}
			}
			if ok {
				rejoined = time.Since(reconnect)
			}
		}
		if synced == 0 {
			ok := true
			for _, n := range nodeNames {
				got, err := c.api(n).fetch(ctx, appid)
				if err != nil {
					ok = false
					state = append(state, fmt.Sprintf("%s: %v", n, err))
				} else if !sameKeys(got, want) {
					ok = false
					state = append(state, fmt.Sprintf("%s holds %v, want %v", n, sortedKeys(got), sortedKeys(want)))
				}
			}
			if ok {
				synced = time.Since(reconnect)
			}
		}
		return testkit.State(rejoined > 0 && synced > 0, strings.Join(state, "; "))
	})
	recordFigure(t, "partition: reconnect -> membership restored", rejoined)
	recordFigure(t, "partition: reconnect -> data of both sides everywhere", synced)
	t.Logf("membership restored %s, data converged %s after reconnect (bound: anti-entropy %s + rejoin %s + margin %s)",
		rejoined.Round(100*time.Millisecond), synced.Round(100*time.Millisecond), antiEntropy, rejoin, margin)
	// Still converged (the instances were re-checked after membership).
	for _, n := range nodeNames {
		got, err := c.api(n).fetch(ctx, appid)
		if err != nil || !sameKeys(got, want) {
			t.Errorf("%s after convergence: holds %v (%v), want %v", n, sortedKeys(got), err, sortedKeys(want))
		}
	}
}

func sameKeys[V any](got map[string]V, want map[string]bool) bool {
	if len(got) != len(want) {
		return false
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			return false
		}
	}
	return true
}

// TestRollingRestart restarts the three nodes one at a time (graceful stop,
// start, wait healthy) under load: no acknowledged instance is lost, and a
// watching kratos client never receives an empty instance list.
func TestRollingRestart(t *testing.T) {
	c := startCluster(t)
	const appid = "load.roll"
	load := startLoad(t, c, appid, nodeNames, 3, 15, 900)
	testkit.Poll(t, 30*time.Second, 100*time.Millisecond, "30 instances acknowledged", func() error {
		n := load.ackedCount()
		return testkit.State(n >= 30, fmt.Sprint(n))
	})
	watch := startKratos(t, c, "watch", "kratos-roll-watch", []string{c.httpAddr("node1")}, "watch", "--appid", appid)
	watch.waitEvent(60*time.Second, "first instances", func(ev kratosEvent) bool { return ev.Event == "instances" })
	watch.waitEvent(60*time.Second, "all three nodes learned", learnedAll(c.allAddrs()))

	for _, n := range nodeNames {
		stopping := time.Now()
		c.stop(n)
		recordFigure(t, "rolling restart: graceful stop of "+n, time.Since(stopping))
		started := time.Now()
		c.start(n)
		api := c.api(n)
		testkit.Poll(t, 60*time.Second, 50*time.Millisecond, n+" ready", func() error {
			st := api.readyz(t.Context())
			return testkit.State(st == 200, fmt.Sprintf("/readyz %d", st))
		})
		recordFigure(t, "rolling restart: "+n+" start -> /readyz 200", time.Since(started))
		c.waitHealthy(n, started, 60*time.Second)
		testkit.Poll(t, 30*time.Second, 250*time.Millisecond, n+" back in every node's lists", func() error {
			for _, m := range nodeNames {
				if ok, st := c.membershipIs(m, c.allAddrs()); !ok {
					return testkit.State(false, st)
				}
			}
			return testkit.State(true, "")
		})
	}
	load.stopRegistering()
	acked := load.ackedSet()
	t.Logf("load: %s", load.summary())
	waitHolds(t, c, nodeNames, appid, acked, 15*time.Second)
	load.stop()

	events := watch.snapshot()
	updates := 0
	for _, ev := range events {
		if ev.Event != "instances" {
			continue
		}
		updates++
		if len(ev.Instances) == 0 {
			t.Errorf("watching kratos client received an empty instance list at %s: %s", ev.at.Format(time.StampMilli), tail(ev.raw, 300))
		}
	}
	if updates == 0 {
		t.Error("the watching client received no instance list at all")
	}
	t.Logf("watcher received %d instance lists, none empty", updates)
}
