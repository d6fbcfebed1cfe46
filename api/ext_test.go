package api

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/discovery-go/discovery/registry"
)

// C63: polls for infra.discovery with latest_timestamp=0 in the node's env
// answers at once with the live node records.
func TestPolls_InfraDiscoveryAtOnce(t *testing.T) {
	e := newEnv(t)
	self := strings.TrimPrefix(e.ts.URL, "http://")
	// The node's own record is written by nodes only (here: a peer's
	// replicated register; clients are refused, TestSecurity_*).
	e.post("/discovery/register", form("region", "sh", "zone", z1, "env", tEnv, "appid", "infra.discovery",
		"hostname", "node1", "addrs", "http://"+self, "status", "1", "version", "", "metadata", "", "replication", "true")).wantCode(0)
	d, missing := pollsData(e.getRaw("/discovery/polls",
		"appid=infra.discovery&latest_timestamp=0&env=prod&hostname=x").wantCode(0))
	nodes := d["infra.discovery"].Instances[z1]
	if len(missing) != 0 || len(nodes) != 1 || nodes[0].Addrs[0] != "http://"+self || nodes[0].Status != 1 {
		t.Fatalf("infra.discovery answer: %+v", d)
	}
	if n := e.reg.Stats().Waiters; n != 0 {
		t.Fatalf("held: %d waiters", n)
	}
}

// C65: /discovery/prometheus/targets returns a bare http_sd array: one
// group per UP instance and addr of the scheme, filters env, appid
// (repeatable), zone and scheme, sanitised metadata labels.
func TestPrometheusTargets(t *testing.T) {
	e := newEnv(t)
	e.post("/discovery/register", form("region", "sh", "zone", z1, "env", tEnv, "appid", appA, "hostname", "h1",
		"addrs", "grpc://10.0.0.1:9000", "addrs", "http://10.0.0.1:8000", "addrs", "http://10.0.0.1:8001",
		"version", "v1", "status", "1", "metadata", `{"weight":"10","a.b-c":"x"}`)).wantCode(0)
	e.register(appA, z2, "h2", "status", "2", "addrs", "http://10.0.0.2:8000") // WAITING: excluded
	e.register(appB, z1, "b1", "addrs", "http://10.0.0.3:8000")
	e.post("/discovery/register", regForm(appA, z1, "d1", "env", "dev", "addrs", "http://10.0.0.9:8000")).wantCode(0)

	targets := func(q string) []targetGroup {
		t.Helper()
		r := e.getRaw("/discovery/prometheus/targets", q)
		if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("HTTP %d %q: %s", r.Status, r.Header.Get("Content-Type"), r.Body)
		}
		var g []targetGroup
		if err := json.Unmarshal(r.Body, &g); err != nil || g == nil {
			t.Fatalf("not a JSON array: %s", r.Body)
		}
		return g
	}
	r := e.getRaw("/discovery/prometheus/targets", "env=prod&appid=demo.a&scheme=grpc")
	r.wantBody(`[{"targets":["10.0.0.1:9000"],"labels":{"__meta_discovery_appid":"demo.a","__meta_discovery_env":"prod",` +
		`"__meta_discovery_hostname":"h1","__meta_discovery_metadata_a_b_c":"x","__meta_discovery_metadata_weight":"10",` +
		`"__meta_discovery_region":"sh","__meta_discovery_status":"1","__meta_discovery_version":"v1",` +
		`"__meta_discovery_zone":"sh001"}}]`)
	hostsOf := func(g []targetGroup) []string {
		var out []string
		for _, x := range g {
			out = append(out, x.Labels["__meta_discovery_env"]+"/"+x.Labels["__meta_discovery_hostname"]+"/"+x.Targets[0])
		}
		return out
	}
	for q, want := range map[string][]string{
		"":                                   {"dev/d1/10.0.0.9:8000", "prod/h1/10.0.0.1:8000", "prod/h1/10.0.0.1:8001", "prod/b1/10.0.0.3:8000"},
		"env=prod":                           {"prod/h1/10.0.0.1:8000", "prod/h1/10.0.0.1:8001", "prod/b1/10.0.0.3:8000"},
		"env=prod&appid=demo.b":              {"prod/b1/10.0.0.3:8000"},
		"env=prod&appid=demo.b&appid=demo.b": {"prod/b1/10.0.0.3:8000"}, // one group per target, however often asked
		"env=prod&appid=demo.a&appid=demo.b": {"prod/h1/10.0.0.1:8000", "prod/h1/10.0.0.1:8001", "prod/b1/10.0.0.3:8000"},
		"appid=demo.a":                       {"dev/d1/10.0.0.9:8000", "prod/h1/10.0.0.1:8000", "prod/h1/10.0.0.1:8001"},
		"env=prod&zone=sh002":                nil,
		"env=prod&appid=demo.a&zone=sh002":   nil,
		"scheme=grpc":                        {"prod/h1/10.0.0.1:9000"},
		"env=nope":                           nil,
	} {
		if d := cmp.Diff(want, hostsOf(targets(q))); d != "" {
			t.Errorf("targets?%s (-want +got):\n%s", q, d)
		}
	}
	e.getRaw("/discovery/prometheus/targets", "env=nope").wantBody("[]")
	if r := e.getRaw("/discovery/prometheus/targets", "env="+strings.Repeat("x", 300)); r.Status != 400 ||
		!strings.Contains(string(r.Body), "env") {
		t.Fatalf("bad param: %d %s", r.Status, r.Body)
	}
}

