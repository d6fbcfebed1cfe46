package registry

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNewRejectsInvalidConfig(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ProtectThreshold = 1.5
	if _, err := New(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "protect_threshold") {
		t.Fatalf("New with bad threshold: err = %v", err)
	}
	r, err := New(DefaultConfig(), nil, nil)
	if err != nil || r == nil {
		t.Fatalf("New(default) = %v, %v", r, err)
	}
}

func TestRegisterNewKeyTimestamps(t *testing.T) {
	r := newTestReg(t)
	in := inst(appA, z1, "h1")
	in.RegTimestamp, in.UpTimestamp, in.RenewTimestamp, in.LatestTimestamp = 1, 2, 3, 4 // ignored
	st, applied, err := r.Register(in, 0)
	if err != nil || !applied {
		t.Fatalf("Register = %v, %v", applied, err)
	}
	now := r.now()
	want := inst(appA, z1, "h1")
	want.RegTimestamp, want.UpTimestamp, want.RenewTimestamp, want.DirtyTimestamp, want.LatestTimestamp = now, now, now, now, now
	if d := cmp.Diff(want, st); d != "" {
		t.Fatalf("stored (-want +got):\n%s", d)
	}
	if d := cmp.Diff(want, r.get(in.Key())); d != "" {
		t.Fatalf("Get (-want +got):\n%s", d)
	}
	if got := r.latest(appA); got != now {
		t.Fatalf("app latest = %d, want now %d", got, now)
	}
	// A new key counts toward the expected renews from its first renew on.
	if got := r.Stats().ExpectedRenews; got != 0 {
		t.Fatalf("expected renews after the register = %d, want 0", got)
	}
	if _, err := r.Renew(in.Key(), false, 0); err != nil {
		t.Fatal(err)
	}
	if got := r.Stats().ExpectedRenews; got != 2 {
		t.Fatalf("expected renews after the first renew = %d, want 2", got)
	}
	if _, err := r.Renew(in.Key(), false, 0); err != nil {
		t.Fatal(err)
	}
	if got := r.Stats().ExpectedRenews; got != 2 {
		t.Fatalf("expected renews after the second renew = %d, want 2", got)
	}
}

// Table of the dirty-timestamp rule for a register of an existing key
// (spec 4.1.1, C18).
func TestRegisterConflictRules(t *testing.T) {
	const stored = int64(1_700_000_000_000_000_000) // dirty of the stored copy
	cases := []struct {
		name        string
		dirty       int64 // incoming; 0 = client register
		clockAhead  time.Duration
		wantApplied bool
		wantDirty   int64
	}{
		{"replicated older keeps stored", stored - 1, time.Second, false, stored},
		{"replicated newer replaces", stored + 5, time.Second, true, stored + 5},
		{"replicated equal replaces", stored, time.Second, true, stored},
		{"client register later replaces with now", 0, time.Second, true, stored + int64(time.Second)},
		{"client register behind stored dirty still applies", 0, -time.Second, true, stored},
	}
	// RegisterNoCopy applies exactly as Register does; it only returns no copy.
	for _, tc := range cases {
		for _, noCopy := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/nocopy=%v", tc.name, noCopy), func(t *testing.T) {
				r := newTestReg(t)
				first := inst(appA, z1, "h1")
				first.DirtyTimestamp = stored
				r.reg(first)
				before := r.get(first.Key())
				latestBefore := r.latest(appA)
				w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{latestBefore}})

				r.clk.Advance(tc.clockAhead)
				in := inst(appA, z1, "h1")
				in.Addrs = []string{"grpc://10.9.9.9:1"}
				in.Metadata = map[string]string{"color": "red"}
				in.DirtyTimestamp = tc.dirty
				var (
					st      Instance
					applied bool
					err     error
				)
				if noCopy {
					applied, err = r.RegisterNoCopy(in, 0, "")
				} else {
					st, applied, err = r.Register(in, 0)
				}
				if err != nil {
					t.Fatal(err)
				}
				if applied != tc.wantApplied {
					t.Fatalf("applied = %v, want %v", applied, tc.wantApplied)
				}
				got := r.get(in.Key())
				if d := cmp.Diff(got, st); d != "" && !noCopy {
					t.Fatalf("returned copy differs from stored (-stored +returned):\n%s", d)
				}
				if !tc.wantApplied {
					if d := cmp.Diff(before, got); d != "" {
						t.Fatalf("stored record changed (-before +after):\n%s", d)
					}
				} else {
					if got.DirtyTimestamp != tc.wantDirty || got.Addrs[0] != "grpc://10.9.9.9:1" || got.Metadata["color"] != "red" {
						t.Fatalf("not replaced: %+v", got)
					}
					if got.UpTimestamp != before.UpTimestamp {
						t.Fatalf("up_timestamp %d, want kept %d", got.UpTimestamp, before.UpTimestamp)
					}
					now := r.now()
					if got.RegTimestamp != now || got.RenewTimestamp != now || got.LatestTimestamp != now {
						t.Fatalf("reg/renew/latest not now: %+v", got)
					}
				}
				// Applied or not: the app latest advances and pollers wake.
				if l := r.latest(appA); l <= latestBefore {
					t.Fatalf("app latest %d did not advance past %d", l, latestBefore)
				}
				if !signalled(w) {
					t.Fatal("poller not woken")
				}
				if got := r.Stats().ExpectedRenews; got != 2 {
					t.Fatalf("expected renews %d after re-register, want 2", got)
				}
			})
		}
	}
}

