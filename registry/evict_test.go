package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

func (r *testReg) fill(n int, appsN int) {
	r.t.Helper()
	for i := range n {
		r.reg(inst(fmt.Sprintf("app%d", i%appsN), z1, fmt.Sprintf("h%03d", i)))
	}
}

func (r *testReg) renewAll() {
	r.t.Helper()
	for _, in := range r.Snapshot().Instances {
		if _, err := r.Renew(in.Key(), false, 0); err != nil {
			r.t.Fatal(err)
		}
	}
}

func TestEvictStrictlyAfterEvictAfter(t *testing.T) { // C50
	r := newTestReg(t, noSelfPreservation)
	r.reg(inst(appA, z1, "h1"))
	r.clk.Advance(90 * time.Second)
	if ev := r.Scan(); len(ev) != 0 {
		t.Fatalf("evicted at exactly 90 s: %v", ev)
	}
	r.clk.Advance(time.Nanosecond)
	ev := r.Scan()
	if len(ev) != 1 || ev[0].Hostname != "h1" || ev[0].Env != env || ev[0].AppID != appA || ev[0].Zone != z1 {
		t.Fatalf("Scan = %+v, want h1 evicted", ev)
	}
	if _, err := r.Fetch(env, appA, "", 3); !errors.Is(err, ErrNotFound) {
		t.Fatal("app still present after its last instance was evicted")
	}
}

func TestRenewPostponesEviction(t *testing.T) {
	r := newTestReg(t, noSelfPreservation)
	r.reg(inst(appA, z1, "h1"))
	r.reg(inst(appA, z1, "h2"))
	r.clk.Advance(60 * time.Second)
	if _, err := r.Renew(keyOf(appA, z1, "h1"), false, 0); err != nil {
		t.Fatal(err)
	}
	r.clk.Advance(31 * time.Second)
	ev := r.Scan()
	if len(ev) != 1 || ev[0].Hostname != "h2" {
		t.Fatalf("Scan = %+v, want only h2", ev)
	}
}

func TestEvictLimitPerScan(t *testing.T) { // C51
	for _, tc := range []struct{ size, silent, want int }{
		{1, 1, 1}, {6, 6, 1}, {10, 10, 2}, {100, 100, 15}, {100, 5, 5}, {20, 20, 3},
	} {
		t.Run(fmt.Sprintf("size %d silent %d", tc.size, tc.silent), func(t *testing.T) {
			r := newTestReg(t, noSelfPreservation)
			r.fill(tc.size, 7)
			r.clk.Advance(91 * time.Second)
			// Keep size-silent instances alive.
			for i, in := range r.Snapshot().Instances {
				if i < tc.size-tc.silent {
					if _, err := r.Renew(in.Key(), false, 0); err != nil {
						t.Fatal(err)
					}
				}
			}
			ev := r.Scan()
			if len(ev) != tc.want {
				t.Fatalf("evicted %d, want %d", len(ev), tc.want)
			}
			s := r.Stats()
			if s.Instances[env] != tc.size-tc.want || s.Evictions != uint64(tc.want) {
				t.Fatalf("stats %+v", s)
			}
			if s.ExpectedRenews != int64(2*(tc.size-tc.want)) { // D11
				t.Fatalf("expected renews %d, want %d", s.ExpectedRenews, 2*(tc.size-tc.want))
			}
			if s.Tombstones != 0 {
				t.Fatal("eviction left tombstones")
			}
		})
	}
}

func TestEvictChoiceIsRandom(t *testing.T) {
	// 100 silent instances in 10 apps, 15 evicted per scan: if the choice
	// followed app order, every scan would empty the same one or two apps.
	apps := map[string]bool{}
	hosts := map[string]bool{}
	for range 5 {
		r := newTestReg(t, noSelfPreservation)
		r.fill(100, 10)
		r.clk.Advance(91 * time.Second)
		for _, in := range r.Scan() {
			apps[in.AppID] = true
			hosts[in.Hostname] = true
		}
	}
	if len(apps) < 5 || len(hosts) < 30 {
		t.Fatalf("evictions hit only %d apps / %d hosts over 5 scans", len(apps), len(hosts))
	}
}

