package api

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
	"github.com/discovery-go/discovery/registry"
)

func shortHold(c *Config) { c.PollHold = 200 * time.Millisecond }

// C39: polls with latest_timestamp=0 for a known appid answers at once.
func TestPolls_ZeroAnswersAtOnce(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	d, missing := pollsData(e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, 0)).wantCode(0))
	if len(d) != 1 || len(d[appA].Instances[z1]) != 1 || len(missing) != 0 {
		t.Fatalf("answer: %+v %v", d, missing)
	}
	if n := e.reg.Stats().Waiters; n != 0 {
		t.Fatalf("waiters: %d", n)
	}
}

// C40: an immediate answer holds only the changed appids (full UP lists);
// missing ones are under error."-404".
func TestPolls_OnlyChangedAndMissing(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	e.register(appA, z1, "h2")
	e.register(appA, z2, "w", "status", "2")
	e.register(appB, z1, "h3")
	la := e.fetch(appA).LatestTimestamp
	lb := e.fetch(appB).LatestTimestamp
	d, missing := pollsData(e.get("/discovery/polls",
		pollsQuery(tEnv, "x", appA, la-1, appB, lb, "demo.gone", 0)).wantCode(0))
	if _, ok := d[appB]; ok || len(d) != 1 {
		t.Fatalf("unchanged appid in data: %v", d)
	}
	var hosts []string
	for _, in := range d[appA].Instances[z1] {
		hosts = append(hosts, in.Hostname)
	}
	if !slices.Equal(hosts, []string{"h1", "h2"}) || len(d[appA].Instances[z2]) != 0 || d[appA].LatestTimestamp != la {
		t.Fatalf("appA answer: %+v", d[appA])
	}
	if !slices.Equal(missing, []string{"demo.gone"}) {
		t.Fatalf("missing: %v", missing)
	}
	// A value from the future (another node) counts as unchanged.
	r := recv(t, e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "x", appA, la+1_000_000),
		"x1-bmspy-timeout", "100"))
	r.wantCode(-304)
}

// C41: all appids unchanged or missing: the request is held and ends -304
// after the hold.
func TestPolls_HeldThen304(t *testing.T) {
	e := newEnv(t, options{cfg: shortHold})
	e.register(appA, z1, "h1")
	la := e.fetch(appA).LatestTimestamp
	ch := e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "x", appA, la, "demo.none", 0))
	e.waitWaiters(1)
	recv(t, ch).wantBody(`{"code":-304,"message":"-304","ttl":1}`)
	e.waitWaiters(0)
	// poll (single) too.
	ch = e.pollAsync(context.Background(), "/discovery/poll",
		form("env", tEnv, "appid", appA, "hostname", "x", "latest_timestamp", i64(la)))
	recv(t, ch).wantBody(`{"code":-304,"message":"-304","ttl":1}`)
}

// C42: a register, cancel, set or eviction wakes every request watching
// that (appid, env), and nobody else.
func TestPolls_WakeOnEveryChange(t *testing.T) {
	e := newEnv(t, options{regCfg: noGuard})
	e.register(appA, z1, "h1")
	e.register(appA, z1, "h2")
	e.register(appA, z1, "h3")
	e.register(appB, z1, "b1")
	changes := []struct {
		name string
		do   func()
	}{
		{"register", func() { e.register(appA, z1, "h4") }},
		{"cancel", func() { e.post("/discovery/cancel", keyForm(appA, z1, "h4")).wantCode(0) }},
		{"set", func() {
			e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h3", "status", "2")).wantCode(0)
		}},
		{"eviction", func() {
			e.clock.Advance(91 * time.Second)
			e.post("/discovery/renew", keyForm(appA, z1, "h1")).wantCode(0)
			e.post("/discovery/renew", keyForm(appA, z1, "h3")).wantCode(0)
			e.post("/discovery/renew", keyForm(appB, z1, "b1")).wantCode(0)
			if ev := e.reg.Scan(); len(ev) != 1 || ev[0].Hostname != "h2" {
				t.Fatalf("evicted: %+v", ev)
			}
		}},
	}
	// Requests of other apps or envs stay parked through every change.
	ctx, cancel := context.WithCancel(context.Background())
	lb := e.fetch(appB).LatestTimestamp
	others := []<-chan resp{
		e.pollAsync(ctx, "/discovery/polls", pollsQuery(tEnv, "o1", appB, lb)),
		e.pollAsync(ctx, "/discovery/polls", pollsQuery("dev", "o2", appA, 0)),
	}
	e.waitWaiters(2)
	for _, ch := range changes {
		la := e.fetch(appA).LatestTimestamp
		p1 := e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "same", appA, la))
		p2 := e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "same", appA, la, appB, lb))
		p3 := e.pollAsync(context.Background(), "/discovery/poll", form("env", tEnv, "appid", appA, "hostname", "x",
			"latest_timestamp", i64(la)))
		e.waitWaiters(5)
		ch.do()
		want := e.fetch(appA).LatestTimestamp
		for i, p := range []<-chan resp{p1, p2} {
			d, _ := pollsData(recv(t, p).wantCode(0))
			if len(d) != 1 || d[appA].LatestTimestamp != want {
				t.Fatalf("%s: poller %d got %+v, want only %s at %d", ch.name, i, d, appA, want)
			}
		}
		var ti typedInfo
		recv(t, p3).wantCode(0).data(&ti)
		if ti.LatestTimestamp != want {
			t.Fatalf("%s: poll got latest %d, want %d", ch.name, ti.LatestTimestamp, want)
		}
		e.waitWaiters(2)
	}
	cancel()
	for _, ch := range others {
		<-ch // cancelled by the client, never answered
	}
	e.waitWaiters(0)
}

