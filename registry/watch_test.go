package registry

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func decodeInfo(t *testing.T, b []byte) InstanceInfo {
	t.Helper()
	var info InstanceInfo
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatalf("payload %s: %v", b, err)
	}
	return info
}

func changedIDs(res *PollResult) []string {
	var ids []string
	for _, c := range res.Changed {
		ids = append(ids, c.AppID)
	}
	return ids
}

func TestPollImmediateAnswer(t *testing.T) { // C39, C40, C47
	r := newTestReg(t)
	a1 := inst(appA, z1, "h2")
	a1.Metadata = nil
	r.reg(a1)
	r.reg(inst(appA, z1, "h1"))
	r.reg(waiting(inst(appA, z2, "w1"))) // zone with no UP instance
	r.reg(inst(appB, z1, "b1"))

	res := r.answered(PollRequest{Env: env, AppIDs: []string{appB, "nope", appA, "nope2"}, Latest: []int64{0, 0, 0, 0}})
	if d := cmp.Diff([]string{appB, appA}, changedIDs(res)); d != "" {
		t.Fatalf("changed order (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"nope", "nope2"}, res.Missing); d != "" {
		t.Fatalf("missing (-want +got):\n%s", d)
	}
	raw := res.Changed[1].JSON
	info := decodeInfo(t, raw)
	if info.LatestTimestamp != r.latest(appA) || info.LatestTimestamp == 0 {
		t.Fatalf("latest_timestamp %d, want %d", info.LatestTimestamp, r.latest(appA))
	}
	if len(info.Instances) != 2 || len(info.Instances[z2]) != 0 || info.Instances[z2] == nil {
		t.Fatalf("zones: %v (want sh002 present and empty)", info.Instances)
	}
	z := info.Instances[z1]
	if len(z) != 2 || z[0].Hostname != "h1" || z[1].Hostname != "h2" {
		t.Fatalf("UP instances of sh001, sorted: %+v", z)
	}
	want := r.get(keyOf(appA, z1, "h1"))
	if d := cmp.Diff(&want, z[0]); d != "" {
		t.Fatalf("instance (-want +got):\n%s", d)
	}
	// Wire details: metadata {} (never null), addrs an array, all 14 keys.
	if !strings.Contains(string(raw), `"metadata":{}`) || strings.Contains(string(raw), "null") {
		t.Fatalf("payload: %s", raw)
	}
	var generic struct {
		Instances map[string][]map[string]json.RawMessage `json:"instances"`
	}
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	if n := len(generic.Instances[z1][0]); n != 14 {
		t.Fatalf("instance has %d keys, want 14", n)
	}
}

func TestPollHoldsWhenUnchanged(t *testing.T) { // C41
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	l := r.latest(appA)
	r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l}})
	r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l + 1000}}) // from the future
	r.armed(PollRequest{Env: env, AppIDs: []string{appA, "missing"}, Latest: []int64{l, 0}})
	r.armed(PollRequest{Env: "dev", AppIDs: []string{appA}, Latest: []int64{0}}) // other env
	r.answered(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l - 1}})
	if got := r.Stats().Waiters; got != 4 {
		t.Fatalf("waiters = %d", got)
	}
}

func TestPollDuplicateAppIDs(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	res := r.answered(PollRequest{Env: env, AppIDs: []string{appA, "x", appA, "x"}, Latest: []int64{0, 0, 0, 0}})
	if len(res.Changed) != 1 || len(res.Missing) != 1 {
		t.Fatalf("duplicates not merged: %+v", res)
	}
	ids := make([]string, 40)
	lat := make([]int64, 40)
	for i := range ids {
		ids[i] = fmt.Sprintf("app%d", i%20) // > 16 distinct: exercises the set path
	}
	w := r.armed(PollRequest{Env: env, AppIDs: ids, Latest: lat})
	if len(w.links) != 20 {
		t.Fatalf("waiter linked %d times, want 20", len(w.links))
	}
	r.reg(inst("app19", z1, "h"))
	if !signalled(w) {
		t.Fatal("not woken by one of its 20 appids")
	}
}

