package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discovery-go/discovery/api/client"
	"github.com/discovery-go/discovery/api/client/clienttest"
	"github.com/discovery-go/discovery/internal/testkit"
)

func TestRegister_SendsTheKratosForm(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, testConfig(n))
	ins := client.Instance{AppID: "demo.svc", Addrs: []string{"grpc://10.0.0.5:9000", "http://10.0.0.5:8000"},
		Version: "v1.4.2", Metadata: map[string]string{"weight": "20", "color": "red"}}
	cancel, err := c.Register(testkit.Context(t), ins)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	forms := n.Requests("/discovery/register")
	if len(forms) != 1 {
		t.Fatalf("register requests = %d, want 1", len(forms))
	}
	f := forms[0]
	// Identity from the client's config (the instance left it empty).
	for k, want := range map[string]string{"region": "region01", "zone": testZone, "env": testEnv,
		"hostname": testHost, "appid": "demo.svc", "version": "v1.4.2", "status": "1"} {
		if got := f.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if !slices.Equal(f["addrs"], ins.Addrs) {
		t.Errorf("addrs = %q, want repeated %q", f["addrs"], ins.Addrs)
	}
	var meta map[string]string
	if err := json.Unmarshal([]byte(f.Get("metadata")), &meta); err != nil || meta["weight"] != "20" || meta["color"] != "red" {
		t.Errorf("metadata = %q (%v)", f.Get("metadata"), err)
	}
	if _, ok := store.Get(testEnv, "demo.svc", testZone, testHost); !ok {
		t.Error("instance not stored by the node")
	}
}

func TestRegister_InstanceFieldsOverrideConfig(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	c := newClient(t, testConfig(n))
	cancel, err := c.Register(testkit.Context(t), client.Instance{AppID: "a", Zone: "zone02", Hostname: "other", Status: client.StatusWaiting, Addrs: []string{"grpc://1.2.3.4:5"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	f := n.Requests("/discovery/register")[0]
	if f.Get("zone") != "zone02" || f.Get("hostname") != "other" || f.Get("status") != "2" || f.Get("metadata") != "" {
		t.Errorf("form = %v", f)
	}
}

func TestRegister_InvalidInstance(t *testing.T) {
	n := clienttest.NewNode(t, clienttest.NewStore())
	c := newClient(t, testConfig(n))
	for _, tc := range []struct {
		name  string
		ins   client.Instance
		field string
	}{
		{"no appid", client.Instance{Addrs: []string{"grpc://h:1"}}, "AppID"},
		{"no addrs", client.Instance{AppID: "a"}, "Addrs"},
		{"addr without scheme", client.Instance{AppID: "a", Addrs: []string{"h:1"}}, "Addrs[0]"},
		{"bad status", client.Instance{AppID: "a", Addrs: []string{"grpc://h:1"}, Status: 3}, "Status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Register(testkit.Context(t), tc.ins)
			if !errors.Is(err, client.ErrInvalidInstance) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want ErrInvalidInstance naming %s", err, tc.field)
			}
		})
	}
	if n.Count("/discovery/register") != 0 {
		t.Error("invalid instance reached the server")
	}
}

func TestRegister_DuplicateKeyFails(t *testing.T) {
	n := clienttest.NewNode(t, clienttest.NewStore())
	c := newClient(t, testConfig(n))
	ins := client.Instance{AppID: "a", Addrs: []string{"grpc://h:1"}}
	cancel, err := c.Register(testkit.Context(t), ins)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(testkit.Context(t), ins); !errors.Is(err, client.ErrAlreadyRegistered) {
		t.Fatalf("second Register: %v, want ErrAlreadyRegistered", err)
	}
	if err := cancel(); err != nil {
		t.Fatal(err)
	}
	// After cancel the key is free again.
	cancel2, err := c.Register(testkit.Context(t), ins)
	if err != nil {
		t.Fatalf("Register after cancel: %v", err)
	}
	_ = cancel2()
}

func TestRegister_RejectedIsNotRetried(t *testing.T) {
	n := clienttest.NewNode(t, clienttest.NewStore())
	n.SetFault(clienttest.Body("/discovery/register", `{"code":-400,"message":"addrs too long","ttl":1}`))
	c := newClient(t, testConfig(n))
	_, err := c.Register(testkit.Context(t), client.Instance{AppID: "a", Addrs: []string{"grpc://h:1"}})
	if !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), "addrs too long") {
		t.Fatalf("got %v, want ErrRejected with the server message", err)
	}
	if got := n.Count("/discovery/register"); got != 1 {
		t.Errorf("register attempts = %d, want 1", got)
	}
}