// C43: a renew wakes nobody: the held request ends with -304.
func TestPolls_RenewWakesNobody(t *testing.T) {
	e := newEnv(t, options{cfg: shortHold})
	e.register(appA, z1, "h1")
	la := e.fetch(appA).LatestTimestamp
	ch := e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "x", appA, la))
	e.waitWaiters(1)
	e.clock.Advance(30 * time.Second)
	e.post("/discovery/renew", keyForm(appA, z1, "h1")).wantCode(0)
	e.post("/discovery/renew", with(keyForm(appA, z1, "h1"), "replication", "true", "dirty_timestamp", i64(ns(t0)))).wantCode(0)
	recv(t, ch).wantCode(-304)
}

// C44: requests with the same hostname are woken independently and never
// get appids they did not ask for (Defect D1).
func TestPolls_SameHostnameIndependent(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "a1")
	e.register(appB, z1, "b1")
	la, lb := e.fetch(appA).LatestTimestamp, e.fetch(appB).LatestTimestamp
	p1 := e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "h", appA, la))
	p2 := e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "h", appA, la, appB, lb))
	e.waitWaiters(2)
	e.register(appB, z1, "b2")
	d, _ := pollsData(recv(t, p2).wantCode(0))
	if len(d) != 1 || len(d[appB].Instances[z1]) != 2 {
		t.Fatalf("P2 got %+v, want only %s", d, appB)
	}
	e.waitWaiters(1) // P1 is still held: B's change is not its business
	e.register(appA, z1, "a2")
	d, _ = pollsData(recv(t, p1).wantCode(0))
	if len(d) != 1 || len(d[appA].Instances[z1]) != 2 {
		t.Fatalf("P1 got %+v, want only %s", d, appA)
	}
}

// C45: a change racing with the start of a hold is not lost: every poll
// whose appid changes right as it starts answers 0, never -304.
func TestPolls_RaceWithStartNotLost(t *testing.T) {
	e := newEnv(t, options{cfg: func(c *Config) { c.PollHold = 5 * time.Second }})
	e.register(appA, z1, "h1")
	for i := range 30 {
		la := e.fetch(appA).LatestTimestamp
		ch := e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "x", appA, la))
		// No wait for parking: the change lands before, during or after the
		// check-and-arm.
		e.register(appA, z1, "h1", "version", "v"+i64(int64(i)))
		d, _ := pollsData(recv(t, ch).wantCode(0))
		if d[appA].LatestTimestamp <= la {
			t.Fatalf("iteration %d: stale answer %+v", i, d)
		}
	}
}

// C46: a disconnected poller's waiter is released at once (not after the
// 30 s hold).
func TestPolls_DisconnectReleasesWaiter(t *testing.T) {
	e := newEnv(t) // 30 s hold
	e.register(appA, z1, "h1")
	la := e.fetch(appA).LatestTimestamp
	for _, path := range []string{"/discovery/polls", "/discovery/poll"} {
		ctx, cancel := context.WithCancel(context.Background())
		q := pollsQuery(tEnv, "x", appA, la)
		ch := e.pollAsync(ctx, path, q)
		e.waitWaiters(1)
		testkit.EventuallyTrue(t, 10*time.Second, "parked gauge 1", func() bool { return e.srv.parked.Load() == 1 })
		cancel()
		<-ch
		e.waitWaiters(0)
		testkit.EventuallyTrue(t, 10*time.Second, "parked gauge 0", func() bool { return e.srv.parked.Load() == 0 })
	}
}

