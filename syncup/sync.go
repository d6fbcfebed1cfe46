package syncup

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/discovery-go/discovery/registry"
)

// syncLoop is the startup sync (spec 7.4.1, 6.5): once the join phase is
// over, pull a full snapshot from a same-zone peer and merge it. The node
// turns ready when a sync from a ready peer succeeds; or, without
// init_protect, when there is no peer, when every peer is itself freshly
// started (a cold cluster: nothing better exists), or when sync_timeout
// passes. With init_protect only a sync from a ready peer or
// init_protect_timeout ends the phase.
func (c *Cluster) syncLoop() {
	defer c.loops.Done()
	ctx := c.loopCtx
	select {
	case <-c.joinDone:
	case <-ctx.Done():
		return
	}
	if c.Ready() {
		return
	}
	syncDeadline := time.Now().Add(c.cfg.SyncTimeout)
	protectDeadline := c.startAt.Add(c.cfg.InitProtectTimeout)
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 100 * time.Millisecond
	bo.MaxInterval = 2 * time.Second
	for {
		// The member table, not the peer set: it is filled by gossip
		// callbacks while Join runs, before the event loop adds peers.
		peers := c.sameZoneMembers()
		rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
		unready := 0
		for _, p := range peers {
			peerReady, n, err := c.syncFrom(ctx, p.addr)
			if err != nil {
				c.log.Warn("startup sync failed", "peer", p.name, "err", err)
				continue
			}
			if peerReady {
				c.markReady("synced from " + p.name + " (" + strconv.Itoa(n) + " items)")
				return
			}
			unready++
		}
		now := time.Now()
		if !c.cfg.InitProtect {
			switch {
			case len(peers) == 0:
				c.markReady("no peer to sync from")
				return
			case unready == len(peers):
				c.markReady("every peer is starting too (cold cluster)")
				return
			case now.After(syncDeadline):
				c.markReady("sync_timeout passed")
				return
			}
		} else if now.After(protectDeadline) {
			c.markReady("init_protect_timeout passed")
			return
		}
		wait := bo.NextBackOff()
		limit := syncDeadline
		if c.cfg.InitProtect {
			limit = protectDeadline
		}
		if left := time.Until(limit); left < wait {
			wait = max(left, time.Millisecond)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-c.syncSig:
		case <-t.C:
		}
		t.Stop()
	}
}

// syncFrom merges one peer's snapshot into the registry: instances with
// all their timestamps (Import keeps the newer copy), tombstones as cancels
// at their time (a newer registration here survives). Decoding and merging
// run in two goroutines, handing over batches, so a large snapshot costs
// about max(decode, merge) rather than their sum.
func (c *Cluster) syncFrom(ctx context.Context, addr string) (peerReady bool, items int, err error) {
	budget := max(c.cfg.SyncTimeout, c.cfg.PeerTimeout)
	sctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	const batch = 512
	batches := make(chan []SnapshotItem, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := range batches {
			for _, it := range b {
				c.mergeItem(it)
			}
		}
	}()
	buf := make([]SnapshotItem, 0, batch)
	peerReady, err = c.tr.Snapshot(sctx, addr, func(it SnapshotItem) error {
		items++
		buf = append(buf, it)
		if len(buf) == batch {
			select {
			case batches <- buf:
			case <-sctx.Done():
				return sctx.Err()
			}
			buf = make([]SnapshotItem, 0, batch)
		}
		return nil
	})
	if len(buf) > 0 && err == nil {
		batches <- buf
	}
	close(batches)
	wg.Wait()
	return peerReady, items, err
}

type memberRef struct{ name, addr string }

// sameZoneMembers lists the other live members of our zone.
func (c *Cluster) sameZoneMembers() []memberRef {
	var out []memberRef
	for name, ms := range c.memberTable() {
		if ms.metaErr == nil && ms.meta.Zone == c.self.Zone {
			out = append(out, memberRef{name, ms.meta.HTTPAddr})
		}
	}
	return out
}

// mergeItem applies one instance or tombstone from a peer and reports
// whether it changed our state.
func (c *Cluster) mergeItem(it SnapshotItem) bool {
	switch {
	case it.Instance != nil:
		if it.Instance.Key().Validate() != nil {
			return false
		}
		return c.importFresh(*it.Instance)
	case it.Tombstone != nil:
		if it.Tombstone.Key.Validate() != nil || it.Tombstone.At <= 0 || c.ownRecord(it.Tombstone.Key, it.Tombstone.At) {
			return false
		}
		_, err := c.reg.Cancel(it.Tombstone.Key, it.Tombstone.At)
		return err == nil
	}
	return false
}

