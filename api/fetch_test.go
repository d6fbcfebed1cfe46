package api

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/discovery-go/discovery/registry"
)

// legacyData is what fetch/fetchs put in "data" before answers were served
// from the registry's shared encoding: encoding/json of Fetch's copies.
func legacyData(t *testing.T, reg *registry.Registry, zone string, mask uint32, appids ...string) (one, many []byte) {
	t.Helper()
	out := map[string]*registry.InstanceInfo{}
	for _, id := range appids {
		if info, err := reg.Fetch(tEnv, id, zone, mask); err == nil {
			out[id] = info
		}
	}
	var err error
	if one, err = json.Marshal(out[appids[0]]); err != nil {
		t.Fatal(err)
	}
	if many, err = json.Marshal(out); err != nil {
		t.Fatal(err)
	}
	return one, many
}

// C34-C38: fetch and fetchs answers are byte for byte the envelope around
// encoding/json's InstanceInfo, for every zone filter and status mask:
// 14 keys, metadata {}, [] for zones the mask empties, -404 with null data
// for an unknown app or zone, fetchs leaving unknown appids out, keys
// escaped like encoding/json.
func TestFetch_BodiesMatchEncodingJSON(t *testing.T) {
	e := newEnv(t)
	odd := "<b&c>\u2028é"
	e.register(appA, z1, "h1", "metadata", `{"weight":"10","color":"red"}`)
	e.register(appA, z1, "h2", "status", "2", "version", odd)
	e.register(appA, z2, "h3", "status", "2", "region", odd, "metadata", `{"`+odd+`":"`+odd+`"}`)
	e.register(appB, z2, "b1")
	e.register(odd, z1, "o1")
	e.clock.Advance(time.Second)
	e.post("/discovery/renew", keyForm(appA, z1, "h1")).wantCode(0)

	for _, zone := range []string{"", z1, z2, "nozone"} {
		for _, mask := range []uint32{1, 2, 3} {
			st := strconv.Itoa(int(mask))
			one, many := legacyData(t, e.reg, zone, mask, appA, appB, odd, "nope")
			got := e.get("/discovery/fetch", form("env", tEnv, "appid", appA, "status", st, "zone", zone))
			want := `{"code":0,"message":"0","ttl":1,"data":` + string(one) + `}`
			if string(one) == "null" {
				want = `{"code":-404,"message":"-404","ttl":1,"data":null}`
			}
			got.wantBody(want)
			if cl := got.Header.Get("Content-Length"); cl != strconv.Itoa(len(want)) {
				t.Fatalf("Content-Length %s for %d bytes", cl, len(want))
			}
			got = e.get("/discovery/fetchs", form("env", tEnv, "appid", "nope", "appid", odd, "appid", appB,
				"appid", appA, "appid", appB, "status", st, "zone", zone))
			got.wantBody(`{"code":0,"message":"0","ttl":1,"data":` + string(many) + `}`)
		}
	}
}

// fetch and fetchs share the registry's encoded InstanceInfo between
// requests: answering one more request allocates far less than the answer
// (no per-request copy of the instances, no per-request encode). The body
// has the announced length.
func TestFetchs_AnswerSharesPayloadBytes(t *testing.T) {
	e := newEnv(t)
	q := form("env", tEnv, "status", "3")
	for a := range 10 {
		appid := fmt.Sprintf("app-%d", a)
		q.Add("appid", appid)
		for i := range 300 {
			in := registry.Instance{Env: tEnv, AppID: appid, Zone: z1, Hostname: fmt.Sprintf("host-%04d", i),
				Addrs: []string{"grpc://10.0.0.1:9000", "http://10.0.0.1:8000"}, Status: 1,
				Metadata: map[string]string{"weight": "10"}}
			if _, _, err := e.reg.Register(in, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	h := e.srv.Handler()
	one := with(q, "appid", "app-3")
	for _, u := range []string{"/discovery/fetchs?" + q.Encode(), "/discovery/fetch?" + one.Encode()} {
		wantSharedAnswer(t, h, u, 100_000)
	}
}

// fetch/all holds the whole registry: at most two are answered at once, a
// third is refused with -503 (the client retries) and leaves no state.
func TestFetchAll_AtMostTwoAtOnce(t *testing.T) {
	e := newEnv(t)
	e.register(appA, z1, "h1")
	e.srv.fetchAllSem <- struct{}{} // two answers in progress
	e.srv.fetchAllSem <- struct{}{}
	e.get("/discovery/fetch/all", nil).wantCode(-503)
	<-e.srv.fetchAllSem
	e.get("/discovery/fetch/all", nil).wantCode(0)
	<-e.srv.fetchAllSem
}