// C47: data values in polls answers are never null and carry a non-zero
// latest_timestamp; an app whose last instance goes away while held is not
// answered with an empty or null entry.
func TestPolls_DataNeverNull(t *testing.T) {
	e := newEnv(t, options{cfg: shortHold})
	e.register(appA, z1, "h1")
	e.register(appB, z1, "b1")
	r := e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, 0, appB, 0)).wantCode(0)
	if strings.Contains(string(r.Body), "null") {
		t.Fatalf("null in %s", r.Body)
	}
	d, _ := pollsData(r)
	for k, v := range d {
		if v.LatestTimestamp == 0 || len(v.Instances) == 0 {
			t.Fatalf("%s: %+v", k, v)
		}
	}
	// Held request; the app disappears: no entry for it (held until -304).
	la := e.fetch(appA).LatestTimestamp
	ch := e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "x", appA, la))
	e.waitWaiters(1)
	e.post("/discovery/cancel", keyForm(appA, z1, "h1")).wantCode(0)
	r = recv(t, ch)
	if c := r.code(); c == 0 {
		d, _ := pollsData(r)
		if v, ok := d[appA]; ok {
			t.Fatalf("removed app answered: %+v in %s", v, r.Body)
		}
	}
}

// C48: registering the first instance of a watched, previously unknown
// appid wakes the request.
func TestPolls_FirstRegisterWakes(t *testing.T) {
	e := newEnv(t)
	ch := e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "x", "demo.new", 0))
	e.waitWaiters(1)
	e.register("demo.new", z1, "n1")
	d, missing := pollsData(recv(t, ch).wantCode(0))
	if len(d["demo.new"].Instances[z1]) != 1 || len(missing) != 0 {
		t.Fatalf("answer %+v %v", d, missing)
	}
}

// C49: an appid with no UP instance does not cause immediate answers (no
// hot loop): the request is held.
func TestPolls_NoUpInstanceHeld(t *testing.T) {
	e := newEnv(t, options{cfg: shortHold})
	e.register(appA, z1, "w1", "status", "2")
	ch := e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "x", appA, 0))
	e.waitWaiters(1)
	// Another WAITING change does not wake it either.
	e.register(appA, z1, "w2", "status", "2")
	recv(t, ch).wantCode(-304)
	// Once an instance is UP the same request answers at once.
	e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "w1", "status", "1")).wantCode(0)
	d, _ := pollsData(e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, 0)).wantCode(0))
	if len(d[appA].Instances[z1]) != 1 {
		t.Fatalf("answer %+v", d)
	}
}

// Zone filter: answers hold only the requested zone. The latest_timestamp is
// per app, so a change in another zone of the app also wakes a held
// zone-filtered request (spec 5.1, 5.3.1); its answer still holds only its
// zone.
func TestPolls_ZoneFilter(t *testing.T) {
	e := newEnv(t, options{cfg: shortHold})
	e.register(appA, z1, "h1")
	e.register(appA, z2, "h2")
	q := with(pollsQuery(tEnv, "x", appA, 0), "zone", z2)
	d, _ := pollsData(e.get("/discovery/polls", q).wantCode(0))
	if _, ok := d[appA].Instances[z1]; ok || len(d[appA].Instances[z2]) != 1 {
		t.Fatalf("zone filter: %+v", d)
	}
	ch := e.pollAsync(context.Background(), "/discovery/polls", with(q, "latest_timestamp", i64(d[appA].LatestTimestamp)))
	e.waitWaiters(1)
	e.register(appA, z1, "h3")
	d, _ = pollsData(recv(t, ch).wantCode(0))
	if _, ok := d[appA].Instances[z1]; ok || len(d[appA].Instances[z2]) != 1 || d[appA].LatestTimestamp != e.fetch(appA).LatestTimestamp {
		t.Fatalf("zone-filtered wake-up: %+v", d)
	}
}

// MaxPollers caps parked polls: one over the cap answers -503 at once; the
// slot frees when the parked poll ends.
func TestPolls_MaxPollers(t *testing.T) {
	e := newEnv(t, options{cfg: func(c *Config) { c.MaxPollers = 1 }})
	e.register(appA, z1, "h1")
	la := e.fetch(appA).LatestTimestamp
	ctx, cancel := context.WithCancel(context.Background())
	ch := e.pollAsync(ctx, "/discovery/polls", pollsQuery(tEnv, "x", appA, la))
	e.waitWaiters(1)
	e.get("/discovery/polls", pollsQuery(tEnv, "y", appA, la)).wantBody(`{"code":-503,"message":"-503","ttl":1}`)
	// An answerable poll does not need a slot.
	e.get("/discovery/polls", pollsQuery(tEnv, "y", appA, 0)).wantCode(0)
	cancel()
	<-ch
	testkit.EventuallyTrue(t, 10*time.Second, "slot freed", func() bool { return e.srv.parked.Load() == 0 })
	ch = e.pollAsync(context.Background(), "/discovery/polls", pollsQuery(tEnv, "z", appA, la))
	e.waitWaiters(1)
	e.register(appA, z1, "h2")
	recv(t, ch).wantCode(0)
}

