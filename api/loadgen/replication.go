package loadgen

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// replication writes on the first node and measures, per write, how long
// after the write's answer each other node shows it: a poll is parked on
// every other node before the write (so there is no polling delay), and the
// lag is the time from the write's answer to that poll's answer. Writes are
// sequential: this measures lag, not throughput (register with several
// --nodes measures cluster throughput).
func (r *runner) replication(ctx context.Context) error {
	cfg := r.cfg
	writeNode, obs := cfg.Nodes[0], cfg.Nodes[1:]
	appid := cfg.AppPrefix + ".repl"
	hosts := min(cfg.Instances, 1000)
	r.rep.Params["instances"] = int64(hosts)
	inst := func(w int64) instance {
		k := int(w % int64(hosts))
		return instance{idx: k, appid: appid, hostname: "bench-repl-" + strconv.Itoa(k)}
	}

	first := inst(0)
	if _, err := r.c.call(ctx, r.c.registerReq(writeNode, first, cfg.Env, cfg.Zone, cfg.Region)); err != nil {
		return fmt.Errorf("setup register on %s: %s", writeNode, errKey(err))
	}
	r.registered = append(r.registered, first)
	latest := make(map[string]int64, len(obs))
	for _, n := range obs {
		l, err := r.waitLatest(ctx, n, appid)
		if err != nil {
			return fmt.Errorf("setup: %w", err)
		}
		latest[n] = l
	}

	var stale atomic.Int64 // polls answered before their write (re-polled)
	lags := make([]Histogram, len(obs))
	var write, lagMax Histogram
	var elapsed time.Duration
	r.cpu.begin()
	defer func() {
		r.rep.CPU = r.cpu.end(int64(write.Count()))
		r.rep.ElapsedSeconds = elapsed.Seconds()
		res := []Result{{Name: "write", OK: int64(write.Count()), Latency: write.Stats()}}
		for i, n := range obs {
			res = append(res, Result{Name: "lag " + n, OK: int64(lags[i].Count()), Expected: int64(write.Count()), Latency: lags[i].Stats()})
		}
		res = append(res, Result{Name: "lag max", OK: int64(lagMax.Count()), Expected: int64(write.Count()), Latency: lagMax.Stats()})
		r.rep.Results = append(r.rep.Results, res...)
		if n := stale.Load(); n > 0 {
			r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("%d polls were answered before their write (the node was ahead of the known latest_timestamp) and parked again", n))
		}
	}()

	var deadline time.Time
	if cfg.Duration > 0 {
		deadline = time.Now().Add(cfg.Duration)
	}
	sem := make(chan struct{}, len(obs))
	for w := int64(1); cfg.Count == 0 || w <= cfg.Count; w++ {
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			break
		}
		in := inst(w)
		t0 := time.Now()
		ans, tSend, tAck, err := r.replicateOnce(ctx, writeNode, obs, in, appid, latest, sem, &stale)
		elapsed += time.Since(t0)
		if err != nil {
			return err
		}
		r.registered = append(r.registered, in)
		write.Record(tAck.Sub(tSend))
		var worst time.Duration
		all := true
		for i, n := range obs {
			a := ans[i]
			switch {
			case a.err != nil:
				all = false
				if !errors.Is(a.err, errCanceled) {
					r.errs.add(errKey(a.err))
				}
			case a.at.IsZero():
				all = false
				r.errs.add("no_answer")
			case a.at.Before(tSend):
				all = false
				r.errs.add("early_answer")
			default:
				d := max(a.at.Sub(tAck), 0)
				lags[i].Record(d)
				worst = max(worst, d)
			}
			// The next poll starts from what this node now has.
			if l, err := latestOf(a.body, appid); err == nil {
				latest[n] = l
			} else if l, err := r.waitLatest(ctx, n, appid); err == nil {
				latest[n] = l
			}
		}
		if all {
			lagMax.Record(worst)
		}
		if ctx.Err() != nil {
			return errCanceled
		}
	}
	return nil
}

// replicateOnce parks one poll per observer, registers in on writeNode once
// they are parked and waits for the polls (bounded by --poll-timeout).
func (r *runner) replicateOnce(ctx context.Context, writeNode string, obs []string, in instance, appid string,
	latest map[string]int64, sem chan struct{}, stale *atomic.Int64) (ans []pollAnswer, tSend, tAck time.Time, err error) {
	cfg := r.cfg
	base, err := r.parkedBaseline(ctx, obs)
	if err != nil {
		return nil, tSend, tAck, err
	}
	ans = make([]pollAnswer, len(obs))
	want := make(map[string]int, len(obs))
	failedOn := make(map[string]*atomic.Int64, len(obs))
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	var changed atomic.Bool
	var wg sync.WaitGroup
	for i, n := range obs {
		want[n] = 1
		failedOn[n] = new(atomic.Int64)
		p := poller{node: n, appid: appid, hostname: "bench-repl-watcher", latest: latest[n],
			sem: sem, changed: &changed, stale: stale, failed: func() { failedOn[n].Add(1) }}
		wg.Go(func() { ans[i] = r.pollUntilAnswer(pctx, p) })
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	stop := func() { pcancel(); <-allDone }

	failed := func(n string) int { return int(failedOn[n].Load()) }
	if err := r.waitParked(ctx, base, want, failed, time.Millisecond); err != nil {
		stop()
		return ans, tSend, tAck, err
	}
	changed.Store(true)
	tSend = time.Now()
	_, cerr := r.c.call(ctx, r.c.registerReq(writeNode, in, cfg.Env, cfg.Zone, cfg.Region))
	tAck = time.Now()
	if cerr != nil {
		stop()
		if errors.Is(cerr, errCanceled) {
			return ans, tSend, tAck, cerr
		}
		return ans, tSend, tAck, fmt.Errorf("write on %s: %s", writeNode, errKey(cerr))
	}
	t := time.NewTimer(cfg.PollTimeout)
	defer t.Stop()
	select {
	case <-allDone:
	case <-t.C:
		stop()
	case <-ctx.Done():
		stop()
	}
	return ans, tSend, tAck, nil
}