func TestRegisterInvalid(t *testing.T) {
	mut := map[string]func(*Instance){
		"status 0":   func(i *Instance) { i.Status = 0 },
		"status 3":   func(i *Instance) { i.Status = 3 },
		"no addrs":   func(i *Instance) { i.Addrs = nil },
		"empty addr": func(i *Instance) { i.Addrs = []string{"grpc://a:1", ""} },
		"no env":     func(i *Instance) { i.Env = "" },
		"no appid":   func(i *Instance) { i.AppID = "" },
		"no zone":    func(i *Instance) { i.Zone = "" },
		"no host":    func(i *Instance) { i.Hostname = "" },
	}
	field := map[string]string{
		"status 0": "status", "status 3": "status", "no addrs": "addrs", "empty addr": "addrs[1]",
		"no env": "env", "no appid": "appid", "no zone": "zone", "no host": "hostname",
	}
	for name, m := range mut {
		t.Run(name, func(t *testing.T) {
			r := newTestReg(t)
			r.reg(inst(appA, z1, "h0"))
			before := r.Snapshot()
			latest := r.latest(appA)
			in := inst(appA, z1, "h1")
			m(&in)
			_, applied, err := r.Register(in, 0)
			if !errors.Is(err, ErrInvalid) || applied {
				t.Fatalf("Register = %v, %v; want ErrInvalid", applied, err)
			}
			if !strings.Contains(err.Error(), field[name]) {
				t.Fatalf("error %q does not name field %q", err, field[name])
			}
			if d := cmp.Diff(before, r.Snapshot()); d != "" || r.latest(appA) != latest {
				t.Fatalf("state changed:\n%s", d)
			}
		})
	}
}

func TestRegisterCopiesAreIndependent(t *testing.T) {
	r := newTestReg(t)
	in := inst(appA, z1, "h1")
	st := r.reg(in)
	in.Addrs[0] = "mutated"
	in.Metadata["weight"] = "mutated"
	st.Addrs[0] = "mutated"
	st.Metadata["weight"] = "mutated"
	g := r.get(in.Key())
	g.Addrs[0] = "mutated"
	g2 := r.get(in.Key())
	if g2.Addrs[0] != "grpc://10.0.0.1:9000" || g2.Metadata["weight"] != "10" {
		t.Fatalf("stored copy was changed through a caller's slice/map: %+v", g2)
	}
}

func TestRegisterLatestHint(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	hint := r.now() + int64(30*time.Second)
	if _, _, err := r.Register(inst(appA, z1, "h2"), hint); err != nil {
		t.Fatal(err)
	}
	if got := r.latest(appA); got != hint {
		t.Fatalf("app latest = %d, want hint %d", got, hint)
	}
	// A bogus far-future hint is clamped so the counter cannot overflow.
	if _, _, err := r.Register(inst(appA, z1, "h3"), 1<<62); err != nil {
		t.Fatal(err)
	}
	if got, lim := r.latest(appA), r.now()+int64(r.cfg.MaxClockSkew); got != lim {
		t.Fatalf("app latest = %d, want clamp %d", got, lim)
	}
}

func TestRenew(t *testing.T) {
	const d = int64(1_700_000_000_000_000_000)
	cases := []struct {
		name       string
		absent     bool
		replicated bool
		dirty      int64
		wantErr    error
		wantData   bool
	}{
		{"client present", false, false, 0, nil, true},
		{"client absent", true, false, 0, ErrNotFound, false},
		{"replicated absent -404", true, true, d, ErrNotFound, false},
		{"replicated sender newer -404 (stale receiver)", false, true, d + 1, ErrNotFound, true},
		{"replicated sender older -409", false, true, d - 1, ErrConflict, true},
		{"replicated equal 0", false, true, d, nil, true},
		{"replicated no dirty is older -409", false, true, 0, ErrConflict, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestReg(t)
			in := inst(appA, z1, "h1")
			in.DirtyTimestamp = d
			if !tc.absent {
				r.reg(in)
			}
			r.reg(inst(appA, z1, "other"))
			before, _ := r.Get(in.Key())
			latest := r.latest(appA)
			w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{latest}})
			r.clk.Advance(30 * time.Second)

			got, err := r.Renew(in.Key(), tc.replicated, tc.dirty)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !tc.wantData {
				if d := cmp.Diff(Instance{}, got); d != "" {
					t.Fatalf("data for absent instance:\n%s", d)
				}
				if r.renews.Load() != 0 {
					t.Fatal("renew of an absent instance was counted")
				}
			} else {
				// The renew is applied in every case; only renew_timestamp moves.
				want := before
				want.RenewTimestamp = r.now()
				if d := cmp.Diff(want, got); d != "" {
					t.Fatalf("returned (-want +got):\n%s", d)
				}
				if d := cmp.Diff(want, r.get(in.Key())); d != "" {
					t.Fatalf("stored (-want +got):\n%s", d)
				}
				if r.renews.Load() != 1 {
					t.Fatalf("renews counted = %d, want 1", r.renews.Load())
				}
			}
			if r.latest(appA) != latest {
				t.Fatal("renew moved the app latest_timestamp")
			}
			if signalled(w) {
				t.Fatal("renew woke a poller")
			}
		})
	}
}