// Shutdown answers every parked poll -304 at once and Serve returns nil.
func TestServer_ShutdownReleasesPolls(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	la := e.fetch(appA).LatestTimestamp
	// A second server on our own listener, sharing the registry.
	srv, err := New(DefaultConfig(), Deps{Registry: e.reg})
	if err != nil {
		t.Fatal(err)
	}
	ln := listen(t)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	q := pollsQuery(tEnv, "x", appA, la).Encode()
	results := make(chan resp, 3)
	for range 3 {
		go func() { results <- httpGet(t, base+"/discovery/polls?"+q) }()
	}
	e.waitWaiters(3)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		r := <-results
		r.t = t
		r.wantBody(`{"code":-304,"message":"-304","ttl":1}`)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("shutdown took %v", el)
	}
	e.waitWaiters(0)
}

// 5.3.2: the wake-up answer always holds the appid whose change woke the
// request, even when the client's latest_timestamp is ahead of the app
// counter (a value kept across a node restart: the restarted node's counter
// restarts from the synced instances, and a cancel only adds 1).
func TestPolls_WakeIncludesTriggeringAppid(t *testing.T) {
	e := newEnv(t, options{cfg: func(c *Config) { c.PollHold = 3 * time.Second }})
	e.register(appA, z1, "h1")
	e.register(appA, z1, "h2")
	ahead := e.fetch(appA).LatestTimestamp + int64(time.Hour)
	for _, path := range []string{"/discovery/polls", "/discovery/poll"} {
		ch := e.pollAsync(context.Background(), path, pollsQuery(tEnv, "x", appA, ahead))
		e.waitWaiters(1)
		e.post("/discovery/cancel", keyForm(appA, z1, "h2")).wantCode(0)
		r := recv(t, ch).wantCode(0)
		var ti typedInfo
		if path == "/discovery/polls" {
			d, _ := pollsData(r)
			ti = d[appA]
		} else {
			r.data(&ti)
		}
		if got := ti.Instances[z1]; len(got) != 1 || got[0].Hostname != "h1" || ti.LatestTimestamp != e.fetch(appA).LatestTimestamp {
			t.Fatalf("%s: wake-up answer %+v, want %s with h1 only", path, ti, appA)
		}
		e.register(appA, z1, "h2")
	}
}

// When many pollers get the same app version, their answers share the
// registry's encoded payload: answering one more poller allocates far less
// than the payload itself (no per-poller copy of the instance list), for
// polls and for poll. The body still has the exact announced length.
func TestPolls_AnswerSharesPayloadBytes(t *testing.T) {
	e := newEnv(t)
	for i := range 1000 {
		in := registry.Instance{Env: tEnv, AppID: appA, Zone: z1, Hostname: fmt.Sprintf("host-%04d", i),
			Addrs: []string{"grpc://10.0.0.1:9000", "http://10.0.0.1:8000"}, Status: 1,
			Metadata: map[string]string{"weight": "10"}}
		if _, _, err := e.reg.Register(in, 0); err != nil {
			t.Fatal(err)
		}
	}
	h := e.srv.Handler()
	for _, path := range []string{"/discovery/polls", "/discovery/poll"} {
		u := path + "?" + pollsQuery(tEnv, "x", appA, 0).Encode()
		wantSharedAnswer(t, h, u, 200_000)
	}
}

// pollsBody's parts join into the exact map shape, also when escaped appids
// make the framing outgrow its first allocation.
func TestPollsBody_Parts(t *testing.T) {
	esc := strings.Repeat(`<&>"`, 40)
	res := &registry.PollResult{
		Changed: []registry.AppPayload{{AppID: "a", JSON: []byte(`{"x":1}`)}, {AppID: esc, JSON: []byte(`{"y":2}`)}, {AppID: "c", JSON: []byte(`{}`)}},
		Missing: []string{esc + "m", "n"},
	}
	got := string(slices.Concat(pollsBody(res)...))
	q, _ := json.Marshal(esc)
	qm, _ := json.Marshal(esc + "m")
	want := `{"code":0,"message":"0","data":{"a":{"x":1},` + string(q) + `:{"y":2},"c":{}},"error":{"-404":[` + string(qm) + `,"n"]}}`
	if got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
	if got := string(slices.Concat(pollsBody(&registry.PollResult{Changed: res.Changed[:1]})...)); got != `{"code":0,"message":"0","data":{"a":{"x":1}},"error":{"-404":[]}}` {
		t.Fatalf("body %s", got)
	}
}