func TestRegister_RenewsAndReRegistersOn404(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	reg := prometheus.NewRegistry()
	cfg := testConfig(n)
	cfg.RenewInterval = 20 * time.Millisecond
	c := newClient(t, cfg, client.WithRegisterer(reg))
	cancel, err := c.Register(testkit.Context(t), client.Instance{AppID: "a", Addrs: []string{"grpc://h:1"}})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "renews", func() error {
		got := n.Count("/discovery/renew")
		return testkit.State(got >= 2, fmt.Sprint(got, " renews"))
	})
	f := n.Requests("/discovery/renew")[0]
	for k, want := range map[string]string{"region": "region01", "zone": testZone, "env": testEnv, "hostname": testHost, "appid": "a"} {
		if f.Get(k) != want {
			t.Errorf("renew %s = %q, want %q", k, f.Get(k), want)
		}
	}
	// The node loses the instance (eviction): the next renew gets -404 and
	// the client registers again.
	store.Remove(testEnv, "a", testZone, testHost)
	testkit.Eventually(t, 5*time.Second, "re-register after -404", func() error {
		_, ok := store.Get(testEnv, "a", testZone, testHost)
		return testkit.State(ok, fmt.Sprint(n.Count("/discovery/register"), " registers"))
	})
	if got := metricValue(t, reg, "discovery_client_renews_total", "not_found"); got < 1 {
		t.Errorf("renews not_found = %v, want >= 1", got)
	}
	if err := cancel(); err != nil {
		t.Fatal(err)
	}
	if _, ok := store.Get(testEnv, "a", testZone, testHost); ok {
		t.Error("instance still registered after cancel")
	}
	cf := n.Requests("/discovery/cancel")
	if len(cf) != 1 || cf[0].Get("appid") != "a" || cf[0].Get("hostname") != testHost || cf[0].Get("zone") != testZone {
		t.Errorf("cancel requests = %v", cf)
	}
	// cancel is idempotent and sends nothing more.
	if err := cancel(); err != nil {
		t.Fatal(err)
	}
	if len(n.Requests("/discovery/cancel")) != 1 {
		t.Error("second cancel sent another request")
	}
}

func TestRegister_FailsOverToAnotherNode(t *testing.T) {
	store := clienttest.NewStore()
	down, up := clienttest.NewNode(t, store), clienttest.NewNode(t, store)
	down.SetFault(clienttest.Down)
	for i := range 4 { // the seed order is random: try a few times
		c := newClient(t, testConfig(down, up))
		cancel, err := c.Register(testkit.Context(t), client.Instance{AppID: "a", Hostname: fmt.Sprint("h", i), Addrs: []string{"grpc://h:1"}})
		if err != nil {
			t.Fatalf("Register with one node down: %v", err)
		}
		if _, ok := store.Get(testEnv, "a", testZone, fmt.Sprint("h", i)); !ok {
			t.Fatal("not registered")
		}
		if err := cancel(); err != nil {
			t.Fatalf("cancel with one node down: %v", err)
		}
		_ = c.Close()
	}
}

func TestRegister_SurvivesAllNodesDownThenBack(t *testing.T) {
	store := clienttest.NewStore()
	n := clienttest.NewNode(t, store)
	n.SetFault(clienttest.Down)
	cfg := testConfig(n)
	cfg.RetryTimeout = time.Minute
	c := newClient(t, cfg)
	done := make(chan error, 1)
	go func() {
		_, err := c.Register(testkit.Context(t), client.Instance{AppID: "a", Addrs: []string{"grpc://h:1"}})
		done <- err
	}()
	testkit.Eventually(t, 5*time.Second, "failed attempts", func() error {
		got := n.Count("/discovery/register")
		return testkit.State(got >= 3, fmt.Sprint(got))
	})
	n.SetFault(nil)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Register after the node came back: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Register did not finish after the node came back")
	}
}

func TestRegister_ContextEndsRetriesPromptly(t *testing.T) {
	n := clienttest.NewNode(t, clienttest.NewStore())
	n.SetFault(clienttest.Down)
	cfg := testConfig(n)
	cfg.RetryTimeout = time.Hour
	cfg.BackoffInitial, cfg.BackoffMax = time.Second, 10*time.Second
	c := newClient(t, cfg)
	ctx, cancel := context.WithTimeout(testkit.Context(t), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Register(ctx, client.Instance{AppID: "a", Addrs: []string{"grpc://h:1"}})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "last error") {
		t.Fatalf("got %v, want the context error with the last node error", err)
	}
	// Generous bound: without ctx the call would retry for an hour.
	if el := time.Since(start); el > 30*time.Second {
		t.Fatalf("Register returned after %s", el)
	}
}

func TestRegister_ServerCodeFailureMovesOn(t *testing.T) {
	store := clienttest.NewStore()
	bad, good := clienttest.NewNode(t, store), clienttest.NewNode(t, store)
	bad.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/discovery/register" {
			clienttest.WriteCode(w, -503)
			return true
		}
		return false
	})
	c := newClient(t, testConfig(bad, good))
	cancel, err := c.Register(testkit.Context(t), client.Instance{AppID: "a", Addrs: []string{"grpc://h:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if _, ok := store.Get(testEnv, "a", testZone, testHost); !ok {
		t.Fatal("not registered")
	}
}
