package registry

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fetchEncodedOne is FetchEncoded of one appid: its bytes, or nil when
// the app is left out.
func (r *testReg) fetchEncodedOne(appid, zone string, mask uint32) []byte {
	r.t.Helper()
	res := r.FetchEncoded(env, zone, mask, []string{appid})
	if len(res) == 0 {
		return nil
	}
	if len(res) != 1 || res[0].AppID != appid {
		r.t.Fatalf("FetchEncoded(%s) = %d answers", appid, len(res))
	}
	return res[0].JSON
}

// The hand-written encoder emits exactly what encoding/json makes of
// Fetch's InstanceInfo, for every zone filter and status mask, including
// strings encoding/json escapes (HTML characters, quotes, U+2028; control
// characters in metadata values, the only place the registry keeps them)
// and metadata whose keys need sorting.
func TestFetchEncodedMatchesEncodingJSON(t *testing.T) {
	r := newTestReg(t)
	odd := []string{"plain", `q"uote`, `back\slash`, "<a&b>", "zoné", "line\u2028sep", ""}
	for i, s := range odd {
		in := inst(appA, z1, fmt.Sprintf("h%02d-%s", i, s))
		if i%3 == 0 {
			in.Zone = z2
		}
		if i%2 == 1 {
			in = waiting(in)
		}
		in.Region, in.Version = s, s
		in.Addrs = []string{"grpc://10.0.0.1:1?v=" + s, "http://10.0.0.1:80"}
		switch i % 4 {
		case 0:
			in.Metadata = nil
		case 1:
			in.Metadata = map[string]string{"weight": "10", "Color": s, "a" + s: "x", "zz": "", "ctl": "tab\tnl\n\x01"}
		case 2:
			in.Metadata = map[string]string{s + "k": s}
		}
		r.reg(in)
		r.clk.Advance(time.Millisecond)
	}
	r.Renew(keyOf(appA, z1, "h01-"+odd[1]), false, 0)
	for _, zone := range []string{"", z1, z2} {
		for _, mask := range []uint32{1, 2, 3, 7} {
			info, err := r.Fetch(env, appA, zone, mask)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(info)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.fetchEncodedOne(appA, zone, mask); string(got) != string(want) {
				t.Fatalf("zone %q mask %d:\n got %s\nwant %s", zone, mask, got, want)
			}
		}
	}
}

// C36-C38 through FetchEncoded: unknown apps, unknown envs and absent zones
// are left out, a repeated appid is answered once, order is the request's.
func TestFetchEncodedSelection(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	r.reg(inst(appB, z2, "h1"))
	ids := func(res []AppPayload) string {
		var out []string
		for _, p := range res {
			out = append(out, p.AppID)
		}
		return fmt.Sprint(out)
	}
	if got := ids(r.FetchEncoded(env, "", 3, []string{appB, "nope", appA, appB, appA})); got != fmt.Sprint([]string{appB, appA}) {
		t.Fatalf("answered %s", got)
	}
	if got := ids(r.FetchEncoded(env, z1, 3, []string{appA, appB})); got != fmt.Sprint([]string{appA}) {
		t.Fatalf("zone %s: answered %s", z1, got)
	}
	if res := r.FetchEncoded("dev", "", 3, []string{appA}); len(res) != 0 {
		t.Fatalf("other env answered %v", res)
	}
	r.Cancel(keyOf(appB, z2, "h1"), 0) // last instance gone: unknown on the wire
	if res := r.FetchEncoded(env, "", 3, []string{appB}); len(res) != 0 {
		t.Fatal("emptied app answered")
	}
	// Many appids (the set kicks in past 16), repeated.
	var many []string
	for i := range 40 {
		id := fmt.Sprintf("app-%02d", i)
		r.reg(inst(id, z1, "h"))
		many = append(many, id, id)
	}
	if res := r.FetchEncoded(env, "", 1, many); len(res) != 40 {
		t.Fatalf("%d answers for 40 distinct appids", len(res))
	}
}

