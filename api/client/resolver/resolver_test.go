package resolver_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/client/clienttest"
	dresolver "github.com/discovery-go/discovery/api/client/resolver"
	"github.com/discovery-go/discovery/internal/testkit"
)

func TestMain(m *testing.M) { testkit.VerifyTestMain(m) }

const (
	testEnv  = "test"
	testZone = "zone01"
)

// fakeCC records what the resolver pushes (the kratos technique: embed the
// interface, override what the resolver calls).
type fakeCC struct {
	resolver.ClientConn
	mu     sync.Mutex
	states []resolver.State
	errs   []error
}

func (f *fakeCC) UpdateState(s resolver.State) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.states = append(f.states, s)
	return nil
}

func (f *fakeCC) ReportError(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
}

func (f *fakeCC) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

func (f *fakeCC) snapshot() ([]resolver.State, []error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.states), slices.Clone(f.errs)
}

func newClient(t *testing.T, nodes ...*clienttest.Node) *client.Client {
	t.Helper()
	cfg := client.Config{
		Region: "region01", Zone: testZone, Env: testEnv, Hostname: "resolver-test",
		PollTimeout: 5 * time.Second, RequestTimeout: 2 * time.Second, RetryTimeout: 5 * time.Second,
		BackoffInitial: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
	}
	for _, n := range nodes {
		cfg.Nodes = append(cfg.Nodes, n.Addr())
	}
	c, err := client.New(cfg, client.WithLogger(testkit.Logger(t, slog.LevelInfo)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func target(t *testing.T, s string) resolver.Target {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return resolver.Target{URL: *u}
}

func build(t *testing.T, c *client.Client, tgt string) *fakeCC {
	t.Helper()
	cc := &fakeCC{}
	r, err := dresolver.NewBuilder(c).Build(target(t, tgt), cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatalf("Build(%s): %v", tgt, err)
	}
	t.Cleanup(r.Close)
	return cc
}

func ins(appid, zone, host string, meta map[string]string, addrs ...string) client.Instance {
	return client.Instance{Region: "region01", Zone: zone, Env: testEnv, AppID: appid, Hostname: host, Addrs: addrs, Version: "v1", Metadata: meta}
}

// addrsOf flattens the endpoints of a state to their first addresses.
func addrsOf(s resolver.State) []string {
	var out []string
	for _, ep := range s.Endpoints {
		for _, a := range ep.Addresses {
			out = append(out, a.Addr)
		}
	}
	return out
}

// waitState waits until the latest pushed state has exactly want.
func waitState(t *testing.T, cc *fakeCC, want ...string) resolver.State {
	t.Helper()
	var got resolver.State
	testkit.Eventually(t, 5*time.Second, "resolver state", func() error {
		states, errs := cc.snapshot()
		if len(states) > 0 && slices.Equal(addrsOf(states[len(states)-1]), want) {
			got = states[len(states)-1]
			return nil
		}
		var last []string
		if len(states) > 0 {
			last = addrsOf(states[len(states)-1])
		}
		return fmt.Errorf("last %v (of %d), want %v; errors %v", last, len(states), want, errs)
	})
	return got
}

// waitErrors waits until the errors reported so far satisfy ok.
func waitErrors(t *testing.T, cc *fakeCC, what string, ok func(errs []error) bool) []error {
	t.Helper()
	var errs []error
	testkit.Eventually(t, 5*time.Second, what, func() error {
		_, errs = cc.snapshot()
		return testkit.State(ok(errs), fmt.Sprintf("errors = %v", errs))
	})
	return errs
}

func anyErr(errs []error) bool { return len(errs) > 0 }

func TestBuilder_SchemeAndTargets(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, n)
	b := dresolver.NewBuilder(c)
	if b.Scheme() != "discovery" {
		t.Fatalf("Scheme = %q", b.Scheme())
	}
	store.Put(ins("demo.svc", testZone, "h1", nil, "grpc://127.0.0.1:9001"))
	// Both the plain and the kratos target forms resolve the appid.
	for _, tgt := range []string{"discovery:///demo.svc", "discovery://default/demo.svc"} {
		cc := build(t, c, tgt)
		waitState(t, cc, "127.0.0.1:9001")
	}
	for _, bad := range []string{"discovery:///", "discovery://default/", "discovery:///a/b"} {
		if _, err := b.Build(target(t, bad), &fakeCC{}, resolver.BuildOptions{}); err == nil || !strings.Contains(err.Error(), "appid") {
			t.Errorf("Build(%s) = %v, want an error about the appid", bad, err)
		}
	}
}

func TestResolver_EndpointsCarryInstanceInfo(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, n)
	store.Put(ins("svc", testZone, "h1", map[string]string{"weight": "20", "color": "red", "cluster": "c1"},
		"http://127.0.0.1:8001", "grpc://127.0.0.1:9001", "grpc://127.0.0.1:9011"))
	store.Put(ins("svc", testZone, "h2", map[string]string{"weight": "-3"}, "grpc://127.0.0.1:9002"))
	store.Put(ins("svc", testZone, "h3", map[string]string{"weight": "abc"}, "grpc://127.0.0.1:9003"))
	store.Put(ins("svc", testZone, "h4", nil, "http://127.0.0.1:8004")) // no grpc addr: skipped
	waiting := ins("svc", testZone, "h5", nil, "grpc://127.0.0.1:9005")
	waiting.Status = client.StatusWaiting
	store.Put(waiting)
	store.Put(ins("svc", "zone02", "far", nil, "grpc://127.0.0.1:9100")) // other zone: not preferred

	cc := build(t, c, "discovery:///svc")
	st := waitState(t, cc, "127.0.0.1:9001", "127.0.0.1:9011", "127.0.0.1:9002", "127.0.0.1:9003")
	want := []dresolver.Info{
		{AppID: "svc", Hostname: "h1", Region: "region01", Zone: testZone, Version: "v1", Color: "red", Cluster: "c1", Weight: 20},
		{AppID: "svc", Hostname: "h2", Region: "region01", Zone: testZone, Version: "v1", Weight: 10},
		{AppID: "svc", Hostname: "h3", Region: "region01", Zone: testZone, Version: "v1", Weight: 10},
	}
	for i, ep := range st.Endpoints {
		got, ok := dresolver.InfoFromEndpoint(ep)
		if !ok || got != want[i] {
			t.Errorf("endpoint %d info = %+v, want %+v", i, got, want[i])
		}
	}
	if len(st.Endpoints[0].Addresses) != 2 {
		t.Errorf("an instance with two grpc addrs is one endpoint with two addresses: %v", st.Endpoints[0].Addresses)
	}
}

func TestResolver_PrefersOwnZoneFallsBackToAll(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, n)
	store.Put(ins("svc", "zone02", "b1", nil, "grpc://127.0.0.1:9201"))
	store.Put(ins("svc", "zone03", "c1", nil, "grpc://127.0.0.1:9301"))
	cc := build(t, c, "discovery:///svc")
	waitState(t, cc, "127.0.0.1:9201", "127.0.0.1:9301") // own zone has none: all zones
	store.Put(ins("svc", testZone, "a1", nil, "grpc://127.0.0.1:9101"))
	waitState(t, cc, "127.0.0.1:9101") // own zone appears: only it
	store.Remove(testEnv, "svc", testZone, "a1")
	waitState(t, cc, "127.0.0.1:9201", "127.0.0.1:9301")

	// A zone in the target overrides the client's zone.
	cc3 := build(t, c, "discovery:///svc?zone=zone03")
	waitState(t, cc3, "127.0.0.1:9301")
}

