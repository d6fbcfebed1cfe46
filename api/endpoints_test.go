package api

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/discovery-go/discovery/api/wire"
)

// C22: register without zone/env/appid/hostname/addrs or with status 0 →
// -400 naming the field; nothing stored.
func TestRegister_RequiredParams(t *testing.T) {
	e := newEnv(t)
	for _, f := range []string{"zone", "env", "appid", "hostname", "addrs", "status"} {
		e.unchanged(func() {
			e.post("/discovery/register", without(regForm(appA, z1, "h1"), f)).wantBadParam(f, "required")
			e.post("/discovery/register", with(regForm(appA, z1, "h1"), f, "")).wantBadParam(f, "required")
		})
	}
	e.unchanged(func() {
		e.post("/discovery/register", with(regForm(appA, z1, "h1"), "status", "0")).wantBadParam("status", "required")
	})
	if st := e.reg.Stats(); len(st.Instances) != 0 || e.repl.counts() != [4]int{} {
		t.Fatalf("something stored or forwarded: %+v %v", st, e.repl.counts())
	}
}

// C23: register with status 3 → a JSON -400 (the original sent an empty
// body, Defect D5).
func TestRegister_Status3(t *testing.T) {
	e := newEnv(t)
	e.unchanged(func() {
		e.post("/discovery/register", with(regForm(appA, z1, "h1"), "status", "3")).
			wantBody(`{"code":-400,"message":"status: must be 1 or 2, got 3","ttl":1}`)
	})
}

// C24: renew or cancel of an absent instance → -404.
func TestRenewCancel_Absent(t *testing.T) {
	e := newEnv(t)
	e.post("/discovery/renew", keyForm(appA, z1, "h1")).wantBody(`{"code":-404,"message":"-404","ttl":1,"data":null}`)
	e.post("/discovery/cancel", keyForm(appA, z1, "h1")).wantBody(`{"code":-404,"message":"-404","ttl":1}`)
	e.register(appA, z1, "h1")
	e.post("/discovery/renew", keyForm(appA, z1, "other")).wantCode(-404)
	e.post("/discovery/cancel", keyForm(appA, z1, "other")).wantCode(-404)
	for _, f := range []string{"zone", "env", "appid", "hostname"} {
		e.unchanged(func() {
			e.post("/discovery/renew", without(keyForm(appA, z1, "h1"), f)).wantBadParam(f)
			e.post("/discovery/cancel", without(keyForm(appA, z1, "h1"), f)).wantBadParam(f)
		})
	}
}

// C25: renew must use the zone the instance registered in.
func TestRenew_ZoneMustMatch(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	e.post("/discovery/renew", keyForm(appA, z2, "h1")).wantCode(-404)
	e.post("/discovery/renew", keyForm(appA, z1, "h1")).wantCode(0)
}

// C26: replicated renew: sender dirty greater → -404; smaller or absent →
// -409 with the receiver's instance; equal → 0. The renew applies in all
// three cases.
func TestRenew_ReplicatedHandshake(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	d := ns(t0)
	renew := func(dirty string) resp {
		v := with(keyForm(appA, z1, "h1"), "replication", "true", "from_zone", "true")
		if dirty != "-" {
			v.Set("dirty_timestamp", dirty)
		}
		e.clock.Advance(time.Second)
		r := e.post("/discovery/renew", v)
		if got := e.instance(appA, z1, "h1").RenewTimestamp; got != ns(e.clock.Now()) {
			t.Fatalf("renew with dirty %s not applied: renew_timestamp %d", dirty, got)
		}
		return r
	}
	renew(i64(d + 1)).wantBody(`{"code":-404,"message":"-404","ttl":1,"data":null}`)
	r := renew(i64(d - 1)).wantCode(-409)
	var got inst
	r.data(&got)
	if got.DirtyTimestamp != d || got.Hostname != "h1" || got.RenewTimestamp != ns(e.clock.Now()) {
		t.Fatalf("-409 data: %+v", got)
	}
	// Exact bytes of the -409 (spec 4.2.5 example shape).
	now := i64(ns(e.clock.Now()) + int64(time.Second))
	renew("-").wantBody(`{"code":-409,"message":"-409","ttl":1,"data":{"region":"sh","zone":"sh001","env":"prod",` +
		`"appid":"demo.a","hostname":"h1","addrs":["grpc://10.0.0.5:9000"],"version":"v1","metadata":{},"status":1,` +
		`"reg_timestamp":1700000000000000000,"up_timestamp":1700000000000000000,"renew_timestamp":` + now +
		`,"dirty_timestamp":1700000000000000000,"latest_timestamp":1700000000000000000}}`)
	renew(i64(d)).wantCode(0)
	if c := e.repl.counts(); c[1] != 0 {
		t.Fatalf("replicated renews forwarded: %v", c)
	}
}

