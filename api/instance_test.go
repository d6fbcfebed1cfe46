package api

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var instanceKeys = []string{"region", "zone", "env", "appid", "hostname", "addrs", "version", "metadata", "status",
	"reg_timestamp", "up_timestamp", "renew_timestamp", "dirty_timestamp", "latest_timestamp"}

// rawInstances collects every instance object found in the JSON v at the
// given path shape: fetch data, fetchs/polls data, fetch/all data, renew data.
func checkInstanceObject(t *testing.T, where string, raw json.RawMessage) {
	t.Helper()
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("%s: instance %s: %v", where, raw, err)
	}
	keys := slices.Sorted(maps.Keys(obj))
	if want := slices.Sorted(slices.Values(instanceKeys)); !slices.Equal(keys, want) {
		t.Fatalf("%s: instance keys %v, want exactly %v", where, keys, want)
	}
	// C14: metadata is an object of strings ({} when empty), never null.
	var md map[string]string
	if string(obj["metadata"]) == "null" || json.Unmarshal(obj["metadata"], &md) != nil {
		t.Fatalf("%s: metadata %s is not an object of strings", where, obj["metadata"])
	}
	// 3.1.3: addrs is an array; status an integer.
	var addrs []string
	if string(obj["addrs"]) == "null" || json.Unmarshal(obj["addrs"], &addrs) != nil {
		t.Fatalf("%s: addrs %s", where, obj["addrs"])
	}
	var st int64
	if json.Unmarshal(obj["status"], &st) != nil {
		t.Fatalf("%s: status %s is not an integer", where, obj["status"])
	}
	// C16: every timestamp is a non-zero int64.
	for _, k := range []string{"reg_timestamp", "up_timestamp", "renew_timestamp", "dirty_timestamp", "latest_timestamp"} {
		var ts int64
		if err := json.Unmarshal(obj[k], &ts); err != nil || ts == 0 {
			t.Fatalf("%s: %s = %s", where, k, obj[k])
		}
	}
}

func checkInfo(t *testing.T, where string, raw json.RawMessage) {
	t.Helper()
	var info struct {
		Instances       map[string][]json.RawMessage `json:"instances"`
		LatestTimestamp int64                        `json:"latest_timestamp"`
	}
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatalf("%s: %s: %v", where, raw, err)
	}
	if info.LatestTimestamp == 0 {
		t.Fatalf("%s: latest_timestamp 0", where)
	}
	for _, list := range info.Instances {
		for _, in := range list {
			checkInstanceObject(t, where, in)
		}
	}
}

// C13, C14, C16: every instance in every answer has exactly the 14 keys (no
// color), metadata an object of strings, non-zero int64 timestamps.
func TestInstance_FourteenKeysEverywhere(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")                                                      // no metadata
	e.register(appA, z2, "h2", "metadata", `{"weight":"10","color":"red"}`)         // color only as metadata
	e.register(appB, z1, "h3", "status", "2", "metadata", `{"weight":20,"x":true}`) // waiting
	var raw json.RawMessage
	e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "3")).wantCode(0).data(&raw)
	checkInfo(t, "fetch", raw)
	var m map[string]json.RawMessage
	e.get("/discovery/fetchs", form("env", tEnv, "appid", appA, "appid", appB, "status", "3")).wantCode(0).data(&m)
	for k, v := range m {
		checkInfo(t, "fetchs "+k, v)
	}
	e.get("/discovery/polls", pollsQuery(tEnv, "x", appA, 0)).wantCode(0).data(&m)
	for k, v := range m {
		checkInfo(t, "polls "+k, v)
	}
	e.get("/discovery/poll", form("env", tEnv, "appid", appA, "hostname", "x")).wantCode(0).data(&raw)
	checkInfo(t, "poll", raw)
	var all map[string][]json.RawMessage
	e.get("/discovery/fetch/all", nil).wantCode(0).data(&all)
	if len(all) != 2 {
		t.Fatalf("fetch/all apps: %d", len(all))
	}
	for k, list := range all {
		for _, in := range list {
			checkInstanceObject(t, "fetch/all "+k, in)
		}
	}
	e.post("/discovery/renew", keyForm(appA, z1, "h1")).wantCode(0).data(&raw)
	checkInstanceObject(t, "renew", raw)
	// C16: the timestamps are the handling node's clock in nanoseconds.
	if in := e.instance(appA, z1, "h1"); in.RegTimestamp != ns(t0) || in.UpTimestamp != ns(t0) ||
		in.DirtyTimestamp != ns(t0) || in.LatestTimestamp != ns(t0) || in.RenewTimestamp != ns(t0) {
		t.Fatalf("timestamps: %+v", in)
	}
}

// C15: invalid metadata JSON → -400 naming metadata, nothing stored;
// {"weight":10} is stored as "10", never "".
func TestInstance_Metadata(t *testing.T) {
	e := newEnv(t)
	for _, bad := range []string{`{"weight":`, `not json`, `["a"]`, `"s"`, `{"a":{"b":"c"}}`, `{"a":[1]}`} {
		e.unchanged(func() {
			e.post("/discovery/register", regForm(appA, z1, "h1", "metadata", bad)).wantBadParam("metadata")
		})
	}
	e.register(appA, z1, "h1", "metadata", `{"weight":10,"canary":true,"ratio":0.5,"none":null,"color":"red"}`)
	got := e.instance(appA, z1, "h1").Metadata
	want := map[string]string{"weight": "10", "canary": "true", "ratio": "0.5", "none": "", "color": "red"}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("metadata (-want +got):\n%s", d)
	}
	// Empty metadata means none: answered as {}.
	e.register(appA, z1, "h2", "metadata", "")
	if md := e.instance(appA, z1, "h2").Metadata; md == nil || len(md) != 0 {
		t.Fatalf("empty metadata answered as %#v", md)
	}
}

