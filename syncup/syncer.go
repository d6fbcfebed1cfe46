package syncup

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/discovery-go/discovery/registry"
)

// syncer brings this node's registry in line with its peers, as one state
// machine run by one goroutine:
//
//	joining ──join phase over──▶ syncing ──synced (or gave up)──▶ ready
//	                               │  ▲ failed round: backoff, or a member joined
//	                               └──┘
//	ready: an anti-entropy round every anti_entropy_interval (±25 %), right
//	away when a member joins; after a failed round the next one comes after
//	a backoff (capped at the interval) instead.
//
// Syncing pulls a full snapshot from a same-zone peer and merges it. The
// node turns ready after a sync from a ready peer; or, without
// init_protect, when there is no peer, when every peer is starting too (a
// cold cluster: nothing better exists) or when sync_timeout passed; with
// init_protect only a sync from a ready peer or init_protect_timeout end
// the phase (spec 6.5, 7.4.1). Reads are gated until then.
//
// Anti-entropy exchanges per-app digests with one peer, merges the peer's
// state of the apps that differ and pushes ours. Rounds start only once the
// node is ready: before, all of its digests differ and a round would copy
// the whole registry beside the sync. Peers that joined meanwhile are
// remembered; the first rounds after readiness go to them.
type syncer struct {
	cfg     Config
	tr      Transport
	reg     Registry
	recs    *records
	repl    *replicator
	members func() []memberRef // live same-zone members (the member table)
	legacy  *legacy            // nil without legacy nodes
	met     *metrics
	log     *slog.Logger

	startAt time.Time
	ready   atomic.Bool
	readyCh chan struct{}

	mu   sync.Mutex // guards pref
	pref []string   // peers that joined: next rounds go to them

	syncSig chan struct{} // a member joined: retry the sync now
	aeSig   chan struct{} // a round is wanted now
}

// syncState is a state of the syncer.
type syncState int

const (
	stateJoining syncState = iota
	stateSyncing
	stateReady
)

func newSyncer(cfg Config, tr Transport, reg Registry, recs *records, repl *replicator, members func() []memberRef, met *metrics, log *slog.Logger) *syncer {
	return &syncer{
		cfg: cfg, tr: tr, reg: reg, recs: recs, repl: repl, members: members, met: met, log: log,
		readyCh: make(chan struct{}),
		syncSig: make(chan struct{}, 1),
		aeSig:   make(chan struct{}, 1),
	}
}

// Ready reports whether the startup sync / init-protect phase has ended.
func (s *syncer) Ready() bool { return s.ready.Load() }

func (s *syncer) markReady(why string) {
	if s.ready.CompareAndSwap(false, true) {
		close(s.readyCh)
		d := time.Since(s.startAt)
		s.met.syncDur.Set(d.Seconds())
		s.log.Info("node ready", "reason", why, "after", d)
	}
}

// peerJoined asks for a sync retry (while syncing) and a round with name.
// Triggers that arrive together produce one round.
func (s *syncer) peerJoined(name string) {
	select {
	case s.syncSig <- struct{}{}:
	default:
	}
	s.trigger(name)
}

// trigger asks for an anti-entropy round soon, preferably with peer.
func (s *syncer) trigger(peer string) {
	s.mu.Lock()
	if peer != "" && !slices.Contains(s.pref, peer) {
		s.pref = append(s.pref, peer)
	}
	s.mu.Unlock()
	select {
	case s.aeSig <- struct{}{}:
	default:
	}
}

// run is the state machine; it returns when ctx ends.
func (s *syncer) run(ctx context.Context, joined <-chan struct{}) {
	state := stateJoining
	if s.Ready() {
		state = stateReady
	}
	for ctx.Err() == nil {
		switch state {
		case stateJoining:
			select {
			case <-joined:
				state = stateSyncing
			case <-ctx.Done():
			}
		case stateSyncing:
			if s.syncPhase(ctx) {
				state = stateReady
			}
		case stateReady:
			s.antiEntropy(ctx)
		}
	}
}