// C44 / D1: same-hostname (identical) requests each get their own waiter,
// and a request never receives an appid it did not ask for.
func TestPollIdenticalRequestsAllWoken(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	l := r.latest(appA)
	req := PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l}}
	w1, w2 := r.armed(req), r.armed(req)
	r.reg(inst(appA, z1, "h2"))
	if !signalled(w1) || !signalled(w2) {
		t.Fatal("identical requests not both woken")
	}
}

func TestPollNeverGetsOtherAppids(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	la := r.latest(appA)
	p1 := PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{la}}
	p2 := PollRequest{Env: env, AppIDs: []string{appA, appB}, Latest: []int64{la, 0}}
	w1, w2 := r.armed(p1), r.armed(p2)
	r.reg(inst(appB, z1, "b1"))
	if signalled(w1) {
		t.Fatal("P1 (watching A) woken by a change of B")
	}
	if !signalled(w2) {
		t.Fatal("P2 (watching A and B) not woken")
	}
	w2.Close()
	res := r.answered(p2)
	if d := cmp.Diff([]string{appB}, changedIDs(res)); d != "" {
		t.Fatalf("P2 answer (-want +got):\n%s", d)
	}
	r.armed(p1) // P1 re-polls: nothing for it
}

func TestWakeOnChanges(t *testing.T) { // C42, C43
	cases := []struct {
		name string
		op   func(r *testReg)
		wake bool
	}{
		{"register", func(r *testReg) { r.reg(inst(appA, z1, "new")) }, true},
		{"no-op re-register", func(r *testReg) { r.reg(inst(appA, z1, "h1")) }, true},
		{"replicated older register", func(r *testReg) {
			in := inst(appA, z1, "h1")
			in.DirtyTimestamp = 1
			r.Register(in, 0)
		}, true},
		{"cancel", func(r *testReg) { r.Cancel(keyOf(appA, z1, "h2"), 0) }, true},
		{"set status", func(r *testReg) {
			r.Set(SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"h2"}, Statuses: []uint32{2}})
		}, true},
		{"set metadata", func(r *testReg) {
			r.Set(SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"h2"}, Metadata: []map[string]string{{"k": "v"}}})
		}, true},
		{"evict", func(r *testReg) { r.Evict(keyOf(appA, z1, "h2")) }, true},
		{"eviction scan", func(r *testReg) {
			r.clk.Advance(91 * time.Second)
			r.Renew(keyOf(appA, z1, "h1"), false, 0)
			if len(r.Scan()) != 1 {
				r.t.Fatal("nothing evicted")
			}
		}, true},
		{"import", func(r *testReg) {
			in := inst(appA, z1, "h3")
			in.DirtyTimestamp = 5
			r.Import(in)
		}, true},
		{"renew", func(r *testReg) { r.Renew(keyOf(appA, z1, "h1"), false, 0) }, false},
		{"replicated renew -409", func(r *testReg) { r.Renew(keyOf(appA, z1, "h1"), true, 1) }, false},
		{"change of another app", func(r *testReg) { r.reg(inst(appB, z1, "x")) }, false},
		{"change in another env", func(r *testReg) {
			in := inst(appA, z1, "x")
			in.Env = "dev"
			r.reg(in)
		}, false},
		{"refused set", func(r *testReg) {
			r.Set(SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"nope"}, Statuses: []uint32{2}})
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestReg(t, noSelfPreservation)
			r.reg(inst(appA, z1, "h1"))
			r.reg(inst(appA, z1, "h2"))
			l := r.latest(appA)
			w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l}})
			tc.op(r)
			if got := signalled(w); got != tc.wake {
				t.Fatalf("woken = %v, want %v", got, tc.wake)
			}
			if tc.wake {
				w.Close()
				res := r.answered(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l}})
				if got := decodeInfo(t, res.Changed[0].JSON).LatestTimestamp; got <= l {
					t.Fatalf("answer latest %d not past %d", got, l)
				}
			}
		})
	}
}

// C45 / D2: a change after the check cannot be lost.
func TestPollArmThenChangeSignals(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{r.latest(appA)}})
	r.reg(inst(appA, z1, "h2"))
	if !signalled(w) {
		t.Fatal("change right after arming was lost")
	}
}