// importFresh imports a peer's copy (all timestamps kept) unless it has
// been silent for longer than evict_after (due for eviction, and maybe
// evicted here already), or it is the record of a dead member evicted here.
func (c *Cluster) importFresh(ins registry.Instance) bool {
	if ins.RenewTimestamp > 0 && time.Since(time.Unix(0, ins.RenewTimestamp)) > c.staleAfter {
		return false
	}
	if c.evictedVersion(ins) || c.ownRecord(ins.Key(), ins.DirtyTimestamp) {
		return false
	}
	return c.reg.Import(ins)
}

// triggerAE asks for an anti-entropy round soon, preferably with peer.
// Triggers that arrive together produce one round.
func (c *Cluster) triggerAE(peer string) {
	c.aeMu.Lock()
	if peer != "" && !slices.Contains(c.aePref, peer) {
		c.aePref = append(c.aePref, peer)
	}
	c.aeMu.Unlock()
	select {
	case c.aeSig <- struct{}{}:
	default:
	}
}

// antiEntropyLoop compares digests with one random peer every
// anti_entropy_interval (±25 % jitter) and right after a member joins.
//
// Rounds start once the node is ready: until its startup sync is done all
// of its digests differ, so a round would copy the whole registry again
// beside the sync. Peers that joined meanwhile are remembered; the first
// round after readiness goes to them.
func (c *Cluster) antiEntropyLoop() {
	defer c.loops.Done()
	ctx := c.loopCtx
	select {
	case <-c.readyCh:
	case <-ctx.Done():
		return
	}
	for {
		iv := c.cfg.AntiEntropyInterval
		jitter := time.Duration(rand.Int64N(int64(iv)/2+1)) - iv/4
		t := time.NewTimer(iv + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-c.aeSig:
		}
		t.Stop()
		c.aeMu.Lock()
		pref := c.aePref
		c.aePref = nil
		c.aeMu.Unlock()
		peers := c.samePeers()
		if len(peers) == 0 {
			continue
		}
		var targets []*peer
		for _, p := range peers {
			if slices.Contains(pref, p.name) {
				targets = append(targets, p)
			}
		}
		if len(targets) == 0 {
			targets = []*peer{peers[rand.IntN(len(peers))]}
		}
		for _, p := range targets {
			if _, err := c.antiEntropyRound(ctx, p); err != nil {
				c.met.aeRounds.WithLabelValues("error").Inc()
				c.log.Debug("anti-entropy round failed", "peer", p.name, "err", err)
			} else {
				c.met.aeRounds.WithLabelValues("ok").Inc()
			}
		}
	}
}

// antiEntropyRound exchanges digests with p, merges p's state of the apps
// that differ, then pushes our state of those apps to p. Merging is by
// dirty_timestamp and tombstones on both sides, so after one round both
// hold the newest version of every differing instance. It returns the
// number of repairs (changes on either side).
func (c *Cluster) antiEntropyRound(ctx context.Context, p *peer) (int, error) {
	rctx, cancel := context.WithTimeout(ctx, max(c.cfg.SyncTimeout, c.cfg.PeerTimeout))
	defer cancel()
	mine := c.reg.AppDigests()
	req := &DigestRequest{From: c.name, Digests: make([]AppDigest, 0, len(mine))}
	for k, d := range mine {
		req.Digests = append(req.Digests, AppDigest{Env: k.Env, AppID: k.AppID, Digest: d})
	}
	resp, err := c.tr.Digest(rctx, p.getAddr(), req)
	if err != nil {
		return 0, err
	}
	if len(resp.Apps) == 0 {
		return 0, nil
	}
	repairs := 0
	for i := range resp.State.Instances {
		if c.mergeItem(SnapshotItem{Instance: &resp.State.Instances[i]}) {
			repairs++
		}
	}
	for i := range resp.State.Tombstones {
		if c.mergeItem(SnapshotItem{Tombstone: &resp.State.Tombstones[i]}) {
			repairs++
		}
	}
	apps := make([]registry.AppKey, 0, len(resp.Apps))
	for _, a := range resp.Apps {
		if a.Env != "" && a.AppID != "" {
			apps = append(apps, a)
		}
	}
	ours := c.reg.AppState(apps)
	ops := make([]Op, 0, len(ours.Instances)+len(ours.Tombstones))
	for i := range ours.Instances {
		ops = append(ops, Op{Kind: OpImport, Replication: true, FromZone: true, Instance: &ours.Instances[i]})
	}
	for _, t := range ours.Tombstones {
		k := t.Key
		ops = append(ops, Op{Kind: OpCancel, Replication: true, FromZone: true, Key: &k, DirtyTimestamp: t.At})
	}
	for start := 0; start < len(ops) && err == nil; start += c.cfg.BatchSize {
		var n int
		n, err = c.push(rctx, p.getAddr(), ops[start:min(start+c.cfg.BatchSize, len(ops))])
		repairs += n
	}
	c.met.aeRepairs.Add(float64(repairs))
	if repairs > 0 {
		c.log.Info("anti-entropy repaired divergence", "peer", p.name, "apps", len(apps), "repairs", repairs)
	}
	return repairs, err
}

