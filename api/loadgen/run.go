package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
)

// Run executes cfg (which must be valid) and returns its report; it never
// returns nil. A setup failure sets Report.Error; a cancelled ctx sets
// Report.Interrupted and keeps what was measured so far. Progress lines go
// to progress (may be io.Discard). Every goroutine Run starts has ended when
// it returns.
func Run(ctx context.Context, cfg Config, progress io.Writer) *Report {
	rep := &Report{
		Scenario:    cfg.Scenario,
		Nodes:       cfg.Nodes,
		Concurrency: cfg.Concurrency,
		Env:         cfg.Env,
		Zone:        cfg.Zone,
		Params:      map[string]int64{},
		Errors:      map[string]int64{},
	}
	if err := cfg.Validate(); err != nil {
		rep.Error = err.Error()
		return rep
	}
	idle := cfg.Concurrency + 8
	if cfg.Scenario == ScenarioNotify || cfg.Scenario == ScenarioCrossNotify {
		idle = max(idle, cfg.Pollers+8)
	}
	r := &runner{
		cfg:      cfg,
		c:        newClient(idle, cfg.Timeout, cfg.PollTimeout),
		progress: progress,
		rep:      rep,
		cpu:      newCPUMeter(cfg.Nodes),
	}
	defer r.c.close()

	var err error
	switch cfg.Scenario {
	case ScenarioRegister:
		err = r.register(ctx)
	case ScenarioRenew:
		err = r.renew(ctx)
	case ScenarioFetchs:
		err = r.fetchs(ctx)
	case ScenarioNotify:
		err = r.notify(ctx, cfg.Nodes[0], cfg.Nodes[:1])
	case ScenarioCrossNotify:
		err = r.notify(ctx, cfg.Nodes[0], cfg.Nodes[1:])
	case ScenarioReplication:
		err = r.replication(ctx)
	}
	if cfg.Cleanup && len(r.registered) > 0 {
		// Not timed; a fresh context so an interrupted run still cleans up,
		// bounded like every request.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Settle)
		if n, cerr := r.cleanup(cctx); cerr != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("cleanup: %v", cerr))
		} else {
			rep.Notes = append(rep.Notes, fmt.Sprintf("cleanup: cancelled %d instances", n))
		}
		cancel()
	}
	if ctx.Err() != nil {
		rep.Interrupted = true
	}
	switch {
	case err == nil, errors.Is(err, errCanceled) && ctx.Err() != nil:
	default:
		rep.Error = err.Error()
	}
	for k, v := range r.errs.snapshot() {
		rep.Errors[k] += v
	}
	return rep
}

// runner holds the state of one run.
type runner struct {
	cfg      Config
	c        *client
	progress io.Writer
	rep      *Report
	errs     errCounter
	// registered are the instances this run registered (for --cleanup).
	registered []instance
	// cpu samples the local nodes' and our own CPU around the timed phase.
	cpu *cpuMeter
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.progress, "bench: "+format+"\n", args...)
}

// appID returns the name of generated appid i.
func (r *runner) appID(i int) string {
	return r.cfg.AppPrefix + "." + strconv.Itoa(i)
}

// inst returns generated instance i (spread round-robin over the appids).
func (r *runner) inst(i int) instance {
	return instance{idx: i, appid: r.appID(i % r.cfg.AppIDs), hostname: "bench-" + strconv.Itoa(i)}
}

// node returns the node for operation seq (round-robin).
func (r *runner) node(seq int64) string {
	return r.cfg.Nodes[seq%int64(len(r.cfg.Nodes))]
}

// op is one operation; it returns nil, errCanceled or an error classified
// by errKey.
type op func(ctx context.Context, seq int64) error

// loadResult is what runOps measured.
type loadResult struct {
	hist    Histogram
	ok      int64
	elapsed time.Duration
	failed  int64
}

