package syncup

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/discovery-go/discovery/api/wire"
)

// outOp is one op on its way to one or more links. The same value sits in
// the queue of every link it was put on (ops are never modified once
// built), so its wire form is encoded once, by the first sender that
// needs it, and shared.
type outOp struct {
	Op
	enq  time.Time // when it was queued (lag metric)
	once sync.Once
	wire []byte
}

func newOutOp(op Op) *outOp { return &outOp{Op: op, enq: time.Now()} }

func (o *outOp) json() []byte {
	o.once.Do(func() {
		// Encoded into a pooled buffer and copied once: appending to nil
		// grew the slice four times per op.
		bp := getBuf()
		*bp = wire.AppendOp((*bp)[:0], &o.Op)
		o.wire = bytes.Clone(*bp)
		putBuf(bp)
	})
	return o.wire
}

// link is the replication link to one target: a same-zone member (by
// gossip name) or one remote zone (then its address rotates over that
// zone's nodes). Each has its own bounded queue and one sender goroutine,
// so a slow or dead target never delays another, and an enqueue never
// blocks the caller: a full queue drops the op and counts it
// (anti-entropy repairs it later).
//
// The sender goroutine owns ops, body and bo; everything else is safe for
// concurrent use.
type link struct {
	r    *replicator
	name string // gossip node name, or "zone:<name>"
	zone string // non-empty for a remote-zone link

	addr atomic.Pointer[string] // current HTTP host:port
	q    chan *outOp
	// pending counts ops enqueued and not yet acknowledged, failed or
	// dropped; it is raised before the op is visible in q, so "zero"
	// means nothing is on its way to this target.
	pending atomic.Int64
	failing atomic.Bool // last request failed (node list: LOST)
	// For the admin status: ops acknowledged and failed, and the lag of
	// the last acknowledged batch's oldest op (µs).
	acked, failedOps atomic.Uint64
	lastLag          atomic.Int64

	idleMu sync.Mutex      // guards idleCh
	idleCh []chan struct{} // closed when pending next reaches zero

	ctx    context.Context // cancelled when the link is removed or on a hard stop
	cancel context.CancelFunc
	drain  chan struct{} // closed at shutdown: exit once the queue is empty

	// rotate, for zone links, moves to the next candidate node after a
	// failure.
	rotate func()
	// tr reaches the target (the replicator's transport, or a legacy
	// node's); raw is its RawReplicator capability, nil without it.
	tr  Transport
	raw RawReplicator
	obs linkObserver

	ops  []Op
	body []byte
	bo   *backoff.ExponentialBackOff
}

// linkObserver hears of a link's results; both optional, called from
// its sender goroutine.
type linkObserver struct {
	results   func(ok, failed int) // ops answered (any discovery code but -400/-500) / not
	recovered func()               // a request succeeded after failures
}

func (r *replicator) newLink(name, zone, addr string) *link {
	ctx, cancel := context.WithCancel(r.ctx)
	l := &link{
		r: r, name: name, zone: zone, tr: r.tr, raw: r.raw,
		q:      make(chan *outOp, r.cfg.QueueSize),
		ctx:    ctx,
		cancel: cancel,
		drain:  make(chan struct{}),
	}
	l.addr.Store(&addr)
	l.bo = backoff.NewExponentialBackOff()
	l.bo.InitialInterval = 50 * time.Millisecond
	l.bo.MaxInterval = r.cfg.RetryMaxBackoff
	return l
}

func (l *link) start() {
	l.r.wg.Add(1)
	go l.run()
}

func (l *link) getAddr() string { return *l.addr.Load() }

func (l *link) setAddr(a string) {
	if l.getAddr() != a {
		l.addr.Store(&a)
	}
}

// enqueue never blocks.
func (l *link) enqueue(op *outOp) {
	l.pending.Add(1)
	select {
	case l.q <- op:
	default:
		l.settle(1)
		l.r.met.dropped.WithLabelValues(dropOverflow).Inc()
	}
}

// settle accounts for n ops that left the link (acknowledged, failed or
// dropped) and wakes waitIdle when none is left.
func (l *link) settle(n int64) {
	if l.pending.Add(-n) != 0 {
		return
	}
	l.idleMu.Lock()
	chs := l.idleCh
	l.idleCh = nil
	l.idleMu.Unlock()
	for _, ch := range chs {
		close(ch)
	}
}