func TestResolver_ReportsErrorsAndKeepsTheLastGoodList(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, n)
	store.Put(ins("svc", testZone, "a1", nil, "grpc://127.0.0.1:9101"))
	cc := build(t, c, "discovery:///svc")
	waitState(t, cc, "127.0.0.1:9101")

	// The app vanishes; the server reports it unknown in the next answer
	// (triggered by another appid): the watcher sees an empty set, the
	// resolver keeps the last list.
	store.Remove(testEnv, "svc", testZone, "a1")
	store.Put(ins("other", testZone, "o1", nil, "grpc://127.0.0.1:9999"))
	w, _ := c.Watch("other")
	defer w.Close()
	sw, _ := c.Watch("svc")
	defer sw.Close()
	ctx, cancel := context.WithTimeout(testkit.Context(t), 5*time.Second)
	defer cancel()
	for {
		s, err := sw.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for the empty set: %v", err)
		}
		if s.Len() == 0 {
			break
		}
	}
	// Node failures are reported, and still no empty list is pushed.
	n.SetFault(clienttest.Down)
	store.Put(ins("other", testZone, "o2", nil, "grpc://127.0.0.1:9998")) // ends the held poll
	errs := waitErrors(t, cc, "no error reported while the node is down", anyErr)
	if !strings.Contains(errs[0].Error(), "svc") {
		t.Errorf("reported error does not name the appid: %v", errs[0])
	}
	states, _ := cc.snapshot()
	for _, s := range states {
		if len(s.Endpoints) == 0 {
			t.Fatal("an empty endpoint list was pushed")
		}
	}
	if got := addrsOf(states[len(states)-1]); !slices.Equal(got, []string{"127.0.0.1:9101"}) {
		t.Fatalf("last state = %v", got)
	}
	// Recovery: the resolver goes on updating.
	n.SetFault(nil)
	store.Put(ins("svc", testZone, "a2", nil, "grpc://127.0.0.1:9102"))
	waitState(t, cc, "127.0.0.1:9102")
}

func TestResolver_ErrorBeforeAnyList(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	n.SetFault(clienttest.Down)
	c := newClient(t, n)
	cc := build(t, c, "discovery:///svc")
	waitErrors(t, cc, "no error reported", anyErr)
}

func TestResolver_OnlyNonGRPCInstancesIsAnError(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, n)
	store.Put(ins("svc", testZone, "a1", nil, "http://127.0.0.1:8001"))
	cc := build(t, c, "discovery:///svc")
	errs := waitErrors(t, cc, "no error reported", anyErr)
	if states, _ := cc.snapshot(); len(states) > 0 {
		t.Fatalf("pushed %v for an app without grpc addrs", states)
	}
	if !strings.Contains(fmt.Sprint(errs[0]), "grpc") {
		t.Errorf("error = %v", errs[0])
	}
}

func TestResolver_ClientClosedEndsTheResolver(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, n)
	cc := &fakeCC{}
	r, err := dresolver.NewBuilder(c).Build(target(t, "discovery:///svc"), cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	waitErrors(t, cc, "want the client-closed error", func(errs []error) bool {
		return len(errs) > 0 && strings.Contains(errs[len(errs)-1].Error(), "closed")
	})
	r.Close() // must not hang although the watch already ended
	if _, err := dresolver.NewBuilder(c).Build(target(t, "discovery:///svc"), cc, resolver.BuildOptions{}); err == nil {
		t.Error("Build on a closed client succeeded")
	}
}
