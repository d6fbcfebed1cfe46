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

// Metric the node exports for held long-polls (api package): a poll counts
// once its waiter is armed, so "gauge >= baseline + mine" means all of mine
// are parked and the next change must wake them.
const parkedMetric = "discovery_http_parked_polls"

// pollAnswer is what one parked poll got.
type pollAnswer struct {
	at   time.Time // when the code-0 answer was read; zero if none
	body []byte    // the answer, when kept
	err  error     // failure other than the round's cancellation
}

// poller is one watcher: a long-poll loop on one node and appid.
type poller struct {
	node, appid, hostname string
	latest                int64
	sem                   chan struct{} // bounds polls being sent at once
	changed               *atomic.Bool  // set just before the change is sent
	stale                 *atomic.Int64 // answers that predate the change
	failed                func()        // the poll failed and will not park again
}

// pollUntilAnswer runs p's polls request until the change answers it. Like
// kratos (spec 5.5) it re-polls at once on -304 (the hold ended before the
// change), and on a code-0 answer that arrives before the change is sent
// (the node's latest_timestamp was ahead of the one fetched, e.g. a
// replicated write still landing) it takes the answer's latest_timestamp and
// parks again. sem is released once each request is written, so parking
// thousands of polls does not overflow the node's accept queue.
func (r *runner) pollUntilAnswer(ctx context.Context, p poller) pollAnswer {
	for {
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			return pollAnswer{err: errCanceled}
		}
		req := pollsReq(p.node, p.appid, r.cfg.Env, p.hostname, p.latest)
		req.keep = true
		req.wrote = func() { <-p.sem }
		rep, err := r.c.do(ctx, req)
		switch {
		case err != nil:
			if !errors.Is(err, errCanceled) {
				p.failed()
			}
			return pollAnswer{err: err}
		case rep.code == codeOK:
			at := time.Now()
			if p.changed.Load() {
				return pollAnswer{at: at, body: rep.body}
			}
			l, err := latestOf(rep.body, p.appid)
			if err != nil {
				p.failed()
				return pollAnswer{err: &opError{"bad_body"}}
			}
			p.latest = l
			p.stale.Add(1)
		case rep.code == codeNotModified:
			// The hold ended before the change: park again.
		default:
			p.failed()
			return pollAnswer{err: &opError{strconv.Itoa(rep.code)}}
		}
	}
}

// parkedBaseline reads the parked-polls gauge of every node.
func (r *runner) parkedBaseline(ctx context.Context, nodes []string) (map[string]float64, error) {
	base := make(map[string]float64, len(nodes))
	for _, n := range nodes {
		v, err := r.c.metric(ctx, n, parkedMetric, "")
		if err != nil {
			return nil, err
		}
		base[n] = v
	}
	return base, nil
}

// waitParked waits until every node's parked gauge reaches base + want -
// failed (polls that failed will never park), bounded by --settle.
func (r *runner) waitParked(ctx context.Context, base map[string]float64, want map[string]int, failed func(string) int, pace time.Duration) error {
	deadline := time.Now().Add(r.cfg.Settle)
	for {
		done := true
		var status string
		for n, b := range base {
			v, err := r.c.metric(ctx, n, parkedMetric, "")
			if err != nil {
				return err
			}
			need := b + float64(want[n]-failed(n))
			if v < need {
				done = false
				status += fmt.Sprintf(" %s: %.0f of %.0f", n, v-b, need-b)
			}
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("polls not parked after --settle %s:%s", r.cfg.Settle, status)
		}
		if err := sleep(ctx, pace); err != nil {
			return err
		}
	}
}

