package syncup

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/hashicorp/memberlist"

	"github.com/discovery-go/discovery/registry"
)

// mlDelegate gives memberlist our node meta. Only NodeMeta carries data:
// instance data travels over HTTP, never in gossip.
type mlDelegate struct{ c *Cluster }

func (d *mlDelegate) NodeMeta(limit int) []byte {
	b := *d.c.metaEnc.Load()
	if len(b) > limit {
		// Cannot happen: New checked the size against MetaMaxSize.
		return nil
	}
	return b
}
func (d *mlDelegate) NotifyMsg([]byte)                           {}
func (d *mlDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *mlDelegate) LocalState(join bool) []byte                { return nil }
func (d *mlDelegate) MergeRemoteState(buf []byte, join bool)     {}

// memberEvent is a member gossip no longer lists (NotifyLeave). Joins and
// updates need no queue: the member table holds their result and the event
// loop reconciles the peer set from it.
type memberEvent struct {
	name string
	meta []byte
}

// mlEvents hands memberlist's callbacks to the event loop without blocking
// (memberlist calls them one at a time from its own goroutines).
type mlEvents struct{ c *Cluster }

func (e *mlEvents) NotifyJoin(n *memberlist.Node)   { e.c.pushEvent(false, n) }
func (e *mlEvents) NotifyLeave(n *memberlist.Node)  { e.c.pushEvent(true, n) }
func (e *mlEvents) NotifyUpdate(n *memberlist.Node) { e.c.pushEvent(false, n) }

// pushEvent runs inside memberlist's callback, where n may be read (later
// memberlist mutates it under its own lock, so Members() results must not
// be read concurrently). It updates our member table, queues a leave and
// wakes the event loop; it never blocks on it.
func (c *Cluster) pushEvent(leave bool, n *memberlist.Node) {
	if n.Name == c.name {
		return
	}
	raw := slices.Clone(n.Meta)
	meta, err := decodeMeta(raw)
	ms := memberState{meta: meta, metaErr: err, gossip: n.Address()}
	c.memMu.Lock()
	if leave {
		delete(c.members, n.Name)
		if err != nil || meta.Status != metaLeaving {
			// Failed, not left: it may be a partition. Keep its address to
			// reconnect to, as two halves that each declared the other dead
			// never gossip again on their own.
			c.failed[n.Name] = failedMember{addr: ms.gossip, at: time.Now()}
		}
	} else {
		c.members[n.Name] = ms
		// Back, possibly under a new name (a restart): its address no
		// longer needs retrying.
		for name, f := range c.failed {
			if name == n.Name || f.addr == ms.gossip {
				delete(c.failed, name)
			}
		}
	}
	c.memMu.Unlock()
	if leave {
		c.evMu.Lock()
		c.evq = append(c.evq, memberEvent{name: n.Name, meta: raw})
		c.evMu.Unlock()
	}
	select {
	case c.evSig <- struct{}{}:
	default:
	}
}

// failedMember is a member gossip declared dead without a leave.
type failedMember struct {
	addr string
	at   time.Time
}

// reconnectFor bounds how long a failed member's address is retried.
const reconnectFor = 30 * time.Minute

// reconnectFailed tries to join one failed member (a healed partition
// merges back; a crashed node just refuses the connection).
func (c *Cluster) reconnectFailed() {
	c.memMu.Lock()
	var cands []string
	for name, f := range c.failed {
		if time.Since(f.at) > reconnectFor {
			delete(c.failed, name)
			continue
		}
		cands = append(cands, f.addr)
	}
	c.memMu.Unlock()
	if len(cands) == 0 {
		return
	}
	addr := cands[rand.IntN(len(cands))]
	if _, err := c.ml.Join([]string{addr}); err == nil {
		c.log.Info("reconnected to a failed member's address", "gossip", addr)
	}
}

// memberState is what we know of one other live member.
type memberState struct {
	meta    nodeMeta
	metaErr error
	gossip  string
}

