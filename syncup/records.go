package syncup

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/discovery-go/discovery/registry"
)

// records owns the infra.discovery records and decides which copies from
// peers are admitted:
//
//   - this node's own record: registered through the normal path (so it
//     replicates), renewed every renew_interval, registered again when the
//     registry lost it, cancelled at a graceful stop (spec 7.5). The node
//     is its authority: a peer's copy or tombstone of it is never applied
//     here (it comes from an earlier run, maybe on a clock ahead of ours,
//     maybe with another address); when it is newer than ours the node
//     registers itself again, newer, which replicates.
//   - the records of members that failed without leaving: evicted here at
//     once (no tombstone, not replicated: every survivor does the same),
//     and the evicted version remembered for stale_after, so a peer that
//     has not processed the death yet cannot hand it back.
//   - every copy a peer sends (startup sync, anti-entropy, import, a -409
//     answer): silent for longer than evict_after (due for eviction,
//     maybe evicted here already: evictions leave no tombstone, and nodes
//     scan at different times), an evicted dead record or our own record
//     are refused.
type records struct {
	self  Self
	key   registry.Key
	reg   Registry
	fwd   func(op Op, crossZone bool) // the replicator's forward
	live  func(k registry.Key) bool   // a live member owns record k
	stale time.Duration
	met   *metrics
	log   *slog.Logger

	leaving atomic.Bool // shutdown began: no re-registration

	mu      sync.Mutex // guards evicted
	evicted map[registry.Key]evictedRecord
}

// evictedRecord is the version of a dead member's record evicted here.
type evictedRecord struct {
	dirty int64
	at    time.Time
}

func newRecords(self Self, reg Registry, stale time.Duration, met *metrics, log *slog.Logger) *records {
	return &records{
		self: self, reg: reg, stale: stale, met: met, log: log,
		key:     registry.Key{Env: self.Env, AppID: SelfAppID, Zone: self.Zone, Hostname: self.Hostname},
		evicted: map[registry.Key]evictedRecord{},
	}
}

// register registers the node's own record, locally then replicated (spec
// 7.5.1). minDirty > 0 makes its version at least that (to win over a copy
// a peer holds).
func (s *records) register(minDirty int64) {
	ins := s.published()
	if minDirty > 0 {
		ins.DirtyTimestamp = max(time.Now().UnixNano(), minDirty)
	}
	stored, _, err := s.reg.Register(ins, 0)
	if err != nil {
		s.log.Error("self-registration failed", "err", err)
		return
	}
	s.fwd(Op{Kind: OpRegister, Instance: cloneInstance(stored)}, true)
}

// published is the own record as this node publishes it.
func (s *records) published() registry.Instance {
	addrs := []string{"http://" + s.self.HTTPAddr}
	if s.self.HTTPSAddr != "" {
		addrs = append(addrs, "https://"+s.self.HTTPSAddr)
	}
	return registry.Instance{
		Region: s.self.Region, Zone: s.self.Zone, Env: s.self.Env, AppID: SelfAppID,
		Hostname: s.self.Hostname, Addrs: addrs, Status: registry.StatusUp,
	}
}

// differs reports whether a stored copy of the own record is not what the
// node publishes (whatever path changed it).
func (s *records) differs(got registry.Instance) bool {
	want := s.published()
	return got.Region != want.Region || got.Status != want.Status || got.Version != want.Version ||
		!slices.Equal(got.Addrs, want.Addrs) || len(got.Metadata) != 0
}

// renew renews the own record (replicated), registers it again when the
// registry lost it (spec 7.5.2), and re-asserts it, newer, when the stored
// copy differs from what the node publishes.
func (s *records) renew() {
	ins, err := s.reg.Renew(s.key, false, 0)
	switch {
	case err == nil && s.differs(ins):
		s.log.Warn("own record differs from what this node publishes; registering it again", "addrs", ins.Addrs, "status", ins.Status)
		s.register(ins.DirtyTimestamp + 1)
	case err == nil:
		k := ins.Key()
		s.fwd(Op{Kind: OpRenew, Key: &k, DirtyTimestamp: ins.DirtyTimestamp}, true)
	case errors.Is(err, registry.ErrNotFound):
		s.register(0)
	default:
		s.log.Warn("self renew failed", "err", err)
	}
}

