package syncup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// replicator owns the outbound replication: one link per live same-zone
// member and one per remote zone, each with its queue and sender. forward
// never blocks.
type replicator struct {
	cfg  Config
	from string // this node's name, sent with every batch
	tr   Transport
	raw  RawReplicator // tr's capability, checked once; nil without it
	met  *metrics
	log  *slog.Logger
	// react applies the renew handshake (spec 7.3) to one op's answer;
	// called from the link's sender goroutine.
	react func(l *link, op *Op, r OpResult)

	ctx    context.Context // parent of every link's context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the senders
	halt   atomic.Bool    // shutdown began: failures count as "shutdown"

	mu     sync.RWMutex // guards peers, zones, legacy and closed
	peers  map[string]*link
	zones  map[string]*link // remote zones, ours and legacy ones, by link name
	legacy map[string]*link // same-zone legacy nodes, by link name
	closed bool             // no new op, no new link (Shutdown)
}

func newReplicator(cfg Config, from string, tr Transport, met *metrics, log *slog.Logger) *replicator {
	r := &replicator{cfg: cfg, from: from, tr: tr, met: met, log: log,
		peers: map[string]*link{}, zones: map[string]*link{}, legacy: map[string]*link{}}
	r.raw, _ = tr.(RawReplicator)
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r
}

func (r *replicator) stopping() bool { return r.halt.Load() }

// targets reports whether forward(_, crossZone) has anywhere to send an
// op, so callers skip building one on a node without peers. A link added
// just after is brought up to date by its startup sync and anti-entropy,
// as it is when added just after a forward.
func (r *replicator) targets(crossZone bool) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return !r.closed && (len(r.peers)+len(r.legacy) > 0 || crossZone && len(r.zones) > 0)
}

// forward queues op for every same-zone link, marked replicated, and, when
// crossZone, for every remote-zone link as an original from-zone write
// (spec 7.2). After close it does nothing. The check and the enqueues
// happen under one read lock, so the drain sees every op accepted before
// close.
func (r *replicator) forward(op Op, crossZone bool) {
	same := newOutOp(op)
	same.Replication, same.FromZone = true, true
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return
	}
	for _, l := range r.peers {
		l.enqueue(same)
	}
	for _, l := range r.legacy {
		l.enqueue(same)
	}
	if !crossZone || len(r.zones) == 0 {
		return
	}
	cross := newOutOp(op)
	cross.Replication, cross.FromZone = false, true
	for _, l := range r.zones {
		l.enqueue(cross)
	}
}

// reconcile makes the same-zone links those of live (name → HTTP addr)
// and returns the links it added.
func (r *replicator) reconcile(live map[string]string) []*link {
	var added []*link
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, l := range r.peers {
		if _, ok := live[name]; !ok {
			delete(r.peers, name)
			l.stop()
			r.log.Info("peer removed", "peer", name)
		}
	}
	for name, addr := range live {
		if l, ok := r.peers[name]; ok {
			l.setAddr(addr)
			continue
		}
		if r.closed {
			continue // shutting down: links may go, none is added
		}
		l := r.newLink(name, "", addr)
		r.peers[name] = l
		l.start()
		added = append(added, l)
		r.log.Info("peer added", "peer", name, "addr", addr)
	}
	return added
}

// addZone starts the link to one remote zone. Its address starts at a
// random seed and, after a failure, moves to the next of the seeds plus
// the zone's nodes learned (spec 7.1: configured lists are only seeds).
func (r *replicator) addZone(zone string, seeds []string, learned func() []string) {
	r.addZoneVia("zone:"+zone, zone, seeds, learned, nil)
}