// C66: exceeded input limits yield -400 in the standard envelope, naming
// the field and the limit, and change nothing.
func TestLimits(t *testing.T) {
	e := newEnv(t, options{cfg: func(c *Config) {
		c.Limits = Limits{MaxBodyBytes: 4096, MaxAppIDs: 2, MaxAddrs: 2, MaxStringLen: 64, MaxAddrLen: 64,
			MaxMetadataBytes: 40, MaxMetadataKeys: 2, MaxSetHostnames: 2}
	}})
	e.register(appA, z1, "h1")
	e.register(appA, z1, "h2")
	e.register(appA, z1, "h3")
	long := strings.Repeat("x", 65)
	cases := []struct {
		name  string
		do    func() resp
		field string
		limit string
	}{
		{"body", func() resp {
			return e.post("/discovery/register", regForm(appA, z1, "h9", "version", strings.Repeat("v", 5000)))
		}, "body", "4096"},
		{"fetchs appids", func() resp {
			return e.get("/discovery/fetchs", form("env", tEnv, "status", "3", "appid", "a", "appid", "b", "appid", "c"))
		}, "appid", "2"},
		{"polls appids", func() resp {
			return e.get("/discovery/polls", pollsQuery(tEnv, "x", "a", 0, "b", 0, "c", 0))
		}, "appid", "2"},
		{"addrs count", func() resp {
			v := regForm(appA, z1, "h9")
			v["addrs"] = []string{"grpc://a:1", "grpc://b:1", "grpc://c:1"}
			return e.post("/discovery/register", v)
		}, "addrs", "2"},
		{"addr length", func() resp { return e.post("/discovery/register", regForm(appA, z1, "h9", "addrs", "grpc://"+long)) }, "addrs", "64"},
		{"hostname length", func() resp { return e.post("/discovery/register", regForm(appA, z1, long)) }, "hostname", "64"},
		{"appid length", func() resp { return e.post("/discovery/renew", keyForm(long, z1, "h1")) }, "appid", "64"},
		{"version length", func() resp { return e.post("/discovery/register", regForm(appA, z1, "h1", "version", long)) }, "version", "64"},
		{"poll hostname length", func() resp { return e.get("/discovery/polls", pollsQuery(tEnv, long, appA, 0)) }, "hostname", "64"},
		{"metadata bytes", func() resp {
			return e.post("/discovery/register", regForm(appA, z1, "h1", "metadata", `{"a":"`+strings.Repeat("m", 40)+`"}`))
		}, "metadata", "40"},
		{"metadata keys", func() resp {
			return e.post("/discovery/register", regForm(appA, z1, "h1", "metadata", `{"a":"","b":"","c":""}`))
		}, "metadata", "2 keys"},
		{"set hostnames", func() resp {
			return e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA,
				"hostname", "h1", "hostname", "h2", "hostname", "h3", "status", "2", "status", "2", "status", "2"))
		}, "hostname", "2"},
		{"set metadata keys", func() resp {
			return e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1",
				"metadata", `{"a":"","b":"","c":""}`))
		}, "metadata", "2 keys"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			parent := e.t
			e.t = t
			defer func() { e.t = parent }()
			e.unchanged(func() {
				r := tc.do()
				r.t = t
				r.wantBadParam(tc.field, tc.limit)
				if r.Status != 200 || r.Header.Get("Content-Type") != contentTypeJSON || !r.hasKey("ttl") {
					t.Fatalf("not the standard envelope: %d %s", r.Status, r.Body)
				}
			})
		})
	}
}

