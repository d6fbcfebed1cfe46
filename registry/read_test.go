package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// One encode per (app version, zone filter), whatever the number of pollers.
func TestPayloadSharedBetweenPollers(t *testing.T) {
	r := newTestReg(t)
	for i := range 50 {
		r.reg(inst(appA, z1, fmt.Sprintf("h%02d", i)))
	}
	base := r.encodes.Load()
	const pollers = 200
	payloads := make([][]byte, pollers)
	var wg sync.WaitGroup
	for i := range pollers {
		wg.Go(func() {
			res, w := r.Poll(pollOf(appA))
			if w != nil {
				w.Close()
				t.Error("held")
				return
			}
			payloads[i] = res.Changed[0].JSON
		})
	}
	wg.Wait()
	if got := r.encodes.Load() - base; got != 1 {
		t.Fatalf("%d encodes for %d pollers of one version, want 1", got, pollers)
	}
	for i := range payloads {
		if &payloads[i][0] != &payloads[0][0] {
			t.Fatalf("poller %d got its own copy of the payload", i)
		}
	}
	// Another zone filter is another payload; a change makes a new one.
	r.answered(PollRequest{Env: env, Zone: z1, AppIDs: []string{appA}, Latest: []int64{0}})
	if got := r.encodes.Load() - base; got != 2 {
		t.Fatalf("encodes = %d after a zone-filtered poll, want 2", got)
	}
	r.reg(inst(appA, z1, "new"))
	res := r.answered(pollOf(appA))
	if got := r.encodes.Load() - base; got != 3 {
		t.Fatalf("encodes = %d after a change, want 3", got)
	}
	if &res.Changed[0].JSON[0] == &payloads[0][0] || len(decodeInfo(t, res.Changed[0].JSON).Instances[z1]) != 51 {
		t.Fatal("stale payload served after a change")
	}
	// Renew does not invalidate (renew_timestamp is not part of the version).
	r.Renew(keyOf(appA, z1, "new"), false, 0)
	r.answered(pollOf(appA))
	if got := r.encodes.Load() - base; got != 3 {
		t.Fatalf("encodes = %d after a renew, want 3", got)
	}
}

func TestPayloadCacheTrimmedByScan(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	cached := func() int {
		r.mu.RLock()
		defer r.mu.RUnlock()
		if c := r.getApp(env, appA).cache.Load(); c != nil {
			return len(*c)
		}
		return 0
	}
	r.answered(pollOf(appA))
	r.Scan() // used since creation: kept
	if cached() != 1 {
		t.Fatal("payload in use dropped")
	}
	r.answered(pollOf(appA))
	r.Scan() // used again: kept
	base := r.encodes.Load()
	r.Scan() // idle for a whole interval: dropped
	if cached() != 0 {
		t.Fatal("idle payload kept")
	}
	r.answered(pollOf(appA))
	if r.encodes.Load() != base+1 {
		t.Fatal("dropped payload not rebuilt")
	}
}

func TestPollWakeManyPollersOneEncode(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	l := r.latest(appA)
	const n = 1000
	ws := make([]*Waiter, n)
	for i := range ws {
		ws[i] = r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l}})
	}
	base := r.encodes.Load()
	r.reg(inst(appA, z1, "h2"))
	for i, w := range ws {
		// More than inlineWakes waiters are signalled by a goroutine of
		// their own, after the writer returned.
		select {
		case <-w.C():
		case <-time.After(10 * time.Second):
			t.Fatalf("waiter %d not woken", i)
		}
		w.Close()
		res := r.answered(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l}})
		if len(decodeInfo(t, res.Changed[0].JSON).Instances[z1]) != 2 {
			t.Fatal("wrong payload")
		}
	}
	if got := r.encodes.Load() - base; got != 1 {
		t.Fatalf("%d encodes for %d woken pollers", got, n)
	}
}

func TestExists(t *testing.T) {
	r := newTestReg(t)
	r.reg(waiting(inst(appA, z1, "h1")))
	for _, c := range []struct {
		env, appid, zone string
		want             bool
	}{
		{env, appA, "", true}, {env, appA, z1, true}, {env, appA, z2, false},
		{"dev", appA, "", false}, {env, appB, "", false},
	} {
		if got := r.Exists(c.env, c.appid, c.zone); got != c.want {
			t.Errorf("Exists(%q, %q, %q) = %v", c.env, c.appid, c.zone, got)
		}
	}
	if _, err := r.Cancel(keyOf(appA, z1, "h1"), 0); err != nil {
		t.Fatal(err)
	}
	if r.Exists(env, appA, "") { // the app record outlives its last instance
		t.Fatal("app without instances exists")
	}
}