// waitLatest fetches appid on node until it exists there (a write on
// another node may still be replicating) and returns its latest_timestamp.
func (r *runner) waitLatest(ctx context.Context, node, appid string) (int64, error) {
	deadline := time.Now().Add(r.cfg.Settle)
	for {
		rep, err := r.c.do(ctx, fetchReq(node, appid, r.cfg.Env))
		if err != nil {
			if errors.Is(err, errCanceled) {
				return 0, err
			}
			return 0, fmt.Errorf("fetch %s on %s: %s", appid, node, errKey(err))
		}
		if rep.code == codeOK {
			return latestOf(rep.body, "")
		}
		if rep.code != -404 {
			return 0, fmt.Errorf("fetch %s on %s: code %d", appid, node, rep.code)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s not visible on %s after --settle %s", appid, node, r.cfg.Settle)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// notify parks --pollers polls on the watch nodes (round-robin), makes one
// change on writeNode, and records for every poll the time from the
// change's answer to the poll's answer. Repeated --count times (or for
// --duration).
func (r *runner) notify(ctx context.Context, writeNode string, watch []string) error {
	cfg := r.cfg
	P := cfg.Pollers
	r.rep.Params["pollers"] = int64(P)
	if note, err := raiseNoFile(uint64(P + 2*cfg.Concurrency + 64)); err != nil {
		return fmt.Errorf("--pollers %d: %w", P, err)
	} else if note != "" {
		r.logf("%s", note)
	}
	appid := cfg.AppPrefix + ".notify"
	writer := instance{idx: 0, appid: appid, hostname: "bench-notify-writer"}
	reg := r.c.registerReq(writeNode, writer, cfg.Env, cfg.Zone, cfg.Region)
	if _, err := r.c.call(ctx, reg); err != nil {
		return fmt.Errorf("setup register on %s: %s", writeNode, errKey(err))
	}
	r.registered = append(r.registered, writer)

	var answered, expected int64
	var lat, change Histogram
	var elapsed time.Duration
	sent := make(map[string]int, len(watch)) // polls per address and round, as notifyRound spreads them
	for j := range P {
		sent[watch[j%len(watch)]]++
	}
	mem := newMemMeter(r.cpu, watch, sent)
	r.cpu.begin()
	defer func() {
		r.rep.CPU = r.cpu.end(answered)
		r.rep.Memory = mem.report()
		r.rep.ElapsedSeconds = elapsed.Seconds()
		r.rep.Results = append(r.rep.Results,
			Result{Name: cfg.Scenario, OK: answered, Expected: expected, Latency: lat.Stats()},
			Result{Name: "change (register)", OK: int64(change.Count()), Latency: change.Stats()},
		)
	}()

	var deadline time.Time
	if cfg.Duration > 0 {
		deadline = time.Now().Add(cfg.Duration)
	}
	for round := int64(0); cfg.Count == 0 || round < cfg.Count; round++ {
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			break
		}
		t0 := time.Now()
		st, err := r.notifyRound(ctx, reg, appid, watch, &lat, &change, mem.sample)
		elapsed += time.Since(t0)
		answered += st.answered
		expected += st.expected
		if err != nil {
			return err
		}
		r.logf("%s round %d: %d/%d polls answered, parked in %s", cfg.Scenario, round+1, st.answered, st.expected, st.park.Round(time.Millisecond))
		if st.stale > 0 {
			r.rep.Notes = append(r.rep.Notes, fmt.Sprintf("round %d: %d polls were answered before the change (the node was ahead of the fetched latest_timestamp) and parked again", round+1, st.stale))
		}
	}
	return nil
}

type roundStats struct {
	answered, expected int64
	stale              int64 // answers before the change, re-polled
	park               time.Duration
}

// notifyRound parks the polls of one round, makes the change and times the
// answers; parked is called once they are parked, before the change, with
// the count of polls that failed, per address.
func (r *runner) notifyRound(ctx context.Context, change request, appid string, watch []string, lat, changeLat *Histogram, parked func(failed func(node string) int)) (roundStats, error) {
	cfg := r.cfg
	var st roundStats
	latest := make(map[string]int64, len(watch))
	for _, n := range watch {
		l, err := r.waitLatest(ctx, n, appid)
		if err != nil {
			return st, err
		}
		latest[n] = l
	}
	base, err := r.parkedBaseline(ctx, watch)
	if err != nil {
		return st, err
	}

	P := cfg.Pollers
	want := make(map[string]int, len(watch))
	failedOn := make(map[string]*atomic.Int64, len(watch))
	for _, n := range watch {
		failedOn[n] = new(atomic.Int64)
	}
	answers := make([]pollAnswer, P)
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	sem := make(chan struct{}, cfg.Concurrency)
	var changed atomic.Bool
	var stale atomic.Int64
	var wg sync.WaitGroup
	tPark := time.Now()
	for j := range P {
		n := watch[j%len(watch)]
		want[n]++
		p := poller{node: n, appid: appid, hostname: "bench-watcher-" + strconv.Itoa(j), latest: latest[n],
			sem: sem, changed: &changed, stale: &stale, failed: func() { failedOn[n].Add(1) }}
		wg.Go(func() { answers[j] = r.pollUntilAnswer(pctx, p) })
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	stop := func() { pcancel(); <-allDone }

	failed := func(n string) int { return int(failedOn[n].Load()) }
	if err := r.waitParked(ctx, base, want, failed, 20*time.Millisecond); err != nil {
		stop()
		r.tallyFailures(answers)
		return st, err
	}
	st.park = time.Since(tPark)
	st.stale = stale.Load()
	parked(failed)

	changed.Store(true)
	var tSend, tAck time.Time
	var cerr error
	if cfg.ChangeExe != "" {
		tSend, tAck, cerr = changeByChild(ctx, cfg.ChangeExe, change)
	} else {
		tSend = time.Now()
		_, cerr = r.c.call(ctx, change)
		tAck = time.Now()
	}
	if cerr != nil {
		stop()
		r.tallyFailures(answers)
		if errors.Is(cerr, errCanceled) {
			return st, cerr
		}
		return st, fmt.Errorf("change (register on %s): %s", change.url, errKey(cerr))
	}
	changeLat.Record(tAck.Sub(tSend))

	// Every poll must answer within one poll timeout of the change.
	t := time.NewTimer(cfg.PollTimeout)
	select {
	case <-allDone:
	case <-t.C:
		stop()
	case <-ctx.Done():
		stop()
	}
	t.Stop()
	for _, a := range answers {
		switch {
		case a.err != nil && !errors.Is(a.err, errCanceled):
			r.errs.add(errKey(a.err)) // failed before or after the change
		case a.at.IsZero():
			st.expected++
			if ctx.Err() == nil {
				r.errs.add("no_answer")
			}
		case a.at.Before(tSend):
			st.expected++
			r.errs.add("early_answer")
		default:
			st.expected++
			st.answered++
			lat.Record(a.at.Sub(tSend)) // from the change's send: an ack held back would not shorten it
		}
	}
	if ctx.Err() != nil {
		return st, errCanceled
	}
	return st, nil
}

// tallyFailures counts the polls that failed in a round that was aborted
// before its change.
func (r *runner) tallyFailures(answers []pollAnswer) {
	for _, a := range answers {
		if a.err != nil && !errors.Is(a.err, errCanceled) {
			r.errs.add(errKey(a.err))
		}
	}
}
