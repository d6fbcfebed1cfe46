package registry

import (
	"log/slog"
	"testing"
	"time"

	"github.com/discovery-go/discovery/internal/testkit"
)

func TestMain(m *testing.M) {
	testkit.VerifyTestMain(m)
}

var t0 = time.Unix(1_700_000_000, 0)

const (
	env  = "prod"
	appA = "demo.a"
	appB = "demo.b"
	z1   = "sh001"
	z2   = "sh002"
)

type testReg struct {
	*Registry
	clk *ManualClock
	t   testing.TB
}

func newTestReg(t testing.TB, mut ...func(*Config)) *testReg {
	t.Helper()
	cfg := DefaultConfig()
	for _, m := range mut {
		m(&cfg)
	}
	clk := NewManualClock(t0)
	r, err := New(cfg, clk, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	return &testReg{Registry: r, clk: clk, t: t}
}

func noSelfPreservation(c *Config) { c.SelfPreservation = false }

func inst(appid, zone, host string) Instance {
	return Instance{
		Region: "sh", Zone: zone, Env: env, AppID: appid, Hostname: host,
		Addrs:    []string{"grpc://10.0.0.1:9000", "http://10.0.0.1:8000"},
		Version:  "v1.0.0",
		Metadata: map[string]string{"weight": "10"},
		Status:   StatusUp,
	}
}

func waiting(in Instance) Instance { in.Status = StatusWaiting; return in }

func keyOf(appid, zone, host string) Key {
	return Key{Env: env, AppID: appid, Zone: zone, Hostname: host}
}

func (r *testReg) now() int64 { return r.clk.Now().UnixNano() }

// reg registers in and counts it toward the expected renews as its first
// renew would (without a renew in the guard window), so guard tests start
// from instances that renew.
func (r *testReg) reg(in Instance) Instance {
	r.t.Helper()
	st, applied, err := r.Register(in, 0)
	if err != nil || !applied {
		r.t.Fatalf("Register(%s/%s/%s) = applied %v, err %v", in.AppID, in.Zone, in.Hostname, applied, err)
	}
	r.markRenewed(in.Key())
	return st
}

// markRenewed counts k toward the expected renews like its first renew.
func (r *testReg) markRenewed(k Key) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if _, _, rc := r.find(k); rc != nil && rc.renew.renewed(rc.renew.ts()) {
		r.counted.Add(1)
		r.expected.Add(2)
	}
}

func (r *testReg) get(k Key) Instance {
	r.t.Helper()
	ins, ok := r.Get(k)
	if !ok {
		r.t.Fatalf("Get(%v): absent", k)
	}
	return ins
}

// latest reads an app's latest_timestamp, also for apps without instances.
func (r *testReg) latest(appid string) int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if a := r.getApp(env, appid); a != nil {
		return a.latest
	}
	return 0
}

func (r *testReg) tomb(k Key) (int64, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a := r.getApp(k.Env, k.AppID)
	if a == nil {
		return 0, false
	}
	at, ok := a.tombs[hostKey{k.Zone, k.Hostname}]
	return at, ok
}

func signalled(w *Waiter) bool {
	select {
	case <-w.C():
		return true
	default:
		return false
	}
}

// armed polls and requires a parked waiter.
func (r *testReg) armed(req PollRequest) *Waiter {
	r.t.Helper()
	res, w := r.Poll(req)
	if w == nil {
		r.t.Fatalf("Poll(%+v) answered at once: %+v", req, res)
	}
	if res != nil {
		r.t.Fatal("Poll returned both a result and a waiter")
	}
	r.t.Cleanup(w.Close)
	return w
}

// answered polls and requires an immediate result.
func (r *testReg) answered(req PollRequest) *PollResult {
	r.t.Helper()
	res, w := r.Poll(req)
	if w != nil {
		w.Close()
		r.t.Fatalf("Poll(%+v) parked a waiter, want an answer", req)
	}
	if res == nil {
		r.t.Fatal("Poll returned neither result nor waiter")
	}
	return res
}

func pollOf(ids ...string) PollRequest {
	return PollRequest{Env: env, AppIDs: ids, Latest: make([]int64, len(ids))}
}