// A waiter's channel is made by its first C(): the ones made after the
// wake (here, some of them while the fan-out goroutine signals) are
// signalled too.
func TestWaiterChannelMadeDuringWake(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	l := r.latest(appA)
	ws := make([]*Waiter, 4*inlineWakes)
	for i := range ws {
		ws[i] = r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l}})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.reg(inst(appA, z1, "h2"))
	}()
	for i, w := range ws {
		select {
		case <-w.C():
		case <-time.After(10 * time.Second):
			t.Fatalf("waiter %d of %d was never signalled", i, len(ws))
		}
	}
	<-done
}

func TestPollRaceWithChanges(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h0"))
	const rounds = 300
	for i := range rounds {
		l := r.latest(appA)
		var wg sync.WaitGroup
		wg.Go(func() { r.reg(inst(appA, z1, fmt.Sprintf("h%d", i%7))) })
		res, w := r.Poll(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l}})
		if w != nil {
			// The register landed after the check: it must signal.
			select {
			case <-w.C():
			case <-time.After(10 * time.Second):
				t.Fatalf("round %d: change lost between check and arm", i)
			}
			w.Close()
		} else if len(res.Changed) != 1 {
			t.Fatalf("round %d: answer without the app: %+v", i, res)
		}
		wg.Wait()
	}
}

func TestPollUnknownAppWokenByFirstRegister(t *testing.T) { // C48, 5.3.4
	r := newTestReg(t)
	w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{0}})
	r.reg(inst(appA, z1, "h1"))
	if !signalled(w) {
		t.Fatal("first register of a watched unknown appid did not wake")
	}
	w.Close()
	res := r.answered(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{0}})
	if len(res.Changed) != 1 || len(res.Missing) != 0 {
		t.Fatalf("answer: %+v", res)
	}
}

func TestPollWaitingOnlyIsNotChanged(t *testing.T) { // C49, 5.5.1, D17
	r := newTestReg(t)
	w := r.armed(pollOf(appA))
	r.reg(waiting(inst(appA, z1, "h1")))
	if signalled(w) {
		t.Fatal("woken for an app with no UP instance")
	}
	w2 := r.armed(pollOf(appA)) // latest 0 < app latest, but nothing to answer: held
	r.reg(waiting(inst(appA, z1, "h2")))
	if signalled(w) || signalled(w2) {
		t.Fatal("woken for an app with no UP instance")
	}
	// With another answerable app the request answers, without the empty one.
	r.reg(inst(appB, z1, "b1"))
	if signalled(w) {
		t.Fatal("waiter of A woken by B")
	}
	res := r.answered(pollOf(appA, appB))
	if d := cmp.Diff([]string{appB}, changedIDs(res)); d != "" || len(res.Missing) != 0 {
		t.Fatalf("answer (-want +got):\n%s", d)
	}
	// Status becomes UP: the waiters wake.
	if _, err := r.Set(SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"h1"}, Statuses: []uint32{1}}); err != nil {
		t.Fatal(err)
	}
	if !signalled(w) || !signalled(w2) {
		t.Fatal("status change to UP did not wake")
	}
	// The last UP instance going to WAITING wakes nobody and answers nothing.
	w.Close()
	res = r.answered(pollOf(appA))
	l := decodeInfo(t, res.Changed[0].JSON).LatestTimestamp
	w3 := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l}})
	if _, err := r.Set(SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"h1"}, Statuses: []uint32{2}}); err != nil {
		t.Fatal(err)
	}
	if signalled(w3) {
		t.Fatal("woken although no UP instance remains")
	}
	r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l}})
}

func TestPollAppVanished(t *testing.T) { // 5.3.3
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{r.latest(appA)}})
	if _, err := r.Cancel(keyOf(appA, z1, "h1"), 0); err != nil {
		t.Fatal(err)
	}
	if signalled(w) {
		t.Fatal("woken by the removal of the app (nothing to answer)")
	}
	r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{0}})
}