// One encode per (app version, zone filter, mask) shared by every fetch and
// poll; a renew makes fetch (not polls) rebuild, since fetch shows
// renew_timestamp; a change makes both rebuild.
func TestFetchEncodedShared(t *testing.T) {
	r := newTestReg(t)
	for i := range 20 {
		r.reg(inst(appA, z1, fmt.Sprintf("h%02d", i)))
	}
	base := r.encodes.Load()
	first := r.fetchEncodedOne(appA, "", 3)
	if slack := cap(first) - len(first); slack > len(first)/32 {
		t.Fatalf("cached answer keeps %d bytes of slack for %d", slack, len(first))
	}
	for range 10 {
		if got := r.fetchEncodedOne(appA, "", 3); &got[0] != &first[0] {
			t.Fatal("fetch got its own encoding")
		}
	}
	// All instances UP: status 1, status 3 and polls are the same answer.
	if got := r.fetchEncodedOne(appA, "", 1); &got[0] != &first[0] {
		t.Fatal("status=1 not shared with status=3 although every instance is UP")
	}
	if res := r.answered(pollOf(appA)); &res.Changed[0].JSON[0] != &first[0] {
		t.Fatal("poll answer not shared with fetch")
	}
	if n := r.encodes.Load() - base; n != 1 {
		t.Fatalf("%d encodes, want 1", n)
	}
	// status 2 (no waiting instance): another payload, zones with [].
	if got := string(r.fetchEncodedOne(appA, "", 2)); got != fmt.Sprintf(`{"instances":{"%s":[]},"latest_timestamp":%d}`, z1, r.latest(appA)) {
		t.Fatalf("status=2: %s", got)
	}

	r.clk.Advance(time.Second)
	r.Renew(keyOf(appA, z1, "h03"), false, 0)
	base = r.encodes.Load()
	if res := r.answered(pollOf(appA)); &res.Changed[0].JSON[0] != &first[0] {
		t.Fatal("a renew made polls re-encode")
	}
	renewed := r.fetchEncodedOne(appA, "", 3)
	if &renewed[0] == &first[0] {
		t.Fatal("fetch after a renew served the payload from before it")
	}
	var info InstanceInfo
	if err := json.Unmarshal(renewed, &info); err != nil {
		t.Fatal(err)
	}
	if got := info.Instances[z1][3].RenewTimestamp; got != r.now() {
		t.Fatalf("renew_timestamp %d after renew at %d", got, r.now())
	}
	if again := r.fetchEncodedOne(appA, "", 3); &again[0] != &renewed[0] {
		t.Fatal("second fetch after the renew re-encoded")
	}
	if n := r.encodes.Load() - base; n != 1 {
		t.Fatalf("%d encodes after one renew, want 1", n)
	}

	r.reg(inst(appA, z1, "new"))
	changed := r.fetchEncodedOne(appA, "", 3)
	if err := json.Unmarshal(changed, &info); err != nil {
		t.Fatal(err)
	}
	if len(info.Instances[z1]) != 21 || info.LatestTimestamp != r.latest(appA) {
		t.Fatalf("stale payload after a change: %d instances, latest %d", len(info.Instances[z1]), info.LatestTimestamp)
	}
}

// Fetches racing with renews and registers always get a complete, current
// or newer-than-requested answer (run with -race).
func TestFetchEncodedConcurrent(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h0"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			r.Renew(keyOf(appA, z1, "h0"), false, 0)
			if i%10 == 0 {
				r.Register(inst(appA, z1, fmt.Sprintf("h%d", i)), 0)
			}
		}
	}()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 200 {
				var info InstanceInfo
				b := r.FetchEncoded(env, "", 3, []string{appA})[0].JSON
				if err := json.Unmarshal(b, &info); err != nil || len(info.Instances[z1]) == 0 {
					t.Errorf("%s: %v", b, err)
					return
				}
			}
		})
	}
	wg.Wait()
	<-done
}

// Instance.AppendJSON is encoding/json's output for the instance with nil
// addrs/metadata replaced by empty ones.
func TestInstanceAppendJSON(t *testing.T) {
	odd := []string{"", "plain", "<a&b>", `q"\`, "\x00\x1f", "é\u2029", "\xfe"}
	for i, s := range odd {
		in := Instance{Region: s, Zone: "z" + s, Env: "e", AppID: s + "a", Hostname: "h",
			Version: s, Status: uint32(i), RegTimestamp: int64(i) - 3, UpTimestamp: 1 << 62,
			RenewTimestamp: 5, DirtyTimestamp: 6, LatestTimestamp: 7}
		if i%2 == 0 {
			in.Addrs = []string{s, "grpc://x:1"}
		}
		if i%3 != 0 {
			in.Metadata = map[string]string{"weight": s, s: "v", "B": "", "a": s, "c1": "1", "c2": "2", "c3": "3", "c4": "4", "c5": "5"}
		}
		norm := in
		if norm.Addrs == nil {
			norm.Addrs = []string{}
		}
		if norm.Metadata == nil {
			norm.Metadata = map[string]string{}
		}
		want, err := json.Marshal(&norm)
		if err != nil {
			t.Fatal(err)
		}
		if got := in.AppendJSON([]byte("x")); string(got) != "x"+string(want) {
			t.Fatalf("%d:\n got %s\nwant x%s", i, got, want)
		}
	}
}