func TestRenewWrongZoneIsNotFound(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	if _, err := r.Renew(keyOf(appA, z2, "h1"), false, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("renew in another zone: %v, want ErrNotFound", err)
	}
}

func TestCancel(t *testing.T) {
	const d = int64(1_700_000_000_000_000_000)
	cases := []struct {
		name      string
		absent    bool
		at        int64
		wantErr   error
		wantGone  bool
		wantTomb  int64 // 0: no tombstone
		wantLatFn func(prev, now int64) int64
	}{
		{"client cancel", false, 0, nil, true, -1, func(prev, now int64) int64 { return prev + 1 }},
		{"replicated at newer than dirty", false, d + 10, nil, true, d + 10, func(prev, now int64) int64 { return max(d+10, prev+1) }},
		{"replicated at equal dirty", false, d, nil, true, d, func(prev, now int64) int64 { return prev + 1 }},
		{"replicated at older than dirty conflicts", false, d - 1, ErrConflict, false, 0, nil},
		{"client cancel absent", true, 0, ErrNotFound, true, 0, nil},
		{"replicated cancel absent records tombstone", true, d + 3, ErrNotFound, true, d + 3, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestReg(t)
			in := inst(appA, z1, "h1")
			in.DirtyTimestamp = d
			r.reg(inst(appA, z1, "keep")) // keeps the app alive and pollable
			if !tc.absent {
				r.reg(in)
			}
			r.clk.Advance(time.Second)
			prev, now := r.latest(appA), r.now()
			exp := r.Stats().ExpectedRenews
			w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{prev}})

			tb, err := r.Cancel(in.Key(), tc.at)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			_, present := r.Get(in.Key())
			if present == tc.wantGone {
				t.Fatalf("present = %v after cancel", present)
			}
			wantTomb := tc.wantTomb
			if wantTomb == -1 {
				wantTomb = now // client cancel: max(now, dirty)
			}
			at, ok := r.tomb(in.Key())
			if (wantTomb != 0) != ok || at != wantTomb || tb.At != wantTomb {
				t.Fatalf("tombstone = %d,%v (returned %d), want %d", at, ok, tb.At, wantTomb)
			}
			if tb.Key != in.Key() {
				t.Fatalf("tombstone key %+v", tb.Key)
			}
			if tc.wantLatFn != nil {
				if got, want := r.latest(appA), tc.wantLatFn(prev, now); got != want {
					t.Fatalf("app latest = %d, want %d (prev %d)", got, want, prev)
				}
				if got := r.Stats().ExpectedRenews; got != exp-2 {
					t.Fatalf("expected renews %d, want %d", got, exp-2)
				}
				if !signalled(w) {
					t.Fatal("cancel did not wake the poller")
				}
			} else {
				if r.latest(appA) != prev || r.Stats().ExpectedRenews != exp {
					t.Fatal("failed cancel changed the app latest or expected renews")
				}
				if signalled(w) {
					t.Fatal("failed cancel woke a poller")
				}
			}
		})
	}
}

func TestCancelClientTombstoneCoversFutureDirty(t *testing.T) {
	r := newTestReg(t)
	in := inst(appA, z1, "h1")
	in.DirtyTimestamp = r.now() + int64(30*time.Second) // stamped by a peer whose clock runs ahead
	r.reg(in)
	tb, err := r.Cancel(in.Key(), 0)
	if err != nil || tb.At != in.DirtyTimestamp {
		t.Fatalf("Cancel = %+v, %v; want tombstone at the removed dirty %d", tb, err, in.DirtyTimestamp)
	}
}

func TestCancelInvalidKey(t *testing.T) {
	r := newTestReg(t)
	if _, err := r.Cancel(Key{Env: env, AppID: appA, Zone: z1}, 5); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v, want ErrInvalid", err)
	}
	if s := r.Stats(); s.Tombstones != 0 {
		t.Fatal("tombstone recorded for an invalid key")
	}
}

