package syncup

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/discovery-go/discovery/api/wire"
)

// outOp is one op on its way to one or more peers. The same value sits in
// the queue of every peer it was put on (ops are never modified once
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
	o.once.Do(func() { o.wire = wire.AppendOp(nil, &o.Op) })
	return o.wire
}

// peer is the replication link to one target: a same-zone member (by gossip
// name) or one remote zone (then addr rotates over that zone's nodes). Each
// has its own bounded queue and one sender goroutine, so a slow or dead
// peer never delays another, and an enqueue never blocks the caller: a full
// queue drops the op and counts it (anti-entropy repairs it later).
type peer struct {
	c    *Cluster
	name string // gossip node name, or "zone:<name>"
	zone string // non-empty for a remote-zone link

	addr atomic.Pointer[string] // current HTTP host:port
	q    chan *outOp
	// pending counts ops enqueued and not yet acked/failed/dropped; it is
	// raised before the op is visible in q, so "all pending zero" means the
	// whole cluster is quiet (tests use it).
	pending atomic.Int64
	failing atomic.Bool // last request to this peer failed (node list: LOST)

	ctx    context.Context // cancelled when the peer is removed or on hard stop
	cancel context.CancelFunc
	drain  chan struct{} // closed at shutdown: exit once the queue is empty

	// rotate, for zone links, moves to the next candidate node after a failure.
	rotate func()

	// Owned by the sender goroutine, reused for every batch.
	ops  []Op
	body []byte
	bo   *backoff.ExponentialBackOff
}

func (c *Cluster) newPeer(name, zone, addr string) *peer {
	ctx, cancel := context.WithCancel(c.peerCtx)
	p := &peer{
		c: c, name: name, zone: zone,
		q:      make(chan *outOp, c.cfg.QueueSize),
		ctx:    ctx,
		cancel: cancel,
		drain:  make(chan struct{}),
	}
	p.addr.Store(&addr)
	p.bo = backoff.NewExponentialBackOff()
	p.bo.InitialInterval = 50 * time.Millisecond
	p.bo.MaxInterval = c.cfg.RetryMaxBackoff
	return p
}

func (p *peer) start() {
	p.c.senders.Add(1)
	go p.run()
}

func (p *peer) getAddr() string { return *p.addr.Load() }

// enqueue never blocks.
func (p *peer) enqueue(op *outOp) {
	p.pending.Add(1)
	select {
	case p.q <- op:
	default:
		p.pending.Add(-1)
		p.c.met.dropped.WithLabelValues(dropOverflow).Inc()
	}
}

// stop removes the peer: the sender stops (an in-flight request is
// aborted) and what is still queued is dropped. A peer that comes back is
// repaired by anti-entropy.
func (p *peer) stop() { p.cancel() }

func (p *peer) dropAll(reason string) {
	for {
		select {
		case <-p.q:
			p.pending.Add(-1)
			p.c.met.dropped.WithLabelValues(reason).Inc()
		default:
			return
		}
	}
}

