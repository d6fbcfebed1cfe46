package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/client/clienttest"
	"github.com/discovery-go/discovery/internal/testkit"
)

func TestWatch_FirstSetThenEachChange(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, testConfig(n))
	store.Put(instance("demo", "a", "grpc://10.0.0.1:9000"))
	w, err := c.Watch("demo")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s := waitHosts(t, w, 5*time.Second, "a")
	if s.AppID != "demo" || s.LatestTimestamp == 0 || s.Zones[testZone][0].Addrs[0] != "grpc://10.0.0.1:9000" {
		t.Errorf("first set = %+v", s)
	}
	store.Put(instance("demo", "b", "grpc://10.0.0.2:9000"))
	waitHosts(t, w, 5*time.Second, "a", "b")
	// A cancelled instance disappears while others remain.
	store.Remove(testEnv, "demo", testZone, "a")
	waitHosts(t, w, 5*time.Second, "b")
}

func TestWatch_ReturnsCopies(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, testConfig(n))
	store.Put(instance("demo", "a", "grpc://10.0.0.1:9000"))
	w1, _ := c.Watch("demo")
	defer w1.Close()
	s := nextSet(t, w1, 5*time.Second)
	s.Zones[testZone][0].Addrs[0] = "mutated"
	w2, _ := c.Watch("demo")
	defer w2.Close()
	if got := nextSet(t, w2, 5*time.Second).Zones[testZone][0].Addrs[0]; got != "grpc://10.0.0.1:9000" {
		t.Fatalf("a caller's change leaked into the client: %q", got)
	}
}

func TestWatch_AllAppidsShareOnePoll(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, testConfig(n))
	store.Put(instance("app.a", "a1", "grpc://10.0.0.1:1"))
	store.Put(instance("app.b", "b1", "grpc://10.0.0.2:1"))
	wa, _ := c.Watch("app.a")
	defer wa.Close()
	nextSet(t, wa, 5*time.Second)
	wb, _ := c.Watch("app.b")
	defer wb.Close()
	nextSet(t, wb, 5*time.Second)
	// Both appids and the node list travel in one request, with the
	// client's env and hostname and no zone.
	testkit.Eventually(t, 5*time.Second, "a poll carrying every appid", func() error {
		polls := n.Requests("/discovery/polls")
		last := polls[len(polls)-1]
		ids := sorted(last["appid"])
		return testkit.State(slices.Equal(ids, []string{"app.a", "app.b", client.InfraAppID}) &&
			last.Get("env") == testEnv && last.Get("hostname") == testHost && !last.Has("zone"), fmt.Sprint(last))
	})
	// Watching app.b interrupted the poll held for app.a alone; that one
	// may still be counted by the node until it sees the closed connection.
	// From now on, through two more answered rounds, one poll at a time.
	testkit.EventuallyTrue(t, 5*time.Second, "the interrupted poll gone", func() bool { return n.Inflight(testHost) <= 1 })
	n.ResetMaxInflight()
	store.Put(instance("app.a", "a2", "grpc://10.0.0.1:2"))
	waitHosts(t, wa, 5*time.Second, "a1", "a2")
	store.Put(instance("app.b", "b2", "grpc://10.0.0.2:2"))
	waitHosts(t, wb, 5*time.Second, "b1", "b2")
	if maxIn := n.MaxInflight(); maxIn != 1 {
		t.Errorf("concurrent polls from one client = %d, want 1", maxIn)
	}
}

func TestWatch_NewAppidInterruptsTheHeldPoll(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	cfg := testConfig(n)
	cfg.PollTimeout = time.Minute // the node would hold 30 s
	c := newClient(t, cfg)
	wa, _ := c.Watch("missing.app") // nothing to answer: the poll is held
	defer wa.Close()
	testkit.Eventually(t, 5*time.Second, "a held poll with missing.app", func() error {
		polls := n.Requests("/discovery/polls")
		return testkit.State(n.Inflight(testHost) == 1 && len(polls) > 0 && slices.Contains(polls[len(polls)-1]["appid"], "missing.app"), "")
	})
	store.Put(instance("app.b", "b1", "grpc://10.0.0.2:1"))
	wb, _ := c.Watch("app.b")
	defer wb.Close()
	// Without the interrupt this would wait for the 30 s hold.
	waitHosts(t, wb, 10*time.Second, "b1")
}

func TestWatch_LatestWins(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, testConfig(n))
	store.Put(instance("demo", "h0", "grpc://10.0.0.1:1"))
	w, _ := c.Watch("demo")
	defer w.Close()
	waitHosts(t, w, 5*time.Second, "h0")
	for i := 1; i <= 5; i++ {
		store.Put(instance("demo", "h"+strconv.Itoa(i), "grpc://10.0.0.1:1"))
	}
	// Wait until the client has polled with the app's final timestamp,
	// i.e. applied every change, before reading again.
	want := store.Latest(testEnv, "demo")
	testkit.Eventually(t, 5*time.Second, "client caught up", func() error {
		polls := n.Requests("/discovery/polls")
		last := polls[len(polls)-1]
		i := slices.Index(last["appid"], "demo")
		return testkit.State(i >= 0 && last["latest_timestamp"][i] == strconv.FormatInt(want, 10), fmt.Sprint(last))
	})
	s := nextSet(t, w, 5*time.Second)
	if got := hostsOf(s); len(got) != 6 {
		t.Fatalf("after falling behind, Next = %v, want the newest set (6 hosts)", got)
	}
}