func TestCancelLastInstanceRemovesAppAndZone(t *testing.T) { // C21, 3.3.4
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	r.reg(inst(appA, z2, "h2"))
	if _, err := r.Cancel(keyOf(appA, z2, "h2"), 0); err != nil {
		t.Fatal(err)
	}
	info, err := r.Fetch(env, appA, "", 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.Instances[z2]; ok || len(info.Instances) != 1 {
		t.Fatalf("empty zone still listed: %v", info.Instances)
	}
	if _, err := r.Fetch(env, appA, z2, 3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fetch of the emptied zone: %v", err)
	}
	if _, err := r.Cancel(keyOf(appA, z1, "h1"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Fetch(env, appA, "", 3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("fetch after last cancel: %v, want ErrNotFound", err)
	}
	r.armed(PollRequest{Env: env, AppIDs: []string{appA, appB}, Latest: []int64{0, 0}}) // both missing: held
	s := r.Stats()
	if s.Instances[env] != 0 || s.Apps[env] != 0 || len(s.Instances) != 0 {
		t.Fatalf("stats after removal: %+v", s)
	}
}

func TestTombstoneRules(t *testing.T) {
	const at = int64(1_700_000_000_000_000_000)
	cases := []struct {
		name    string
		op      func(r *testReg) bool // returns applied
		applied bool
	}{
		{"replicated register older than tombstone blocked", func(r *testReg) bool {
			in := inst(appA, z1, "h1")
			in.DirtyTimestamp = at - 1
			_, ok, _ := r.Register(in, 0)
			return ok
		}, false},
		{"replicated register equal to tombstone blocked", func(r *testReg) bool {
			in := inst(appA, z1, "h1")
			in.DirtyTimestamp = at
			_, ok, _ := r.Register(in, 0)
			return ok
		}, false},
		{"replicated register newer than tombstone applies", func(r *testReg) bool {
			in := inst(appA, z1, "h1")
			in.DirtyTimestamp = at + 1
			_, ok, _ := r.Register(in, 0)
			return ok
		}, true},
		{"client register after cancel applies", func(r *testReg) bool {
			_, ok, _ := r.Register(inst(appA, z1, "h1"), 0)
			return ok
		}, true},
		{"import older than tombstone blocked", func(r *testReg) bool {
			in := inst(appA, z1, "h1")
			in.DirtyTimestamp = at - 1
			return r.Import(in)
		}, false},
		{"import newer than tombstone applies", func(r *testReg) bool {
			in := inst(appA, z1, "h1")
			in.DirtyTimestamp = at + 1
			return r.Import(in)
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestReg(t)
			r.clk.Set(time.Unix(0, at)) // the clock equals the tombstone time
			if _, err := r.Cancel(keyOf(appA, z1, "h1"), at); !errors.Is(err, ErrNotFound) {
				t.Fatalf("cancel of absent: %v", err)
			}
			if got := r.op(tc.op); got != tc.applied {
				t.Fatalf("applied = %v, want %v", got, tc.applied)
			}
			ins, present := r.Get(keyOf(appA, z1, "h1"))
			_, tombed := r.tomb(keyOf(appA, z1, "h1"))
			if present != tc.applied || tombed == tc.applied {
				t.Fatalf("present %v, tombstone %v", present, tombed)
			}
			if present && ins.DirtyTimestamp <= at {
				t.Fatalf("applied copy has dirty %d <= tombstone %d", ins.DirtyTimestamp, at)
			}
			if want := map[bool]int{true: 0, false: 1}[tc.applied]; r.Stats().Tombstones != want {
				t.Fatalf("Stats().Tombstones = %d, want %d", r.Stats().Tombstones, want)
			}
		})
	}
}

func (r *testReg) op(f func(*testReg) bool) bool { return f(r) }

func TestTombstoneExpiresAfterTTL(t *testing.T) {
	r := newTestReg(t, noSelfPreservation)
	r.reg(inst(appA, z1, "h1"))
	if _, err := r.Cancel(keyOf(appA, z1, "h1"), 0); err != nil {
		t.Fatal(err)
	}
	r.clk.Advance(time.Hour) // exactly TTL: kept
	r.Scan()
	if r.Stats().Tombstones != 1 || len(r.Snapshot().Tombstones) != 1 {
		t.Fatal("tombstone expired at exactly TTL")
	}
	r.clk.Advance(time.Nanosecond)
	r.Scan()
	if r.Stats().Tombstones != 0 || len(r.Snapshot().Tombstones) != 0 || len(r.AppDigests()) != 0 {
		t.Fatal("tombstone kept after TTL")
	}
	// The empty app is forgotten too, and re-registering starts it afresh.
	r.mu.RLock()
	n := len(r.envs)
	r.mu.RUnlock()
	if n != 0 {
		t.Fatalf("%d envs left after the app's tombstones expired", n)
	}
	r.reg(inst(appA, z1, "h1"))
}

func TestEvictLeavesNoTombstone(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	r.reg(inst(appA, z1, "h2"))
	prev := r.latest(appA)
	w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{prev}})
	ins, err := r.Evict(keyOf(appA, z1, "h1"))
	if err != nil || ins.Hostname != "h1" {
		t.Fatalf("Evict = %+v, %v", ins, err)
	}
	if _, ok := r.tomb(keyOf(appA, z1, "h1")); ok {
		t.Fatal("eviction left a tombstone")
	}
	s := r.Stats()
	if s.ExpectedRenews != 2 || s.Evictions != 1 || s.Instances[env] != 1 {
		t.Fatalf("stats after evict: %+v", s)
	}
	if r.latest(appA) <= prev || !signalled(w) {
		t.Fatal("evict did not advance latest / wake")
	}
	// A late replicated register of the evicted instance is accepted.
	in := inst(appA, z1, "h1")
	in.DirtyTimestamp = 1
	if _, ok, _ := r.Register(in, 0); !ok {
		t.Fatal("register after evict refused")
	}
	if _, err := r.Evict(keyOf(appA, z2, "nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("evict absent: %v", err)
	}
}

func TestImport(t *testing.T) {
	const d = int64(1_600_000_000_000_000_000)
	peer := func(dirty int64) Instance {
		in := inst(appA, z1, "h1")
		in.RegTimestamp, in.UpTimestamp, in.RenewTimestamp = d-3, d-2, d+7
		in.DirtyTimestamp, in.LatestTimestamp = dirty, dirty+1
		return in
	}
	cases := []struct {
		name    string
		stored  int64 // dirty of a stored copy; 0 = absent
		in      Instance
		applied bool
	}{
		{"absent key", 0, peer(d), true},
		{"newer than stored", d - 1, peer(d), true},
		{"equal to stored", d, peer(d), false},
		{"older than stored", d + 1, peer(d), false},
		{"invalid status", 0, func() Instance { i := peer(d); i.Status = 9; return i }(), false},
		{"no addrs", 0, func() Instance { i := peer(d); i.Addrs = nil; return i }(), false},
		{"no hostname", 0, func() Instance { i := peer(d); i.Hostname = ""; return i }(), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestReg(t)
			r.reg(inst(appA, z2, "other"))
			if tc.stored != 0 {
				s := inst(appA, z1, "h1")
				s.DirtyTimestamp = tc.stored
				r.reg(s)
			}
			before := r.Snapshot()
			prev := r.latest(appA)
			exp := r.Stats().ExpectedRenews
			w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{prev}})
			if got := r.Import(tc.in); got != tc.applied {
				t.Fatalf("Import = %v, want %v", got, tc.applied)
			}
			if !tc.applied {
				if d := cmp.Diff(before, r.Snapshot()); d != "" || r.latest(appA) != prev || signalled(w) {
					t.Fatalf("refused import changed state or woke (-before +after):\n%s", d)
				}
				return
			}
			if d := cmp.Diff(tc.in, r.get(tc.in.Key())); d != "" {
				t.Fatalf("imported copy not kept verbatim (-want +got):\n%s", d)
			}
			if got, want := r.latest(appA), max(tc.in.LatestTimestamp, prev+1); got != want {
				t.Fatalf("app latest = %d, want %d", got, want)
			}
			wantExp := exp // an imported key counts from its first renew
			if r.Stats().ExpectedRenews != wantExp {
				t.Fatalf("expected renews %d, want %d", r.Stats().ExpectedRenews, wantExp)
			}
			if !signalled(w) {
				t.Fatal("import did not wake")
			}
		})
	}
}