// C17: a re-register of an existing key keeps up_timestamp (new reg and
// dirty timestamps).
func TestInstance_ReRegisterKeepsUp(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	e.clock.Advance(10 * time.Second)
	e.register(appA, z1, "h1", "version", "v2")
	in := e.instance(appA, z1, "h1")
	t1 := ns(t0.Add(10 * time.Second))
	if in.UpTimestamp != ns(t0) || in.RegTimestamp != t1 || in.DirtyTimestamp != t1 || in.Version != "v2" {
		t.Fatalf("re-register: %+v", in)
	}
}

// C18: a replicated register with an older dirty_timestamp leaves the stored
// record unchanged and answers 0.
func TestInstance_OlderReplicatedRegisterIgnored(t *testing.T) {
	e := newEnv(t)
	e.clock.Advance(time.Minute)
	e.register(appA, z1, "h1")
	before := e.instance(appA, z1, "h1")
	e.post("/discovery/register", regForm(appA, z1, "h1", "replication", "true", "from_zone", "true",
		"dirty_timestamp", i64(ns(t0)), "addrs", "grpc://old:1", "version", "old")).wantCode(0)
	after := e.instance(appA, z1, "h1")
	if d := cmp.Diff(before, after); d != "" {
		t.Fatalf("older replicated register changed the record (-before +after):\n%s", d)
	}
	// A newer one is applied with the sender's dirty_timestamp.
	newer := ns(t0.Add(2 * time.Minute))
	e.post("/discovery/register", regForm(appA, z1, "h1", "replication", "true", "dirty_timestamp", i64(newer),
		"addrs", "grpc://new:1")).wantCode(0)
	if in := e.instance(appA, z1, "h1"); in.DirtyTimestamp != newer || !slices.Equal(in.Addrs, []string{"grpc://new:1"}) {
		t.Fatalf("newer replicated register: %+v", in)
	}
}

// C19: the app latest_timestamp strictly increases on register, cancel, set
// and eviction, even when the clock does not move.
func TestInstance_AppLatestStrictlyIncreases(t *testing.T) {
	e := newEnv(t, options{regCfg: noGuard})
	e.register(appA, z1, "h1")
	e.register(appA, z1, "h2")
	e.register(appA, z1, "h3")
	prev := e.fetch(appA).LatestTimestamp
	step := func(what string, f func()) {
		t.Helper()
		f()
		cur := e.fetch(appA).LatestTimestamp
		if cur <= prev {
			t.Fatalf("%s: latest %d not above %d", what, cur, prev)
		}
		prev = cur
	}
	step("register", func() { e.register(appA, z1, "h1") })
	step("re-register same key", func() { e.register(appA, z1, "h1") })
	step("cancel", func() { e.post("/discovery/cancel", keyForm(appA, z1, "h3")).wantCode(0) })
	step("set", func() {
		e.post("/discovery/set", form("zone", z1, "env", tEnv, "appid", appA, "hostname", "h1", "status", "2")).wantCode(0)
	})
	step("eviction", func() {
		e.clock.Advance(91 * time.Second)
		e.post("/discovery/renew", keyForm(appA, z1, "h1")).wantCode(0)
		if ev := e.reg.Scan(); len(ev) != 1 || ev[0].Hostname != "h2" {
			t.Fatalf("evicted %+v", ev)
		}
	})
	e.unchanged(func() { e.post("/discovery/renew", keyForm(appA, z1, "h1")).wantCode(0) })
}

// C20: renew changes only renew_timestamp.
func TestInstance_RenewOnlyRenewTimestamp(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1", "metadata", `{"a":"b"}`)
	before := e.fetch(appA)
	e.clock.Advance(30 * time.Second)
	var data inst
	e.post("/discovery/renew", keyForm(appA, z1, "h1")).wantCode(0).data(&data)
	after := e.fetch(appA)
	if after.LatestTimestamp != before.LatestTimestamp {
		t.Fatalf("app latest moved on renew: %d → %d", before.LatestTimestamp, after.LatestTimestamp)
	}
	b, a := before.Instances[z1][0], after.Instances[z1][0]
	if a.RenewTimestamp != ns(t0.Add(30*time.Second)) || data.RenewTimestamp != a.RenewTimestamp {
		t.Fatalf("renew_timestamp %d (data %d)", a.RenewTimestamp, data.RenewTimestamp)
	}
	a.RenewTimestamp = b.RenewTimestamp
	if d := cmp.Diff(b, a); d != "" {
		t.Fatalf("renew changed more than renew_timestamp:\n%s", d)
	}
}

// C21: removing the last instance makes the appid unknown (-404 on fetch).
func TestInstance_LastInstanceRemovesApp(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	e.register(appA, z2, "h2")
	e.post("/discovery/cancel", keyForm(appA, z2, "h2")).wantCode(0)
	if _, ok := e.fetch(appA).Instances[z2]; ok {
		t.Fatal("empty zone still listed")
	}
	e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "3", "zone", z2)).wantCode(-404)
	e.post("/discovery/cancel", keyForm(appA, z1, "h1")).wantCode(0)
	e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", "3")).
		wantBody(`{"code":-404,"message":"-404","ttl":1,"data":null}`)
	var m map[string]any
	e.get("/discovery/fetchs", form("env", tEnv, "appid", appA, "status", "3")).wantCode(0).data(&m)
	if len(m) != 0 {
		t.Fatalf("fetchs still lists the app: %v", m)
	}
}