// runOps runs op with cfg.Concurrency workers until count operations have
// been started (count > 0), dur has passed (dur > 0) or ctx ends. Failures
// are counted in errs (when errs is nil the first failure ends the run and is
// returned). Operations cut by ctx are not counted.
func (r *runner) runOps(ctx context.Context, count int64, dur time.Duration, limit float64, errs *errCounter, fn op) (*loadResult, error) {
	var lim *rate.Limiter
	if limit > 0 {
		lim = rate.NewLimiter(rate.Limit(limit), max(1, int(limit/100)))
	}
	var deadline time.Time
	if dur > 0 {
		deadline = time.Now().Add(dur)
	}
	workers := r.cfg.Concurrency
	if count > 0 {
		workers = int(min(int64(workers), count))
	}
	hists := make([]Histogram, workers)
	oks := make([]int64, workers)
	var next, failed atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	start := time.Now()
	for w := range workers {
		g.Go(func() error {
			h := &hists[w]
			for {
				if !deadline.IsZero() && !time.Now().Before(deadline) {
					return nil
				}
				seq := next.Add(1) - 1
				if count > 0 && seq >= count {
					return nil
				}
				if lim != nil {
					if err := lim.Wait(gctx); err != nil {
						return nil //nolint:nilerr // ctx ended (or the wait would pass it): a normal end
					}
				}
				t0 := time.Now()
				err := fn(gctx, seq)
				d := time.Since(t0)
				switch {
				case err == nil:
					h.Record(d)
					oks[w]++
				case errors.Is(err, errCanceled) || gctx.Err() != nil:
					return nil //nolint:nilerr // the run's end, not a failure
				case errs == nil:
					return fmt.Errorf("operation %d: %s", seq, errKey(err))
				default:
					failed.Add(1)
					errs.add(errKey(err))
				}
			}
		})
	}
	err := g.Wait()
	res := &loadResult{elapsed: time.Since(start), failed: failed.Load()}
	for w := range workers {
		res.hist.Merge(&hists[w])
		res.ok += oks[w]
	}
	if err == nil && ctx.Err() != nil {
		err = errCanceled
	}
	return res, err
}

// timed turns a loadResult into the report's timed phase and a Result row.
func (r *runner) timed(name string, lr *loadResult) {
	r.rep.CPU = r.cpu.end(lr.ok)
	r.rep.ElapsedSeconds = lr.elapsed.Seconds()
	res := Result{Name: name, OK: lr.ok, Latency: lr.hist.Stats()}
	if lr.elapsed > 0 {
		res.OpsPerSec = float64(lr.ok) / lr.elapsed.Seconds()
	}
	r.rep.Results = append(r.rep.Results, res)
}

// registerAll registers instances 0..n-1 (setup, not timed). Any failure
// ends the setup.
func (r *runner) registerAll(ctx context.Context, n int) error {
	r.logf("setup: registering %d instances over %d appids", n, min(n, r.cfg.AppIDs))
	t0 := time.Now()
	lr, err := r.runOps(ctx, int64(n), 0, 0, nil, func(ctx context.Context, seq int64) error {
		in := r.inst(int(seq))
		_, err := r.c.call(ctx, r.c.registerReq(r.node(seq), in, r.cfg.Env, r.cfg.Zone, r.cfg.Region))
		return err
	})
	r.noteRegistered(0, n)
	if err != nil {
		return fmt.Errorf("setup register: %w", err)
	}
	r.logf("setup: registered %d instances in %s", lr.ok, time.Since(t0).Round(time.Millisecond))
	return r.waitReplicated(ctx)
}

func (r *runner) noteRegistered(from, to int) {
	for i := from; i < to; i++ {
		r.registered = append(r.registered, r.inst(i))
	}
}

// waitReplicated waits, when there are several nodes, until every node
// reports the same number of instances in the env (the writes of the setup
// have been replicated everywhere), bounded by --settle.
func (r *runner) waitReplicated(ctx context.Context) error {
	if len(r.cfg.Nodes) < 2 {
		return nil
	}
	match := `env="` + r.cfg.Env + `"`
	deadline := time.Now().Add(r.cfg.Settle)
	var last []float64
	for {
		last = last[:0]
		same := true
		for _, n := range r.cfg.Nodes {
			v, err := r.c.metric(ctx, n, "discovery_registry_instances", match)
			if err != nil {
				return fmt.Errorf("setup: wait for replication: %w", err)
			}
			same = same && (len(last) == 0 || v == last[0])
			last = append(last, v)
		}
		if same && last[0] >= float64(min(r.cfg.Instances, len(r.registered))) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("setup: instances per node still differ after --settle %s: %v", r.cfg.Settle, last)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// sleep waits d or until ctx ends (errCanceled). Used only to pace polling
// of a node's state, never to synchronise with our own goroutines.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return errCanceled
	}
}

// cleanup cancels every registered instance (not timed). -404 (already gone,
// e.g. a second cancel of a re-registered key) is not a failure.
func (r *runner) cleanup(ctx context.Context) (int64, error) {
	seen := make(map[instance]bool, len(r.registered))
	var list []instance
	for _, in := range r.registered {
		if !seen[in] {
			seen[in] = true
			list = append(list, in)
		}
	}
	r.logf("cleanup: cancelling %d instances", len(list))
	var errs errCounter
	lr, err := r.runOps(ctx, int64(len(list)), 0, 0, &errs, func(ctx context.Context, seq int64) error {
		rep, err := r.c.do(ctx, r.c.cancelReq(r.node(seq), list[seq], r.cfg.Env, r.cfg.Zone, r.cfg.Region))
		if err == nil && rep.code != codeOK && rep.code != -404 {
			return &opError{strconv.Itoa(rep.code)}
		}
		return err
	})
	if err != nil {
		return lr.ok, err
	}
	if e := errs.snapshot(); len(e) > 0 {
		return lr.ok, fmt.Errorf("%d cancels failed: %v", lr.failed, e)
	}
	return lr.ok, nil
}

