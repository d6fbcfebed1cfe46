package embed_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/configs"
	"github.com/discovery-go/discovery/embed"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
	"github.com/discovery-go/discovery/test/harness"
	"github.com/discovery-go/discovery/test/legacy"
)

// Mixed clusters (issue #12): our node beside nodes of the original
// bilibili/discovery, here the in-process fake of test/legacy. Legacy nodes
// listen on their own loopback addresses (127.0.0.2, .3) and send from
// them, so this node trusts exactly those, not the test's own 127.0.0.1.

// startLegacy starts a fake original node on ip, stopped at the end.
func startLegacy(t *testing.T, ip string, seeds ...string) *legacy.Node {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	l, err := legacy.Start(legacy.Config{Listener: ln, Nodes: seeds, RenewInterval: 200 * time.Millisecond,
		ForwardTimeout: 2 * time.Second, Logger: testkit.Logger(t, 0).With("legacy", ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// mixedConfig is one of our nodes with legacy nodes configured.
func mixedConfig(name string, pull time.Duration, legacyNodes ...*legacy.Node) configs.Config {
	cfg := testConfig(name)
	for _, l := range legacyNodes {
		cfg.Cluster.LegacyNodes = append(cfg.Cluster.LegacyNodes, l.Addr())
	}
	cfg.Cluster.LegacyPullInterval = pull
	cfg.Cluster.RenewInterval = 200 * time.Millisecond
	cfg.Cluster.RetryMaxBackoff = 100 * time.Millisecond
	return cfg
}

func multi(app, host string) wire.Instance {
	return wire.Instance{Region: "region01", Zone: "zone01", Env: "dev", AppID: app, Hostname: host,
		Addrs: []string{"grpc://10.0.0.7:9000", "http://10.0.0.7:8000"}, Status: 1}
}

// addrsOn polls until the instance is stored on the legacy node with want
// addrs (nil: until it is absent).
func legacyHas(t *testing.T, l *legacy.Node, in wire.Instance, want []string) {
	t.Helper()
	hasAddrs(t, in.AppID+"/"+in.Hostname+" on legacy "+l.Addr(), want, func() ([]string, bool) {
		got, ok := l.Instance(in.Env, in.AppID, in.Zone, in.Hostname)
		return got.Addrs, ok
	})
}

func oursHas(t *testing.T, n *embed.Node, in wire.Instance, want []string) {
	t.Helper()
	hasAddrs(t, in.AppID+"/"+in.Hostname+" on ours", want, func() ([]string, bool) {
		got, ok := n.Registry().Get(in.Key())
		return got.Addrs, ok
	})
}

// hasAddrs waits until get reports the instance with addrs want (nil: until
// it is absent).
func hasAddrs(t *testing.T, what string, want []string, get func() ([]string, bool)) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, what, func() error {
		got, ok := get()
		switch {
		case want == nil && ok:
			return fmt.Errorf("still there: %v", got)
		case want == nil:
			return nil
		case !ok:
			return fmt.Errorf("absent")
		case !slices.Equal(got, want):
			return fmt.Errorf("addrs %q, want %q", got, want)
		}
		return nil
	})
}

// One node of ours beside one legacy node: a startup pull, writes both
// ways with both addrs intact, the node records both ways, the renew
// handshake repairing a lost copy on either side, cancel and set both
// ways, and what the node reports of the legacy node.
func TestLegacy_MixedPair(t *testing.T) {
	l := startLegacy(t, "127.0.0.2")
	lc := harness.NewClient(l.Addr())
	defer lc.Close()
	before := multi("mix.before", "b1")
	if env, err := lc.Register(t.Context(), before); err != nil || env.Code != 0 {
		t.Fatalf("register on legacy: %v %+v", err, env)
	}

	n := start(t, mixedConfig("mix", time.Hour, l), embed.Options{})
	ready(t, n)
	c := client(t, n)
	// At start: the legacy node's fetch/all was pulled before ready.
	if got, ok := n.Registry().Get(before.Key()); !ok || !slices.Equal(got.Addrs, before.Addrs) {
		t.Fatalf("not pulled at start: %v %v", ok, got.Addrs)
	}
	// Node records both ways: the legacy node then forwards to us.
	testkit.EventuallyTrue(t, 10*time.Second, "our record on the legacy node", func() bool {
		_, ok := l.Instance("dev", wire.InfraAppID, "zone01", "mix")
		same, _ := l.Peers()
		return ok && slices.Contains(same, n.Addrs().HTTP)
	})
	if _, ok := n.Registry().Get(registry.Key{Env: "dev", AppID: wire.InfraAppID, Zone: "zone01", Hostname: l.Hostname()}); !ok {
		t.Fatal("the legacy node's record is not here")
	}

	// Client write on ours reaches the legacy node, addrs repeated.
	ours := multi("mix.ours", "o1")
	if env, err := c.Register(t.Context(), ours); err != nil || env.Code != 0 {
		t.Fatalf("register on ours: %v %+v", err, env)
	}
	legacyHas(t, l, ours, ours.Addrs)
	// Client write on the legacy node reaches ours, addrs split back (D4).
	theirs := multi("mix.theirs", "t1")
	if env, err := lc.Register(t.Context(), theirs); err != nil || env.Code != 0 {
		t.Fatalf("register on legacy: %v %+v", err, env)
	}
	oursHas(t, n, theirs, theirs.Addrs)

	// Renew handshake, legacy -> ours: our copy lost, the legacy node's
	// forwarded renew gets -404 and it registers its copy here again.
	if _, err := n.Registry().Evict(theirs.Key()); err != nil {
		t.Fatal(err)
	}
	if env, err := lc.Renew(t.Context(), theirs); err != nil || env.Code != 0 {
		t.Fatalf("renew on legacy: %v %+v", err, env)
	}
	oursHas(t, n, theirs, theirs.Addrs)
	// ours -> legacy: its copy lost, our forwarded renew gets -404 and we
	// register ours there again.
	if !l.Drop(ours.Env, ours.AppID, ours.Zone, ours.Hostname) {
		t.Fatal("drop on legacy")
	}
	if env, err := c.Renew(t.Context(), ours); err != nil || env.Code != 0 {
		t.Fatalf("renew on ours: %v %+v", err, env)
	}
	legacyHas(t, l, ours, ours.Addrs)

	// set on ours and cancel both ways.
	if env, err := c.Set(t.Context(), form("zone", "zone01", "env", "dev", "appid", ours.AppID, "hostname", ours.Hostname, "status", "2")); err != nil || env.Code != 0 {
		t.Fatalf("set: %v %+v", err, env)
	}
	testkit.EventuallyTrue(t, 10*time.Second, "set reached the legacy node", func() bool {
		got, _ := l.Instance(ours.Env, ours.AppID, ours.Zone, ours.Hostname)
		return got.Status == 2
	})
	if env, err := lc.Cancel(t.Context(), theirs); err != nil || env.Code != 0 {
		t.Fatalf("cancel on legacy: %v %+v", err, env)
	}
	oursHas(t, n, theirs, nil)
	if env, err := c.Cancel(t.Context(), ours); err != nil || env.Code != 0 {
		t.Fatalf("cancel on ours: %v %+v", err, env)
	}
	legacyHas(t, l, ours, nil)

	st := n.Cluster().LegacyStatus()
	if len(st) != 1 || !st[0].Up || st[0].LastPull == 0 || st[0].Forwarded == 0 || st[0].Received == 0 {
		t.Fatalf("legacy status %+v", st)
	}
	m, err := c.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"discovery_legacy_up{node=", "discovery_legacy_ops_forwarded_total{node=", "discovery_legacy_ops_received_total{node=",
		"discovery_legacy_last_pull_timestamp_seconds{node="} {
		if !strings.Contains(m, name+`"`+l.Addr()+`"}`) {
			t.Errorf("metrics lack %s%q}", name, l.Addr())
		}
	}
}

// Only the configured legacy addresses are trusted: the same replicated
// write from this test's own address (not a legacy node) is a plain client
// write, while the legacy node may write infra.discovery and fetch/all.
func TestLegacy_TrustIsBySourceAddress(t *testing.T) {
	l := startLegacy(t, "127.0.0.2")
	cfg := mixedConfig("trust", time.Hour, l)
	cfg.Security.AdminToken = adminToken
	n := start(t, cfg, embed.Options{})
	ready(t, n)
	c := client(t, n)
	in := multi(wire.InfraAppID, "not-a-node")
	env, err := c.Register(t.Context(), in, form("replication", "true"))
	if err != nil || env.Code != wire.CodeForbidden {
		t.Fatalf("infra.discovery with replication=true from a non-legacy address: %v %+v", err, env)
	}
	if env, _ := c.Do(t.Context(), "GET", "/discovery/fetch/all", nil, nil); env.Code != wire.CodeUnauthorized {
		t.Fatalf("fetch/all from a non-legacy address without the token: %+v", env)
	}
	// The legacy node itself: its own record arrived (a write of
	// infra.discovery), and its startup sync may read fetch/all.
	testkit.EventuallyTrue(t, 10*time.Second, "legacy node's own record here", func() bool {
		_, ok := n.Registry().Get(registry.Key{Env: "dev", AppID: wire.InfraAppID, Zone: "zone01", Hostname: l.Hostname()})
		return ok
	})
	l2 := startLegacy(t, "127.0.0.2", n.Addrs().HTTP) // same address as a configured one: trusted
	testkit.EventuallyTrue(t, 10*time.Second, "second legacy node synced from ours", func() bool {
		_, ok := l2.Instance("dev", wire.InfraAppID, "zone01", "trust")
		return ok
	})
}

// Defect D4 across two legacy nodes: a multi-address instance registered
// on one is stored comma-joined on the other. Ours stores it split, never
// spreads the joined form, and repairs the second legacy node's copy after
// a pull by registering its own copy there again.
func TestLegacy_JoinedAddrsRepaired(t *testing.T) {
	l1 := startLegacy(t, "127.0.0.2")
	l2 := startLegacy(t, "127.0.0.3", l1.Addr())
	n := start(t, mixedConfig("d4", 100*time.Millisecond, l1, l2), embed.Options{})
	ready(t, n)
	testkit.EventuallyTrue(t, 10*time.Second, "legacy nodes know each other and ours", func() bool {
		s1, _ := l1.Peers()
		s2, _ := l2.Peers()
		return slices.Contains(s1, l2.Addr()) && slices.Contains(s1, n.Addrs().HTTP) && slices.Contains(s2, n.Addrs().HTTP)
	})
	lc := harness.NewClient(l1.Addr())
	defer lc.Close()
	in := multi("d4.app", "h1")
	if env, err := lc.Register(t.Context(), in); err != nil || env.Code != 0 {
		t.Fatalf("register on legacy 1: %v %+v", err, env)
	}
	oursHas(t, n, in, in.Addrs)
	// l2 got it joined from l1 (the defect), then ours repaired it.
	legacyHas(t, l2, in, in.Addrs)
	testkit.EventuallyTrue(t, 10*time.Second, "repair counted", func() bool {
		for _, s := range n.Cluster().LegacyStatus() {
			if s.Addr == l2.Addr() && s.Repaired > 0 {
				return true
			}
		}
		return false
	})
	for _, a := range mustGet(t, n, in.Key()).Addrs {
		if strings.Contains(a, ",") {
			t.Fatalf("ours stores a joined addr %q", a)
		}
	}
}

// A legacy node that comes back is pulled: what it took while it could
// not forward to us (it does not know us again until our record reaches
// it) arrives here.
func TestLegacy_ComebackIsPulled(t *testing.T) {
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.2:0")
	if err != nil {
		t.Skip(err)
	}
	addr := ln.Addr().String()
	l, err := legacy.Start(legacy.Config{Listener: ln, RenewInterval: 200 * time.Millisecond, ForwardTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n := start(t, mixedConfig("back", time.Hour, l), embed.Options{})
	ready(t, n)
	l.Kill()
	testkit.EventuallyTrue(t, 10*time.Second, "legacy node seen down", func() bool {
		st := n.Cluster().LegacyStatus()
		return len(st) == 1 && !st[0].Up
	})
	ln2, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := legacy.Start(legacy.Config{Listener: ln2, RenewInterval: time.Hour, ForwardTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	lc := harness.NewClient(addr)
	defer lc.Close()
	in := multi("back.app", "h1")
	if env, err := lc.Register(context.Background(), in); err != nil || env.Code != 0 {
		t.Fatalf("register on the restarted legacy node: %v %+v", err, env)
	}
	oursHas(t, n, in, in.Addrs)
	testkit.EventuallyTrue(t, 10*time.Second, "legacy node seen up", func() bool {
		st := n.Cluster().LegacyStatus()
		return len(st) == 1 && st[0].Up
	})
}

func mustGet(t *testing.T, n *embed.Node, k registry.Key) registry.Instance {
	t.Helper()
	in, ok := n.Registry().Get(k)
	if !ok {
		t.Fatalf("%v absent", k)
	}
	return in
}
