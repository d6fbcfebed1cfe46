package loadgen

// End-to-end runs of every scenario against real in-process nodes served
// over loopback HTTP. The test may import server packages; package loadgen
// itself speaks HTTP only.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discovery-go/discovery/api"
	"github.com/discovery-go/discovery/api/apitest"
	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

type testNode struct {
	*apitest.Node
	prom *prometheus.Registry
}

// startNode serves a registry on 127.0.0.1:0 until the test ends. Polls are
// held 1 s, so the bench's re-poll on -304 is exercised too.
func startNode(t *testing.T, repl api.Replicator) *testNode {
	t.Helper()
	prom := prometheus.NewRegistry()
	cfg := api.DefaultConfig()
	cfg.PollHold = time.Second
	n := apitest.StartNode(t, apitest.Options{Config: &cfg,
		Deps: api.Deps{Replicator: repl, Metrics: prom, Gatherer: prom}})
	return &testNode{Node: n, prom: prom}
}

// requests returns discovery_http_requests_total for route and code.
func (n *testNode) requests(t *testing.T, route, code string) float64 {
	t.Helper()
	mfs, err := n.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != "discovery_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			lbl := map[string]string{}
			for _, l := range m.GetLabel() {
				lbl[l.GetName()] = l.GetValue()
			}
			if lbl["route"] == route && lbl["code"] == code {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// wantRequests waits until the node has counted want answers of route with
// code. The node counts an answer after writing it, so the bench can see
// the last answer a moment before the counter moves: poll, don't assume.
func (n *testNode) wantRequests(t *testing.T, route, code string, want float64) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, "the node's answer count", func() error {
		got := n.requests(t, route, code)
		if got > want {
			t.Fatalf("node counted %v answers of %s with code %s, want %v", got, route, code, want)
		}
		return testkit.State(got == want, fmt.Sprintf("counted %v answers of %s with code %s, want %v", got, route, code, want))
	})
}

// bench runs Main with --json and decodes the report.
func bench(t *testing.T, ctx context.Context, args ...string) (*Report, int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(ctx, append(args, "--json"), &out, &errb)
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("exit %d, stdout not one JSON object (%v): %q\nstderr:\n%s", code, err, out.String(), errb.String())
	}
	return &rep, code, errb.String()
}

func wantClean(t *testing.T, rep *Report, code int, stderr string) {
	t.Helper()
	if code != ExitOK || rep.Error != "" || len(rep.Errors) != 0 || rep.Interrupted {
		t.Fatalf("exit %d, error %q, errors %v, interrupted %v\nstderr:\n%s", code, rep.Error, rep.Errors, rep.Interrupted, stderr)
	}
}

func result(t *testing.T, rep *Report, name string) Result {
	t.Helper()
	for _, r := range rep.Results {
		if r.Name == name {
			return r
		}
	}
	t.Fatalf("no result %q in %+v", name, rep.Results)
	return Result{}
}

// wantLatency checks a result's latency summary is consistent.
func wantLatency(t *testing.T, r Result) {
	t.Helper()
	l := r.Latency
	if l.Count != r.OK || l.P50 > l.P99 || l.P99 > l.Max || (r.OK > 0 && l.Max <= 0) {
		t.Fatalf("%s: inconsistent latency %+v (ok %d)", r.Name, l, r.OK)
	}
}

func TestE2E_Register(t *testing.T) {
	n := startNode(t, nil)
	rep, code, stderr := bench(t, t.Context(), "register", "--nodes", n.Addr, "--concurrency", "8",
		"--count", "400", "--appids", "4", "--instances", "100", "--env", "e2e", "--zone", "z1")
	wantClean(t, rep, code, stderr)
	r := result(t, rep, "register")
	if r.OK != 400 || r.OpsPerSec <= 0 {
		t.Fatalf("register result %+v", r)
	}
	wantLatency(t, r)
	st := n.Registry.Stats()
	if st.Instances["e2e"] != 100 || st.Apps["e2e"] != 4 {
		t.Fatalf("registry holds %v instances / %v apps, want 100 / 4", st.Instances, st.Apps)
	}
	n.wantRequests(t, "/discovery/register", "0", 400)
	// The registered instance carries what a kratos client sends.
	in, ok := n.Registry.Get(registry.Key{Env: "e2e", AppID: "bench.app.1", Zone: "z1", Hostname: "bench-5"})
	if !ok {
		t.Fatal("bench-5 not stored")
	}
	if len(in.Addrs) != 2 || !strings.HasPrefix(in.Addrs[0], "grpc://") || in.Metadata["weight"] != "10" || in.Status != 1 {
		t.Fatalf("stored instance %+v", in)
	}
}