func TestImportZeroTimestampsBecomeNow(t *testing.T) {
	r := newTestReg(t)
	in := inst(appA, z1, "h1")
	if !r.Import(in) {
		t.Fatal("not applied")
	}
	g := r.get(in.Key())
	now := r.now()
	for _, v := range []int64{g.RegTimestamp, g.UpTimestamp, g.RenewTimestamp, g.DirtyTimestamp, g.LatestTimestamp} {
		if v != now {
			t.Fatalf("zero timestamp not replaced: %+v", g)
		}
	}
}

func TestSetValidation(t *testing.T) { // C27: every -400 cause, nothing changes
	base := func() SetRequest {
		return SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"h1", "h2"},
			Statuses: []uint32{2, 2}, Metadata: []map[string]string{{"a": "1"}, {"b": "2"}}}
	}
	cases := []struct {
		name  string
		mut   func(*SetRequest)
		field string
	}{
		{"no hostname", func(s *SetRequest) { s.Hostnames, s.Statuses, s.Metadata = nil, nil, nil }, "hostname"},
		{"empty hostname", func(s *SetRequest) { s.Hostnames[1] = "" }, "hostname[1]"},
		{"no env", func(s *SetRequest) { s.Env = "" }, "env"},
		{"no appid", func(s *SetRequest) { s.AppID = "" }, "appid"},
		{"no zone", func(s *SetRequest) { s.Zone = "" }, "zone"},
		{"unknown app", func(s *SetRequest) { s.AppID = "nope" }, "appid"},
		{"unknown env", func(s *SetRequest) { s.Env = "dev" }, "appid"},
		{"unknown zone", func(s *SetRequest) { s.Zone = "nope" }, "zone"},
		{"unknown second hostname", func(s *SetRequest) { s.Hostnames[1] = "nope" }, "hostname"},
		{"status 0", func(s *SetRequest) { s.Statuses[1] = 0 }, "status[1]"},
		{"status 3", func(s *SetRequest) { s.Statuses[0] = 3 }, "status[0]"},
		{"status count mismatch", func(s *SetRequest) { s.Statuses = s.Statuses[:1] }, "status"},
		{"metadata count mismatch", func(s *SetRequest) { s.Metadata = append(s.Metadata, nil) }, "metadata"},
		{"negative set_timestamp", func(s *SetRequest) { s.SetTimestamp = -1 }, "set_timestamp"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestReg(t)
			r.reg(inst(appA, z1, "h1"))
			r.reg(inst(appA, z1, "h2"))
			r.reg(inst(appA, z2, "h3"))
			before, prev := r.Snapshot(), r.latest(appA)
			w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{prev}})
			req := base()
			tc.mut(&req)
			out, err := r.Set(req)
			if !errors.Is(err, ErrInvalid) || out != nil {
				t.Fatalf("Set = %v, %v; want ErrInvalid", out, err)
			}
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name %q", err, tc.field)
			}
			if d := cmp.Diff(before, r.Snapshot()); d != "" || r.latest(appA) != prev || signalled(w) {
				t.Fatalf("invalid set changed state (-before +after):\n%s", d)
			}
		})
	}
}

