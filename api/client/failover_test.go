package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/client/clienttest"
	"github.com/discovery-go/discovery/internal/testkit"
)

// TestWatch_HostileAnswers: each malformed answer is an error delivered to
// the watcher (never a panic, a hang or a silently wrong set), and the
// watch recovers once the node answers properly.
func TestWatch_HostileAnswers(t *testing.T) {
	huge := `{"code":0,"message":"0","data":{"demo":{"instances":{},"latest_timestamp":1,"pad":"` + strings.Repeat("x", 64<<10) + `"}}}`
	for _, tc := range []struct {
		name string
		body string
		want error
	}{
		{"not json", `<html>oops</html>`, client.ErrBadResponse},
		{"truncated json", `{"code":0,"data":{"demo":{"instances":`, client.ErrBadResponse},
		{"trailing garbage", `{"code":-304,"message":"-304","ttl":1} {}`, client.ErrBadResponse},
		{"array envelope", `[1,2]`, client.ErrBadResponse},
		{"no code", `{"message":"0","data":{}}`, client.ErrBadResponse},
		{"code as string", `{"code":"0","data":{}}`, client.ErrBadResponse},
		{"latest_timestamp 0", `{"code":0,"data":{"demo":{"instances":{"zone01":[{"appid":"demo","hostname":"x","addrs":["grpc://1.1.1.1:1"],"status":1}]},"latest_timestamp":0}}}`, client.ErrBadResponse},
		{"latest_timestamp missing", `{"code":0,"data":{"demo":{"instances":{}}}}`, client.ErrBadResponse},
		{"null info", `{"code":0,"data":{"demo":null}}`, client.ErrBadResponse},
		{"status as string", `{"code":0,"data":{"demo":{"instances":{"zone01":[{"appid":"demo","hostname":"x","addrs":["grpc://1.1.1.1:1"],"status":"1"}]},"latest_timestamp":5}}}`, client.ErrBadResponse},
		{"metadata number", `{"code":0,"data":{"demo":{"instances":{"zone01":[{"appid":"demo","hostname":"x","addrs":[],"metadata":{"weight":10},"status":1}]},"latest_timestamp":5}}}`, client.ErrBadResponse},
		{"addrs as string", `{"code":0,"data":{"demo":{"instances":{"zone01":[{"appid":"demo","hostname":"x","addrs":"grpc://1.1.1.1:1","status":1}]},"latest_timestamp":5}}}`, client.ErrBadResponse},
		{"null instance", `{"code":0,"data":{"demo":{"instances":{"zone01":[null]},"latest_timestamp":5}}}`, client.ErrBadResponse},
		{"instances as array", `{"code":0,"data":{"demo":{"instances":[],"latest_timestamp":5}}}`, client.ErrBadResponse},
		{"success without data", `{"code":0,"message":"0","data":null}`, client.ErrBadResponse},
		{"unexpected code", `{"code":-500,"message":"-500","ttl":1}`, client.ErrUnavailable},
		{"init-protect", `{"code":-503,"message":"-503","ttl":1}`, client.ErrUnavailable},
		{"huge body", huge, client.ErrBadResponse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := clienttest.NewStore()
			n := clienttest.NewNode(t, store)
			n.SetFault(clienttest.Body("/discovery/polls", tc.body))
			cfg := testConfig(n)
			cfg.MaxResponseBytes = 32 << 10
			c := newClient(t, cfg)
			store.Put(instance("demo", "a", "grpc://10.0.0.1:1"))
			w, _ := c.Watch("demo")
			defer w.Close()
			ctx := testkit.Context(t)
			_, err := w.Next(ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Next = %v, want %v", err, tc.want)
			}
			n.SetFault(nil)
			waitHosts(t, w, 5*time.Second, "a")
		})
	}
}

func TestWatch_HTTPErrorStatusIsANodeFailure(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	n.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "boom", http.StatusInternalServerError)
		return true
	})
	c := newClient(t, testConfig(n))
	w, _ := c.Watch("demo")
	defer w.Close()
	if _, err := w.Next(testkit.Context(t)); !errors.Is(err, client.ErrUnavailable) || !strings.Contains(err.Error(), "HTTP 500") {
		t.Fatalf("Next = %v", err)
	}
}