func TestE2E_RenewWithCleanup(t *testing.T) {
	n := startNode(t, nil)
	rep, code, stderr := bench(t, t.Context(), "renew", "--nodes", n.Addr, "--concurrency", "4",
		"--count", "300", "--appids", "3", "--instances", "30", "--cleanup")
	wantClean(t, rep, code, stderr)
	r := result(t, rep, "renew")
	if r.OK != 300 {
		t.Fatalf("renew result %+v", r)
	}
	wantLatency(t, r)
	n.wantRequests(t, "/discovery/renew", "0", 300)
	n.wantRequests(t, "/discovery/register", "0", 30) // setup
	if st := n.Registry.Stats(); st.Instances["bench"] != 0 {
		t.Fatalf("--cleanup left %v instances", st.Instances)
	}
}

func TestE2E_Fetchs(t *testing.T) {
	n := startNode(t, nil)
	rep, code, stderr := bench(t, t.Context(), "fetchs", "--nodes", n.Addr, "--concurrency", "4",
		"--count", "200", "--appids", "12", "--batch", "10", "--instances", "36")
	wantClean(t, rep, code, stderr)
	r := result(t, rep, "fetchs")
	if r.OK != 200 {
		t.Fatalf("fetchs result %+v", r)
	}
	wantLatency(t, r)
	n.wantRequests(t, "/discovery/fetchs", "0", 201) // + the setup check
}

// A renew of instances that are not registered fails with -404; the run
// counts the failures by code and exits 1.
func TestE2E_ErrorsByCode(t *testing.T) {
	n := startNode(t, nil)
	// Register into one env, renew in another: every renew is -404.
	cfg := DefaultConfig()
	cfg.Scenario, cfg.Nodes, cfg.Count, cfg.Instances, cfg.AppIDs, cfg.Concurrency = ScenarioRenew, []string{n.Addr}, 20, 5, 1, 2
	r := &runner{cfg: cfg, c: newClient(4, cfg.Timeout, cfg.PollTimeout), progress: &bytes.Buffer{}, rep: &Report{Params: map[string]int64{}}}
	defer r.c.close()
	lr, err := r.runOps(t.Context(), 20, 0, 0, &r.errs, func(ctx context.Context, seq int64) error {
		_, err := r.c.call(ctx, r.c.renewReq(n.Addr, r.inst(int(seq%5)), "nowhere", "z", "r"))
		return err
	})
	if err != nil || lr.ok != 0 || lr.failed != 20 {
		t.Fatalf("runOps: ok %d failed %d err %v", lr.ok, lr.failed, err)
	}
	if e := r.errs.snapshot(); e["-404"] != 20 || len(e) != 1 {
		t.Fatalf("errors %v, want -404: 20", e)
	}
	// A node that is not listening: transport errors, exit 1.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	rep, code, _ := bench(t, t.Context(), "register", "--nodes", dead, "--count", "3", "--concurrency", "1", "--instances", "3", "--appids", "1")
	if code != ExitFailure || rep.Errors["transport"] != 3 {
		t.Fatalf("dead node: exit %d errors %v", code, rep.Errors)
	}
}

func TestE2E_Notify(t *testing.T) {
	n := startNode(t, nil)
	rep, code, stderr := bench(t, t.Context(), "notify", "--nodes", n.Addr, "--pollers", "40",
		"--concurrency", "8", "--count", "2", "--settle", "20s", "--poll-timeout", "5s")
	wantClean(t, rep, code, stderr)
	r := result(t, rep, "notify")
	if r.OK != 80 || r.Expected != 80 {
		t.Fatalf("notify result %+v", r)
	}
	wantLatency(t, r)
	if c := result(t, rep, "change (register)"); c.OK != 2 {
		t.Fatalf("change result %+v", c)
	}
	// Every answer was a code-0 polls answer (no -503, no error).
	n.wantRequests(t, "/discovery/polls", "0", 80)
}