// The default limits accept everything a normal kratos client sends.
func TestLimits_DefaultsAcceptKratos(t *testing.T) {
	e := newEnv(t)
	v := regForm(appA, z1, "pod-7f9c-"+strings.Repeat("x", 40), "metadata",
		`{"weight":"10","color":"red","cluster":"c1","zone":"sh001"}`)
	v["addrs"] = []string{"grpc://10.0.0.5:9000", "http://10.0.0.5:8000"}
	e.post("/discovery/register", v).wantCode(0)
	q := form("env", tEnv, "hostname", "pod")
	for i := range 200 {
		q.Add("appid", "main.account.service-"+i64(int64(i)))
		q.Add("latest_timestamp", "0")
	}
	q.Add("appid", appA)
	q.Add("latest_timestamp", "0")
	e.get("/discovery/polls", q).wantCode(0)
}

// C67: /healthz, /readyz and /metrics exist and do not alter protocol
// behaviour.
func TestMonitoringEndpoints(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	before := e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "3")).Body
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		r := e.get(p, nil)
		if r.Status != 200 {
			t.Fatalf("%s: HTTP %d", p, r.Status)
		}
	}
	if r := e.get("/metrics", nil); !strings.Contains(string(r.Body), "discovery_registry_instances{env=\"prod\"} 1") ||
		!strings.Contains(string(r.Body), `discovery_http_requests_total{code="0",route="/discovery/register"} 1`) {
		t.Fatalf("/metrics:\n%s", r.Body)
	}
	if after := e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "3")).Body; !bytes.Equal(before, after) {
		t.Fatalf("fetch changed:\n%s\n%s", before, after)
	}
	e.register(appA, z1, "h2")
	if got := e.hostsOf(appA); len(got) != 2 {
		t.Fatal(got)
	}
}