func TestWatch_HangingNodeTimesOutThenFailsOver(t *testing.T) {
	store := clienttest.NewStore()
	hang, other := clienttest.NewNode(t, store), clienttest.NewNode(t, store)
	hang.SetFault(hang.Hang("/discovery/polls"))
	other.SetFault(clienttest.Down)
	cfg := testConfig(hang, other)
	cfg.PollTimeout = 300 * time.Millisecond
	c := newClient(t, cfg)
	store.Put(instance("demo", "a", "grpc://10.0.0.1:1"))
	w, _ := c.Watch("demo")
	defer w.Close()
	// Both nodes are tried: the hanging one is abandoned after PollTimeout.
	testkit.Eventually(t, 10*time.Second, "both nodes tried", func() error {
		return testkit.State(hang.Count("/discovery/polls") >= 1 && other.Count("/discovery/polls") >= 1, fmt.Sprint(hang.Count("/discovery/polls"), other.Count("/discovery/polls")))
	})
	ctxErr := func() error {
		_, err := w.Next(testkit.Context(t))
		return err
	}()
	if !errors.Is(ctxErr, client.ErrUnavailable) {
		t.Fatalf("Next during the outage: %v", ctxErr)
	}
	other.SetFault(nil)
	waitHosts(t, w, 10*time.Second, "a")
}

func TestWatch_NodeSwitchResetsTimestampsAndKeepsWatching(t *testing.T) {
	store := clienttest.NewStore()
	n1, n2 := clienttest.NewNode(t, store), clienttest.NewNode(t, store)
	c := newClient(t, testConfig(n1, n2))
	store.Put(instance("demo", "a", "grpc://10.0.0.1:1"))
	w, _ := c.Watch("demo")
	defer w.Close()
	waitHosts(t, w, 5*time.Second, "a")
	// Find the node holding the client's poll.
	var cur, next *clienttest.Node
	testkit.Eventually(t, 5*time.Second, "held poll", func() error {
		for _, p := range [][2]*clienttest.Node{{n1, n2}, {n2, n1}} {
			held := p[0].Inflight(testHost) == 1
			if held {
				cur, next = p[0], p[1]
				return testkit.State(true, "")
			}
		}
		return testkit.State(false, "")
	})
	cur.SetFault(clienttest.Down)
	before := next.Count("/discovery/polls")
	store.Put(instance("demo", "b", "grpc://10.0.0.2:1")) // wakes the held poll: its answer fails
	waitHosts(t, w, 5*time.Second, "a", "b")
	// The following poll fails on cur and moves to next.
	testkit.Eventually(t, 5*time.Second, "a poll on the other node", func() error {
		return testkit.State(next.Count("/discovery/polls") > before, "")
	})
	p := next.Requests("/discovery/polls")[before]
	for i, id := range p["appid"] {
		if p["latest_timestamp"][i] != "0" {
			t.Errorf("first poll on the new node sends %s=%s, want 0 (spec 8.2)", id, p["latest_timestamp"][i])
		}
	}
	// The watch goes on through the new node.
	store.Put(instance("demo", "c", "grpc://10.0.0.3:1"))
	waitHosts(t, w, 5*time.Second, "a", "b", "c")
}

func TestWatch_AllSeedsDownThenBack(t *testing.T) {
	store := clienttest.NewStore()
	n1, n2 := clienttest.NewNode(t, store), clienttest.NewNode(t, store)
	n1.SetFault(clienttest.Down)
	n2.SetFault(clienttest.Down)
	cfg := testConfig(n1, n2)
	cfg.BackoffInitial, cfg.BackoffMax = 20*time.Millisecond, 40*time.Millisecond
	c := newClient(t, cfg)
	store.Put(instance("demo", "a", "grpc://10.0.0.1:1"))
	w, _ := c.Watch("demo")
	defer w.Close()
	if _, err := w.Next(testkit.Context(t)); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("Next while down: %v", err)
	}
	// Never a hot loop: failed polls are spaced by the backoff (>= half the
	// initial interval each, with jitter).
	start := time.Now()
	base := n1.Count("/discovery/polls") + n2.Count("/discovery/polls")
	testkit.Eventually(t, 10*time.Second, "failed polls", func() error {
		got := n1.Count("/discovery/polls") + n2.Count("/discovery/polls") - base
		return testkit.State(got >= 6, fmt.Sprint(got))
	})
	if el := time.Since(start); el < 5*10*time.Millisecond {
		t.Fatalf("6 failed polls in %s: backoff not applied", el)
	}
	n1.SetFault(nil)
	n2.SetFault(nil)
	waitHosts(t, w, 5*time.Second, "a")
}