func (c *Cluster) memberTable() map[string]memberState {
	c.memMu.RLock()
	defer c.memMu.RUnlock()
	out := make(map[string]memberState, len(c.members))
	for k, v := range c.members {
		out[k] = v
	}
	return out
}

func (c *Cluster) eventLoop() {
	defer c.evLoop.Done()
	for {
		select {
		case <-c.evCtx.Done():
			return
		case <-c.evSig:
		}
		c.evMu.Lock()
		evs := c.evq
		c.evq = nil
		c.evMu.Unlock()
		for _, ev := range evs {
			c.onLeave(ev)
		}
		added := c.reconcile()
		for _, p := range added {
			c.onPeerJoined(p)
		}
	}
}

// reconcile makes the same-zone peer set equal to gossip's live members
// and returns the peers it added.
func (c *Cluster) reconcile() []*peer {
	live := map[string]nodeMeta{}
	for name, ms := range c.memberTable() {
		if ms.metaErr != nil {
			c.log.Debug("ignoring member with unreadable meta", "peer", name, "err", ms.metaErr)
			continue
		}
		if ms.meta.Zone != c.self.Zone {
			continue
		}
		live[name] = ms.meta
	}
	var added []*peer
	c.mu.Lock()
	for name, p := range c.peers {
		if _, ok := live[name]; !ok {
			delete(c.peers, name)
			p.stop()
			c.log.Info("peer removed", "peer", name)
		}
	}
	for name, m := range live {
		if p, ok := c.peers[name]; ok {
			if p.getAddr() != m.HTTPAddr {
				a := m.HTTPAddr
				p.addr.Store(&a)
			}
			continue
		}
		if c.closed {
			continue // shutting down: peers may go, none is added
		}
		p := c.newPeer(name, "", m.HTTPAddr)
		c.peers[name] = p
		p.start()
		added = append(added, p)
		c.log.Info("peer added", "peer", name, "addr", m.HTTPAddr)
	}
	c.mu.Unlock()
	return added
}

// onPeerJoined pushes our own record to the new peer at once (so its node
// list has us without waiting for a renew) and asks for an anti-entropy
// round with it and for a startup-sync retry.
func (c *Cluster) onPeerJoined(p *peer) {
	if ins, ok := c.reg.Get(c.selfKey()); ok {
		p.enqueue(newOutOp(Op{Kind: OpRegister, Replication: true, FromZone: true, Instance: &ins}))
	}
	select {
	case c.syncSig <- struct{}{}:
	default:
	}
	c.triggerAE(p.name)
}

// onLeave handles a member gossip no longer lists. A member that did not
// announce "leaving" crashed or was cut off: its infra.discovery record is
// evicted here (no tombstone, not replicated: every survivor does the same)
// so clients stop using it within seconds instead of 90-150 s (spec 7.1).
func (c *Cluster) onLeave(ev memberEvent) {
	m, err := decodeMeta(ev.meta)
	if err != nil || m.Status == metaLeaving || c.stopping.Load() {
		return
	}
	k := registry.Key{Env: m.Env, AppID: SelfAppID, Zone: m.Zone, Hostname: m.Hostname}
	// Back already (a restarted node has a new gossip name but keeps its
	// hostname): the record is its own again.
	c.memMu.RLock()
	_, back := c.members[ev.name]
	back = back || c.ownerLiveLocked(k)
	c.memMu.RUnlock()
	if back {
		return
	}
	ins, ok := c.reg.Get(k)
	if !ok || !slices.Contains(ins.Addrs, "http://"+m.HTTPAddr) {
		return
	}
	if gone, err := c.reg.Evict(k); err == nil {
		c.memMu.Lock()
		c.evicted[k] = evictedRecord{dirty: gone.DirtyTimestamp, at: time.Now()}
		c.memMu.Unlock()
		c.met.evicted.Inc()
		c.log.Warn("node failed without leaving; evicted its infra.discovery record", "peer", ev.name, "hostname", m.Hostname, "addr", m.HTTPAddr)
	}
}

