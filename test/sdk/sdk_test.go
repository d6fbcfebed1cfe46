// Package sdk runs the Go client SDK (api/client and its gRPC resolver)
// against real multi-process discovery clusters started by test/harness.
package sdk

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// newClient is an SDK client of the harness' env and zone seeded with the
// given nodes only, with short backoffs so failover shows quickly.
func newClient(t *testing.T, hostname string, seeds ...*harness.Node) *client.Client {
	t.Helper()
	cfg := client.Config{
		Region: harness.DefaultRegion, Zone: harness.DefaultZone, Env: harness.DefaultEnv, Hostname: hostname,
		RenewInterval:  time.Second,
		RequestTimeout: 3 * time.Second,
		BackoffInitial: 50 * time.Millisecond,
		BackoffMax:     500 * time.Millisecond,
	}
	for _, n := range seeds {
		cfg.Nodes = append(cfg.Nodes, n.AdvertisedHTTP)
	}
	c, err := client.New(cfg, client.WithLogger(slog.New(slog.NewTextHandler(t.Output(), nil)).With("client", hostname)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, last)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

func hosts(s *client.Instances) []string {
	var out []string
	for _, in := range s.All() {
		out = append(out, in.Hostname)
	}
	slices.Sort(out)
	return out
}

// waitHosts reads the watcher until a set has exactly want.
func waitHosts(t *testing.T, w *client.Watcher, timeout time.Duration, want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	var last []string
	for {
		s, err := w.Next(ctx)
		if ctx.Err() != nil {
			t.Fatalf("watch %s: no set %v within %s (last %v, err %v)", w.AppID(), want, timeout, last, err)
		}
		if err != nil {
			t.Logf("watch %s: transient: %v", w.AppID(), err)
			continue
		}
		if last = hosts(s); slices.Equal(last, want) {
			return
		}
	}
}

func nodeByAddr(c *harness.Cluster, addr string) *harness.Node {
	for _, n := range c.Nodes() {
		if n.AdvertisedHTTP == addr {
			return n
		}
	}
	return nil
}

// TestSDK_ClusterNodeDeath: the SDK learns the cluster from one seed; when
// the node holding the watcher's poll dies, the watch goes on through
// another node and delivers the next change; registrations survive; the
// client's node list drops the dead node once the cluster does.
func TestSDK_ClusterNodeDeath(t *testing.T) {
	c := harness.StartCluster(t, 3, harness.Options{})
	nodes := c.Nodes()
	var all []string
	for _, n := range nodes {
		all = append(all, n.AdvertisedHTTP)
	}
	slices.Sort(all)

	watcher := newClient(t, "sdk-watcher", nodes[0])
	waitFor(t, 15*time.Second, "node list learned from infra.discovery", func() (bool, string) {
		got := slices.Sorted(slices.Values(watcher.Nodes()))
		return slices.Equal(got, all), fmt.Sprint(got)
	})

	regA := newClient(t, "pod-a", nodes[0])
	if _, err := regA.Register(t.Context(), client.Instance{AppID: "sdk.svc", Addrs: []string{"grpc://127.0.0.1:9001"}}); err != nil {
		t.Fatal(err)
	}
	w, err := watcher.Watch("sdk.svc")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	waitHosts(t, w, 10*time.Second, "pod-a")

	// Kill the node the watcher polls, then change the app right away.
	victim := nodeByAddr(c, watcher.CurrentNode())
	if victim == nil {
		t.Fatalf("current node %s is not a cluster node", watcher.CurrentNode())
	}
	victim.Kill(t)
	survivor := c.Others(victim)[0]
	regB := newClient(t, "pod-b", survivor)
	if _, err := regB.Register(t.Context(), client.Instance{AppID: "sdk.svc", Addrs: []string{"grpc://127.0.0.1:9002"}}); err != nil {
		t.Fatal(err)
	}
	waitHosts(t, w, 15*time.Second, "pod-a", "pod-b")
	if watcher.CurrentNode() == victim.AdvertisedHTTP {
		t.Fatal("watcher still on the dead node")
	}

	// The next change after the failover arrives too.
	regC := newClient(t, "pod-c", survivor)
	cancelC, err := regC.Register(t.Context(), client.Instance{AppID: "sdk.svc", Addrs: []string{"grpc://127.0.0.1:9003"}})
	if err != nil {
		t.Fatal(err)
	}
	waitHosts(t, w, 10*time.Second, "pod-a", "pod-b", "pod-c")
	if err := cancelC(); err != nil {
		t.Fatal(err)
	}
	waitHosts(t, w, 10*time.Second, "pod-a", "pod-b")

	// pod-a's client seeded on nodes[0] (maybe the victim): its 1 s
	// heartbeats move to a live node and the instance stays.
	waitFor(t, 10*time.Second, "pod-a renewed through a live node", func() (bool, string) {
		s, err := regA.Fetch(t.Context(), "sdk.svc")
		if err != nil {
			return false, err.Error()
		}
		return slices.Contains(hosts(s), "pod-a") && regA.CurrentNode() != victim.AdvertisedHTTP, regA.CurrentNode()
	})

	// The dead node leaves the learned list once gossip declares it dead
	// and its infra.discovery record goes (a seed stays as last resort).
	var live []string
	for _, n := range c.Live() {
		live = append(live, n.AdvertisedHTTP)
	}
	slices.Sort(live)
	waitFor(t, 30*time.Second, "node list without the dead node", func() (bool, string) {
		got := watcher.Nodes()
		learned := slices.Sorted(slices.Values(got[:min(2, len(got))]))
		want := len(got) == 2 || (len(got) == 3 && got[2] == nodes[0].AdvertisedHTTP && victim == nodes[0])
		return want && slices.Equal(learned, live), fmt.Sprint(got)
	})
}