// C27: set with mismatched lists, unknown hostname or bad status → -400
// naming the field, and nothing changes (not even the valid hostnames).
func TestSet_InvalidChangesNothing(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	e.register(appA, z1, "h2")
	base := form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "hostname", "h2")
	for _, tc := range []struct {
		extra []string
		field string
	}{
		{[]string{"status", "1"}, "status"},
		{[]string{"status", "1", "status", "2", "status", "1"}, "status"},
		{[]string{"metadata", `{"a":"b"}`}, "metadata"},
		{[]string{"status", "1", "status", "3"}, "status"},
		{[]string{"status", "0", "status", "1"}, "status"},
		{[]string{"metadata", `{"a":"b"}`, "metadata", `{"a":`}, "metadata"},
		{[]string{"metadata", `{"a":"b"}`, "metadata", `{"a":{}}`}, "metadata"},
	} {
		v := with(base)
		for i := 0; i < len(tc.extra); i += 2 {
			v.Add(tc.extra[i], tc.extra[i+1])
		}
		e.unchanged(func() { e.post("/discovery/set", v).wantBadParam(tc.field) })
	}
	// Unknown hostname among known ones: nothing applied (Defect D7).
	e.unchanged(func() {
		e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "hostname", "nope",
			"status", "2", "status", "2")).wantBadParam("hostname", "nope")
	})
	// Unknown app / zone / no hostname.
	e.unchanged(func() {
		e.post("/discovery/set", form("zone", z2, "env", tEnv, "appid", appA, "hostname", "h1", "status", "2")).wantBadParam("hostname")
		e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", "nope", "hostname", "h1", "status", "2")).wantBadParam("hostname")
		e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "status", "2")).wantBadParam("hostname", "required")
		e.post("/discovery/set", form("env", tEnv, "appid", appA, "hostname", "h1", "status", "2")).wantBadParam("zone")
	})
	if c := e.repl.counts(); c[3] != 0 {
		t.Fatalf("failed sets forwarded: %v", c)
	}
}

// C28: set replaces the whole metadata map and ignores version.
func TestSet_ReplacesMetadataIgnoresVersion(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1", "metadata", `{"a":"1","b":"2"}`, "version", "v1")
	e.post("/discovery/set", form("region", "sh", "zone", z1, "env", tEnv, "appid", appA, "hostname", "h1",
		"version", "v9", "metadata", `{"c":3}`)).wantCode(0)
	in := e.instance(appA, z1, "h1")
	if d := cmp.Diff(map[string]string{"c": "3"}, in.Metadata); d != "" || in.Version != "v1" || in.Status != 1 {
		t.Fatalf("after set: %+v (%s)", in, d)
	}
}