// evictedRecord remembers the version of a dead member's infra.discovery
// record that onLeave evicted. Evictions leave no tombstone, so without it
// a peer that has not processed the death yet would hand the record back
// through anti-entropy.
type evictedRecord struct {
	dirty int64
	at    time.Time
}

// evictedVersion reports whether ins is (at most) the version of a dead
// member's record evicted here within the last staleAfter (later the copy
// is stale anyway) while no live member owns that record. A restarted
// node's record is newer and passes; so does the record of a member that
// is alive again (a healed partition), whatever its version.
func (c *Cluster) evictedVersion(ins registry.Instance) bool {
	if ins.AppID != SelfAppID {
		return false
	}
	k := ins.Key()
	c.memMu.Lock()
	defer c.memMu.Unlock()
	for key, e := range c.evicted { // bounded by member churn within staleAfter
		if time.Since(e.at) > c.staleAfter {
			delete(c.evicted, key)
		}
	}
	e, ok := c.evicted[k]
	if !ok || ins.DirtyTimestamp > e.dirty {
		return false
	}
	if c.ownerLiveLocked(k) {
		delete(c.evicted, k)
		return false
	}
	return true
}

// ownerLiveLocked reports whether a live member owns the infra.discovery
// record k (same env, zone and hostname). memMu must be held.
func (c *Cluster) ownerLiveLocked(k registry.Key) bool {
	for _, ms := range c.members {
		if m := ms.meta; ms.metaErr == nil && m.Env == k.Env && m.Zone == k.Zone && m.Hostname == k.Hostname {
			return true
		}
	}
	return false
}

// joinLoop joins the seeds with backoff, bounded by join_timeout, then
// rejoins every rejoin_interval while this node sees no other member.
func (c *Cluster) joinLoop() {
	defer c.loops.Done()
	ctx := c.loopCtx
	if len(c.cfg.Join) > 0 {
		jctx, cancel := context.WithTimeout(ctx, c.cfg.JoinTimeout)
		bo := backoff.NewExponentialBackOff()
		bo.InitialInterval = 100 * time.Millisecond
		bo.MaxInterval = time.Second
		_, err := backoff.Retry(jctx, func() (int, error) {
			if err := c.joinOnce(); err != nil {
				return 0, err
			}
			return 0, nil
		}, backoff.WithBackOff(bo), backoff.WithMaxElapsedTime(0))
		cancel()
		if err != nil {
			c.log.Warn("no seed reachable; starting alone and retrying in the background", "seeds", c.cfg.Join, "err", err)
		}
	}
	c.closeJoinDone()
	t := time.NewTicker(c.cfg.RejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if len(c.cfg.Join) > 0 && c.ml.NumMembers() <= 1 {
			if err := c.joinOnce(); err == nil {
				c.log.Info("rejoined the cluster", "members", c.ml.NumMembers())
				continue
			}
		}
		c.reconnectFailed()
	}
}

// joinOnce tries every seed once; joining only ourselves does not count.
func (c *Cluster) joinOnce() error {
	n, err := c.ml.Join(c.cfg.Join)
	if err != nil {
		return err
	}
	if c.ml.NumMembers() <= 1 {
		return errors.New("only reached ourselves")
	}
	c.log.Info("joined cluster", "contacted", n, "members", c.ml.NumMembers())
	return nil
}

func (c *Cluster) closeJoinDone() {
	select {
	case <-c.joinDone:
	default:
		close(c.joinDone)
	}
}