// register: time POST register of Count requests cycling over the instances.
func (r *runner) register(ctx context.Context) error {
	cfg := r.cfg
	r.rep.Params["appids"] = int64(cfg.AppIDs)
	r.rep.Params["instances"] = int64(cfg.Instances)
	r.logf("register: %s", bound(cfg))
	r.cpu.begin()
	lr, err := r.runOps(ctx, cfg.Count, cfg.Duration, cfg.Rate, &r.errs, func(ctx context.Context, seq int64) error {
		in := r.inst(int(seq % int64(cfg.Instances)))
		_, err := r.c.call(ctx, r.c.registerReq(r.node(seq), in, cfg.Env, cfg.Zone, cfg.Region))
		return err
	})
	started := int(min(int64(cfg.Instances), lr.ok+lr.failed))
	r.noteRegistered(0, started)
	r.timed("register", lr)
	return err
}

// renew: register the instances, then time POST renew cycling over them.
func (r *runner) renew(ctx context.Context) error {
	cfg := r.cfg
	r.rep.Params["appids"] = int64(cfg.AppIDs)
	r.rep.Params["instances"] = int64(cfg.Instances)
	if err := r.registerAll(ctx, cfg.Instances); err != nil {
		return err
	}
	r.logf("renew: %s", bound(cfg))
	r.cpu.begin()
	lr, err := r.runOps(ctx, cfg.Count, cfg.Duration, cfg.Rate, &r.errs, func(ctx context.Context, seq int64) error {
		in := r.inst(int(seq % int64(cfg.Instances)))
		_, err := r.c.call(ctx, r.c.renewReq(r.node(seq), in, cfg.Env, cfg.Zone, cfg.Region))
		return err
	})
	r.timed("renew", lr)
	return err
}

// fetchs: register the instances, then time GET fetchs of --batch appids,
// rotating the window over all appids.
func (r *runner) fetchs(ctx context.Context) error {
	cfg := r.cfg
	r.rep.Params["appids"] = int64(cfg.AppIDs)
	r.rep.Params["instances"] = int64(cfg.Instances)
	r.rep.Params["batch"] = int64(cfg.Batch)
	if err := r.registerAll(ctx, cfg.Instances); err != nil {
		return err
	}
	// One query per window start, built once.
	queries := make([]string, cfg.AppIDs)
	ids := make([]string, cfg.Batch)
	for s := range queries {
		for j := range ids {
			ids[j] = r.appID((s + j) % cfg.AppIDs)
		}
		queries[s] = fetchsQuery(ids, cfg.Env)
	}
	if err := r.checkFetchs(ctx, queries[0]); err != nil {
		return err
	}
	r.logf("fetchs: %s", bound(cfg))
	r.cpu.begin()
	lr, err := r.runOps(ctx, cfg.Count, cfg.Duration, cfg.Rate, &r.errs, func(ctx context.Context, seq int64) error {
		q := queries[(seq*int64(cfg.Batch))%int64(cfg.AppIDs)]
		_, err := r.c.call(ctx, request{method: "GET", url: "http://" + r.node(seq) + "/discovery/fetchs?" + q})
		return err
	})
	r.timed("fetchs", lr)
	return err
}

// checkFetchs makes sure (not timed) that every node answers a fetchs with
// all the requested appids, so the timed phase measures real answers.
func (r *runner) checkFetchs(ctx context.Context, query string) error {
	for _, n := range r.cfg.Nodes {
		rep, err := r.c.call(ctx, request{method: "GET", url: "http://" + n + "/discovery/fetchs?" + query, keep: true})
		if err != nil {
			return fmt.Errorf("setup fetchs on %s: %s", n, errKey(err))
		}
		var env struct {
			Data map[string]struct {
				Instances map[string][]struct{} `json:"instances"`
			} `json:"data"`
		}
		if err := json.Unmarshal(rep.body, &env); err != nil {
			return fmt.Errorf("setup fetchs on %s: %w", n, err)
		}
		if len(env.Data) != r.cfg.Batch {
			return fmt.Errorf("setup fetchs on %s: answered %d of %d appids", n, len(env.Data), r.cfg.Batch)
		}
	}
	return nil
}

func bound(cfg Config) string {
	switch {
	case cfg.Count > 0 && cfg.Duration > 0:
		return fmt.Sprintf("%d operations or %s, whichever comes first", cfg.Count, cfg.Duration)
	case cfg.Count > 0:
		return fmt.Sprintf("%d operations", cfg.Count)
	default:
		return fmt.Sprintf("for %s", cfg.Duration)
	}
}
