// Package compat runs the real kratos v0.6.0 discovery client (the nested
// module test/kratos, built once by the test) against real discovery nodes.
package compat

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// kEvent is one JSON line of kratosclient.
type kEvent struct {
	Event     string      `json:"event"`
	AppID     string      `json:"appid"`
	Instances []kInstance `json:"instances"`
	LastTs    int64       `json:"latest_timestamp"`
	Nodes     []string    `json:"nodes"`
	Current   string      `json:"current"`
	Error     string      `json:"error"`
}

// kInstance is an instance as the kratos client decoded it (its
// naming.Instance uses the wire keys of spec 3.1).
type kInstance = wire.Instance

func (e kEvent) hosts() []string {
	var out []string
	for _, in := range e.Instances {
		out = append(out, in.Hostname)
	}
	slices.Sort(out)
	return out
}

// kratos starts kratosclient with the environment kratos reads: seeds,
// zone, env, region and the process hostname (the instance's hostname).
func kratos(t *testing.T, bin, name string, seeds []string, args ...string) *harness.Process {
	t.Helper()
	env := map[string]string{
		"DISCOVERY_NODES": strings.Join(seeds, ","),
		"ZONE":            harness.DefaultZone,
		"DEPLOY_ENV":      harness.DefaultEnv,
		"REGION":          harness.DefaultRegion,
		"HOSTNAME":        name,
	}
	p := harness.StartProcess(t, name, bin, args, env)
	// discovery.New blocks until its first infra.discovery poll returned a
	// node (spec 8.1.1, C63): "ready" proves the server answered it at once.
	waitEvent(t, p, 0, 10*time.Second, "kratos client ready", func(e kEvent) bool { return e.Event == "ready" })
	return p
}

func waitEvent(t *testing.T, p *harness.Process, from int, timeout time.Duration, what string, match func(kEvent) bool) (int, kEvent) {
	t.Helper()
	return harness.WaitEvent(t, p, from, timeout, what, func(e kEvent) bool {
		if e.Event == "error" {
			t.Fatalf("%s reported an error: %s", p, e.Error)
		}
		return match(e)
	})
}

func instancesOf(appid string, hosts ...string) func(kEvent) bool {
	slices.Sort(hosts)
	return func(e kEvent) bool {
		return e.Event == "instances" && e.AppID == appid && slices.Equal(e.hosts(), hosts)
	}
}

// serverHosts returns the hostnames node n holds for appid (nil if -404).
func serverHosts(t *testing.T, n *harness.Node, appid string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	ii, e, err := n.Client.Fetch(ctx, harness.DefaultEnv, appid, 3, "")
	if err != nil {
		if e != nil && e.Code == -404 {
			return nil
		}
		t.Fatalf("fetch %s: %v", appid, err)
	}
	var out []string
	for _, in := range ii.All() {
		out = append(out, in.Hostname)
	}
	slices.Sort(out)
	return out
}