// syncPhase tries sync rounds with backoff until the node is ready (true)
// or ctx ends (false).
func (s *syncer) syncPhase(ctx context.Context) bool {
	syncDeadline := time.Now().Add(s.cfg.SyncTimeout)
	protectDeadline := s.startAt.Add(s.cfg.InitProtectTimeout)
	limit := syncDeadline
	if s.cfg.InitProtect {
		limit = protectDeadline
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 100 * time.Millisecond
	bo.MaxInterval = 2 * time.Second
	for {
		if why, n, done := s.syncRound(ctx, syncDeadline, protectDeadline); done {
			s.markReady(why)
			if n >= bigSync {
				// The sync's decode buffers and batches are garbage now, as
				// much again as what was merged; returned at once, RSS is
				// the live data instead of twice it until the scavenger
				// catches up (1 000 000 instances: about 0.95 GB at ready).
				debug.FreeOSMemory()
			}
			return true
		}
		wait := min(bo.NextBackOff(), max(time.Until(limit), time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-s.syncSig:
		case <-t.C:
		}
		t.Stop()
	}
}

// bigSync is the snapshot size (items) from which the end of the startup
// sync returns its garbage to the OS.
const bigSync = 200_000

// syncRound tries every same-zone member once (in random order) and says
// whether the phase is over, why, and the items merged.
func (s *syncer) syncRound(ctx context.Context, syncDeadline, protectDeadline time.Time) (string, int, bool) {
	// The member table, not the links: it is filled by gossip callbacks
	// while Join runs, before links are added.
	peers := s.members()
	rand.Shuffle(len(peers), func(i, j int) { peers[i], peers[j] = peers[j], peers[i] })
	// Legacy nodes first: what they hold reaches this node only through
	// their fetch/all (a peer of ours may not have pulled it yet).
	legacyOK := true
	if s.legacy.configured() {
		legacyOK = s.legacy.pullPending(ctx) > 0
	}
	unready, items := 0, 0
	for _, p := range peers {
		peerReady, n, err := s.syncFrom(ctx, p.addr)
		items += n
		if err != nil {
			s.log.Warn("startup sync failed", "peer", p.name, "err", err)
			continue
		}
		if peerReady {
			return "synced from " + p.name + " (" + strconv.Itoa(n) + " items)", items, true
		}
		unready++
	}
	now := time.Now()
	switch {
	case s.cfg.InitProtect:
		if now.After(protectDeadline) {
			return "init_protect_timeout passed", items, true
		}
	case len(peers) == 0 && legacyOK && s.legacy.configured():
		return "synced from legacy nodes", items, true
	case len(peers) == 0 && legacyOK:
		return "no peer to sync from", items, true
	case len(peers) > 0 && unready == len(peers) && legacyOK:
		return "every peer is starting too (cold cluster)", items, true
	case now.After(syncDeadline):
		return "sync_timeout passed", items, true
	}
	return "", items, false
}

// syncFrom merges one peer's snapshot into the registry: instances with
// all their timestamps (Import keeps the newer copy), tombstones as cancels
// at their time (a newer registration here survives). Decoding and merging
// run in two goroutines, handing over batches, so a large snapshot costs
// about max(decode, merge) rather than their sum.
func (s *syncer) syncFrom(ctx context.Context, addr string) (peerReady bool, items int, err error) {
	// A snapshot that keeps arriving is not cut at sync_timeout (1 000 000
	// instances take about 9 s on 2 cores, and a node cut there went ready
	// without the rest): sync_timeout bounds each stretch without an item,
	// and ten times it the whole transfer.
	idle := max(s.cfg.SyncTimeout, s.cfg.PeerTimeout)
	sctx, cancel := context.WithTimeout(ctx, 10*idle)
	defer cancel()
	stalled := time.AfterFunc(idle, cancel)
	defer stalled.Stop()
	const batch = 512
	batches := make(chan []SnapshotItem, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for b := range batches {
			for _, it := range b {
				s.recs.merge(it)
			}
		}
	}()
	buf := make([]SnapshotItem, 0, batch)
	peerReady, err = s.tr.Snapshot(sctx, addr, func(it SnapshotItem) error {
		items++
		buf = append(buf, it)
		if len(buf) == batch {
			stalled.Reset(idle)
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

// antiEntropy runs rounds until ctx ends.
func (s *syncer) antiEntropy(ctx context.Context) {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 200 * time.Millisecond
	bo.MaxInterval = s.cfg.AntiEntropyInterval
	failed := false
	for {
		wait := jittered(s.cfg.AntiEntropyInterval)
		if failed {
			wait = min(wait, bo.NextBackOff())
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-s.aeSig:
		}
		t.Stop()
		ok := s.roundWithPreferred(ctx)
		if ok {
			bo.Reset()
		}
		failed = !ok
	}
}

// jittered returns iv ± 25 %.
func jittered(iv time.Duration) time.Duration {
	return iv + time.Duration(rand.Int64N(int64(iv)/2+1)) - iv/4
}

// roundWithPreferred runs one round with each peer that joined since the
// last round, or else with one random peer. It reports whether every round
// succeeded.
func (s *syncer) roundWithPreferred(ctx context.Context) bool {
	s.mu.Lock()
	pref := s.pref
	s.pref = nil
	s.mu.Unlock()
	peers := s.repl.same()
	if len(peers) == 0 {
		return true
	}
	var targets []*link
	for _, l := range peers {
		if slices.Contains(pref, l.name) {
			targets = append(targets, l)
		}
	}
	if len(targets) == 0 {
		targets = []*link{peers[rand.IntN(len(peers))]}
	}
	ok := true
	for _, l := range targets {
		if _, err := s.round(ctx, l); err != nil {
			ok = false
			s.met.aeRounds.WithLabelValues("error").Inc()
			s.log.Debug("anti-entropy round failed", "peer", l.name, "err", err)
		} else {
			s.met.aeRounds.WithLabelValues("ok").Inc()
		}
	}
	return ok
}

// round exchanges digests with l's peer, merges the peer's state of the
// apps that differ, then pushes our state of those apps. Merging is by
// dirty_timestamp and tombstones on both sides, so after one round both
// hold the newest version of every differing instance. It returns the
// number of repairs (changes on either side).
//
// It first waits (at most peer_timeout) until nothing is on its way to
// that peer: digests taken while replication is delivering would only
// report, and copy again, what is in flight.
func (s *syncer) round(ctx context.Context, l *link) (int, error) {
	l.waitIdle(ctx, s.cfg.PeerTimeout)
	rctx, cancel := context.WithTimeout(ctx, max(s.cfg.SyncTimeout, s.cfg.PeerTimeout))
	defer cancel()
	mine := s.reg.AppDigests()
	req := &DigestRequest{From: s.repl.from, Digests: make([]AppDigest, 0, len(mine))}
	for k, d := range mine {
		req.Digests = append(req.Digests, AppDigest{Env: k.Env, AppID: k.AppID, Digest: d})
	}
	resp, err := s.tr.Digest(rctx, l.getAddr(), req)
	if err != nil {
		return 0, err
	}
	if len(resp.Apps) == 0 {
		return 0, nil
	}
	repairs := 0
	for i := range resp.State.Instances {
		if s.recs.merge(SnapshotItem{Instance: &resp.State.Instances[i]}) {
			repairs++
		}
	}
	for i := range resp.State.Tombstones {
		if s.recs.merge(SnapshotItem{Tombstone: &resp.State.Tombstones[i]}) {
			repairs++
		}
	}
	apps := make([]registry.AppKey, 0, len(resp.Apps))
	for _, a := range resp.Apps {
		if a.Env != "" && a.AppID != "" {
			apps = append(apps, a)
		}
	}
	apps, ours := boundedState(s.reg, apps, s.cfg.MaxRepairInstances)
	ops := make([]Op, 0, len(ours.Instances)+len(ours.Tombstones))
	for i := range ours.Instances {
		ops = append(ops, Op{Kind: OpImport, Replication: true, FromZone: true, Instance: &ours.Instances[i]})
	}
	for _, t := range ours.Tombstones {
		k := t.Key
		ops = append(ops, Op{Kind: OpCancel, Replication: true, FromZone: true, Key: &k, DirtyTimestamp: t.At})
	}
	n, err := s.repl.push(rctx, l.getAddr(), ops)
	repairs += n
	s.met.aeRepairs.Add(float64(repairs))
	if repairs > 0 {
		s.log.Info("anti-entropy repaired divergence", "peer", l.name, "apps", len(apps), "repairs", repairs)
	}
	return repairs, err
}