func TestFetch(t *testing.T) { // C30, C31, C32
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h2"))
	r.reg(waiting(inst(appA, z1, "h1")))
	r.reg(waiting(inst(appA, z2, "w1")))
	noMeta := inst(appA, z2, "u1")
	noMeta.Metadata = nil
	r.reg(noMeta)

	hosts := func(info *InstanceInfo) map[string][]string {
		out := map[string][]string{}
		for z, list := range info.Instances {
			out[z] = []string{}
			for _, in := range list {
				out[z] = append(out[z], in.Hostname)
			}
		}
		return out
	}
	for _, tc := range []struct {
		zone string
		mask uint32
		want map[string][]string
	}{
		{"", 1, map[string][]string{z1: {"h2"}, z2: {"u1"}}},
		{"", 2, map[string][]string{z1: {"h1"}, z2: {"w1"}}},
		{"", 3, map[string][]string{z1: {"h1", "h2"}, z2: {"u1", "w1"}}},
		{z1, 3, map[string][]string{z1: {"h1", "h2"}}},
		{z2, 1, map[string][]string{z2: {"u1"}}},
	} {
		info, err := r.Fetch(env, appA, tc.zone, tc.mask)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(tc.want, hosts(info)); d != "" {
			t.Fatalf("zone %q mask %d (-want +got):\n%s", tc.zone, tc.mask, d)
		}
		if info.LatestTimestamp != r.latest(appA) {
			t.Fatal("latest_timestamp")
		}
		for _, list := range info.Instances {
			if list == nil {
				t.Fatal("nil zone list")
			}
			for _, in := range list {
				if in.Metadata == nil || in.Addrs == nil {
					t.Fatalf("nil metadata/addrs in fetch: %+v", in)
				}
			}
		}
	}
	// Zones whose instances are all filtered out stay as [].
	info, _ := r.Fetch(env, appA, z1, 0)
	if l, ok := info.Instances[z1]; !ok || l == nil || len(l) != 0 {
		t.Fatalf("filtered-out zone: %#v", info.Instances)
	}
	for _, tc := range []struct{ env, app, zone string }{
		{env, "nope", ""}, {"dev", appA, ""}, {env, appA, "sh009"},
	} {
		if info, err := r.Fetch(tc.env, tc.app, tc.zone, 3); !errors.Is(err, ErrNotFound) || info != nil {
			t.Fatalf("Fetch(%v) = %v, %v; want ErrNotFound", tc, info, err)
		}
	}
	// Results are copies.
	info, _ = r.Fetch(env, appA, "", 3)
	info.Instances[z1][0].Addrs[0] = "x"
	info.Instances[z1][0].Metadata["weight"] = "x"
	info.Instances[z1] = append(info.Instances[z1], &Instance{})
	again, _ := r.Fetch(env, appA, "", 3)
	if again.Instances[z1][0].Addrs[0] == "x" || again.Instances[z1][0].Metadata["weight"] == "x" || len(again.Instances[z1]) != 2 {
		t.Fatal("fetch result aliases stored data")
	}
}

func TestFetchAll(t *testing.T) { // C37
	r := newTestReg(t)
	a := inst(appA, z2, "h1")
	a.Metadata = nil
	a.DirtyTimestamp = 42
	r.reg(a)
	r.reg(waiting(inst(appA, z1, "h2")))
	dev := inst(appA, z1, "h3")
	dev.Env = "dev"
	r.reg(dev)
	r.reg(inst(appB, z1, "b"))
	all := r.FetchAll()
	if len(all) != 2 || len(all[appB]) != 1 {
		t.Fatalf("FetchAll apps: %v", all)
	}
	got := all[appA]
	if len(got) != 3 || got[0].Env != "dev" || got[1].Zone != z1 || got[2].Zone != z2 {
		t.Fatalf("FetchAll[%s] order: %+v", appA, got)
	}
	if got[2].Metadata != nil || got[2].DirtyTimestamp != 42 || got[1].Status != StatusWaiting {
		t.Fatalf("FetchAll instance: %+v", got[2])
	}
}