// fanout replicates registers synchronously into peer registries, standing
// in for syncup so the multi-node scenarios run in one process. The bench
// scenarios under test only register.
type fanout struct{ peers []*registry.Registry }

func (f *fanout) Register(ins registry.Instance, _ bool) {
	for _, p := range f.peers {
		p.Import(ins)
	}
}
func (f *fanout) Renew(registry.Key, int64, bool) {}
func (f *fanout) Cancel(registry.Tombstone, bool) {}
func (f *fanout) Set(registry.SetRequest, bool)   {}

func TestE2E_ReplicationAndCrossNotify(t *testing.T) {
	b := startNode(t, nil)
	c := startNode(t, nil)
	a := startNode(t, &fanout{peers: []*registry.Registry{b.Registry, c.Registry}})
	nodes := strings.Join([]string{a.Addr, b.Addr, c.Addr}, ",")

	rep, code, stderr := bench(t, t.Context(), "replication", "--nodes", nodes, "--count", "15", "--poll-timeout", "5s")
	wantClean(t, rep, code, stderr)
	for _, name := range []string{"lag " + b.Addr, "lag " + c.Addr, "lag max"} {
		r := result(t, rep, name)
		if r.OK != 15 || r.Expected != 15 {
			t.Fatalf("%s: %+v", name, r)
		}
		wantLatency(t, r)
	}
	if w := result(t, rep, "write"); w.OK != 15 {
		t.Fatalf("write %+v", w)
	}

	rep, code, stderr = bench(t, t.Context(), "cross-notify", "--nodes", nodes, "--pollers", "30", "--poll-timeout", "5s")
	wantClean(t, rep, code, stderr)
	r := result(t, rep, "cross-notify")
	if r.OK != 30 || r.Expected != 30 {
		t.Fatalf("cross-notify %+v", r)
	}
	// Polls went to the watch nodes only, split round-robin.
	// replication: one poll per write on each of B and C; cross-notify: 15 each.
	b.wantRequests(t, "/discovery/polls", "0", 15+15)
	c.wantRequests(t, "/discovery/polls", "0", 15+15)
	if got := a.requests(t, "/discovery/polls", "0"); got != 0 {
		t.Fatalf("write node answered %v polls, want 0", got)
	}
}