// waitIdle waits, at most d, until nothing is on its way to the target:
// anti-entropy compares digests only then, or it would "repair" what the
// replication stream is delivering anyway.
func (l *link) waitIdle(ctx context.Context, d time.Duration) {
	ch := make(chan struct{})
	l.idleMu.Lock()
	l.idleCh = append(l.idleCh, ch)
	l.idleMu.Unlock()
	if l.pending.Load() == 0 {
		return // the waker may never come; ch is dropped at the next wake
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
	}
}

// stop removes the link: the sender stops (an in-flight request is
// aborted) and what is still queued is dropped. A target that comes back
// is repaired by anti-entropy.
func (l *link) stop() { l.cancel() }

func (l *link) dropAll(reason string) {
	for {
		select {
		case <-l.q:
			l.settle(1)
			l.r.met.dropped.WithLabelValues(reason).Inc()
		default:
			return
		}
	}
}

func (l *link) run() {
	defer l.r.wg.Done()
	defer func() {
		// Removed (or hard stop): what is still queued is dropped here, by
		// the owner of the queue. Ops enqueued later (a fan-out that raced
		// with the removal) are dropped with the link.
		if l.ctx.Err() != nil {
			reason := dropPeerGone
			if l.r.stopping() {
				reason = dropShutdown
			}
			l.dropAll(reason)
		}
	}()
	size := l.r.cfg.BatchSize
	batch := make([]*outOp, 0, size)
	var linger *time.Timer
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		select {
		case q := <-l.q:
			batch = append(batch, q)
		case <-l.ctx.Done():
			return
		case <-l.drain:
			select {
			case q := <-l.q:
				batch = append(batch, q)
			default:
				return
			}
		}
		batch = l.fill(batch, size)
		if d := l.r.cfg.RenewLinger; d > 0 && len(batch) < size && onlyRenews(batch) {
			if linger == nil {
				linger = time.NewTimer(d)
			} else {
				linger.Reset(d)
			}
			batch = l.linger(batch, size, linger.C)
			linger.Stop()
		}
		l.r.met.batchOps.Observe(float64(len(batch)))
		l.send(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// fill adds what is queued, without waiting, up to size ops.
func (l *link) fill(batch []*outOp, size int) []*outOp {
	for len(batch) < size {
		select {
		case q := <-l.q:
			batch = append(batch, q)
		default:
			return batch
		}
	}
	return batch
}

// linger adds ops as they arrive until size, the timer, an op that is not
// a renew (it goes at once, with what is queued behind it), or a stop.
func (l *link) linger(batch []*outOp, size int, timer <-chan time.Time) []*outOp {
	for len(batch) < size {
		select {
		case q := <-l.q:
			batch = append(batch, q)
			if q.Kind != OpRenew {
				return l.fill(batch, size)
			}
		case <-timer:
			return batch
		case <-l.drain:
			return l.fill(batch, size)
		case <-l.ctx.Done():
			return batch // send fails at once and settles the batch
		}
	}
	return batch
}

func onlyRenews(batch []*outOp) bool {
	for _, q := range batch {
		if q.Kind != OpRenew {
			return false
		}
	}
	return true
}

// send delivers one batch, retrying with exponential backoff until it is
// acknowledged, the link is removed (membership declared the target dead)
// or the cluster stops. Each attempt is bounded by peer_timeout. A batch
// the target refuses as a whole is split in halves.
func (l *link) send(batch []*outOp) {
	r := l.r
	ops := l.ops[:0]
	for _, q := range batch {
		ops = append(ops, q.Op)
	}
	req := &ReplicateRequest{From: r.from, Ops: ops}
	// With a transport that takes encoded bodies, the body is the ops'
	// shared encodings, framed; otherwise the transport gets the ops.
	var body []byte
	if l.raw != nil {
		b := wire.AppendReplicateHead(l.body[:0], r.from)
		for i, q := range batch {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, q.json()...)
		}
		body = wire.AppendReplicateTail(b)
	}
	resp, err := l.deliver(req, body)
	clear(ops) // drop references to the ops for the GC
	l.ops = ops[:0]
	if cap(body) <= 4<<20 { // keep the buffer unless a huge batch grew it
		l.body = body[:0]
	}
	n := int64(len(batch))
	var perm *PermanentError
	if errors.As(err, &perm) && len(batch) > 1 {
		// Refused as a whole: over the target's max_batch_ops or
		// max_body_bytes (limits may differ between nodes), or one op it
		// cannot take. Halves meet its limits, and a bad op costs only
		// itself. Order is kept; each half settles its own pending count.
		mid := len(batch) / 2
		l.send(batch[:mid])
		l.send(batch[mid:])
		return
	}
	if err != nil {
		switch {
		case errors.As(err, &perm):
			r.met.failed.Add(float64(n))
			r.log.Warn("peer rejected replication batch", "peer", l.name, "ops", n, "err", err)
		case r.stopping():
			r.met.dropped.WithLabelValues(dropShutdown).Add(float64(n))
		default:
			r.met.dropped.WithLabelValues(dropPeerGone).Add(float64(n))
		}
		if l.obs.results != nil {
			l.obs.results(0, int(n))
		}
		l.failedOps.Add(uint64(n))
		l.settle(n)
		return
	}
	now := time.Now()
	ok := 0
	for i, res := range resp.Results {
		q := batch[i]
		r.met.lag.Observe(now.Sub(q.enq).Seconds())
		if res.Code != CodeInvalid && res.Code != CodeServerFail {
			ok++
		}
		r.react(l, &q.Op, res)
	}
	if l.obs.results != nil {
		l.obs.results(ok, int(n)-ok)
	}
	l.acked.Add(uint64(ok))
	l.failedOps.Add(uint64(int(n) - ok))
	if len(batch) > 0 {
		l.lastLag.Store(now.Sub(batch[0].enq).Microseconds())
	}
	l.settle(n)
}

// deliver sends req until it is acknowledged, refused for good (a
// *PermanentError) or the link stops; between failures it waits with
// exponential backoff. The first attempt needs no timer or allocation
// beyond the request itself.
func (l *link) deliver(req *ReplicateRequest, body []byte) (*ReplicateResponse, error) {
	l.bo.Reset()
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		resp, err := l.attempt(req, body)
		if err == nil {
			return resp, nil
		}
		var perm *PermanentError
		if errors.As(err, &perm) {
			return nil, err
		}
		if l.ctx.Err() != nil {
			return nil, l.ctx.Err()
		}
		select {
		case <-l.drain:
			// Shutting down and the target fails: stop holding the drain
			// for it (up to shutdown_timeout). What it misses, its startup
			// sync, anti-entropy or, for a legacy node, the renew
			// handshake and our pull bring back.
			return nil, err
		default:
		}
		wait := l.bo.NextBackOff()
		if t == nil {
			t = time.NewTimer(wait)
		} else {
			t.Reset(wait)
		}
		select {
		case <-t.C:
		case <-l.ctx.Done():
			return nil, l.ctx.Err()
		}
	}
}

// attempt is one request, bounded by peer_timeout.
func (l *link) attempt(req *ReplicateRequest, body []byte) (*ReplicateResponse, error) {
	r := l.r
	ctx, cancel := context.WithTimeout(l.ctx, r.cfg.PeerTimeout)
	defer cancel()
	addr := l.getAddr()
	var resp *ReplicateResponse
	var err error
	if body != nil {
		resp, err = l.raw.ReplicateRaw(ctx, addr, body)
	} else {
		resp, err = l.tr.Replicate(ctx, addr, req)
	}
	if err == nil && len(resp.Results) != len(req.Ops) {
		err = &PermanentError{Err: errors.New("peer answered a wrong number of results")}
	}
	if err != nil {
		l.failing.Store(true)
		if l.rotate != nil {
			l.rotate()
		}
		r.log.Debug("replicate failed", "peer", l.name, "addr", addr, "ops", len(req.Ops), "err", err)
		return nil, err
	}
	if l.failing.Swap(false) && l.obs.recovered != nil {
		l.obs.recovered()
	}
	return resp, nil
}