func TestSetApplies(t *testing.T) { // C28, C29, D3, D7
	r := newTestReg(t)
	h1 := inst(appA, z1, "h1")
	h1.Metadata = map[string]string{"a": "1", "b": "2"}
	h1.Status = StatusWaiting
	r.reg(h1)
	r.reg(inst(appA, z1, "h2"))
	before2 := r.get(keyOf(appA, z1, "h2"))
	r.clk.Advance(time.Minute)
	prev := r.latest(appA)
	w := r.armed(PollRequest{Env: env, AppIDs: []string{appA}, Latest: []int64{prev}})

	ts := r.now() + 5
	out, err := r.Set(SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"h1"},
		Statuses: []uint32{StatusUp}, Metadata: []map[string]string{{"c": "3"}}, SetTimestamp: ts})
	if err != nil || len(out) != 1 {
		t.Fatalf("Set = %v, %v", out, err)
	}
	g := r.get(h1.Key())
	if d := cmp.Diff(g, out[0]); d != "" {
		t.Fatalf("returned differs from stored:\n%s", d)
	}
	if d := cmp.Diff(map[string]string{"c": "3"}, g.Metadata); d != "" {
		t.Fatalf("metadata not replaced (-want +got):\n%s", d)
	}
	if g.Status != StatusUp || g.UpTimestamp != ts || g.DirtyTimestamp != ts || g.LatestTimestamp != ts {
		t.Fatalf("timestamps after set: %+v", g)
	}
	if g.Version != "v1.0.0" || g.RegTimestamp != t0.UnixNano() {
		t.Fatalf("set changed version or reg: %+v", g)
	}
	if d := cmp.Diff(before2, r.get(keyOf(appA, z1, "h2"))); d != "" {
		t.Fatalf("set touched another hostname:\n%s", d)
	}
	if got := r.latest(appA); got != max(ts, prev+1) {
		t.Fatalf("app latest = %d, want %d", got, max(ts, prev+1))
	}
	if !signalled(w) {
		t.Fatal("set did not wake")
	}

	// Status 2 leaves up_timestamp; empty metadata map clears metadata.
	ts2 := ts + 10
	if _, err := r.Set(SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"h1"},
		Statuses: []uint32{StatusWaiting}, Metadata: []map[string]string{{}}, SetTimestamp: ts2}); err != nil {
		t.Fatal(err)
	}
	g = r.get(h1.Key())
	if g.Status != StatusWaiting || g.UpTimestamp != ts || g.Metadata != nil || g.DirtyTimestamp != ts2 {
		t.Fatalf("after status 2: %+v", g)
	}
	info, _ := r.Fetch(env, appA, "", 3)
	if m := info.Instances[z1][0].Metadata; m == nil || len(m) != 0 {
		t.Fatalf("fetch metadata for none = %#v, want {}", m)
	}

	// Metadata only: status untouched.
	if _, err := r.Set(SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"h1"},
		Metadata: []map[string]string{{"x": "y"}}, SetTimestamp: ts2 + 1}); err != nil {
		t.Fatal(err)
	}
	if g := r.get(h1.Key()); g.Status != StatusWaiting || g.Metadata["x"] != "y" {
		t.Fatalf("metadata-only set: %+v", g)
	}

	// An older set timestamp leaves newer instances unchanged and does not advance.
	prev = r.latest(appA)
	out, err = r.Set(SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"h1"},
		Statuses: []uint32{StatusUp}, SetTimestamp: ts})
	if err != nil || len(out) != 0 || r.get(h1.Key()).Status != StatusWaiting || r.latest(appA) != prev {
		t.Fatalf("stale set applied: %v, %v", out, err)
	}

	// SetTimestamp 0 means now.
	r.clk.Advance(time.Hour)
	out, err = r.Set(SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"h1", "h2"}, Statuses: []uint32{1, 1}})
	if err != nil || len(out) != 2 || out[0].DirtyTimestamp != r.now() || out[1].UpTimestamp != r.now() {
		t.Fatalf("set now: %+v, %v", out, err)
	}
}