// C29: set with status 1 stamps up_timestamp, latest_timestamp and
// dirty_timestamp with set_timestamp.
func TestSet_Timestamps(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1", "status", "2")
	ts := ns(t0.Add(5 * time.Second))
	e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "1",
		"set_timestamp", i64(ts))).wantCode(0)
	in := e.instance(appA, z1, "h1")
	if in.Status != 1 || in.UpTimestamp != ts || in.LatestTimestamp != ts || in.DirtyTimestamp != ts || in.RegTimestamp != ns(t0) {
		t.Fatalf("after set: %+v", in)
	}
	if l := e.fetch(appA).LatestTimestamp; l < ts {
		t.Fatalf("app latest %d below set_timestamp %d", l, ts)
	}
	// Without set_timestamp: now; status 2 leaves up_timestamp alone.
	e.clock.Advance(10 * time.Second)
	e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "2")).wantCode(0)
	in = e.instance(appA, z1, "h1")
	if now := ns(e.clock.Now()); in.Status != 2 || in.UpTimestamp != ts || in.DirtyTimestamp != now || in.LatestTimestamp != now {
		t.Fatalf("after set 2: %+v", in)
	}
}

// C30: fetch requires env, appid and status; status is a bit mask.
func TestFetch_ParamsAndMask(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "up")
	e.register(appA, z1, "wait", "status", "2")
	q := form("env", tEnv, "appid", appA, "status", "3")
	for _, f := range []string{"env", "appid", "status"} {
		e.get("/discovery/fetch", without(q, f)).wantBadParam(f, "required")
		e.get("/discovery/fetchs", without(q, f)).wantBadParam(f, "required")
	}
	e.get("/discovery/fetch", with(q, "status", "0")).wantBadParam("status")
	hosts := func(mask string) []string {
		var ti typedInfo
		e.get("/discovery/fetch", with(q, "status", mask)).wantCode(0).data(&ti)
		var out []string
		for _, in := range ti.Instances[z1] {
			out = append(out, in.Hostname)
		}
		return out
	}
	for mask, want := range map[string][]string{"1": {"up"}, "2": {"wait"}, "3": {"up", "wait"}} {
		if got := hosts(mask); !slices.Equal(got, want) {
			t.Errorf("status=%s: %v, want %v", mask, got, want)
		}
	}
}

// C31: fetch of an unknown appid or zone → -404.
func TestFetch_UnknownAppOrZone(t *testing.T) {
	e := newEnv(t)
	e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "3")).
		wantBody(`{"code":-404,"message":"-404","ttl":1,"data":null}`)
	e.register(appA, z1, "h1")
	e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "3", "zone", z2)).wantCode(-404)
	e.get("/discovery/fetch", form("env", "dev", "appid", appA, "status", "3")).wantCode(-404)
	e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "3", "zone", z1)).wantCode(0)
}

// C32: zones whose instances are all filtered out appear as [].
func TestFetch_FilteredZonesEmptyArrays(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	e.register(appA, z2, "h2", "status", "2")
	r := e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "1")).wantCode(0)
	var raw struct {
		Instances map[string]json.RawMessage `json:"instances"`
	}
	r.data(&raw)
	if string(raw.Instances[z2]) != "[]" || len(raw.Instances) != 2 {
		t.Fatalf("instances: %s", r.Body)
	}
}

// C33: fetchs leaves unknown appids out and answers 0 with {} when none
// exists.
func TestFetchs_UnknownOmitted(t *testing.T) {
	e := newEnv(t)
	e.get("/discovery/fetchs", form("env", tEnv, "appid", appA, "appid", appB, "status", "3")).
		wantBody(`{"code":0,"message":"0","ttl":1,"data":{}}`)
	e.register(appA, z1, "h1")
	var m map[string]typedInfo
	e.get("/discovery/fetchs", form("env", tEnv, "appid", appA, "appid", appB, "status", "3")).wantCode(0).data(&m)
	if len(m) != 1 || len(m[appA].Instances[z1]) != 1 {
		t.Fatalf("fetchs: %+v", m)
	}
	// Zone filter: apps lacking the zone are left out too.
	e.get("/discovery/fetchs", form("env", tEnv, "appid", appA, "status", "3", "zone", z2)).
		wantBody(`{"code":0,"message":"0","ttl":1,"data":{}}`)
}