func TestSnapshotAndAppState(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appB, z1, "b"))
	r.reg(inst(appA, z2, "h2"))
	r.reg(inst(appA, z1, "h1"))
	r.Cancel(keyOf(appA, z1, "gone"), 99)
	s := r.Snapshot()
	var keys []string
	for _, in := range s.Instances {
		keys = append(keys, in.AppID+"/"+in.Zone+"/"+in.Hostname)
	}
	if d := cmp.Diff([]string{"demo.a/sh001/h1", "demo.a/sh002/h2", "demo.b/sh001/b"}, keys); d != "" {
		t.Fatalf("snapshot order (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]Tombstone{{Key: keyOf(appA, z1, "gone"), At: 99}}, s.Tombstones); d != "" {
		t.Fatalf("tombstones (-want +got):\n%s", d)
	}
	st := r.AppState([]AppKey{{Env: env, AppID: appA}, {Env: env, AppID: appA}, {Env: env, AppID: "nope"}})
	if len(st.Instances) != 2 || len(st.Tombstones) != 1 {
		t.Fatalf("AppState: %+v", st)
	}
	// A snapshot imported elsewhere reproduces the registry.
	r2 := newTestReg(t)
	for _, in := range s.Instances {
		if !r2.Import(in) {
			t.Fatal("import refused")
		}
	}
	for _, tb := range s.Tombstones {
		r2.Cancel(tb.Key, tb.At)
	}
	if d := cmp.Diff(s, r2.Snapshot()); d != "" {
		t.Fatalf("imported snapshot differs (-src +dst):\n%s", d)
	}
	if d := cmp.Diff(r.AppDigests(), r2.AppDigests()); d != "" {
		t.Fatalf("digests differ after import:\n%s", d)
	}
}

func TestAppDigests(t *testing.T) {
	build := func(order []string, renewLater bool) *testReg {
		r := newTestReg(t)
		for _, h := range order {
			in := inst(appA, z1, h)
			in.DirtyTimestamp = 1000 + int64(len(h))
			r.reg(in)
		}
		if renewLater {
			r.clk.Advance(time.Minute)
			r.renewAll()
		}
		return r
	}
	a := build([]string{"h1", "h22", "h333"}, false)
	b := build([]string{"h333", "h1", "h22"}, true)
	da, db := a.AppDigests(), b.AppDigests()
	if len(da) != 1 || da[AppKey{Env: env, AppID: appA}] == 0 || da[AppKey{Env: env, AppID: appA}] != db[AppKey{Env: env, AppID: appA}] {
		t.Fatalf("equal versions, different digests: %v vs %v", da, db)
	}
	// A different dirty version changes the digest.
	in := inst(appA, z1, "h1")
	in.DirtyTimestamp = 5000
	b.reg(in)
	if b.AppDigests()[AppKey{Env: env, AppID: appA}] == da[AppKey{Env: env, AppID: appA}] {
		t.Fatal("digest ignores dirty_timestamp")
	}
	// Tombstone-only apps are listed; a tombstone differs from an instance.
	c := newTestReg(t)
	c.Cancel(keyOf(appB, z1, "h1"), 1002)
	d := newTestReg(t)
	x := inst(appB, z1, "h1")
	x.DirtyTimestamp = 1002
	d.reg(x)
	dc, dd := c.AppDigests(), d.AppDigests()
	if _, ok := dc[AppKey{Env: env, AppID: appB}]; !ok || dc[AppKey{Env: env, AppID: appB}] == dd[AppKey{Env: env, AppID: appB}] {
		t.Fatalf("tombstone digest: %v vs %v", dc, dd)
	}
}

func TestManualClock(t *testing.T) {
	c := NewManualClock(t0)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 100 {
				c.Advance(time.Millisecond)
				_ = c.Now()
			}
		})
	}
	wg.Wait()
	if got := c.Now(); !got.Equal(t0.Add(time.Second)) {
		t.Fatalf("Now = %v, want %v", got, t0.Add(time.Second))
	}
	c.Set(t0)
	if !c.Now().Equal(t0) {
		t.Fatal("Set")
	}
	if d := time.Since(SystemClock{}.Now()); d < 0 || d > time.Minute {
		t.Fatalf("SystemClock off by %v", d)
	}
}

