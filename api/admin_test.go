package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/internal/testkit"
)

// The apps list filters by env, zone, status and appid prefix, sorts,
// pages, and counts stale instances (last renew older than 60 s).
func TestAdmin_Apps(t *testing.T) {
	e := newEnv(t)
	e.register("demo.a", z1, "h1")
	e.register("demo.a", z2, "h2", "status", "2")
	e.register("demo.b", z1, "h1")
	e.register("other.c", z1, "h1")
	e.register("other.c", z1, "h2")
	e.register("other.c", z1, "h3")
	e.clock.Advance(2 * time.Minute)
	e.post("/discovery/renew", keyForm("other.c", z1, "h1")).wantCode(0)
	page := func(q ...string) wire.AppsPage {
		t.Helper()
		var p wire.AppsPage
		e.get(wire.PathAdminApps, form(q...)).wantCode(0).data(&p)
		return p
	}
	if p := page(); p.Total != 3 || p.Apps[0].AppID != "demo.a" || p.Apps[2].AppID != "other.c" {
		t.Fatalf("all: %+v", p)
	}
	a := page("prefix", "demo.a").Apps[0]
	if a.Instances != 2 || a.Up != 1 || a.Waiting != 1 || a.Stale != 2 || a.Zones[z2].Waiting != 1 {
		t.Fatalf("demo.a: %+v", a)
	}
	if p := page("zone", z2); p.Total != 1 || p.Apps[0].AppID != "demo.a" || p.Apps[0].Instances != 1 {
		t.Fatalf("zone filter: %+v", p)
	}
	if p := page("status", "waiting"); p.Total != 1 {
		t.Fatalf("status waiting: %+v", p)
	}
	if p := page("sort", "instances"); p.Apps[0].AppID != "other.c" {
		t.Fatalf("sort by instances: %+v", p)
	}
	if c := page("prefix", "other").Apps[0]; c.Stale != 2 {
		t.Fatalf("one of three renewed: stale %d", c.Stale)
	}
	if p := page("limit", "1", "offset", "1"); p.Total != 3 || len(p.Apps) != 1 || p.Apps[0].AppID != "demo.b" || p.Offset != 1 {
		t.Fatalf("paging: %+v", p)
	}
	if p := page("env", "nope"); p.Total != 0 || p.Apps == nil {
		t.Fatalf("unknown env: %+v", p)
	}
	e.get(wire.PathAdminApps, form("status", "lost")).wantBadParam("status")
	e.get(wire.PathAdminApps, form("limit", "-1")).wantBadParam("limit")
	e.get(wire.PathAdminApps, form("sort", "x")).wantBadParam("sort")
}

// The app view lists every instance with its renew age and which nodes
// hold the same version; an app without instances is -404.
func TestAdmin_App(t *testing.T) {
	e := newEnv(t)
	e.register("demo.a", z1, "h1")
	e.register("demo.a", z2, "h2", "status", "2")
	e.clock.Advance(90 * time.Second)
	var d wire.AppDetail
	e.get(wire.PathAdminApp, form("env", tEnv, "appid", "demo.a")).wantCode(0).data(&d)
	if len(d.Instances) != 2 || d.Instances[0].Hostname != "h1" || d.Instances[1].Status != 2 {
		t.Fatalf("instances %+v", d.Instances)
	}
	for _, in := range d.Instances {
		if !in.Stale || in.RenewAgeSeconds < 0 || len(in.HeldBy) != 1 || in.HeldBy[0] != "127.0.0.1:7171" {
			t.Errorf("%s: %+v", in.Hostname, in)
		}
	}
	e.get(wire.PathAdminApp, form("env", tEnv, "appid", "none")).wantCode(wire.CodeNotFound)
	e.get(wire.PathAdminApp, form("appid", "demo.a")).wantBadParam("env")
}