func TestEvictionWhileProtected(t *testing.T) { // C53
	r := newTestReg(t)
	r.fill(10, 2) // E = 20, T = 17; no renew: protected at the first scan
	r.clk.Advance(91 * time.Second)
	if ev := r.Scan(); len(ev) != 0 {
		t.Fatalf("protected node evicted %d", len(ev))
	}
	if s := r.Stats(); !s.Protected || s.ExpectedRenews != 20 || s.Threshold != 17 || s.LastMinuteRenews != 0 {
		t.Fatalf("stats %+v", s)
	}
	r.clk.Set(t0.Add(time.Hour))
	if ev := r.Scan(); len(ev) != 0 {
		t.Fatalf("evicted at exactly 1 h while protected: %d", len(ev))
	}
	r.clk.Advance(time.Nanosecond)
	if ev := r.Scan(); len(ev) != 2 { // limit 10 - floor(8.5)
		t.Fatalf("evicted %d after 1 h while protected, want 2", len(ev))
	}
}

func TestEvictionWakesAndAdvances(t *testing.T) { // C54
	r := newTestReg(t, noSelfPreservation)
	r.reg(inst(appA, z1, "h1"))
	r.reg(inst(appA, z1, "h2"))
	r.reg(inst(appA, z1, "h3"))
	r.clk.Advance(80 * time.Second)
	r.renewAll()
	r.clk.Advance(11 * time.Second)
	if _, err := r.Renew(keyOf(appA, z1, "h1"), false, 0); err != nil {
		t.Fatal(err)
	}
	prev := r.latest(appA)
	w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{prev}})
	r.clk.Advance(80 * time.Second) // h2, h3 silent 91 s; h1 80 s
	ev := r.Scan()
	// Size 3 allows one eviction per scan.
	if len(ev) != 1 || ev[0].Hostname == "h1" {
		t.Fatalf("Scan = %+v, want one of h2/h3", ev)
	}
	if r.latest(appA) != max(r.now(), prev+1) {
		t.Fatalf("latest %d, want max(now, prev+1)", r.latest(appA))
	}
	if !signalled(w) {
		t.Fatal("eviction did not wake the poller")
	}
}

