package syncup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/discovery-go/discovery/registry"
)

// Register forwards a register this node accepted from a client (or, with
// fromZone, from another zone): to every same-zone peer as a replicated op,
// and, when fromZone is false, to one node per other zone (spec 7.2). ins
// is the stored copy (its dirty_timestamp travels with it). Never blocks.
func (c *Cluster) Register(ins registry.Instance, fromZone bool) {
	c.forward(Op{Kind: OpRegister, Instance: cloneInstance(ins)}, !fromZone)
}

// Renew forwards a renew with the sender's dirty_timestamp, so peers answer
// the -404/-409 handshake (spec 7.3). Cross-zone only for instances of our
// own zone. Never blocks.
func (c *Cluster) Renew(ins registry.Instance, fromZone bool) {
	k := ins.Key()
	c.forward(Op{Kind: OpRenew, Key: &k, DirtyTimestamp: ins.DirtyTimestamp}, !fromZone && k.Zone == c.self.Zone)
}

// Cancel forwards a cancel carrying the tombstone time, so a cancel
// replayed late never removes a newer registration. Cross-zone only for
// instances of our own zone. Never blocks.
func (c *Cluster) Cancel(t registry.Tombstone, fromZone bool) {
	k := t.Key
	at := t.At
	if at <= 0 {
		at = time.Now().UnixNano()
	}
	c.forward(Op{Kind: OpCancel, Key: &k, DirtyTimestamp: at}, !fromZone && k.Zone == c.self.Zone)
}

// Set forwards an accepted set with its set_timestamp, so every node stamps
// the same value. req.SetTimestamp should be the value the local registry
// used; 0 is replaced by now. Never blocks.
func (c *Cluster) Set(req registry.SetRequest, fromZone bool) {
	s := setOpFrom(req)
	if s.SetTimestamp <= 0 {
		s.SetTimestamp = time.Now().UnixNano()
	}
	c.forward(Op{Kind: OpSet, Set: s}, !fromZone)
}

// forward queues op for every same-zone peer, marked replicated, and, when
// crossZone, for one node per other zone as an original from-zone write
// (spec 7.2). Once Shutdown closed the Replicator it does nothing. The
// check and the enqueues happen under one read lock, so Shutdown's drain
// sees every op accepted before it closed.
func (c *Cluster) forward(op Op, crossZone bool) {
	same := newOutOp(op)
	same.Replication, same.FromZone = true, true
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return
	}
	for _, p := range c.peers {
		p.enqueue(same)
	}
	if !crossZone || len(c.zones) == 0 {
		return
	}
	cross := newOutOp(op)
	cross.Replication, cross.FromZone = false, true
	for _, p := range c.zones {
		p.enqueue(cross)
	}
}

// errBadRequest marks a payload a peer should not resend (HTTP 400).
var errBadRequest = errors.New("bad request")

// errNotReady refuses an anti-entropy round while the startup sync runs
// (HTTP 503, retried at the peer's next round): the sync brings the state,
// and the peer would otherwise push its whole registry beside it.
var errNotReady = errors.New("not ready: startup sync in progress")

// serveReplicate applies a batch from a peer, op by op. A replicated op is
// applied and never forwarded. An "original" op from another zone is
// applied and forwarded to our own zone only, marked replicated: it can
// therefore travel at most zone → zone → peer, and never back (spec 7.2).
func (c *Cluster) serveReplicate(_ context.Context, req *ReplicateRequest) (*ReplicateResponse, error) {
	if err := req.Validate(c.cfg.MaxBatchOps); err != nil {
		return nil, errors.Join(errBadRequest, err)
	}
	resp := &ReplicateResponse{Results: make([]OpResult, len(req.Ops))}
	for i := range req.Ops {
		c.met.countReceived(&req.Ops[i])
		resp.Results[i] = c.applyOp(&req.Ops[i])
	}
	return resp, nil
}