// Metric names and help pass promlint; the request metrics count by route
// and code and keep long polls out of the latency histogram.
func TestMetrics_LintAndCounts(t *testing.T) {
	e := newEnv(t, options{cfg: shortHold})
	e.register(appA, z1, "h1")
	e.post("/discovery/register", without(regForm(appA, z1, "h2"), "zone")).wantCode(-400)
	e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, 0)).wantCode(0)
	e.get("/discovery/nope", nil)
	e.post("/discovery/fetch", nil)
	e.post("/discovery/cancel", keyForm(appA, z1, "h1")).wantCode(0)
	e.reg.Scan()
	problems, err := testutil.GatherAndLint(e.prom)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"route", "/discovery/register", "code", "0"}, 1},
		{[]string{"route", "/discovery/register", "code", "-400"}, 1},
		{[]string{"route", "/discovery/polls", "code", "0"}, 1},
		{[]string{"route", "other", "code", "404"}, 1},
		{[]string{"route", "/discovery/fetch", "code", "405"}, 1},
	} {
		if got := e.metric("discovery_http_requests_total", c.labels...); got != c.want {
			t.Errorf("requests%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := e.metric("discovery_http_request_duration_seconds", "route", "/discovery/register"); got != 2 {
		t.Errorf("register latency samples %v", got)
	}
	if got := e.metric("discovery_http_request_duration_seconds", "route", "/discovery/polls"); got != -1 {
		t.Errorf("polls in the latency histogram: %v", got)
	}
	if got := e.metric("discovery_registry_tombstones"); got != 1 {
		t.Errorf("tombstones %v", got)
	}
	if got := e.metric("discovery_http_parked_polls"); got != 0 {
		t.Errorf("parked %v", got)
	}
	// Two servers on one process: metrics on separate registries never collide.
	if _, err := New(DefaultConfig(), Deps{Registry: e.reg}); err != nil {
		t.Fatal(err)
	}
	// The same registerer twice is an error, not a panic.
	if _, err := New(DefaultConfig(), Deps{Registry: e.reg, Metrics: e.prom, Gatherer: e.prom}); err == nil {
		t.Fatal("duplicate registration accepted")
	}
}

// At the default Info level renews, registers and polls write no log line;
// at Debug the access log shows them.
func TestLogging_NoLinePerRenewAtInfo(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var buf syncBuffer
		e := newEnv(t, options{deps: func(d *Deps) {
			d.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level}))
		}})
		e.register(appA, z1, "h1")
		e.post("/discovery/renew", keyForm(appA, z1, "h1")).wantCode(0)
		e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, 0)).wantCode(0)
		var lines []string
		for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if l != "" && !strings.Contains(l, `msg="connection limits"`) { // once, at start
				lines = append(lines, l)
			}
		}
		out := strings.Join(lines, "\n")
		if level == slog.LevelInfo && out != "" {
			t.Fatalf("Info level logged:\n%s", out)
		}
		if level == slog.LevelDebug && !strings.Contains(out, "route=/discovery/renew") {
			t.Fatalf("Debug access log lacks renew:\n%s", out)
		}
	}
}

// A panic in a handler is recovered, logged at Error through slog, and the
// server keeps serving. Internal is mounted under /discovery/internal/.
func TestRecover_PanicLogged(t *testing.T) {
	var buf syncBuffer
	e := newEnv(t, options{deps: func(d *Deps) {
		d.Logger = slog.New(slog.NewTextHandler(&buf, nil))
		d.Internal = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/discovery/internal/boom" {
				panic("boom")
			}
			_, _ = w.Write([]byte("internal " + r.URL.Path))
		})
	}})
	if r := e.get("/discovery/internal/boom", nil); r.Status != 500 {
		t.Fatalf("panic answered %d %s", r.Status, r.Body)
	}
	if out := buf.String(); !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "boom") {
		t.Fatalf("panic not logged at Error:\n%s", out)
	}
	if r := e.get("/discovery/internal/snapshot", nil); r.Status != 200 || string(r.Body) != "internal /discovery/internal/snapshot" {
		t.Fatalf("internal: %d %s", r.Status, r.Body)
	}
	e.register(appA, z1, "h1")
}