func TestGuardFormulaAndWindow(t *testing.T) { // C52, 6.3
	var logs bytes.Buffer
	r := newTestReg(t)
	r.log = slog.New(slog.NewTextHandler(&logs, nil))
	r.fill(100, 10)
	if s := r.Stats(); s.ExpectedRenews != 200 || s.Threshold != 170 || s.Protected {
		t.Fatalf("after 100 registers: %+v", s)
	}
	renew := func(n int) {
		ins := r.Snapshot().Instances
		for i := range n {
			if _, err := r.Renew(ins[i%len(ins)].Key(), false, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	renew(169)
	r.Scan()
	if s := r.Stats(); !s.Protected || s.LastMinuteRenews != 169 {
		t.Fatalf("169 renews < 170: %+v", s)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "expected=200 threshold=170 actual=169") {
		t.Fatalf("no warn log on protection: %s", logs.String())
	}
	logs.Reset()
	// Replicated renews count as well.
	renew(100)
	for _, in := range r.Snapshot().Instances[:70] {
		if _, err := r.Renew(in.Key(), true, in.DirtyTimestamp); err != nil {
			t.Fatal(err)
		}
	}
	r.Scan()
	if s := r.Stats(); s.Protected || s.LastMinuteRenews != 170 {
		t.Fatalf("170 renews: %+v", s)
	}
	if !strings.Contains(logs.String(), "level=INFO") || !strings.Contains(logs.String(), "actual=170") {
		t.Fatalf("no info log when protection ends: %s", logs.String())
	}
	// The window was closed by the scan: the next scan sees no renews.
	r.Scan()
	if s := r.Stats(); !s.Protected || s.LastMinuteRenews != 0 {
		t.Fatalf("window not reset: %+v", s)
	}
}

func TestGuardNeverProtected(t *testing.T) {
	r := newTestReg(t) // E = 0
	r.Scan()
	if s := r.Stats(); s.Protected || s.ExpectedRenews != 0 || s.Threshold != 0 {
		t.Fatalf("empty registry: %+v", s)
	}
	r2 := newTestReg(t, noSelfPreservation)
	r2.fill(10, 1)
	r2.Scan()
	if s := r2.Stats(); s.Protected || s.ExpectedRenews != 20 {
		t.Fatalf("self-preservation off: %+v", s)
	}
}

func TestGuardRecompute(t *testing.T) {
	r := newTestReg(t)
	r.fill(5, 1)
	r.mu.Lock()
	r.expected.Store(7) // drifted, e.g. by apps renewing less than twice a minute
	r.mu.Unlock()
	r.clk.Advance(15*time.Minute - time.Nanosecond)
	r.renewAll()
	r.Scan()
	if got := r.Stats().ExpectedRenews; got != 7 {
		t.Fatalf("recomputed too early: %d", got)
	}
	r.clk.Advance(time.Nanosecond)
	r.renewAll()
	r.Scan()
	if got := r.Stats().ExpectedRenews; got != 10 {
		t.Fatalf("after 15 min: %d, want 2 × 5", got)
	}
	// The next recompute is 15 min after this one.
	r.mu.Lock()
	r.expected.Store(3)
	r.mu.Unlock()
	r.clk.Advance(14 * time.Minute)
	r.renewAll()
	r.Scan()
	if got := r.Stats().ExpectedRenews; got != 3 {
		t.Fatalf("recomputed before the next interval: %d", got)
	}
}

func TestExpectedNeverNegative(t *testing.T) {
	r := newTestReg(t)
	r.fill(2, 1)
	r.mu.Lock()
	r.expected.Store(2)
	r.mu.Unlock()
	for _, in := range r.Snapshot().Instances {
		if _, err := r.Cancel(in.Key(), 0); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.Stats().ExpectedRenews; got != 0 {
		t.Fatalf("expected renews %d", got)
	}
}

func TestStats(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	r.reg(inst(appA, z2, "h2"))
	r.reg(inst(appB, z1, "h1"))
	other := inst(appA, z1, "h1")
	other.Env = "dev"
	r.reg(other)
	if _, err := r.Cancel(keyOf(appB, z1, "h1"), 0); err != nil {
		t.Fatal(err)
	}
	w1 := r.armed(pollOf("x"))
	r.armed(pollOf("x", "y"))
	s := r.Stats()
	if s.Instances[env] != 2 || s.Apps[env] != 1 || s.Instances["dev"] != 1 || s.Apps["dev"] != 1 || len(s.Instances) != 2 {
		t.Fatalf("counts: %+v", s)
	}
	if s.Waiters != 2 || s.Tombstones != 1 || s.ExpectedRenews != 6 || s.Evictions != 0 {
		t.Fatalf("stats: %+v", s)
	}
	w1.Close()
	if got := r.Stats().Waiters; got != 1 {
		t.Fatalf("waiters after close = %d", got)
	}
}

// Run drives Scan from a ticker; synctest's fake time makes the minutes pass
// instantly and deterministically.
func TestRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.SelfPreservation = false
		r, err := New(cfg, nil, nil) // system clock: fake inside the bubble
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := r.Register(inst(appA, z1, "h1"), 0); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		var runErr error
		wg.Go(func() { runErr = r.Run(ctx) })

		time.Sleep(119 * time.Second) // scans at 60 s (silent 60 s) and not yet 120 s
		synctest.Wait()
		if s := r.Stats(); s.Instances[env] != 1 {
			t.Fatalf("evicted too early: %+v", s)
		}
		time.Sleep(2 * time.Second) // scan at 120 s: silent 120 s > 90 s
		synctest.Wait()
		if s := r.Stats(); s.Instances[env] != 0 || s.Evictions != 1 {
			t.Fatalf("not evicted by Run: %+v", s)
		}
		cancel()
		wg.Wait()
		if runErr != nil {
			t.Fatalf("Run = %v", runErr)
		}
	})
}