func (c *Cluster) applyOp(op *Op) OpResult {
	// An original write from another zone is forwarded inside our zone
	// only (forward with crossZone false).
	forward := !op.Replication
	switch op.Kind {
	case OpRegister:
		stored, applied, err := c.reg.Register(*op.Instance, op.Instance.LatestTimestamp)
		if err != nil {
			return errResult(err)
		}
		if forward {
			c.forward(Op{Kind: OpRegister, Instance: &stored}, false)
		}
		return OpResult{Code: CodeOK, Applied: applied}
	case OpImport:
		return OpResult{Code: CodeOK, Applied: c.importFresh(*op.Instance)}
	case OpRenew:
		ins, err := c.reg.Renew(*op.Key, true, op.DirtyTimestamp)
		switch {
		case err == nil:
			if forward {
				c.forward(Op{Kind: OpRenew, Key: op.Key, DirtyTimestamp: ins.DirtyTimestamp}, false)
			}
			return OpResult{Code: CodeOK}
		case errors.Is(err, registry.ErrConflict):
			return OpResult{Code: CodeConflict, Message: "receiver holds a newer copy", Instance: &ins}
		default:
			return errResult(err)
		}
	case OpCancel:
		if c.ownRecord(*op.Key, op.DirtyTimestamp) {
			return OpResult{Code: CodeOK}
		}
		t, err := c.reg.Cancel(*op.Key, op.DirtyTimestamp)
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return errResult(err)
		}
		if forward {
			if t.At == 0 {
				t = registry.Tombstone{Key: *op.Key, At: op.DirtyTimestamp}
			}
			c.forward(Op{Kind: OpCancel, Key: op.Key, DirtyTimestamp: t.At}, false)
		}
		if err != nil {
			return errResult(err)
		}
		return OpResult{Code: CodeOK, Applied: true}
	case OpSet:
		if _, err := c.reg.Set(setRequest(op.Set)); err != nil {
			return errResult(err)
		}
		if forward {
			c.forward(Op{Kind: OpSet, Set: op.Set}, false)
		}
		return OpResult{Code: CodeOK}
	}
	return OpResult{Code: CodeInvalid, Message: "unknown op"}
}

func errResult(err error) OpResult {
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return OpResult{Code: CodeNotFound, Message: err.Error()}
	case errors.Is(err, registry.ErrConflict):
		return OpResult{Code: CodeConflict, Message: err.Error()}
	case errors.Is(err, registry.ErrInvalid):
		return OpResult{Code: CodeInvalid, Message: err.Error()}
	}
	return OpResult{Code: CodeServerFail, Message: err.Error()}
}

// serveSnapshot streams the full state: instances, then tombstones.
func (c *Cluster) serveSnapshot(ctx context.Context, sink func(SnapshotItem) error) error {
	s := c.reg.Snapshot()
	for i := range s.Instances {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := sink(SnapshotItem{Instance: &s.Instances[i]}); err != nil {
			return err
		}
	}
	for i := range s.Tombstones {
		if err := sink(SnapshotItem{Tombstone: &s.Tombstones[i]}); err != nil {
			return err
		}
	}
	return nil
}

// serveDigest compares the peer's digests with ours and answers the apps
// that differ (present on one side only, or different versions) with our
// state of them.
func (c *Cluster) serveDigest(_ context.Context, req *DigestRequest) (*DigestResponse, error) {
	if !c.Ready() {
		return nil, errNotReady
	}
	theirs := make(map[registry.AppKey]uint64, len(req.Digests))
	for i, d := range req.Digests {
		if d.Env == "" || d.AppID == "" {
			return nil, errors.Join(errBadRequest, fmt.Errorf("digests[%d]: env and appid are required", i))
		}
		theirs[registry.AppKey{Env: d.Env, AppID: d.AppID}] = d.Digest
	}
	diff := diffDigests(c.reg.AppDigests(), theirs)
	resp := &DigestResponse{Apps: diff}
	if len(diff) > 0 {
		resp.State = c.reg.AppState(diff)
	}
	if resp.Apps == nil {
		resp.Apps = []registry.AppKey{}
	}
	return resp, nil
}

func diffDigests(mine, theirs map[registry.AppKey]uint64) []registry.AppKey {
	var diff []registry.AppKey
	for k, d := range mine {
		if td, ok := theirs[k]; !ok || td != d {
			diff = append(diff, k)
		}
	}
	for k := range theirs {
		if _, ok := mine[k]; !ok {
			diff = append(diff, k)
		}
	}
	return diff
}