// Cancelling the context stops a duration-bound run promptly with a
// partial report (interrupted, exit 1).
func TestE2E_Interrupted(t *testing.T) {
	n := startNode(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type outcome struct {
		rep  *Report
		code int
	}
	done := make(chan outcome, 1)
	go func() {
		var out, errb bytes.Buffer
		code := Main(ctx, []string{"register", "--nodes", n.Addr, "--duration", "1m", "--concurrency", "4", "--instances", "50", "--json"}, &out, &errb)
		var rep Report
		_ = json.Unmarshal(out.Bytes(), &rep)
		done <- outcome{&rep, code}
	}()
	// Wait until the run is under way, then interrupt it.
	testkit.EventuallyTrue(t, 10*time.Second, "50 registers under way", func() bool {
		return n.requests(t, "/discovery/register", "0") >= 50
	})
	cancel()
	var o outcome
	select {
	case o = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop within 10s of cancel")
	}
	if o.code != ExitFailure || !o.rep.Interrupted || o.rep.ElapsedSeconds >= 60 {
		t.Fatalf("exit %d report %+v", o.code, o.rep)
	}
	r := result(t, o.rep, "register")
	// The node had answered 50; up to --concurrency answers may have been
	// in flight (cancelled, not counted) when the run was interrupted.
	if r.OK < 50-4 || len(o.rep.Errors) != 0 {
		t.Fatalf("partial result %+v errors %v", r, o.rep.Errors)
	}
}

// The parked-polls gauge the notify scenario waits on exists under the name
// the bench reads.
func TestE2E_ParkedMetricName(t *testing.T) {
	n := startNode(t, nil)
	c := newClient(2, 5*time.Second, 5*time.Second)
	defer c.close()
	v, err := c.metric(t.Context(), n.Addr, parkedMetric, "")
	if err != nil || v != 0 {
		t.Fatalf("%s = %v, %v", parkedMetric, v, err)
	}
}

// A poll answered -304 (hold over before the change) is sent again at once,
// like kratos does; the first code-0 answer ends it. Other codes fail it.
func TestPollUntilAnswer_RepollsOnNotModified(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x1-bmspy-timeout") != "5000" {
			t.Errorf("x1-bmspy-timeout %q", r.Header.Get("x1-bmspy-timeout"))
		}
		switch n := calls.Add(1); {
		case n <= 2:
			_, _ = w.Write([]byte(`{"code":-304,"message":"-304","ttl":1}`))
		case n == 3:
			_, _ = w.Write([]byte(`{"code":0,"message":"0","data":{"a":{"instances":{},"latest_timestamp":7}},"error":{"-404":null}}`))
		default:
			_, _ = w.Write([]byte(`{"code":-503,"message":"-503","ttl":1}`))
		}
	}))
	defer srv.Close()
	r := &runner{cfg: DefaultConfig(), c: newClient(2, time.Second, 5*time.Second)}
	r.cfg.Env = "e"
	defer r.c.close()
	node := strings.TrimPrefix(srv.URL, "http://")
	sem := make(chan struct{}, 1)
	var failed, stale atomic.Int64
	var changed atomic.Bool
	changed.Store(true)
	p := poller{node: node, appid: "a", hostname: "h", latest: 1, sem: sem, changed: &changed, stale: &stale,
		failed: func() { failed.Add(1) }}
	a := r.pollUntilAnswer(t.Context(), p)
	if a.err != nil || a.at.IsZero() || calls.Load() != 3 || failed.Load() != 0 || stale.Load() != 0 {
		t.Fatalf("answer %+v after %d calls, failed %d stale %d", a, calls.Load(), failed.Load(), stale.Load())
	}
	if l, err := latestOf(a.body, "a"); err != nil || l != 7 {
		t.Fatalf("latest %d, %v", l, err)
	}
	a = r.pollUntilAnswer(t.Context(), p)
	if errKey(a.err) != "-503" || failed.Load() != 1 {
		t.Fatalf("want -503 failure, got %+v failed %d", a, failed.Load())
	}
	if len(sem) != 0 {
		t.Fatalf("semaphore not released: %d", len(sem))
	}
}

// A code-0 answer that arrives before the change is sent (the node was
// ahead of the latest_timestamp the bench knew) is not the change's answer:
// the poll takes the answer's latest_timestamp and parks again.
func TestPollUntilAnswer_StaleAnswerRepolls(t *testing.T) {
	var changed atomic.Bool
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.URL.Query().Get("latest_timestamp")) // one request at a time
		if len(seen) == 2 {
			changed.Store(true) // the change is sent while the second poll is parked
		}
		_, _ = w.Write([]byte(`{"code":0,"message":"0","data":{"a":{"instances":{},"latest_timestamp":` + strconv.Itoa(8+len(seen)) + `}},"error":{"-404":null}}`))
	}))
	defer srv.Close()
	r := &runner{cfg: DefaultConfig(), c: newClient(2, time.Second, 5*time.Second)}
	defer r.c.close()
	var failed, stale atomic.Int64
	p := poller{node: strings.TrimPrefix(srv.URL, "http://"), appid: "a", hostname: "h", latest: 1,
		sem: make(chan struct{}, 1), changed: &changed, stale: &stale, failed: func() { failed.Add(1) }}
	a := r.pollUntilAnswer(t.Context(), p)
	if a.err != nil || a.at.IsZero() || failed.Load() != 0 || stale.Load() != 1 {
		t.Fatalf("answer %+v failed %d stale %d", a, failed.Load(), stale.Load())
	}
	if strings.Join(seen, ",") != "1,9" {
		t.Fatalf("polls sent with latest_timestamp %v, want 1 then 9", seen)
	}
}