// Spec table 3.3 and 3.3.1: the app latest_timestamp strictly increases on
// every change, also when the clock stands still.
func TestAppLatestStrictlyIncreasing(t *testing.T) { // C19
	for _, still := range []bool{true, false} {
		r := newTestReg(t, noSelfPreservation)
		var last int64
		step := func(what string, f func()) {
			t.Helper()
			if !still {
				r.clk.Advance(time.Millisecond)
			}
			f()
			l := r.latest(appA)
			if l <= last {
				t.Fatalf("still=%v %s: latest %d not > %d", still, what, l, last)
			}
			last = l
		}
		step("register", func() { r.reg(inst(appA, z1, "h1")) })
		step("re-register", func() { r.reg(inst(appA, z1, "h1")) })
		step("register second", func() { r.reg(inst(appA, z1, "h2")) })
		step("set", func() {
			if _, err := r.Set(SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"h1"}, Statuses: []uint32{2}, SetTimestamp: r.now()}); err != nil {
				t.Fatal(err)
			}
		})
		step("cancel", func() {
			if _, err := r.Cancel(keyOf(appA, z1, "h2"), 0); err != nil {
				t.Fatal(err)
			}
		})
		step("import", func() {
			in := inst(appA, z1, "h3")
			in.DirtyTimestamp, in.LatestTimestamp = 5, 5
			if !r.Import(in) {
				t.Fatal("import refused")
			}
		})
		step("eviction", func() {
			r.clk.Advance(91 * time.Second)
			if len(r.Scan()) == 0 {
				t.Fatal("nothing evicted")
			}
		})
		step("evict", func() {
			r.reg(inst(appA, z1, "h9"))
			if _, err := r.Evict(keyOf(appA, z1, "h9")); err != nil {
				t.Fatal(err)
			}
		})
		// Renew does not move it.
		r.reg(inst(appA, z1, "h1"))
		last = r.latest(appA)
		if _, err := r.Renew(keyOf(appA, z1, "h1"), false, 0); err != nil || r.latest(appA) != last {
			t.Fatal("renew moved latest")
		}
		// Removing the last instance and re-registering at the same clock
		// reading still increases (the emptied app keeps its counter).
		if _, err := r.Cancel(keyOf(appA, z1, "h1"), 0); err != nil {
			t.Fatal(err)
		}
		for _, k := range r.Snapshot().Instances {
			if _, err := r.Cancel(k.Key(), 0); err != nil {
				t.Fatal(err)
			}
		}
		last = r.latest(appA)
		step("register after app vanished", func() { r.reg(inst(appA, z1, "h1")) })
	}
}

func TestTimestampsTable(t *testing.T) { // C16, C17, C20
	r := newTestReg(t)
	k := keyOf(appA, z1, "h1")
	r.reg(inst(appA, z1, "h1"))
	t1 := r.now()
	r.clk.Advance(10 * time.Second)
	if _, err := r.Renew(k, false, 0); err != nil {
		t.Fatal(err)
	}
	g := r.get(k)
	t2 := r.now()
	if g.RegTimestamp != t1 || g.UpTimestamp != t1 || g.DirtyTimestamp != t1 || g.LatestTimestamp != t1 || g.RenewTimestamp != t2 {
		t.Fatalf("renew changed more than renew_timestamp: %+v", g)
	}
	r.clk.Advance(10 * time.Second)
	t3 := r.now()
	r.reg(waiting(inst(appA, z1, "h1")))
	g = r.get(k)
	if g.RegTimestamp != t3 || g.UpTimestamp != t1 || g.RenewTimestamp != t3 || g.DirtyTimestamp != t3 || g.LatestTimestamp != t3 {
		t.Fatalf("re-register timestamps: %+v (t1 %d t3 %d)", g, t1, t3)
	}
}

// A version timestamp (dirty_timestamp, set_timestamp, cancel time, imported
// timestamps) more than int64(r.cfg.MaxClockSkew) ahead of the clock is refused with
// nothing changed: such a value (e.g. MaxInt64) would outrank every later
// write, and a cancel of it left a tombstone no register could pass (its
// dirty_timestamp would have to be tomb+1, which overflowed), so the key
// could not be registered again for TombstoneTTL.
func TestFarFutureVersionsRefused(t *testing.T) {
	r := newTestReg(t)
	r.reg(inst(appA, z1, "h1"))
	for _, far := range []int64{r.now() + int64(r.cfg.MaxClockSkew) + 1, math.MaxInt64} {
		before, latest := r.Snapshot(), r.latest(appA)
		wantField := func(what string, err error, field string) {
			t.Helper()
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), field+":") {
				t.Fatalf("%s at %d: err %v, want ErrInvalid naming %s", what, far, err, field)
			}
		}
		in := inst(appA, z1, "h1")
		in.DirtyTimestamp = far
		_, _, err := r.Register(in, 0)
		wantField("Register", err, "dirty_timestamp")
		_, err = r.Set(SetRequest{Env: env, AppID: appA, Zone: z1, Hostnames: []string{"h1"}, Statuses: []uint32{2}, SetTimestamp: far})
		wantField("Set", err, "set_timestamp")
		_, err = r.Cancel(keyOf(appA, z1, "h1"), far)
		wantField("Cancel", err, "latest_timestamp")
		_, err = r.Cancel(keyOf(appA, z1, "absent"), far)
		wantField("Cancel of an absent key", err, "latest_timestamp")
		if r.Import(in) {
			t.Fatal("Import of a far-future dirty_timestamp applied")
		}
		in2 := inst(appA, z1, "h9")
		in2.DirtyTimestamp, in2.RenewTimestamp = r.now(), far // would never be evicted
		if r.Import(in2) {
			t.Fatal("Import of a far-future renew_timestamp applied")
		}
		if d := cmp.Diff(before, r.Snapshot()); d != "" || r.latest(appA) != latest {
			t.Fatalf("refused writes changed state (-before +after):\n%s", d)
		}
	}
	// Up to the bound a peer's clock may run ahead; cancel and re-register
	// still work after it.
	in := inst(appA, z1, "h1")
	in.DirtyTimestamp = r.now() + int64(r.cfg.MaxClockSkew)
	if _, applied, err := r.Register(in, 0); err != nil || !applied {
		t.Fatalf("Register at the bound: %v %v", applied, err)
	}
	if _, err := r.Cancel(keyOf(appA, z1, "h1"), 0); err != nil {
		t.Fatal(err)
	}
	r.reg(inst(appA, z1, "h1"))
	if got := r.get(keyOf(appA, z1, "h1")); got.DirtyTimestamp <= in.DirtyTimestamp {
		t.Fatalf("re-register after the cancel: dirty %d", got.DirtyTimestamp)
	}
}