// renewLoop renews the own record every interval until ctx ends.
func (s *records) renewLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.renew()
		}
	}
}

// cancel cancels the own record (replicated) at a graceful stop (7.5.3).
func (s *records) cancel() {
	s.leaving.Store(true)
	t, err := s.reg.Cancel(s.key, 0)
	if err != nil {
		return
	}
	k := t.Key
	s.fwd(Op{Kind: OpCancel, Key: &k, DirtyTimestamp: t.At}, true)
}

// own reports whether k is the node's own record and then handles a
// peer's version of it (dirty_timestamp or tombstone time): never
// applied; when newer than ours, the node registers itself again, newer.
func (s *records) own(k registry.Key, dirty int64) bool {
	if k != s.key {
		return false
	}
	if s.leaving.Load() {
		return true
	}
	if cur, ok := s.reg.Get(k); !ok || dirty > cur.DirtyTimestamp {
		s.register(dirty + 1)
	}
	return true
}

// current returns the own record as stored (pushed to a peer that joins).
func (s *records) current() (registry.Instance, bool) { return s.reg.Get(s.key) }

// memberFailed handles a member gossip no longer lists. One that did not
// announce "leaving" crashed or was cut off: its infra.discovery record is
// evicted here so clients stop using it within seconds instead of 90-150 s
// (spec 7.1).
func (s *records) memberFailed(ev memberEvent, back func(name string) bool) {
	m, err := decodeMeta(ev.meta)
	if err != nil || m.Status == metaLeaving || s.leaving.Load() {
		return
	}
	k := registry.Key{Env: m.Env, AppID: SelfAppID, Zone: m.Zone, Hostname: m.Hostname}
	// Back already (a restarted node has a new gossip name but keeps its
	// hostname): the record is its own again.
	if back(ev.name) || s.live(k) {
		return
	}
	ins, ok := s.reg.Get(k)
	if !ok || !slices.Contains(ins.Addrs, "http://"+m.HTTPAddr) {
		return
	}
	if gone, err := s.reg.Evict(k); err == nil {
		s.mu.Lock()
		s.evicted[k] = evictedRecord{dirty: gone.DirtyTimestamp, at: time.Now()}
		s.mu.Unlock()
		s.met.evicted.Inc()
		s.log.Warn("node failed without leaving; evicted its infra.discovery record", "peer", ev.name, "hostname", m.Hostname, "addr", m.HTTPAddr)
	}
}

// evictedVersion reports whether ins is (at most) the version of a dead
// member's record evicted here within stale_after while no live member
// owns that record. A restarted node's record is newer and passes; so does
// the record of a member that is alive again (a healed partition).
func (s *records) evictedVersion(ins registry.Instance) bool {
	if ins.AppID != SelfAppID {
		return false
	}
	k := ins.Key()
	s.mu.Lock()
	for key, e := range s.evicted { // bounded by member churn within stale_after
		if time.Since(e.at) > s.stale {
			delete(s.evicted, key)
		}
	}
	e, ok := s.evicted[k]
	s.mu.Unlock()
	if !ok || ins.DirtyTimestamp > e.dirty {
		return false
	}
	if s.live(k) {
		s.mu.Lock()
		delete(s.evicted, k)
		s.mu.Unlock()
		return false
	}
	return true
}

// admit imports a peer's copy (all timestamps kept) unless it is refused
// (see records) and reports whether it changed our state.
func (s *records) admit(ins registry.Instance) bool {
	if ins.RenewTimestamp > 0 && time.Since(time.Unix(0, ins.RenewTimestamp)) > s.stale {
		return false
	}
	if s.evictedVersion(ins) || s.own(ins.Key(), ins.DirtyTimestamp) {
		return false
	}
	return s.reg.Import(ins)
}

// merge applies one instance or tombstone from a peer and reports whether
// it changed our state.
func (s *records) merge(it SnapshotItem) bool {
	switch {
	case it.Instance != nil:
		if it.Instance.Key().Validate() != nil {
			return false
		}
		return s.admit(*it.Instance)
	case it.Tombstone != nil:
		t := it.Tombstone
		if t.Key.Validate() != nil || t.At <= 0 || s.own(t.Key, t.At) {
			return false
		}
		_, err := s.reg.Cancel(t.Key, t.At)
		return err == nil
	}
	return false
}