// push sends ops to addr and counts those that changed the peer. A batch
// the peer refuses as a whole (its limits may be lower than ours) is sent
// again in halves.
func (c *Cluster) push(ctx context.Context, addr string, ops []Op) (applied int, err error) {
	var r *ReplicateResponse
	r, err = c.tr.Replicate(ctx, addr, &ReplicateRequest{From: c.name, Ops: ops})
	var perm *PermanentError
	if errors.As(err, &perm) && len(ops) > 1 {
		mid := len(ops) / 2
		first, err := c.push(ctx, addr, ops[:mid])
		if err != nil {
			return first, err
		}
		second, err := c.push(ctx, addr, ops[mid:])
		return first + second, err
	}
	if err != nil {
		return 0, err
	}
	for _, res := range r.Results {
		if res.Applied {
			applied++
		}
	}
	return applied, nil
}

func (c *Cluster) selfKey() registry.Key {
	return registry.Key{Env: c.self.Env, AppID: SelfAppID, Zone: c.self.Zone, Hostname: c.self.Hostname}
}

// registerSelf registers infra.discovery for this node through the normal
// path: local register, then replication (spec 7.5.1). minDirty > 0 makes
// the version at least that (to win over a copy a peer holds).
func (c *Cluster) registerSelf(minDirty int64) {
	ins := registry.Instance{
		Region: c.self.Region, Zone: c.self.Zone, Env: c.self.Env, AppID: SelfAppID,
		Hostname: c.self.Hostname, Addrs: []string{"http://" + c.self.HTTPAddr}, Status: registry.StatusUp,
	}
	if minDirty > 0 {
		ins.DirtyTimestamp = max(time.Now().UnixNano(), minDirty)
	}
	stored, _, err := c.reg.Register(ins, 0)
	if err != nil {
		c.log.Error("self-registration failed", "err", err)
		return
	}
	c.Register(stored, false)
}

// ownRecord handles a peer's version (dirty_timestamp, or tombstone time)
// of this node's own record and reports whether k is that record. The node
// is its authority, so a peer's copy or tombstone is never applied here
// (it comes from an earlier run, maybe on a clock ahead of ours, maybe
// with another address); when it is newer than ours the node registers
// itself again, newer, which replicates. Nothing while leaving.
func (c *Cluster) ownRecord(k registry.Key, dirty int64) bool {
	if k != c.selfKey() {
		return false
	}
	if c.stopping.Load() {
		return true
	}
	if cur, ok := c.reg.Get(k); !ok || dirty > cur.DirtyTimestamp {
		c.registerSelf(dirty + 1)
	}
	return true
}

// renewSelf renews the record (replicated) and re-registers it when the
// registry lost it (spec 7.5.2).
func (c *Cluster) renewSelf() {
	ins, err := c.reg.Renew(c.selfKey(), false, 0)
	switch {
	case err == nil:
		c.Renew(ins, false)
	case errors.Is(err, registry.ErrNotFound):
		c.registerSelf(0)
	default:
		c.log.Warn("self renew failed", "err", err)
	}
}

// cancelSelf cancels the record (replicated) at graceful shutdown (7.5.3).
func (c *Cluster) cancelSelf() {
	t, err := c.reg.Cancel(c.selfKey(), 0)
	if err != nil {
		return
	}
	c.Cancel(t, false)
}

func (c *Cluster) selfRegLoop() {
	defer c.loops.Done()
	t := time.NewTicker(c.cfg.RenewInterval)
	defer t.Stop()
	for {
		select {
		case <-c.loopCtx.Done():
			return
		case <-t.C:
			c.renewSelf()
		}
	}
}