func TestPollZoneFilter(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	// Zone filter naming a zone the app lacks: missing, held.
	w := r.armed(PollRequest{Env: env, Zone: z2, AppIDs: []string{appA}, Latest: []int64{0}})
	r.reg(inst(appA, z1, "h2"))
	if signalled(w) {
		t.Fatal("woken by a change outside its zone filter")
	}
	r.reg(waiting(inst(appA, z2, "w")))
	if signalled(w) {
		t.Fatal("woken although its zone has no UP instance")
	}
	r.reg(inst(appA, z2, "u"))
	if !signalled(w) {
		t.Fatal("not woken by an UP instance in its zone")
	}
	res := r.answered(PollRequest{Env: env, Zone: z2, AppIDs: []string{appA}, Latest: []int64{0}})
	info := decodeInfo(t, res.Changed[0].JSON)
	if len(info.Instances) != 1 || len(info.Instances[z2]) != 1 || info.Instances[z2][0].Hostname != "u" {
		t.Fatalf("zone-filtered answer: %+v", info.Instances)
	}
	r.armed(PollRequest{Env: env, Zone: "sh009", AppIDs: []string{appA}, Latest: []int64{0}}) // zone nobody has
}

func TestWaiterClose(t *testing.T) { // C46
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	w := r.armed(PollRequest{Env: env, AppIDs: []string{appA, appB}, Latest: []int64{r.latest(appA), 0}})
	w2 := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{r.latest(appA)}})
	if got := r.Stats().Waiters; got != 2 {
		t.Fatalf("waiters = %d", got)
	}
	w.Close()
	w.Close() // idempotent
	if got := r.Stats().Waiters; got != 1 {
		t.Fatalf("waiters after close = %d", got)
	}
	r.reg(inst(appA, z1, "h2"))
	r.reg(inst(appB, z1, "b"))
	if signalled(w) {
		t.Fatal("closed waiter was signalled")
	}
	if !signalled(w2) {
		t.Fatal("remaining waiter not woken")
	}
	w2.Close()
	r.wmu.Lock()
	n := len(r.waiters)
	r.wmu.Unlock()
	if n != 0 || r.Stats().Waiters != 0 {
		t.Fatalf("waiter index not empty after every Close: %d lists", n)
	}
}

func TestWaiterCloseMiddleOfList(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	req := PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{r.latest(appA)}}
	ws := []*Waiter{r.armed(req), r.armed(req), r.armed(req), r.armed(req)}
	ws[1].Close()
	ws[3].Close() // head of the list
	r.reg(inst(appA, z1, "h2"))
	for i, want := range []bool{true, false, true, false} {
		if got := signalled(ws[i]); got != want {
			t.Fatalf("waiter %d signalled = %v, want %v", i, got, want)
		}
	}
}

// 5.3.2: after a wake-up, Repoll answers the appid whose change signalled
// the waiter as if the client had sent 0, even when the client's value is
// ahead of the app counter (a cancel only adds 1 to it). Appids that did not
// signal keep the normal rule.
func TestRepollAnswersTriggeringApp(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	r.reg(inst(appA, z1, "h2"))
	r.reg(inst(appB, z1, "b1"))
	ahead := r.latest(appA) + int64(time.Hour)
	req := PollRequest{Env: env, AppIDs: []string{appB, appA, appA}, Latest: []int64{ahead, ahead, 0}}
	w := r.armed(req)
	if _, err := r.Cancel(keyOf(appA, z1, "h2"), 0); err != nil {
		t.Fatal(err)
	}
	if r.latest(appA) >= ahead || !signalled(w) {
		t.Fatalf("not woken (latest %d, client %d)", r.latest(appA), ahead)
	}
	res, w2 := r.Repoll(req, w)
	if w2 != nil {
		w2.Close()
		t.Fatal("Repoll re-armed: the triggering appid was not answered")
	}
	if d := cmp.Diff([]string{appA}, changedIDs(res)); d != "" {
		t.Fatalf("changed (-want +got):\n%s", d)
	}
	if info := decodeInfo(t, res.Changed[0].JSON); len(info.Instances[z1]) != 1 || info.LatestTimestamp != r.latest(appA) {
		t.Fatalf("answer %+v", info)
	}
	if r.Stats().Waiters != 0 {
		t.Fatal("closed waiter still counted")
	}
	// Nothing signalled: Repoll is Poll (held again).
	w3 := r.armed(req)
	res, w4 := r.Repoll(req, w3)
	if res != nil || w4 == nil {
		t.Fatalf("Repoll without a wake answered %+v", res)
	}
	w4.Close()
}