// addZoneVia is addZone with the link's name and, when tr is set, its own
// transport (a zone of legacy nodes; learned nil: only the seeds).
func (r *replicator) addZoneVia(name, zone string, seeds []string, learned func() []string, tr Transport) {
	l := r.newLink(name, zone, seeds[rand.IntN(len(seeds))])
	if tr != nil {
		l.tr, l.raw = tr, nil
	}
	if learned == nil {
		learned = func() []string { return nil }
	}
	var mu sync.Mutex
	l.rotate = func() {
		mu.Lock()
		defer mu.Unlock()
		cands := slices.Clone(seeds)
		for _, h := range learned() {
			if !slices.Contains(cands, h) {
				cands = append(cands, h)
			}
		}
		slices.Sort(cands)
		next := cands[0]
		if i := slices.Index(cands, l.getAddr()); i >= 0 {
			next = cands[(i+1)%len(cands)]
		}
		l.setAddr(next)
	}
	r.mu.Lock()
	r.zones[name] = l
	r.mu.Unlock()
	l.start()
}

// addLegacy starts the link to one same-zone legacy node, through tr.
func (r *replicator) addLegacy(name, addr string, tr Transport, obs linkObserver) *link {
	l := r.newLink(name, "", addr)
	l.tr, l.raw, l.obs = tr, nil, obs
	r.mu.Lock()
	r.legacy[name] = l
	r.mu.Unlock()
	l.start()
	return l
}

// same returns the live same-zone links.
func (r *replicator) same() []*link {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*link, 0, len(r.peers))
	for _, l := range r.peers {
		out = append(out, l)
	}
	return out
}

// links returns every link, same-zone and remote-zone, by name.
func (r *replicator) links() []*link {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*link, 0, len(r.peers)+len(r.zones)+len(r.legacy))
	for _, l := range r.peers {
		out = append(out, l)
	}
	for _, l := range r.zones {
		out = append(out, l)
	}
	for _, l := range r.legacy {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b *link) int { return strings.Compare(a.name, b.name) })
	return out
}

func (r *replicator) peer(name string) *link {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.peers[name]
}

// failing reports whether the link to member name fails (LOST).
func (r *replicator) failing(name string) bool {
	l := r.peer(name)
	return l != nil && l.failing.Load()
}

// close stops taking ops and links. Closing under mu orders it after every
// enqueue in progress and before any later one, so the queues hold
// everything the drain must deliver.
func (r *replicator) close() {
	r.halt.Store(true)
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

// drain lets every sender deliver its queue and exit, until ctx ends.
func (r *replicator) drain(ctx context.Context) error {
	allDone := make(chan struct{})
	go func() { r.wg.Wait(); close(allDone) }()
	for _, l := range r.links() {
		close(l.drain)
	}
	select {
	case <-allDone:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain replication queues: %w", ctx.Err())
	}
}

// stop aborts every sender, waits for them and drops what is left.
func (r *replicator) stop() {
	r.halt.Store(true)
	r.cancel()
	r.wg.Wait()
	for _, l := range r.links() {
		l.dropAll(dropShutdown)
	}
}

// push sends ops to addr directly (anti-entropy) and counts those that
// changed the peer. A batch the peer refuses as a whole (its limits may be
// lower than ours) is sent again in halves.
func (r *replicator) push(ctx context.Context, addr string, ops []Op) (applied int, err error) {
	for start := 0; start < len(ops) && err == nil; start += r.cfg.BatchSize {
		var n int
		n, err = r.pushBatch(ctx, addr, ops[start:min(start+r.cfg.BatchSize, len(ops))])
		applied += n
	}
	return applied, err
}

func (r *replicator) pushBatch(ctx context.Context, addr string, ops []Op) (int, error) {
	res, err := r.tr.Replicate(ctx, addr, &ReplicateRequest{From: r.from, Ops: ops})
	var perm *PermanentError
	if errors.As(err, &perm) && len(ops) > 1 {
		mid := len(ops) / 2
		first, err := r.pushBatch(ctx, addr, ops[:mid])
		if err != nil {
			return first, err
		}
		second, err := r.pushBatch(ctx, addr, ops[mid:])
		return first + second, err
	}
	if err != nil {
		return 0, err
	}
	applied := 0
	for _, x := range res.Results {
		if x.Applied {
			applied++
		}
	}
	return applied, nil
}