func TestWatch_LastInstanceGoneIsReportedWhenTheServerSaysSo(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, testConfig(n))
	store.Put(instance("solo", "s1", "grpc://10.0.0.1:1"))
	w, _ := c.Watch("solo")
	defer w.Close()
	waitHosts(t, w, 5*time.Second, "s1")
	// The server holds the poll when an app disappears entirely (spec
	// 5.3.3); the next answer, caused here by another appid, lists it
	// under error."-404" and the watcher reports the empty set.
	store.Remove(testEnv, "solo", testZone, "s1")
	store.Put(instance("other", "o1", "grpc://10.0.0.1:2"))
	wo, _ := c.Watch("other")
	defer wo.Close()
	s := nextSet(t, w, 5*time.Second)
	if s.Len() != 0 {
		t.Fatalf("after the app vanished: %v, want empty", hostsOf(s))
	}
	// It comes back when an instance registers again.
	store.Put(instance("solo", "s2", "grpc://10.0.0.1:1"))
	waitHosts(t, w, 5*time.Second, "s2")
}

func TestWatch_CloseEndsNext(t *testing.T) {
	n := clienttest.NewNode(t, clienttest.NewStore())
	c := newClient(t, testConfig(n))
	w, _ := c.Watch("nothing")
	errc := make(chan error, 1)
	go func() {
		_, err := w.Next(context.Background())
		errc <- err
	}()
	w.Close()
	if err := <-errc; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	w.Close() // idempotent
}

func TestWatch_ContextEndsNext(t *testing.T) {
	n := clienttest.NewNode(t, clienttest.NewStore())
	c := newClient(t, testConfig(n))
	w, _ := c.Watch("nothing")
	defer w.Close()
	ctx, cancel := context.WithTimeout(testkit.Context(t), 20*time.Millisecond)
	defer cancel()
	if _, err := w.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next: %v", err)
	}
}

func TestClose_IsPromptAndCleansUp(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	cfg := testConfig(n)
	cfg.PollTimeout = time.Minute
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(testkit.Context(t), client.Instance{AppID: "a", Addrs: []string{"grpc://h:1"}}); err != nil {
		t.Fatal(err)
	}
	w, _ := c.Watch("held") // a 30 s poll is parked on the node
	testkit.Eventually(t, 5*time.Second, "held poll", func() error {
		return testkit.State(n.Inflight(testHost) == 1, "")
	})
	errc := make(chan error, 1)
	go func() {
		_, err := w.Next(context.Background())
		errc <- err
	}()
	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if el := time.Since(start); el > 20*time.Second { // generous; the hold is 30 s
		t.Fatalf("Close took %s", el)
	}
	if err := <-errc; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Next after client Close: %v", err)
	}
	if _, ok := store.Get(testEnv, "a", testZone, testHost); ok {
		t.Error("Close did not cancel the registration")
	}
	if _, err := c.Register(testkit.Context(t), client.Instance{AppID: "b", Addrs: []string{"grpc://h:1"}}); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Register after Close: %v", err)
	}
	if _, err := c.Watch("x"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Watch after Close: %v", err)
	}
	if _, err := c.Fetch(testkit.Context(t), "x"); !errors.Is(err, client.ErrClosed) {
		t.Errorf("Fetch after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestClose_InterruptsCallsInProgress(t *testing.T) {
	n := clienttest.NewNode(t, clienttest.NewStore())
	n.SetFault(n.Hang("/discovery/fetch"))
	cfg := testConfig(n)
	cfg.RequestTimeout = time.Minute
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := c.Fetch(context.Background(), "x")
		errc <- err
	}()
	testkit.Eventually(t, 5*time.Second, "fetch in progress", func() error { return testkit.State(n.Count("/discovery/fetch") == 1, "") })
	_ = c.Close()
	if err := <-errc; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Fetch interrupted by Close: %v", err)
	}
}

func TestFetch(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, testConfig(n))
	if _, err := c.Fetch(testkit.Context(t), "nope"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Fetch unknown: %v", err)
	}
	store.Put(instance("demo", "a", "grpc://10.0.0.1:1"))
	s, err := c.Fetch(testkit.Context(t), "demo")
	if err != nil {
		t.Fatal(err)
	}
	if got := hostsOf(s); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("Fetch = %v", got)
	}
	q := n.Requests("/discovery/fetch")
	if last := q[len(q)-1]; last.Get("status") != "1" || last.Get("env") != testEnv || last.Get("appid") != "demo" {
		t.Errorf("fetch query = %v", last)
	}
}

func TestMetrics(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	reg := prometheus.NewRegistry()
	c := newClient(t, testConfig(n), client.WithRegisterer(reg))
	store.Put(instance("demo", "a", "grpc://10.0.0.1:1"))
	w, _ := c.Watch("demo")
	defer w.Close()
	nextSet(t, w, 5*time.Second)
	// Counted after the set is delivered (the watcher may look first).
	testkit.EventuallyTrue(t, 5*time.Second, "a changed poll counted", func() bool {
		return metricValue(t, reg, "discovery_client_polls_total", "changed") >= 1
	})
	if v := metricValue(t, reg, "discovery_client_watched_apps", ""); v != 2 {
		t.Errorf("watched apps = %v, want 2 (demo + infra.discovery)", v)
	}
	if v := metricValue(t, reg, "discovery_client_nodes", ""); v != 1 {
		t.Errorf("nodes = %v", v)
	}
	// A second client on the same registerer collides: reported, not panicking.
	if _, err := client.New(testConfig(n), client.WithRegisterer(reg)); !errors.Is(err, client.ErrInvalidConfig) {
		t.Errorf("duplicate metrics: %v", err)
	}
}