// C34: poll of an unknown appid answers {"code":-404,"message":"<appid> not
// found"} at once.
func TestPoll_UnknownAppid(t *testing.T) {
	e := newEnv(t)
	e.get("/discovery/poll", form("env", tEnv, "appid", "demo.x", "hostname", "h", "latest_timestamp", "0")).
		wantBody(`{"code":-404,"message":"demo.x not found"}`)
	e.register(appA, z1, "h1")
	e.get("/discovery/poll", form("env", tEnv, "appid", appA, "hostname", "h", "zone", z2)).
		wantBody(`{"code":-404,"message":"demo.a not found"}`)
	if n := e.reg.Stats().Waiters; n != 0 {
		t.Fatalf("waiters left: %d", n)
	}
}

// C35: polls with unequal appid / latest_timestamp counts (including none)
// → -400 naming latest_timestamp.
func TestPolls_CountMismatch(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	for _, q := range []string{
		"env=prod&hostname=h&appid=demo.a",
		"env=prod&hostname=h&appid=demo.a&appid=demo.b&latest_timestamp=0",
		"env=prod&hostname=h&appid=demo.a&latest_timestamp=0&latest_timestamp=0",
		"env=prod&hostname=h&appid=demo.a&appid=demo.b&latest_timestamp=0,0",
		"env=prod&hostname=h&appid=demo.a&latest_timestamp=",
	} {
		e.getRaw("/discovery/polls", q).wantBadParam("latest_timestamp", "appids")
	}
	e.getRaw("/discovery/polls", "env=prod&hostname=h&latest_timestamp=0").wantBadParam("appid", "required")
	e.getRaw("/discovery/polls", "hostname=h&appid=demo.a&latest_timestamp=0").wantBadParam("env", "required")
}

// C36: polls and poll without hostname → -400 naming hostname.
func TestPoll_HostnameRequired(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	e.getRaw("/discovery/polls", "env=prod&appid=demo.a&latest_timestamp=0").wantBadParam("hostname", "required")
	e.getRaw("/discovery/polls", "env=prod&appid=demo.a&latest_timestamp=0&hostname=").wantBadParam("hostname", "required")
	e.getRaw("/discovery/poll", "env=prod&appid=demo.a&latest_timestamp=0").wantBadParam("hostname", "required")
	e.getRaw("/discovery/poll", "env=prod&latest_timestamp=0&hostname=h").wantBadParam("appid", "required")
}

// C37: fetch/all answers appid → instances of every env and zone with their
// original timestamps.
func TestFetchAll(t *testing.T) {
	e := newEnv(t)
	e.get("/discovery/fetch/all", nil).wantBody(`{"code":0,"message":"0","ttl":1,"data":{}}`)
	e.register(appA, z1, "h1")
	e.clock.Advance(time.Second)
	v := regForm(appA, z2, "h2", "env", "dev", "status", "2")
	e.post("/discovery/register", v).wantCode(0)
	e.register(appB, z1, "h3")
	var all map[string][]inst
	e.get("/discovery/fetch/all", form("ignored", "x")).wantCode(0).data(&all)
	if len(all) != 2 || len(all[appA]) != 2 || len(all[appB]) != 1 {
		t.Fatalf("fetch/all: %+v", all)
	}
	got := map[string]inst{}
	for _, in := range all[appA] {
		got[in.Env] = in
	}
	prod := e.instance(appA, z1, "h1")
	if d := cmp.Diff(prod, got[tEnv]); d != "" {
		t.Fatalf("prod copy differs from fetch:\n%s", d)
	}
	dev := got["dev"]
	if dev.Zone != z2 || dev.Status != 2 || dev.RegTimestamp != ns(t0.Add(time.Second)) {
		t.Fatalf("dev copy: %+v", dev)
	}
}

