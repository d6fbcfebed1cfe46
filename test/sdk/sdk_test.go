// Package sdk runs the Go client SDK (api/client and its gRPC resolver,
// a module of its own) against real nodes: in process for the single-node
// behaviour, and multi-process clusters started by test/harness for
// failover. The SDK module's own tests use fake nodes only (clienttest),
// so the SDK does not depend on the server.
package sdk

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/test/harness"
)

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

	watcher := newClient(t, clientConfig("sdk-watcher", addrsOf(nodes[0])...))
	testkit.Eventually(t, 15*time.Second, "node list learned from infra.discovery", func() error {
		return want(slices.Sorted(slices.Values(watcher.Nodes())), all)
	})

	regA := newClient(t, clientConfig("pod-a", addrsOf(nodes[0])...))
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
	regB := newClient(t, clientConfig("pod-b", addrsOf(survivor)...))
	if _, err := regB.Register(t.Context(), client.Instance{AppID: "sdk.svc", Addrs: []string{"grpc://127.0.0.1:9002"}}); err != nil {
		t.Fatal(err)
	}
	waitHosts(t, w, 15*time.Second, "pod-a", "pod-b")
	if watcher.CurrentNode() == victim.AdvertisedHTTP {
		t.Fatal("watcher still on the dead node")
	}

	// The next change after the failover arrives too.
	regC := newClient(t, clientConfig("pod-c", addrsOf(survivor)...))
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
	testkit.Eventually(t, 10*time.Second, "pod-a renewed through a live node", func() error {
		s, err := regA.Fetch(t.Context(), "sdk.svc")
		if err != nil {
			return err
		}
		if !slices.Contains(hosts(s), "pod-a") || regA.CurrentNode() == victim.AdvertisedHTTP {
			return fmt.Errorf("hosts %v through %s", hosts(s), regA.CurrentNode())
		}
		return nil
	})

	// The dead node leaves the learned list once gossip declares it dead
	// and its infra.discovery record goes (a seed stays as last resort).
	var live []string
	for _, n := range c.Live() {
		live = append(live, n.AdvertisedHTTP)
	}
	slices.Sort(live)
	testkit.Eventually(t, 30*time.Second, "node list without the dead node", func() error {
		got := watcher.Nodes()
		learned := slices.Sorted(slices.Values(got[:min(2, len(got))]))
		ok := len(got) == 2 || (len(got) == 3 && got[2] == nodes[0].AdvertisedHTTP && victim == nodes[0])
		if !ok {
			return fmt.Errorf("node list %v", got)
		}
		return want(learned, live)
	})
}
