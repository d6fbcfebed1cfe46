package registry

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

func newBenchReg(b *testing.B) *Registry {
	b.Helper()
	r, err := New(DefaultConfig(), NewManualClock(t0), nil)
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// benchInst builds an instance like a kratos client sends it, with fresh
// strings (as parsed from a request).
func benchInst(app, i int) Instance {
	ip := fmt.Sprintf("10.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255)
	return Instance{
		Region:   "sh",
		Zone:     fmt.Sprintf("sh00%d", i%2+1),
		Env:      "prod",
		AppID:    fmt.Sprintf("main.service.app-%04d", app),
		Hostname: fmt.Sprintf("pod-%07d-7f9c", i),
		Addrs:    []string{"grpc://" + ip + ":9000", "http://" + ip + ":8000"},
		Version:  "v1.4.2",
		Metadata: map[string]string{"weight": "10", "color": "red"},
		Status:   StatusUp,
	}
}

func BenchmarkRegister(b *testing.B) {
	r := newBenchReg(b)
	ins := make([]Instance, 100_000)
	for i := range ins {
		ins[i] = benchInst(i%1000, i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, _, err := r.Register(ins[int(i)%len(ins)], 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkRenew(b *testing.B) {
	r := newBenchReg(b)
	keys := make([]Key, 10_000)
	for i := range keys {
		in := benchInst(i%100, i)
		r.Register(in, 0)
		keys[i] = in.Key()
	}
	b.ReportAllocs()
	b.ResetTimer()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if _, err := r.Renew(keys[int(i)%len(keys)], false, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkFetch: fetchs of 10 appids of 20 instances each (one op = 10 Fetch).
func BenchmarkFetch(b *testing.B) {
	r := newBenchReg(b)
	for i := range 200 {
		r.Register(benchInst(i%10, i), 0)
	}
	apps := make([]string, 10)
	for i := range apps {
		apps[i] = fmt.Sprintf("main.service.app-%04d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			for _, a := range apps {
				if _, err := r.Fetch("prod", a, "", 3); err != nil {
					b.Error(err)
					return
				}
			}
		}
	})
}

// BenchmarkPollWake10000: 10 000 goroutines parked on one app (100
// instances); one register wakes them all and each re-polls and gets its
// payload. One op is the whole round.
func BenchmarkPollWake10000(b *testing.B) {
	const pollers = 10_000
	r, appid := newWatchedApp(b)
	b.ReportAllocs()
	encodes := r.encodes.Load()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		latest := r.latestOf("prod", appid)
		req := PollRequest{Env: "prod", AppIDs: []string{appid}, Latest: []int64{latest}}
		var armed, done sync.WaitGroup
		armed.Add(pollers)
		var got atomic.Int64
		for range pollers {
			done.Go(func() {
				_, w := r.Poll(req)
				armed.Done()
				if w == nil {
					b.Error("not held")
					return
				}
				<-w.C()
				res, w2 := r.Repoll(req, w)
				if w2 != nil {
					w2.Close()
					b.Error("woken but nothing to answer")
					return
				}
				if len(res.Changed) == 1 && len(res.Changed[0].JSON) > 0 {
					got.Add(1)
				}
			})
		}
		armed.Wait()
		b.StartTimer()
		r.Register(benchInst(0, 100+i%10), 0)
		done.Wait()
		if got.Load() != pollers {
			b.Fatalf("%d of %d pollers got their payload", got.Load(), pollers)
		}
	}
	b.ReportMetric(float64(r.encodes.Load()-encodes)/float64(b.N), "encodes/op")
}

// newWatchedApp is a registry with one app of 100 instances, the app the
// fan-out benchmarks park their waiters on.
func newWatchedApp(b *testing.B) (*Registry, string) {
	r := newBenchReg(b)
	for i := range 100 {
		r.Register(benchInst(0, i), 0)
	}
	return r, benchInst(0, 0).AppID
}

func (r *Registry) latestOf(env, appid string) int64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if a := r.getApp(env, appid); a != nil {
		return a.latest
	}
	return 0
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// measureBytesPerInstance registers n instances (apps × n/apps, each with
// its own owner address) and returns
// the retained heap per instance. With polled, every app is also polled once
// so its encoded answer is cached.
func measureBytesPerInstance(tb testing.TB, n, apps int, polled bool) float64 {
	r, err := New(DefaultConfig(), NewManualClock(t0), nil)
	if err != nil {
		tb.Fatal(err)
	}
	before := heapInUse()
	for i := range n {
		// Each instance from an address of its own, as pods register.
		owner := fmt.Sprintf("10.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255)
		if _, _, err := r.RegisterFrom(benchInst(i%apps, i), 0, owner); err != nil {
			tb.Fatal(err)
		}
	}
	if polled {
		for a := range apps {
			res, w := r.Poll(PollRequest{Env: "prod", AppIDs: []string{benchInst(a, a).AppID}, Latest: []int64{0}})
			if w != nil || len(res.Changed) != 1 {
				tb.Fatal("app not answered")
			}
		}
	}
	after := heapInUse()
	runtime.KeepAlive(r)
	return float64(after-before) / float64(n)
}

// BenchmarkMemoryPerInstance reports retained heap bytes per instance at
// 100 000 instances (2 addrs, 2 metadata keys, 2 zones), for 1 000 apps of
// 100 instances and for 50 000 apps of 2 instances, without and with a
// cached poll answer for every app.
func BenchmarkMemoryPerInstance(b *testing.B) {
	for _, apps := range []int{1000, 50_000} {
		for _, polled := range []bool{false, true} {
			b.Run(fmt.Sprintf("apps=%d/polled=%v", apps, polled), func(b *testing.B) {
				var per float64
				for b.Loop() {
					per = measureBytesPerInstance(b, 100_000, apps, polled)
				}
				b.ReportMetric(per, "heapB/instance")
			})
		}
	}
}

// TestMemoryPerInstance asserts the 1 KiB budget. It takes a few seconds
// under -race, so it runs only with REGISTRY_MEMTEST=1.
func TestMemoryPerInstance(t *testing.T) {
	if os.Getenv("REGISTRY_MEMTEST") == "" {
		t.Skip("set REGISTRY_MEMTEST=1 to measure memory per instance")
	}
	for _, apps := range []int{1000, 50_000} {
		per := measureBytesPerInstance(t, 100_000, apps, true)
		t.Logf("apps=%d: %.0f heap bytes per instance (every app's poll answer cached)", apps, per)
		if per > 1024 {
			t.Errorf("apps=%d: %.0f bytes per instance > 1 KiB", apps, per)
		}
	}
}

func newFilledBenchReg(b *testing.B, n, apps int) *Registry {
	b.Helper()
	r := newBenchReg(b)
	for i := range n {
		if _, _, err := r.Register(benchInst(i%apps, i), 0); err != nil {
			b.Fatal(err)
		}
	}
	return r
}

// BenchmarkScan100k: one eviction scan of 100 000 live instances (nothing to
// evict); the scan holds the write lock for this long once a minute.
func BenchmarkScan100k(b *testing.B) {
	r := newFilledBenchReg(b, 100_000, 1000)
	for b.Loop() {
		if ev := r.Scan(); len(ev) != 0 {
			b.Fatal("evicted")
		}
	}
}

// BenchmarkSnapshot100k: a full copy for startup sync; the read lock is held
// only while collecting pointers.
func BenchmarkSnapshot100k(b *testing.B) {
	r := newFilledBenchReg(b, 100_000, 1000)
	b.ReportAllocs()
	for b.Loop() {
		if s := r.Snapshot(); len(s.Instances) != 100_000 {
			b.Fatal(len(s.Instances))
		}
	}
}

// BenchmarkWakeWriter10000 is the writer's side of a fan-out: the register
// that detaches 10 000 waiters of its app (under the registry's lock, which
// every other request waits for) and hands their signals over. The waiters
// are armed outside the timer and never re-poll.
func BenchmarkWakeWriter10000(b *testing.B) {
	const pollers = 10_000
	r, appid := newWatchedApp(b)
	ws := make([]*Waiter, pollers)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		req := PollRequest{Env: "prod", AppIDs: []string{appid}, Latest: []int64{r.latestOf("prod", appid)}}
		for j := range ws {
			_, ws[j] = r.Poll(req)
		}
		b.StartTimer()
		r.Register(benchInst(0, 100+i%10), 0)
		b.StopTimer()
		for _, w := range ws {
			<-w.C() // signalled (from the fan-out's goroutine)
			w.Close()
		}
		b.StartTimer()
	}
}