// changes answers at once when the count differs from since, else holds
// until a change (or the hold).
func TestAdmin_Changes(t *testing.T) {
	e := newEnv(t)
	var c wire.Changes
	e.get(wire.PathAdminChanges, nil).wantCode(0).data(&c)
	since := c.Version
	got := make(chan wire.Changes, 1)
	go func() {
		req := e.newReq(context.Background(), http.MethodGet, wire.PathAdminChanges, url.Values{"since": {strconv.FormatUint(since, 10)}}, nil, "")
		var c2 wire.Changes
		e.do(req).data(&c2)
		got <- c2
	}()
	// Whether the request is parked yet or not, the answer is a newer count.
	e.register("demo.a", z1, "h1")
	select {
	case c2 := <-got:
		if c2.Version <= since {
			t.Fatalf("version %d after a change from %d", c2.Version, since)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("changes not answered after a registration")
	}
	e.get(wire.PathAdminChanges, form("since", "x")).wantBadParam("since")
}

// With an admin token every admin route needs it (-401 without, -403
// wrong); the status overview describes the node.
func TestAdmin_TokenAndStatus(t *testing.T) {
	const tok = "admin-token-for-the-admin-tests"
	e := newEnv(t, options{deps: func(d *Deps) {
		d.Security.AdminToken = tok
		d.Node = wire.NodeStatus{Hostname: "n1", Env: tEnv, Version: "v9", Started: time.Now().Add(-time.Minute).UnixNano()}
	}})
	for _, p := range []string{wire.PathAdminStatus, wire.PathAdminApps, wire.PathAdminApp, wire.PathAdminChanges} {
		e.get(p, nil).wantCode(wire.CodeUnauthorized)
		req := e.newReq(context.Background(), http.MethodGet, p, nil, nil, "")
		req.Header.Set("Authorization", "Bearer wrong-token-of-some-length")
		e.do(req).wantCode(wire.CodeForbidden)
	}
	e.register("demo.a", z1, "h1")
	req := e.newReq(context.Background(), http.MethodGet, wire.PathAdminStatus, nil, nil, "")
	req.Header.Set("Authorization", "Bearer "+tok)
	var st wire.AdminStatus
	e.do(req).wantCode(0).data(&st)
	if st.Node.Hostname != "n1" || st.Node.Version != "v9" || !st.Node.Ready || st.Node.UptimeSeconds < 59 ||
		st.Registry.Instances[tEnv] != 1 || st.Polls.Max == 0 || st.Connections.Max == 0 || len(st.Members) != 1 || st.Legacy == nil {
		t.Fatalf("status %+v", st)
	}
}

// A waiting changes request counts toward http.max_pollers like a poll: a
// second one (or a poll) beyond the cap is refused at once with -503, and
// the slot frees when it ends.
func TestAdmin_ChangesCountsTowardMaxPollers(t *testing.T) {
	e := newEnv(t, options{cfg: func(c *Config) { c.MaxPollers = 1 }})
	var c wire.Changes
	e.get(wire.PathAdminChanges, nil).wantCode(0).data(&c)
	since := url.Values{"since": {strconv.FormatUint(c.Version, 10)}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := e.newReq(ctx, http.MethodGet, wire.PathAdminChanges, since, nil, "")
		if resp, err := e.client.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	testkit.EventuallyTrue(t, 10*time.Second, "changes request waiting", func() bool { return e.srv.parked.Load() == 1 })
	e.get(wire.PathAdminChanges, since).wantCode(wire.CodeUnavailable)
	e.register(appA, z1, "h1") // answers the waiting one
	<-done
	cancel()
	testkit.EventuallyTrue(t, 10*time.Second, "slot freed", func() bool { return e.srv.parked.Load() == 0 })
}

// Operator actions with the admin token leave an audit line naming the
// action, the source and the target; refusals are counted every time but
// logged once a minute per source, so a scanner cannot flood the log.
func TestSecurity_AuditLinesAndRefusalLogging(t *testing.T) {
	const tok = "admin-token-for-the-audit-test"
	e := newEnv(t, options{refusals: true, deps: func(d *Deps) {
		d.Security.AdminToken = tok
		d.Peers = nil // no request here is a peer's: fetch/all needs the token
	}})
	withToken := func(path string, f url.Values) resp {
		req := e.newReq(context.Background(), http.MethodPost, path, nil, strings.NewReader(f.Encode()), "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+tok)
		return e.do(req)
	}
	e.register(appA, z1, "h1")
	e.register(appA, z1, "h2")

	withToken("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "2")).wantCode(0)
	withToken("/discovery/cancel", keyForm(appA, z1, "h2")).wantCode(0)
	req := e.newReq(context.Background(), http.MethodGet, "/discovery/fetch/all", nil, nil, "")
	req.Header.Set("Authorization", "Bearer "+tok)
	e.do(req).wantCode(0)
	logs := e.logs.String()
	for _, want := range []string{
		"msg=audit action=set source=127.0.0.1 admin_token=true env=" + tEnv + " appid=" + appA + " zone=" + z1 + " hostnames=[h1]",
		"msg=audit action=cancel source=127.0.0.1 admin_token=true env=" + tEnv + " appid=" + appA + " zone=" + z1 + " hostname=h2",
		"msg=audit action=fetch_all source=127.0.0.1 admin_token=true",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("no audit line %q in:\n%s", want, logs)
		}
	}

	// Three refused sets from one source: three counted, one logged.
	before := strings.Count(e.logs.String(), `msg="request refused"`)
	for range 3 {
		e.unchanged(func() {
			e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "1")).wantCode(wire.CodeUnauthorized)
		})
	}
	if n := e.metric("discovery_auth_refusals_total", "route", "/discovery/set", "reason", "admin_missing"); n != 3 {
		t.Fatalf("refusals counted = %v, want 3", n)
	}
	if n := strings.Count(e.logs.String(), `msg="request refused"`) - before; n != 1 {
		t.Fatalf("refusal log lines = %d, want 1 (once a minute per source):\n%s", n, e.logs.String())
	}
}

// The source of a request has no IPv6 zone: owners are recorded without
// one, and no prefix of security.write_cidrs contains a zoned address.
func TestSource_DropsTheZone(t *testing.T) {
	for remote, want := range map[string]string{
		"[fe80::1%eth0]:1234":    "fe80::1",
		"[::ffff:10.1.2.3]:1234": "10.1.2.3",
		"10.1.2.3:1234":          "10.1.2.3",
		"[2001:db8::7]:80":       "2001:db8::7",
	} {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.RemoteAddr = remote
		if got := source(echo.New().NewContext(req, httptest.NewRecorder())).String(); got != want {
			t.Errorf("source of %s = %s, want %s", remote, got, want)
		}
	}
}