// renewCase is one renew of an instance stored with some dirty_timestamp.
type renewCase struct {
	replicated bool
	dirty      int64
	want       error
}

// renewCases are a client's renew, and a peer's that agrees with the
// stored dirty_timestamp, is behind it (-409) and is ahead of it (-404).
func renewCases(stored int64) []renewCase {
	return []renewCase{{false, 0, nil}, {true, stored, nil}, {true, stored - 1, ErrConflict}, {true, stored + 1, ErrNotFound}}
}

// RenewAppend appends the bytes the wire encoder writes for Renew's copy,
// for a plain renew, a replicated one that conflicts (the stored copy) and
// one that is behind (nothing appended), with and without addrs and
// metadata; and it renews as Renew does.
func TestRenewAppend_SameBytesAsTheCopy(t *testing.T) {
	r := newTestReg(t)
	full := inst(appA, z1, "h1")
	full.Metadata = map[string]string{"weight": "10", "k<&>": "\"quoted\" ü"}
	bare := inst(appA, z1, "h2")
	bare.Addrs, bare.Metadata = []string{"tcp://10.0.0.2:1"}, nil
	for _, in := range []Instance{full, bare} {
		stored := r.reg(in)
		k := stored.Key()
		for _, c := range renewCases(stored.DirtyTimestamp) {
			r.clk.Advance(time.Second)
			got, dirty, err := r.RenewAppend([]byte("head:"), k, c.replicated, c.dirty)
			if !errors.Is(err, c.want) {
				t.Fatalf("%s %+v: err %v", k.Hostname, c, err)
			}
			copyOf := r.get(k)
			if copyOf.RenewTimestamp != r.now() {
				t.Fatalf("%s %+v: renew_timestamp %d, want %d", k.Hostname, c, copyOf.RenewTimestamp, r.now())
			}
			want := "head:"
			if !errors.Is(c.want, ErrNotFound) {
				want += string(copyOf.AppendJSON(nil))
				if dirty != stored.DirtyTimestamp {
					t.Fatalf("%s %+v: dirty %d, want %d", k.Hostname, c, dirty, stored.DirtyTimestamp)
				}
			}
			if string(got) != want {
				t.Fatalf("%s %+v:\n got %s\nwant %s", k.Hostname, c, got, want)
			}
		}
	}
	if _, _, err := r.RenewAppend(nil, keyOf(appA, z1, "nobody"), false, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent: err %v", err)
	}
}

// RenewNoCopy renews as Renew does and hands out the stored copy only on a
// conflict, where a peer adopts it.
func TestRenewNoCopy(t *testing.T) {
	r := newTestReg(t)
	stored := r.reg(inst(appA, z1, "h1"))
	k := stored.Key()
	for _, c := range renewCases(stored.DirtyTimestamp) {
		r.clk.Advance(time.Second)
		dirty, conflict, err := r.RenewNoCopy(k, c.replicated, c.dirty)
		if !errors.Is(err, c.want) || dirty != stored.DirtyTimestamp {
			t.Fatalf("%+v: dirty %d err %v, want %d %v", c, dirty, err, stored.DirtyTimestamp, c.want)
		}
		now := r.get(k)
		if now.RenewTimestamp != r.now() {
			t.Fatalf("%+v: renew_timestamp %d, want %d", c, now.RenewTimestamp, r.now())
		}
		if errors.Is(c.want, ErrConflict) {
			if conflict == nil || string(conflict.AppendJSON(nil)) != string(now.AppendJSON(nil)) {
				t.Fatalf("%+v: copy on a conflict %+v, want %+v", c, conflict, now)
			}
		} else if conflict != nil {
			t.Fatalf("%+v: a copy %+v without a conflict", c, conflict)
		}
	}
	if dirty, conflict, err := r.RenewNoCopy(keyOf(appA, z1, "nobody"), true, 1); !errors.Is(err, ErrNotFound) || dirty != 0 || conflict != nil {
		t.Fatalf("absent: %d %v %v", dirty, conflict, err)
	}
}