// A wake detaches the woken waiters under the writer's locks and signals
// them only after both locks are released: a woken request finds mu and wmu
// free (no convoy behind the writer), the wake costs the waiters nothing
// more than their own Repoll, which takes no waiter lock and still reports
// the appid that fired (spec 5.3.2).
func TestWakeSignalsAfterUnlockAndDetaches(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	r.reg(inst(appB, z1, "h1"))
	la, lb := r.latest(appA), r.latest(appB)
	// Ahead of the app counter: only the fired mark makes appA answerable.
	req := PollRequest{Env: env, AppIDs: []string{appB, appA}, Latest: []int64{lb, la + 1000}}
	const n = 100
	ws := make([]*Waiter, n)
	for i := range ws {
		ws[i] = r.armed(req)
	}
	other := r.armed(PollRequest{Env: env, Zone: z2, AppIDs: []string{appA}, Latest: []int64{la}})
	if st := r.Stats(); st.Waiters != n+1 {
		t.Fatalf("%d waiters armed", st.Waiters)
	}

	locksFree := make(chan bool, 1)
	go func() {
		<-ws[0].C()
		free := r.mu.TryRLock()
		if free {
			r.mu.RUnlock()
		}
		wfree := r.wmu.TryLock()
		if wfree {
			r.wmu.Unlock()
		}
		locksFree <- free && wfree
	}()
	r.reg(inst(appA, z1, "h2"))
	if !<-locksFree {
		t.Fatal("a woken waiter found the writer's locks still held")
	}
	// Every woken waiter is already unlinked; the zone-filtered one (no UP
	// instance in its zone) stays armed.
	if st := r.Stats(); st.Waiters != 1 {
		t.Fatalf("%d waiters still armed after the wake, want 1", st.Waiters)
	}
	for i, w := range ws[1:] {
		if !signalled(w) {
			t.Fatalf("waiter %d not signalled", i+1)
		}
		res, next := r.Repoll(req, w)
		if next != nil {
			next.Close()
			t.Fatalf("waiter %d: woken but nothing answered", i+1)
		}
		if got := changedIDs(res); len(got) != 1 || got[0] != appA {
			t.Fatalf("waiter %d answered %v, want [%s]", i+1, got, appA)
		}
		w.Close() // a late Close (timeout racing the wake) is harmless
	}
	ws[0].Close()
	if signalled(other) {
		t.Fatal("zone-filtered waiter woken by a change outside its zone")
	}
	other.Close()
	if st := r.Stats(); st.Waiters != 0 {
		t.Fatalf("%d waiters left", st.Waiters)
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if len(r.waiters) != 0 {
		t.Fatalf("waiter index not empty: %v", r.waiters)
	}
}

// OnWake calls its function at the wake (large fan-outs included) and at
// once on a waiter already woken.
func TestWaiterOnWake(t *testing.T) {
	for _, n := range []int{1, inlineWakes + 10} {
		r := newTestReg(t)
		r.reg(inst(appA, z1, "h1"))
		l := r.latest(appA)
		called := make(chan struct{}, 2*n)
		for range n {
			w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{l}})
			w.OnWake(func() { called <- struct{}{} })
		}
		r.reg(inst(appA, z1, "h2"))
		for i := range n {
			select {
			case <-called:
			case <-time.After(10 * time.Second):
				t.Fatalf("n=%d: %d of the callbacks came", n, i)
			}
		}
	}
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{r.latest(appA)}})
	r.reg(inst(appA, z1, "h2"))
	got := false
	w.OnWake(func() { got = true })
	if !got {
		t.Fatal("OnWake on a woken waiter did not call at once")
	}
}