// TestKratos_RegisterWatchFetchCancel drives the whole client lifecycle of
// kratos v0.6.0 against one node: Register (with its 30 s auto-renew and
// re-register on -404), Build+Watch on another process, Fetch, and the
// cancel a registered process sends when it stops.
func TestKratos_RegisterWatchFetchCancel(t *testing.T) {
	bin := harness.KratosClientBinary(t)
	node := harness.StartNode(t, harness.Options{})
	seeds := []string{node.AdvertisedHTTP}
	const app, renewApp = "compat.svc", "compat.renew"

	// Auto-renew and re-register on -404 (spec 8.3): the instance vanishes
	// from the server (as after an eviction); kratos' next renew (every
	// 30 s) gets -404 and registers again. Started first: it takes 30 s and
	// runs while the rest of the test does.
	renewer := kratos(t, bin, "kratos-renew", seeds, "register", "--appid", renewApp, "--addr", "grpc://127.0.0.1:9300", "--hold")
	waitEvent(t, renewer, 0, 10*time.Second, "renewer registered", func(e kEvent) bool { return e.Event == "registered" })
	registeredAt := time.Now()
	gone := harness.Instance{Region: harness.DefaultRegion, Zone: harness.DefaultZone, Env: harness.DefaultEnv, AppID: renewApp, Hostname: "kratos-renew"}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	e, err := node.Client.Cancel(ctx, gone)
	cancel()
	if err != nil || e.Code != 0 {
		t.Fatalf("server-side cancel of the renewer: %v %v", err, e)
	}
	if got := serverHosts(t, node, renewApp); got != nil {
		t.Fatalf("after cancel the server still holds %v", got)
	}

	watcher := kratos(t, bin, "kratos-watch", seeds, "watch", "--appid", app)
	waitEvent(t, watcher, 0, 10*time.Second, "watching", func(e kEvent) bool { return e.Event == "watching" })

	// Register with two addrs, metadata and version; the watcher sees it
	// within a second (C42: the register wakes the held poll, C48: also for
	// a previously unknown appid).
	regA := kratos(t, bin, "kratos-a", seeds, "register", "--appid", app,
		"--addr", "grpc://127.0.0.1:9000", "--addr", "http://127.0.0.1:8000",
		"--version", "v1.0.0", "--metadata", `{"weight":"10","color":"red"}`, "--hold")
	waitEvent(t, regA, 0, 10*time.Second, "a registered", func(e kEvent) bool { return e.Event == "registered" })
	seenFrom := time.Now()
	i, ev := waitEvent(t, watcher, 0, time.Second, "watcher sees a within 1 s", instancesOf(app, "kratos-a"))
	t.Logf("FIGURE kratos watcher saw the registration %.0f ms after the registrant reported it", float64(time.Since(seenFrom).Microseconds())/1000)
	in := ev.Instances[0]
	// What kratos decoded (spec 3.1, 8.5): zone/env from the registrant's
	// config, both addrs in order, metadata, version, status UP.
	if in.Zone != harness.DefaultZone || in.Env != harness.DefaultEnv || in.AppID != app ||
		!slices.Equal(in.Addrs, []string{"grpc://127.0.0.1:9000", "http://127.0.0.1:8000"}) ||
		in.Version != "v1.0.0" || in.Status != 1 || in.Metadata["weight"] != "10" || in.Metadata["color"] != "red" || in.LatestTimestamp == 0 {
		t.Errorf("watcher decoded %+v", in)
	}

	// Fetch through a third kratos process (Build + first notification).
	fetcher := harness.StartProcess(t, "kratos-fetch", bin, []string{"fetch", "--appid", app, "--timeout", "10s"}, map[string]string{
		"DISCOVERY_NODES": strings.Join(seeds, ","), "ZONE": harness.DefaultZone, "DEPLOY_ENV": harness.DefaultEnv, "HOSTNAME": "kratos-fetch",
	})
	waitEvent(t, fetcher, 0, 15*time.Second, "fetch result", instancesOf(app, "kratos-a"))
	if err := fetcher.Wait(t, 10*time.Second); err != nil {
		t.Errorf("fetch exit: %v", err)
	}

	regB := kratos(t, bin, "kratos-b", seeds, "register", "--appid", app, "--addr", "grpc://127.0.0.1:9001", "--hold")
	waitEvent(t, regB, 0, 10*time.Second, "b registered", func(e kEvent) bool { return e.Event == "registered" })
	i, _ = waitEvent(t, watcher, i+1, 5*time.Second, "watcher sees a and b", instancesOf(app, "kratos-a", "kratos-b"))

	// Cancel a (stdin closed, as when its parent dies): kratos POSTs cancel.
	regA.CloseStdin()
	waitEvent(t, regA, 0, 10*time.Second, "a cancelled", func(e kEvent) bool { return e.Event == "cancelled" })
	if err := regA.Wait(t, 10*time.Second); err != nil {
		t.Errorf("a exit: %v", err)
	}
	if got := serverHosts(t, node, app); !slices.Equal(got, []string{"kratos-b"}) {
		t.Errorf("server after a's cancel holds %v, want [kratos-b]", got)
	}
	// kratos drops an app's update when its list is empty and keeps the
	// last non-empty list (spec 5.5.2), so "a is gone" is only visible to a
	// watcher while another instance remains: b keeps the list non-empty.
	waitEvent(t, watcher, i+1, 5*time.Second, "watcher sees a gone", instancesOf(app, "kratos-b"))

	// Cancel b with SIGTERM: now the server knows no instance of the app
	// (C21: fetch -404). The watcher legitimately keeps [kratos-b].
	if err := regB.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, regB, 0, 10*time.Second, "b cancelled", func(e kEvent) bool { return e.Event == "cancelled" })
	if err := regB.Wait(t, 10*time.Second); err != nil {
		t.Errorf("b exit: %v", err)
	}
	if got := serverHosts(t, node, app); got != nil {
		t.Errorf("server after both cancels holds %v, want none (-404)", got)
	}

	// Back to the renewer: kratos renews 30 s after registering, gets -404
	// and re-registers.
	testkit.Eventually(t, 45*time.Second-time.Since(registeredAt), "kratos re-registered after -404 on renew", func() error {
		if got := serverHosts(t, node, renewApp); !slices.Equal(got, []string{"kratos-renew"}) {
			return fmt.Errorf("server holds %v", got)
		}
		return nil
	})
	t.Logf("FIGURE kratos re-registered %.1f s after its registration (renew gap 30 s)", time.Since(registeredAt).Seconds())
	renewer.CloseStdin()
	waitEvent(t, renewer, 0, 10*time.Second, "renewer cancelled", func(e kEvent) bool { return e.Event == "cancelled" })
	if got := serverHosts(t, node, renewApp); got != nil {
		t.Errorf("renewer's cancel left %v", got)
	}
}