func (p *peer) run() {
	defer p.c.senders.Done()
	defer func() {
		// Removed (or hard stop): what is still queued is dropped here, by
		// the owner of the queue. Ops enqueued later (a fan-out that raced
		// with the removal) are dropped with the peer object.
		if p.ctx.Err() != nil {
			reason := dropPeerGone
			if p.c.stopping.Load() {
				reason = dropShutdown
			}
			p.dropAll(reason)
		}
	}()
	batch := make([]*outOp, 0, p.c.cfg.BatchSize)
	for {
		select {
		case q := <-p.q:
			batch = append(batch, q)
		case <-p.ctx.Done():
			return
		case <-p.drain:
			select {
			case q := <-p.q:
				batch = append(batch, q)
			default:
				return
			}
		}
	fill:
		for len(batch) < p.c.cfg.BatchSize {
			select {
			case q := <-p.q:
				batch = append(batch, q)
			default:
				break fill
			}
		}
		p.send(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// send delivers one batch, retrying with exponential backoff until it is
// acknowledged, the peer is removed (membership declared it dead) or the
// cluster stops. Each attempt is bounded by peer_timeout. A batch the peer
// refuses as a whole is split in halves.
func (p *peer) send(batch []*outOp) {
	c := p.c
	// Over HTTP the request body is the ops' shared encodings, framed; Ops
	// are what other transports (MemNetwork) take.
	ops := p.ops[:0]
	for _, q := range batch {
		ops = append(ops, q.Op)
	}
	req := &ReplicateRequest{From: c.name, Ops: ops}
	var body []byte
	if c.rawTr != nil {
		b := wire.AppendReplicateHead(p.body[:0], c.name)
		for i, q := range batch {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, q.json()...)
		}
		body = wire.AppendReplicateTail(b)
	}
	resp, err := p.deliver(req, body)
	clear(ops) // drop references to the ops for the GC
	p.ops = ops[:0]
	if cap(body) <= 4<<20 { // keep the buffer unless a huge batch grew it
		p.body = body[:0]
	}
	n := int64(len(batch))
	var perm *PermanentError
	if errors.As(err, &perm) && len(batch) > 1 {
		// Refused as a whole: over the peer's max_batch_ops or
		// max_body_bytes (limits may differ between nodes), or one op it
		// cannot take. Halves meet its limits, and a bad op costs only
		// itself. Order is kept; each half settles its own pending count.
		mid := len(batch) / 2
		p.send(batch[:mid])
		p.send(batch[mid:])
		return
	}
	if err != nil {
		switch {
		case errors.As(err, &perm):
			c.met.failed.Add(float64(n))
			c.log.Warn("peer rejected replication batch", "peer", p.name, "ops", n, "err", err)
		case c.stopping.Load():
			c.met.dropped.WithLabelValues(dropShutdown).Add(float64(n))
		default:
			c.met.dropped.WithLabelValues(dropPeerGone).Add(float64(n))
		}
		p.pending.Add(-n)
		return
	}
	now := time.Now()
	for i, r := range resp.Results {
		q := batch[i]
		c.met.lag.Observe(now.Sub(q.enq).Seconds())
		c.handleResult(p, &q.Op, r)
	}
	p.pending.Add(-n)
}

// deliver sends req until it is acknowledged, refused for good (a
// *PermanentError) or p stops; between failures it waits with exponential
// backoff. The first attempt needs no timer or allocation beyond the
// request itself.
func (p *peer) deliver(req *ReplicateRequest, body []byte) (*ReplicateResponse, error) {
	p.bo.Reset()
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		resp, err := p.attempt(req, body)
		if err == nil {
			return resp, nil
		}
		var perm *PermanentError
		if errors.As(err, &perm) {
			return nil, err
		}
		if p.ctx.Err() != nil {
			return nil, p.ctx.Err()
		}
		wait := p.bo.NextBackOff()
		if t == nil {
			t = time.NewTimer(wait)
		} else {
			t.Reset(wait)
		}
		select {
		case <-t.C:
		case <-p.ctx.Done():
			return nil, p.ctx.Err()
		}
	}
}

// attempt is one request, bounded by peer_timeout.
func (p *peer) attempt(req *ReplicateRequest, body []byte) (*ReplicateResponse, error) {
	c := p.c
	ctx, cancel := context.WithTimeout(p.ctx, c.cfg.PeerTimeout)
	defer cancel()
	addr := p.getAddr()
	var resp *ReplicateResponse
	var err error
	if body != nil {
		resp, err = c.rawTr.ReplicateRaw(ctx, addr, body)
	} else {
		resp, err = c.tr.Replicate(ctx, addr, req)
	}
	if err == nil && len(resp.Results) != len(req.Ops) {
		err = &PermanentError{Err: errors.New("peer answered a wrong number of results")}
	}
	if err != nil {
		p.failing.Store(true)
		if p.rotate != nil {
			p.rotate()
		}
		c.log.Debug("replicate failed", "peer", p.name, "addr", addr, "ops", len(req.Ops), "err", err)
		return nil, err
	}
	p.failing.Store(false)
	return resp, nil
}

// handleResult applies the renew handshake of spec 7.3 to one answer.
func (c *Cluster) handleResult(p *peer, op *Op, r OpResult) {
	switch r.Code {
	case CodeOK:
		c.met.sent.Inc()
	case CodeNotFound:
		c.met.sent.Inc()
		if op.Kind != OpRenew {
			return // cancel of an absent instance: the tombstone was recorded
		}
		// The peer lacks our copy or holds an older one: send the full copy
		// with the same flags, so a remote zone forwards it inside its zone.
		ins, ok := c.reg.Get(*op.Key)
		if !ok {
			return
		}
		c.met.handshakes.WithLabelValues("404").Inc()
		p.enqueue(newOutOp(Op{Kind: OpRegister, Replication: op.Replication, FromZone: op.FromZone, Instance: &ins}))
	case CodeConflict:
		c.met.sent.Inc()
		if op.Kind != OpRenew || r.Instance == nil {
			return
		}
		if r.Instance.Key().Validate() != nil || r.Instance.Key() != *op.Key {
			c.log.Warn("peer answered -409 with a different instance", "peer", p.name)
			return
		}
		c.met.handshakes.WithLabelValues("409").Inc()
		if c.ownRecord(*op.Key, r.Instance.DirtyTimestamp) {
			return
		}
		c.reg.Import(*r.Instance)
	default:
		c.met.failed.Inc()
		c.log.Debug("peer refused op", "peer", p.name, "op", op.Kind, "code", r.Code, "msg", r.Message)
	}
}