func TestNodes_LearnedFromInfraDiscovery(t *testing.T) {
	store := clienttest.NewStore()
	seed, same, other := clienttest.NewNode(t, store), clienttest.NewNode(t, store), clienttest.NewNode(t, store)
	c := newClient(t, testConfig(seed))
	node := func(host, zone string, addrs ...string) client.Instance {
		return client.Instance{Region: "r", Zone: zone, Env: testEnv, AppID: client.InfraAppID, Hostname: host, Addrs: addrs}
	}
	store.Put(node("same", testZone, "http://"+same.Addr()))
	store.Put(node("other", "zone02", "http://"+other.Addr()))
	store.Put(node("junk", testZone, "grpc://127.0.0.1:1", "http://0.0.0.0:7171", "http://nohost"))
	// Same zone first, other zones next, the seed last.
	testkit.Eventually(t, 5*time.Second, "learned node list", func() error {
		got := c.Nodes()
		return testkit.State(slices.Equal(got, []string{same.Addr(), other.Addr(), seed.Addr()}), fmt.Sprint(got))
	})
	// The client moved to the same-zone node.
	testkit.Eventually(t, 5*time.Second, "polls on the same-zone node", func() error {
		return testkit.State(same.Count("/discovery/polls") > 0, "")
	})
	// The list shrinks too: the same-zone node leaves, the client moves to
	// the other zone.
	store.Remove(testEnv, client.InfraAppID, testZone, "same")
	testkit.Eventually(t, 5*time.Second, "shrunk node list", func() error {
		got := c.Nodes()
		return testkit.State(slices.Equal(got, []string{other.Addr(), seed.Addr()}), fmt.Sprint(got))
	})
	testkit.Eventually(t, 5*time.Second, "polls on the other-zone node", func() error {
		return testkit.State(other.Count("/discovery/polls") > 0, "")
	})
}

func TestFetch_HostileAnswersAndFailover(t *testing.T) {
	store := clienttest.NewStore()
	bad, good := clienttest.NewNode(t, store), clienttest.NewNode(t, store)
	bad.SetFault(clienttest.Body("/discovery/fetch", `{"code":0,"data":{"instances":{},"latest_timestamp":0}}`))
	store.Put(instance("demo", "a", "grpc://10.0.0.1:1"))
	cfg := testConfig(bad)
	cfg.RetryTimeout = 100 * time.Millisecond
	c := newClient(t, cfg)
	if _, err := c.Fetch(testkit.Context(t), "demo"); !errors.Is(err, client.ErrBadResponse) {
		t.Fatalf("Fetch from a bad node: %v", err)
	}
	c2 := newClient(t, testConfig(bad, good))
	for range 4 { // whichever node comes first, the answer is the good one
		s, err := c2.Fetch(testkit.Context(t), "demo")
		if err != nil || s.Len() != 1 {
			t.Fatalf("Fetch with failover: %v %v", s, err)
		}
	}
}

func TestWatch_InstantNotModifiedDoesNotLoopHot(t *testing.T) {
	n := clienttest.NewNode(t, clienttest.NewStore())
	n.SetFault(clienttest.Body("/discovery/polls", `{"code":-304,"message":"-304","ttl":1}`))
	cfg := testConfig(n)
	cfg.BackoffInitial, cfg.BackoffMax = 20*time.Millisecond, 40*time.Millisecond
	c := newClient(t, cfg)
	w, _ := c.Watch("demo")
	defer w.Close()
	// Reported as a bad answer...
	ctx, cancel := context.WithTimeout(testkit.Context(t), 5*time.Second)
	defer cancel()
	if _, err := w.Next(ctx); !errors.Is(err, client.ErrBadResponse) || !strings.Contains(err.Error(), "-304") {
		t.Fatalf("Next = %v", err)
	}
	// ...and paced: every 3 instant answers cost one backoff (>= 10 ms).
	start := time.Now()
	base := n.Count("/discovery/polls")
	testkit.Eventually(t, 10*time.Second, "polls", func() error {
		got := n.Count("/discovery/polls") - base
		return testkit.State(got >= 13, fmt.Sprint(got))
	})
	if el := time.Since(start); el < 4*10*time.Millisecond {
		t.Fatalf("13 polls in %s: no backoff", el)
	}
}