// TestKratos_LearnsNodesAndSurvivesNodeLoss: a kratos client seeded with ONE
// of three nodes learns all three from infra.discovery (spec 7.6, C62, C63),
// and when the node it polls is SIGKILLed it fails over (spec 8.2) and keeps
// receiving updates: an instance registered through another node after the
// kill reaches it.
func TestKratos_LearnsNodesAndSurvivesNodeLoss(t *testing.T) {
	bin := harness.KratosClientBinary(t)
	c := harness.StartCluster(t, 3, harness.Options{})
	nodes := c.Nodes()
	var all []string
	for _, n := range nodes {
		all = append(all, n.AdvertisedHTTP)
	}
	slices.Sort(all)
	const app = "compat.ha"

	watcher := kratos(t, bin, "kratos-ha-watch", []string{nodes[0].AdvertisedHTTP}, "watch", "--appid", app)
	_, learned := waitEvent(t, watcher, 0, 10*time.Second, "watcher learned all nodes", func(e kEvent) bool {
		return e.Event == "nodes" && slices.Equal(e.Nodes, all) && e.Current != ""
	})
	t.Logf("seeded with %s, learned %v", nodes[0].AdvertisedHTTP, learned.Nodes)

	register := func(n *harness.Node, host string, port int) {
		t.Helper()
		in := harness.Instance{Region: harness.DefaultRegion, Zone: harness.DefaultZone, Env: harness.DefaultEnv,
			AppID: app, Hostname: host, Addrs: []string{fmt.Sprintf("grpc://127.0.0.1:%d", port)}, Status: 1}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if e, err := n.Client.Register(ctx, in); err != nil || e.Code != 0 {
			t.Fatalf("register %s on %s: %v %v", host, n.Name, err, e)
		}
	}
	register(nodes[1], "before-kill", 9400)
	i, _ := waitEvent(t, watcher, 0, 5*time.Second, "watcher sees the first instance", instancesOf(app, "before-kill"))

	// The node the watcher polls: the only node holding a parked poll (the
	// watcher is the only poller here), and the one kratos itself would
	// pick (its own view, reported by kratosclient).
	var victim *harness.Node
	testkit.Eventually(t, 10*time.Second, "watcher's poll located", func() error {
		victim = nil
		var parked []string
		for _, n := range nodes {
			v, err := parkedPolls(n)
			if err != nil {
				return err
			}
			if v > 0 {
				parked = append(parked, n.Name)
				victim = n
			}
		}
		if len(parked) != 1 {
			return fmt.Errorf("parked polls on %v", parked)
		}
		if _, e := lastNodes(watcher); e.Current != victim.AdvertisedHTTP {
			return fmt.Errorf("poll parked on %s (%s), kratos picks %s", victim.Name, victim.AdvertisedHTTP, e.Current)
		}
		return nil
	})
	if victim == nodes[0] {
		t.Logf("watcher polls its seed %s", victim.Name)
	} else {
		t.Logf("watcher polls %s, a node it was not seeded with: it learned it", victim.Name)
	}
	c.Kill(t, victim)
	killed := time.Now()
	other := c.Others(victim)[0]

	register(other, "after-kill", 9401)
	// kratos sleeps 1 s per failed poll and may try the dead node again (a
	// shrinking node list is ignored, spec 7.6), so allow a few rounds.
	waitEvent(t, watcher, i+1, 20*time.Second, "watcher sees the instance registered after the kill",
		instancesOf(app, "before-kill", "after-kill"))
	t.Logf("FIGURE kratos watcher got the post-kill registration %.1f s after its node %s was killed", time.Since(killed).Seconds(), victim.Name)
	if _, ev := lastNodes(watcher); ev.Current == victim.AdvertisedHTTP {
		t.Errorf("watcher still points at the killed node %s", victim.AdvertisedHTTP)
	}
	// It keeps the learned list (a list that only shrinks is ignored).
	if _, ev := lastNodes(watcher); !slices.Equal(ev.Nodes, all) {
		t.Errorf("watcher's node list %v, want %v", ev.Nodes, all)
	}
}

// parkedPolls reads the node's discovery_http_parked_polls gauge.
func parkedPolls(n *harness.Node) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	text, err := n.Client.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, "discovery_http_parked_polls "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s: no discovery_http_parked_polls in /metrics", n.Name)
}

func lastNodes(p *harness.Process) (int, kEvent) {
	var last kEvent
	idx := -1
	for i, l := range p.Lines() {
		var e kEvent
		if json.Unmarshal(l, &e) == nil && e.Event == "nodes" {
			last, idx = e, i
		}
	}
	return idx, last
}
