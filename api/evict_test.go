package api

import (
	"context"
	"sort"
	"testing"
	"time"
)

// hostsOf lists the hostnames of appid via HTTP fetch (sorted), or nil when
// the app is unknown.
func (e *tenv) hostsOf(appid string) []string {
	e.t.Helper()
	r := e.get("/discovery/fetch", form("env", tEnv, "appid", appid, "status", "3"))
	if r.code() == -404 {
		return nil
	}
	var ti typedInfo
	r.wantCode(0).data(&ti)
	var out []string
	for _, list := range ti.Instances {
		for _, in := range list {
			out = append(out, in.Hostname)
		}
	}
	sort.Strings(out)
	return out
}

func (e *tenv) renewN(appid string, hosts []string, times int) {
	e.t.Helper()
	for range times {
		for _, h := range hosts {
			e.post("/discovery/renew", keyForm(appid, z1, h)).wantCode(0)
		}
	}
}

func hostNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "h" + i64(int64(i))
	}
	return out
}

// C50: an instance silent for more than 90 s is evicted at the next scan
// when the node is not protected (not at exactly 90 s).
func TestEvict_SilentAfter90s(t *testing.T) {
	e := newEnv(t)
	hosts := hostNames(8) // h7 will die
	for _, h := range hosts {
		e.register(appA, z1, h)
	}
	live := hosts[:7]
	// 14 renews per window ≥ threshold floor(16 × 0.85) = 13: not protected.
	e.clock.Advance(30 * time.Second)
	e.renewN(appA, live, 1)
	e.clock.Advance(30 * time.Second)
	e.renewN(appA, live, 1)
	e.clock.Advance(30 * time.Second) // h7 silent exactly 90 s
	if ev := e.reg.Scan(); len(ev) != 0 {
		t.Fatalf("evicted at exactly 90 s: %+v", ev)
	}
	if got := e.hostsOf(appA); len(got) != 8 {
		t.Fatalf("hosts %v", got)
	}
	e.clock.Advance(time.Second)
	e.renewN(appA, live, 2)
	if ev := e.reg.Scan(); len(ev) != 1 || ev[0].Hostname != "h7" {
		t.Fatalf("evicted %+v", ev)
	}
	if got := e.hostsOf(appA); len(got) != 7 || got[len(got)-1] == "h7" {
		t.Fatalf("hosts after eviction %v", got)
	}
	e.post("/discovery/renew", keyForm(appA, z1, "h7")).wantCode(-404) // renew never resurrects
}

// C51: at most size - floor(0.85 × size) instances are evicted per scan.
func TestEvict_LimitPerScan(t *testing.T) {
	e := newEnv(t, options{regCfg: noGuard})
	for _, h := range hostNames(10) {
		e.register(appA, z1, h)
	}
	e.clock.Advance(91 * time.Second)
	e.reg.Scan()
	if got := e.hostsOf(appA); len(got) != 8 { // 10 - floor(8.5)
		t.Fatalf("after scan 1: %d hosts", len(got))
	}
	e.reg.Scan()
	if got := e.hostsOf(appA); len(got) != 6 { // 8 - floor(6.8)
		t.Fatalf("after scan 2: %d hosts", len(got))
	}
}

// C52: protection holds while renews in the last window < floor(0.85 × 2 ×
// instances); the protect gauge shows it.
func TestEvict_ProtectionThreshold(t *testing.T) {
	e := newEnv(t)
	hosts := hostNames(10) // E = 20 once they renewed, T = 17
	for _, h := range hosts {
		e.register(appA, z1, h)
	}
	e.renewN(appA, hosts, 1) // a key counts toward E from its first renew
	e.reg.Scan()             // closes that window
	e.clock.Advance(91 * time.Second)
	e.renewN(appA, hosts[:8], 2) // 16 < 17
	if ev := e.reg.Scan(); len(ev) != 0 {
		t.Fatalf("evicted while protected: %+v", ev)
	}
	if len(e.hostsOf(appA)) != 10 || !e.reg.Stats().Protected {
		t.Fatal("not protected")
	}
	if v := e.metric("discovery_registry_protected"); v != 1 {
		t.Fatalf("protected gauge %v", v)
	}
	e.renewN(appA, hosts[:8], 2)
	e.renewN(appA, hosts[:1], 1) // 17: not protected
	ev := e.reg.Scan()
	if len(ev) != 2 || e.reg.Stats().Protected {
		t.Fatalf("evicted %+v", ev)
	}
	if got := e.hostsOf(appA); len(got) != 8 {
		t.Fatalf("hosts %v", got)
	}
}