// Nodes lists the same-zone live members including self, one per HTTP
// address (spec 4.10.2): alive → NodeUp; leaving, or our link to it failing → NodeLost; dead or
// left members are not listed. Addr is the member's advertised HTTP
// host:port. The slice is a fresh copy, sorted by Addr.
//
// Why LOST is not memberlist's "suspect" (spec 4.10.2 asks for it):
// memberlist v0.7.0 keeps the state in the unexported nodeState.State
// (state.go), which shadows the embedded Node.State; suspectNode, aliveNode
// and deadNode write only the former, so the Node.State seen through
// Members() or any delegate is always StateAlive. The only reader,
// getNodeState, is unexported. No callback reports suspicion:
// EventDelegate has Join/Leave (dead or left) and Update (meta changed),
// PingDelegate.NotifyPingComplete fires on successful probes only,
// MergeDelegate only on a join's push/pull, and reading the *Node of
// Members() later races with memberlist's writes under its own lock.
// Observing suspicion would need our own prober (Memberlist.Ping) or
// decoding gossip ourselves; instead LOST is what this node sees for
// itself: an announced leave, or a failing replication link (the node's
// own renew every renew_interval keeps each link exercised). Gossip then
// declares a crashed member dead within seconds and it leaves the list.
func (c *Cluster) Nodes() []Member {
	out := []Member{c.selfMember()}
	if !c.started.Load() {
		return out
	}
	for name, ms := range c.memberTable() {
		m := ms.meta
		if ms.metaErr != nil || m.Zone != c.self.Zone {
			continue
		}
		mem := Member{
			Name: name, Addr: m.HTTPAddr, GossipAddr: ms.gossip, Zone: m.Zone, Env: m.Env,
			Hostname: m.Hostname, Version: m.Version, Leaving: m.Status == metaLeaving,
		}
		c.mu.RLock()
		p := c.peers[name]
		c.mu.RUnlock()
		if mem.Leaving || (p != nil && p.failing.Load()) {
			mem.Status = NodeLost
		}
		out = append(out, mem)
	}
	// One entry per address: a node restarted under a new gossip name is
	// two members until the old one is declared dead. Self first, then UP.
	slices.SortFunc(out, func(a, b Member) int {
		if d := strings.Compare(a.Addr, b.Addr); d != 0 {
			return d
		}
		if a.Self != b.Self {
			if a.Self {
				return -1
			}
			return 1
		}
		return a.Status - b.Status
	})
	return slices.CompactFunc(out, func(a, b Member) bool { return a.Addr == b.Addr })
}

func (c *Cluster) selfMember() Member {
	c.metaMu.Lock()
	leaving := c.meta.Status == metaLeaving
	c.metaMu.Unlock()
	m := Member{Name: c.name, Addr: c.self.HTTPAddr, GossipAddr: c.GossipAddr(), Zone: c.self.Zone, Env: c.self.Env,
		Hostname: c.self.Hostname, Version: c.self.Version, Leaving: leaving, Self: true}
	if leaving {
		m.Status = NodeLost
	}
	return m
}

// newZoneLink builds the link to one remote zone: its configured seeds,
// plus the nodes of that zone we learn from their infra.discovery records
// (spec 7.1: configured lists are only seeds). After a failure the link
// moves to the next candidate, so it sticks to one reachable node.
func (c *Cluster) newZoneLink(zone string, seeds []string) *peer {
	p := c.newPeer("zone:"+zone, zone, seeds[rand.IntN(len(seeds))])
	var mu sync.Mutex
	p.rotate = func() {
		mu.Lock()
		defer mu.Unlock()
		cands := slices.Clone(seeds)
		if info, err := c.reg.Fetch(c.self.Env, SelfAppID, zone, registry.StatusUp); err == nil {
			for _, ins := range info.Instances[zone] {
				for _, a := range ins.Addrs {
					if h, ok := strings.CutPrefix(a, "http://"); ok && !slices.Contains(cands, h) {
						cands = append(cands, h)
					}
				}
			}
		}
		slices.Sort(cands)
		cur := p.getAddr()
		next := cands[0]
		if i := slices.Index(cands, cur); i >= 0 {
			next = cands[(i+1)%len(cands)]
		}
		p.addr.Store(&next)
	}
	return p
}