// C38: nodes lists same-zone nodes with addr, status, zone, self included.
func TestNodes(t *testing.T) {
	e := newEnv(t)
	e.get("/discovery/nodes", nil).wantBody(`{"code":0,"message":"0","ttl":1,"data":[{"addr":"127.0.0.1:7171","status":0,"zone":"sh001"}]}`)
	e2 := newEnv(t, options{deps: func(d *Deps) {
		d.Nodes = func() []wire.Node {
			return []wire.Node{{Addr: "10.1.0.1:7171", Status: 0, Zone: z1}, {Addr: "10.1.0.2:7171", Status: 1, Zone: z1}}
		}
	}})
	e2.get("/discovery/nodes", nil).wantBody(`{"code":0,"message":"0","ttl":1,"data":[` +
		`{"addr":"10.1.0.1:7171","status":0,"zone":"sh001"},{"addr":"10.1.0.2:7171","status":1,"zone":"sh001"}]}`)
	e3 := newEnv(t, options{deps: func(d *Deps) { d.Nodes = func() []wire.Node { return nil } }})
	if r := e3.get("/discovery/nodes", nil).wantCode(0); !strings.Contains(string(r.Body), `"data":[]`) {
		t.Fatalf("empty node list: %s", r.Body)
	}
}

// A far-future version timestamp (here MaxInt64, more than a day ahead of
// the node's clock) is -400 naming the field and changes nothing; before,
// set_timestamp=MaxInt64 then a cancel left the key unregistrable: every
// later register answered 0 and stored nothing.
func TestWrites_FarFutureTimestampsRejected(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	const far = "9223372036854775807"
	e.unchanged(func() {
		e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "1",
			"set_timestamp", far)).wantBadParam("set_timestamp")
		e.post("/discovery/register", regForm(appA, z1, "h1", "replication", "true", "dirty_timestamp", far)).
			wantBadParam("dirty_timestamp")
		e.post("/discovery/cancel", with(keyForm(appA, z1, "h1"), "replication", "true", "latest_timestamp", far)).
			wantBadParam("latest_timestamp")
	})
	if c := e.repl.counts(); c != [4]int{1, 0, 0, 0} {
		t.Fatalf("rejected writes forwarded: %v", c)
	}
	e.post("/discovery/cancel", keyForm(appA, z1, "h1")).wantCode(0)
	e.register(appA, z1, "h1")
	if got := e.hostsOf(appA); !slices.Equal(got, []string{"h1"}) {
		t.Fatalf("re-register after cancel: hosts %v", got)
	}
}

// peersRepl is a replicator that can tell whether a register would reach
// a peer: its answers are taken in turn (the last one repeats).
type peersRepl struct {
	*fakeRepl
	mu      sync.Mutex
	answers []bool
	asked   int
}

func (p *peersRepl) Forwards(bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.asked++
	a := p.answers[0]
	if len(p.answers) > 1 {
		p.answers = p.answers[1:]
	}
	return a
}

// A register that reaches no peer is stored without a copy for the
// replicator; one whose peer appears while it is applied is still
// forwarded, from the stored instance.
func TestRegister_ForwardedOnlyWhenAPeerCanGetIt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		answers []bool
		want    int
	}{
		{"no peer", []bool{false}, 0},
		{"a peer appears during the write", []bool{false, true}, 1},
		{"peers", []bool{true}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pr := &peersRepl{fakeRepl: &fakeRepl{}, answers: tc.answers}
			e := newEnv(t, options{deps: func(d *Deps) { d.Replicator = pr }})
			e.register(appA, z1, "h1", "version", "v7")
			stored := e.instance(appA, z1, "h1")
			pr.mu.Lock()
			asked := pr.asked
			pr.mu.Unlock()
			if asked == 0 {
				t.Fatal("the server never asked whether a peer would get the register")
			}
			pr.fakeRepl.mu.Lock()
			defer pr.fakeRepl.mu.Unlock()
			if got := len(pr.register); got != tc.want {
				t.Fatalf("%d registers forwarded, want %d", got, tc.want)
			}
			if tc.want == 1 {
				if f := pr.register[0]; f.FromZone || f.V.Version != "v7" || f.V.DirtyTimestamp != stored.DirtyTimestamp {
					t.Fatalf("forwarded %+v (from_zone %v), stored %+v", f.V, f.FromZone, stored)
				}
			}
		})
	}
}