// C53: while protected only instances silent for more than 3600 s are
// evicted.
func TestEvict_ProtectedOnlyAfterAnHour(t *testing.T) {
	e := newEnv(t)
	for _, h := range hostNames(10) {
		e.register(appA, z1, h)
	}
	e.renewN(appA, hostNames(10), 1) // they renewed once (E = 20), then stopped
	e.clock.Advance(1000 * time.Second)
	if ev := e.reg.Scan(); len(ev) != 0 || !e.reg.Stats().Protected {
		t.Fatalf("evicted while protected: %+v", ev)
	}
	e.clock.Advance(2600 * time.Second) // silent exactly 3600 s
	if ev := e.reg.Scan(); len(ev) != 0 {
		t.Fatalf("evicted at 3600 s: %+v", ev)
	}
	e.clock.Advance(time.Second)
	if ev := e.reg.Scan(); len(ev) != 2 {
		t.Fatalf("evicted %d after an hour, want 2 (limit)", len(ev))
	}
	if len(e.hostsOf(appA)) != 8 {
		t.Fatal("hosts")
	}
}

// C54: evictions are never forwarded to peers and advance the app
// latest_timestamp (and wake pollers).
func TestEvict_NotForwardedAdvancesLatest(t *testing.T) {
	e := newEnv(t, options{regCfg: noGuard})
	e.register(appA, z1, "h1")
	e.register(appA, z1, "h2")
	before := e.fetch(appA).LatestTimestamp
	fwd := e.repl.counts()
	ch := e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "x", appA, before))
	e.waitWaiters(1)
	e.clock.Advance(91 * time.Second)
	e.post("/discovery/renew", with(keyForm(appA, z1, "h1"), "replication", "true", "dirty_timestamp", i64(ns(t0)))).wantCode(0)
	if ev := e.reg.Scan(); len(ev) != 1 {
		t.Fatalf("evicted %+v", ev)
	}
	d, _ := pollsData(recv(t, ch).wantCode(0))
	if d[appA].LatestTimestamp <= before || len(d[appA].Instances[z1]) != 1 {
		t.Fatalf("poll after eviction: %+v", d)
	}
	if got := e.repl.counts(); got != fwd {
		t.Fatalf("eviction forwarded: %v → %v", fwd, got)
	}
	if v := e.metric("discovery_registry_evictions_total"); v != 1 {
		t.Fatalf("evictions metric %v", v)
	}
}

// C55: while not ready (init-protect) gated reads answer HTTP 200 -503,
// writes work, /readyz is 503; reads resume once ready. (Lifting the gate
// after a peer sync or 60 s is the job of Deps.Ready's owner, syncup/cmd.)
func TestReadGate(t *testing.T) {
	e := newEnv(t)
	e.ready.Store(false)
	e.register(appA, z1, "h1") // writes work
	e.post("/discovery/renew", keyForm(appA, z1, "h1")).wantCode(0)
	e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "1")).wantCode(0)
	const gated = `{"code":-503,"message":"-503","ttl":1}`
	e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "3")).wantBody(gated)
	e.get("/discovery/fetchs", form("env", tEnv, "appid", appA, "status", "3")).wantBody(gated)
	e.get("/discovery/fetch/all", nil).wantBody(gated)
	e.get("/discovery/nodes", nil).wantBody(gated)
	e.get("/discovery/poll", form("env", tEnv, "appid", appA, "hostname", "x")).wantBody(gated)
	e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, 0)).wantBody(gated)
	if r := e.get("/readyz", nil); r.Status != 503 {
		t.Fatalf("/readyz %d", r.Status)
	}
	if r := e.get("/discovery/prometheus/targets", nil); r.Status != 503 {
		t.Fatalf("targets %d", r.Status)
	}
	if r := e.get("/healthz", nil); r.Status != 200 {
		t.Fatalf("/healthz %d", r.Status)
	}
	e.ready.Store(true)
	e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "3")).wantCode(0)
	e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, 0)).wantCode(0)
	if r := e.get("/readyz", nil); r.Status != 200 {
		t.Fatalf("/readyz %d", r.Status)
	}
	e.post("/discovery/cancel", keyForm(appA, z1, "h1")).wantCode(0)
}