// Original writes are forwarded once, after local success, with from_zone
// passed through; replicated writes and failed writes are not forwarded.
func TestReplicator_Forwarding(t *testing.T) {
	e := newEnv(t)
	// Originals.
	e.register(appA, z1, "h1")
	e.post("/discovery/register", regForm(appA, z1, "h2", "from_zone", "true", "dirty_timestamp", i64(ns(t0)-5))).wantCode(0)
	e.clock.Advance(time.Second)
	e.post("/discovery/renew", keyForm(appA, z1, "h1")).wantCode(0)
	e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "2",
		"metadata", `{"k":1}`)).wantCode(0)
	e.post("/discovery/cancel", with(keyForm(appA, z1, "h2"), "from_zone", "1")).wantCode(0)
	if got := e.repl.counts(); got != [4]int{2, 1, 1, 1} {
		t.Fatalf("forward counts %v", got)
	}
	r := e.repl
	r.mu.Lock()
	if r.register[0].FromZone || r.register[0].V.Hostname != "h1" || r.register[0].V.DirtyTimestamp != ns(t0) ||
		!r.register[1].FromZone || r.register[1].V.DirtyTimestamp != ns(t0)-5 {
		t.Errorf("register forwards: %+v", r.register)
	}
	if r.renew[0].FromZone || r.renew[0].V != (renewFwd{registry.Key{Env: tEnv, AppID: appA, Zone: z1, Hostname: "h1"}, ns(t0)}) {
		t.Errorf("renew forward: %+v", r.renew)
	}
	wantSet := registry.SetRequest{Env: tEnv, AppID: appA, Zone: z1, Hostnames: []string{"h1"}, Statuses: []uint32{2},
		Metadata: []map[string]string{{"k": "1"}}, SetTimestamp: ns(t0.Add(time.Second))}
	if d := cmp.Diff(wantSet, r.set[0].V); d != "" || r.set[0].FromZone {
		t.Errorf("set forward (-want +got):\n%s", d)
	}
	if c := r.cancel[0]; !c.FromZone || c.V.Key.Hostname != "h2" || c.V.At == 0 {
		t.Errorf("cancel forward: %+v", c)
	}
	r.mu.Unlock()

	// Replicated writes: applied, never forwarded.
	before := e.repl.counts()
	rep := func(v url.Values) url.Values { return with(v, "replication", "true", "from_zone", "true") }
	e.post("/discovery/register", rep(regForm(appA, z1, "h3", "dirty_timestamp", i64(ns(t0.Add(time.Second)))))).wantCode(0)
	e.post("/discovery/renew", rep(with(keyForm(appA, z1, "h3"), "dirty_timestamp", i64(ns(t0.Add(time.Second)))))).wantCode(0)
	e.post("/discovery/set", rep(form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h3", "status", "2",
		"set_timestamp", i64(ns(t0.Add(2*time.Second)))))).wantCode(0)
	e.post("/discovery/cancel", rep(with(keyForm(appA, z1, "h3"), "latest_timestamp", i64(ns(t0.Add(3*time.Second)))))).wantCode(0)
	if _, ok := e.reg.Get(registry.Key{Env: tEnv, AppID: appA, Zone: z1, Hostname: "h3"}); ok {
		t.Fatal("replicated cancel not applied")
	}
	// Failed writes: never forwarded.
	e.post("/discovery/register", with(regForm(appA, z1, "h4"), "status", "3")).wantCode(-400)
	e.post("/discovery/renew", keyForm(appA, z1, "nope")).wantCode(-404)
	e.post("/discovery/cancel", keyForm(appA, z1, "nope")).wantCode(-404)
	e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "nope", "status", "1")).wantCode(-400)
	// A cross-zone register older than the stored copy is kept out and not forwarded.
	e.post("/discovery/register", regForm(appA, z1, "h1", "from_zone", "true", "dirty_timestamp", "1")).wantCode(0)
	if got := e.repl.counts(); got != before {
		t.Fatalf("forwarded replicated or failed writes: %v → %v", before, got)
	}
	// Standalone node: no replicator, everything still works.
	s := newEnv(t, options{noRepl: true})
	s.register(appA, z1, "h1")
	s.post("/discovery/renew", keyForm(appA, z1, "h1")).wantCode(0)
	s.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "2")).wantCode(0)
	s.post("/discovery/cancel", keyForm(appA, z1, "h1")).wantCode(0)
}

// A replicated cancel carrying an older latest_timestamp than the stored
// registration does not remove it.
func TestCancel_ReplicatedOlderKeepsNewer(t *testing.T) {
	e := newEnv(t)
	e.clock.Advance(time.Minute)
	e.register(appA, z1, "h1")
	e.unchanged(func() {
		e.post("/discovery/cancel", with(keyForm(appA, z1, "h1"), "replication", "true", "latest_timestamp", i64(ns(t0)))).
			wantBody(`{"code":-409,"message":"-409","ttl":1}`)
	})
}