// Mixed concurrent load under -race; at the end the counters agree with the
// content.
func TestConcurrentConsistency(t *testing.T) {
	r := newTestReg(t, noSelfPreservation)
	var writers, pollers sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		writers.Go(func() {
			for i := range 300 {
				in := inst(fmt.Sprintf("app%d", i%5), []string{z1, z2}[i%2], fmt.Sprintf("g%d-h%d", g, i%17))
				in.Status = uint32(1 + i%2)
				r.Register(in, 0)
				r.Renew(in.Key(), i%3 == 0, int64(i))
				if i%4 == 0 {
					r.Cancel(in.Key(), 0)
				}
				if i%7 == 0 {
					r.Set(SetRequest{Env: env, AppID: in.AppID, Zone: in.Zone, Hostnames: []string{in.Hostname}, Statuses: []uint32{1}})
				}
				r.Fetch(env, in.AppID, "", 3)
			}
		})
	}
	writers.Go(func() {
		for range 50 {
			r.clk.Advance(10 * time.Second)
			r.Scan()
			r.Snapshot()
			r.AppDigests()
		}
	})
	for range 3 {
		pollers.Go(func() {
			l := make([]int64, 5)
			ids := []string{"app0", "app1", "app2", "app3", "app4"}
			res, w := r.Poll(PollRequest{Env: env, AppIDs: ids, Latest: l})
			for ; ; res, w = r.Poll(PollRequest{Env: env, AppIDs: ids, Latest: l}) {
				for w != nil {
					select {
					case <-w.C():
						res, w = r.Repoll(PollRequest{Env: env, AppIDs: ids, Latest: l}, w)
					case <-stop:
						w.Close()
						return
					}
				}
				for _, c := range res.Changed {
					var info InstanceInfo
					if err := json.Unmarshal(c.JSON, &info); err != nil || info.LatestTimestamp == 0 {
						t.Errorf("payload %s: %v", c.JSON, err)
						return
					}
					for i, id := range ids {
						if id == c.AppID {
							l[i] = info.LatestTimestamp
						}
					}
				}
			}
		})
	}
	writers.Wait()
	r.clk.Advance(91 * time.Second) // the scanner may have run before the writers
	r.Scan()
	close(stop)
	pollers.Wait()

	s := r.Snapshot()
	st := r.Stats()
	if st.Instances[env] != len(s.Instances) {
		t.Fatalf("instance counter %d, content %d", st.Instances[env], len(s.Instances))
	}
	if st.Waiters != 0 {
		t.Fatalf("%d waiters left", st.Waiters)
	}
	if st.Evictions == 0 {
		t.Fatal("the scanner never evicted: the test lost its point")
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, es := range r.envs {
		for _, a := range es.apps {
			n, up := 0, 0
			for _, b := range a.zones {
				bu := 0
				for rc := range b.recs() {
					n++
					if rc.isUp() {
						up++
						bu++
					}
				}
				if bu != b.up || b.len() == 0 {
					t.Fatalf("zone %s of %s: up %d counted %d, %d hosts", b.name, a.id, bu, b.up, b.len())
				}
			}
			if n != a.count || up != a.up {
				t.Fatalf("app %s: count %d/%d up %d/%d", a.id, n, a.count, up, a.up)
			}
		}
	}
}

// AppSummaries counts by env, zone and status, with the instances silent
// for longer than the bound; sorted by env and appid.
func TestAppSummaries(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appB, z1, "h1"))
	r.reg(waiting(inst(appB, z1, "h2")))
	r.reg(inst(appB, z2, "h3"))
	r.clk.Advance(2 * time.Minute)
	r.reg(inst(appA, z1, "h1"))
	other := inst(appA, z1, "h9")
	other.Env = "test"
	r.reg(other)
	got := r.AppSummaries(env, time.Minute)
	if len(got) != 2 || got[0].AppID != appA || got[1].AppID != appB {
		t.Fatalf("apps %+v", got)
	}
	b := got[1]
	if b.Instances != 3 || b.Zones[z1] != (ZoneCounts{Up: 1, Waiting: 1, Stale: 2}) || b.Zones[z2] != (ZoneCounts{Up: 1, Stale: 1}) {
		t.Fatalf("%s: %+v", appB, b)
	}
	if a := got[0]; a.Zones[z1] != (ZoneCounts{Up: 1}) || a.LatestTimestamp == 0 {
		t.Fatalf("%s: %+v", appA, a)
	}
	if all := r.AppSummaries("", time.Minute); len(all) != 3 || all[2].Env != "test" {
		t.Fatalf("all envs: %+v", all)
	}
}

// Changes: the channel handed out is closed by the next change of any app
// (and not by a renew), and the version moves.
func TestChanges(t *testing.T) {
	r := newTestReg(t)
	v0, ch := r.Changes()
	in := r.reg(inst(appA, z1, "h1"))
	select {
	case <-ch:
	default:
		t.Fatal("register did not close the channel")
	}
	v1, ch := r.Changes()
	if v1 <= v0 {
		t.Fatalf("version %d then %d", v0, v1)
	}
	if _, err := r.Renew(in.Key(), false, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
		t.Fatal("a renew counted as a change")
	default:
	}
	if _, err := r.Cancel(in.Key(), 0); err != nil {
		t.Fatal(err)
	}
	<-ch
	if v2, _ := r.Changes(); v2 <= v1 {
		t.Fatalf("version %d after cancel", v2)
	}
}
