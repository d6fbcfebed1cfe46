package syncup

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/discovery-go/discovery/api/wire"
	"github.com/discovery-go/discovery/registry"
)

// SelfAppID is the appid under which every node registers itself (spec 7.5).
const SelfAppID = wire.InfraAppID

// Node status values of /discovery/nodes (spec 4.10).
const (
	NodeUp   = wire.NodeUp
	NodeLost = wire.NodeLost
)

// Registry is what the cluster needs from the registry; *registry.Registry
// satisfies it. Semantics are those documented on *registry.Registry.
type Registry interface {
	Register(in registry.Instance, latestHint int64) (stored registry.Instance, applied bool, err error)
	RegisterFrom(in registry.Instance, latestHint int64, owner string) (stored registry.Instance, applied bool, err error)
	RegisterNoCopy(in registry.Instance, latestHint int64, owner string) (applied bool, err error)
	Owner(k registry.Key) string
	Renew(k registry.Key, replicated bool, dirty int64) (registry.Instance, error)
	RenewNoCopy(k registry.Key, replicated bool, dirty int64) (storedDirty int64, conflict *registry.Instance, err error)
	Cancel(k registry.Key, at int64) (registry.Tombstone, error)
	Evict(k registry.Key) (registry.Instance, error)
	Set(req registry.SetRequest) ([]registry.Instance, error)
	Import(in registry.Instance) (applied bool)
	Get(k registry.Key) (registry.Instance, bool)
	Fetch(env, appid, zone string, statusMask uint32) (*registry.InstanceInfo, error)
	Snapshot() registry.Snapshot
	AppDigests() map[registry.AppKey]uint64
	AppState(apps []registry.AppKey) registry.Snapshot
}

var _ Registry = (*registry.Registry)(nil)

// Self describes this node.
type Self struct {
	Env, Zone, Region, Hostname string
	// HTTPAddr is the advertised HTTP host:port (never an unspecified host).
	HTTPAddr string
	// HTTPSAddr, when set, is the advertised host:port of the HTTPS
	// listener; the own record then lists an https:// address too.
	HTTPSAddr string
	Version   string
}

// Deps are the collaborators of a Cluster. All are optional.
type Deps struct {
	// Logger nil: discard.
	Logger *slog.Logger
	// Metrics nil: metrics are kept but not exported.
	Metrics prometheus.Registerer
	// Transport nil: HTTP (NewHTTPTransport) with timeouts from Config.
	Transport Transport
	// Memberlist, if set, adjusts the gossip configuration after the
	// Config has been applied (tests: fast timings, a MockNetwork transport).
	Memberlist func(*memberlist.Config)
	// Resolver resolves gossip seed names; nil: net.DefaultResolver.
	Resolver Resolver
	// PeerTLS, when set, makes the HTTP transport reach peers over HTTPS.
	PeerTLS *tls.Config
	// EvictAfter is the registry's evict_after (0: its default). Startup
	// sync and anti-entropy do not copy instances silent for longer: they
	// are due for eviction, and evictions leave no tombstone, so nodes that
	// scan at different times would hand a dead instance back and forth.
	EvictAfter time.Duration
}

// Member is one entry of the node list (/discovery/nodes).
type Member struct {
	Name       string // gossip node name
	Addr       string // advertised HTTP host:port
	GossipAddr string
	Zone       string
	Env        string
	Hostname   string
	Version    string
	Status     int  // NodeUp or NodeLost
	Leaving    bool // announced a graceful leave
	Self       bool
}

// Cluster is the cluster layer of one node. It wires its components, each
// with one owner and its own lock:
//
//   - membership: gossip, the member table, seeds and reconnects;
//   - replicator: one queue and sender per peer and per remote zone;
//   - syncer: startup sync, then anti-entropy, as one state machine;
//   - records: the infra.discovery records (own and dead members') and the
//     admission of copies from peers;
//   - handler: the peer endpoints.
//
// All exported methods are safe for concurrent use. The Replicator methods
// (Register, Renew, Cancel, Set) never block: they only enqueue.
type Cluster struct {
	cfg  Config
	self Self
	name string
	log  *slog.Logger
	reg  Registry
	met  *metrics
	// ownTr is the transport New built (closed at shutdown), nil when
	// Deps brought one.
	ownTr *HTTPTransport
	auth  *PeerAuth // nil without a secret

	legacyTr *LegacyTransport // nil without legacy nodes
	legacy   *legacy          // nil without legacy nodes

	members *membership
	repl    *replicator
	syncer  *syncer
	recs    *records
	handler *handler

	lifeMu   sync.Mutex // orders Start against the start of a shutdown; guards started
	started  bool
	stopping atomic.Bool // shutdown began: loops stop, no crash handling

	loopCtx    context.Context // the syncer's and the renew loop's; ends at BeginShutdown
	loopCancel context.CancelFunc
	loops      sync.WaitGroup

	leaveOnce    sync.Once // BeginShutdown
	leaveErr     error
	shutdownOnce sync.Once
	shutdownErr  error
}

// New validates cfg and self and builds a Cluster. Nothing listens until
// Start.
func New(cfg Config, self Self, reg Registry, deps Deps) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if reg == nil {
		return nil, errors.New("syncup: registry is required")
	}
	if err := validateSelf(self); err != nil {
		return nil, err
	}
	cfg, err := cfg.secured()
	if err != nil {
		return nil, err
	}
	keys, err := newKeyring(cfg)
	if err != nil {
		return nil, err
	}
	name := cfg.NodeName
	if name == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		name = self.Hostname + "-" + hex.EncodeToString(b[:])
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", name)
	c := &Cluster{cfg: cfg, self: self, name: name, log: log, reg: reg, auth: newPeerAuth(keys, cfg.MaxClockSkew)}
	if cfg.Insecure && cfg.Secret == "" {
		log.Warn("INSECURE: cluster.insecure is set and there is no cluster.secret: gossip is not encrypted and " +
			"any host that reaches the gossip or HTTP port can join, read and change the whole registry; " +
			"set cluster.secret (discovery keygen) on every node")
	}

	tr := deps.Transport
	if tr == nil {
		c.ownTr = NewHTTPTransport(HTTPTransportConfig{Timeout: cfg.PeerTimeout, Auth: c.auth, TLS: deps.PeerTLS})
		tr = c.ownTr
	}
	stale := deps.EvictAfter
	if stale <= 0 {
		stale = registry.DefaultConfig().EvictAfter
	}
	c.met = newMetrics()
	if c.members, err = newMembership(cfg, self, name, log, keys, deps.Resolver, deps.Memberlist); err != nil {
		return nil, err
	}
	c.repl = newReplicator(cfg, name, tr, c.met, log)
	c.recs = newRecords(self, reg, stale, c.met, log)
	c.recs.fwd = c.repl.forward
	c.recs.live = c.members.ownerLive
	c.repl.react = c.react
	c.syncer = newSyncer(cfg, tr, reg, c.recs, c.repl, c.members.sameZone, c.met, log)
	if len(cfg.LegacyNodes) > 0 || len(cfg.LegacyZones) > 0 {
		c.legacyTr = NewLegacyTransport(HTTPTransportConfig{Timeout: cfg.PeerTimeout, Auth: c.auth})
		res := deps.Resolver
		if res == nil {
			res = net.DefaultResolver
		}
		c.legacy = newLegacy(cfg, self, c.legacyTr, c.recs, c.repl, res, c.met, log)
		c.syncer.legacy = c.legacy
	}
	c.handler = &handler{cfg: cfg, reg: reg, repl: c.repl, recs: c.recs, ready: c.syncer.Ready, met: c.met, log: log,
		auth: c.auth, open: cfg.Insecure, sem: make(chan struct{}, cfg.MaxPeerRequests)}
	c.members.onChange = c.membersChanged
	c.members.onRefuse = func(reason string) { c.met.refused.WithLabelValues(reason).Inc() }

	mreg := deps.Metrics
	if mreg == nil {
		mreg = prometheus.NewRegistry()
	}
	if err := c.met.register(mreg, c); err != nil {
		return nil, fmt.Errorf("syncup: metrics: %w", err)
	}
	return c, nil
}

func validateSelf(s Self) error {
	var errs []error
	if s.Zone == "" {
		errs = append(errs, errors.New("syncup: self zone must not be empty"))
	}
	if s.Env == "" {
		errs = append(errs, errors.New("syncup: self env must not be empty"))
	}
	if s.Hostname == "" {
		errs = append(errs, errors.New("syncup: self hostname must not be empty"))
	}
	host, _, err := net.SplitHostPort(s.HTTPAddr)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("syncup: self http addr %q: %w", s.HTTPAddr, err))
	case host == "":
		errs = append(errs, fmt.Errorf("syncup: self http addr %q has no host (spec 7.5.4)", s.HTTPAddr))
	default:
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			errs = append(errs, fmt.Errorf("syncup: self http addr %q is an unspecified address (spec 7.5.4)", s.HTTPAddr))
		}
	}
	return errors.Join(errs...)
}

// Name is this node's gossip name.
func (c *Cluster) Name() string { return c.name }

// Start binds gossip and returns once it listens; joining, startup sync,
// anti-entropy and self-registration continue in the background until
// Shutdown. Start may be called once, and not after Shutdown.
func (c *Cluster) Start(ctx context.Context) error {
	// Held for the whole start: a concurrent Shutdown waits for it, so it
	// sees what Start created and stops it.
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.stopping.Load() {
		return errors.New("syncup: shut down")
	}
	if c.started {
		return errors.New("syncup: already started")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.syncer.startAt = time.Now()
	if err := c.members.start(); err != nil {
		return err
	}
	c.started = true
	for zone, seeds := range c.cfg.Zones {
		if zone != c.self.Zone {
			c.repl.addZone(zone, seeds, c.zoneNodes(zone))
		}
	}
	if c.legacy != nil {
		c.legacy.start(ctx, c.self.Zone)
	}
	// Our own record is in the registry before anything is served (C63).
	c.recs.register(0)
	if len(c.cfg.Join) == 0 && !c.cfg.InitProtect && !c.legacy.configured() {
		c.syncer.markReady("no peers configured")
	}
	lctx, cancel := context.WithCancel(context.Background())
	c.loopCtx, c.loopCancel = lctx, cancel
	c.loops.Add(2)
	go func() { defer c.loops.Done(); c.syncer.run(lctx, c.members.joinedC()) }()
	go func() { defer c.loops.Done(); c.recs.renewLoop(lctx, c.cfg.RenewInterval) }()
	if c.legacy != nil {
		c.loops.Add(1)
		go func() { defer c.loops.Done(); c.legacy.run(lctx) }()
	}
	return nil
}

// zoneNodes returns the HTTP host:port of zone's nodes as their
// infra.discovery records in our registry tell.
func (c *Cluster) zoneNodes(zone string) func() []string {
	return func() []string {
		info, err := c.reg.Fetch(c.self.Env, SelfAppID, zone, registry.StatusUp)
		if err != nil {
			return nil
		}
		var out []string
		for _, ins := range info.Instances[zone] {
			for _, a := range ins.Addrs {
				if h, ok := strings.CutPrefix(a, "http://"); ok {
					out = append(out, h)
				}
			}
		}
		return out
	}
}

// membersChanged reconciles the components with the member table: the
// records of members that failed are evicted, links follow the live
// same-zone members, and a member that joined gets our own record at once
// (so its node list has us without waiting for a renew), an anti-entropy
// round and, while we sync, a retry.
func (c *Cluster) membersChanged(left []memberEvent) {
	if !c.stopping.Load() {
		for _, ev := range left {
			c.recs.memberFailed(ev, c.members.isLive)
		}
	}
	live := map[string]string{}
	for _, m := range c.members.sameZone() {
		live[m.name] = m.addr
	}
	for _, l := range c.repl.reconcile(live) {
		if ins, ok := c.recs.current(); ok {
			l.enqueue(newOutOp(Op{Kind: OpRegister, Replication: true, FromZone: true, Instance: cloneInstance(ins)}))
		}
		c.syncer.peerJoined(l.name)
	}
}

// react applies the renew handshake of spec 7.3 to one op's answer.
func (c *Cluster) react(l *link, op *Op, r OpResult) {
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
		l.enqueue(newOutOp(Op{Kind: OpRegister, Replication: op.Replication, FromZone: op.FromZone, Instance: &ins}))
	case CodeConflict:
		c.met.sent.Inc()
		if op.Kind != OpRenew || r.Instance == nil {
			return
		}
		if r.Instance.Key().Validate() != nil || r.Instance.Key() != *op.Key {
			c.log.Warn("peer answered -409 with a different instance", "peer", l.name)
			return
		}
		c.met.handshakes.WithLabelValues("409").Inc()
		c.recs.admit(*r.Instance)
	default:
		c.met.failed.Inc()
		c.log.Debug("peer refused op", "peer", l.name, "op", op.Kind, "code", r.Code, "msg", r.Message)
	}
}

// GossipAddr is the advertised gossip host:port (after Start).
func (c *Cluster) GossipAddr() string { return c.members.gossip }

// GossipBindAddr is the host:port gossip is bound to (after Start); it
// differs from GossipAddr when cluster.advertise is set.
func (c *Cluster) GossipBindAddr() string { return c.members.bound }

// Ready reports whether the startup sync (or init-protect) phase has ended;
// reads are gated until then (spec 6.5, 7.4.1).
func (c *Cluster) Ready() bool { return c.syncer.Ready() }

// ReadyC is closed when Ready turns true.
func (c *Cluster) ReadyC() <-chan struct{} { return c.syncer.readyCh }

// PeerAuth verifies requests signed with the cluster secret (nil without
// one): the HTTP layer asks it whether a public request carrying peer-only
// parameters comes from a node.
func (c *Cluster) PeerAuth() *PeerAuth { return c.auth }

// FromLegacy reports whether r comes from the address of a configured
// legacy node (cluster.legacy_nodes, legacy_zones): such requests are
// trusted like a peer's, since the original cannot sign (docs/security.md).
// It counts the request as received from that node.
func (c *Cluster) FromLegacy(r *http.Request) bool { return c.legacy.FromLegacy(r) }

// LegacyStatus lists the configured legacy nodes and what this node knows
// of them (empty without any).
func (c *Cluster) LegacyStatus() []LegacyNodeStatus { return c.legacy.status() }

// Status is the cluster layer's part of the admin overview: members,
// every replication link, anti-entropy and legacy nodes.
func (c *Cluster) Status() wire.ClusterStatus {
	st := wire.ClusterStatus{Name: c.name, Legacy: c.LegacyStatus()}
	for _, m := range c.Nodes() {
		state := "up"
		switch {
		case m.Leaving:
			state = "leaving"
		case m.Status == NodeLost:
			state = "lost"
		}
		st.Members = append(st.Members, wire.MemberStatus{Name: m.Name, Addr: m.Addr, Zone: m.Zone, State: state, Self: m.Self})
	}
	for _, l := range c.repl.links() {
		kind := "peer"
		switch {
		case strings.HasPrefix(l.name, "legacy-zone:"):
			kind = "legacy-zone"
		case strings.HasPrefix(l.name, "legacy:"):
			kind = "legacy"
		case l.zone != "":
			kind = "zone"
		}
		st.Replication = append(st.Replication, wire.PeerStatus{
			Name: l.name, Addr: l.getAddr(), Kind: kind, Queue: l.pending.Load(), Failing: l.failing.Load(),
			Acked: l.acked.Load(), Failed: l.failedOps.Load(), LagMs: float64(l.lastLag.Load()) / 1000,
		})
	}
	st.AntiEntropy = wire.AntiEntropyStatus{
		Repairs:      uint64(counterValue(c.met.aeRepairs)),
		RoundsOK:     uint64(counterValue(c.met.aeRounds.WithLabelValues("ok"))),
		RoundsFailed: uint64(counterValue(c.met.aeRounds.WithLabelValues("error"))),
	}
	return st
}

// counterValue reads a counter's current value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if c.Write(&m) != nil || m.Counter == nil {
		return 0
	}
	return m.Counter.GetValue()
}

// Insecure reports whether the node runs with cluster.insecure and no
// secret (for the discovery_security_insecure gauge).
func (c *Cluster) Insecure() bool { return c.cfg.Insecure && c.cfg.Secret == "" }

// Handler serves the internal peer endpoints (mount at /discovery/internal/).
func (c *Cluster) Handler() http.Handler { return c.handler }

// Nodes lists the same-zone live members including self, one per HTTP
// address (spec 4.10.2): alive → NodeUp; leaving, or our link to it
// failing → NodeLost; dead or left members are not listed. Addr is the
// member's advertised HTTP host:port. The slice is a fresh copy, sorted by
// Addr.
//
// Why LOST is not memberlist's "suspect" (spec 4.10.2 asks for it):
// memberlist v0.7.0 keeps the state in the unexported nodeState.State
// (state.go), which shadows the embedded Node.State; suspectNode, aliveNode
// and deadNode write only the former, so the Node.State seen through
// Members() or any delegate is always StateAlive. No callback reports
// suspicion either. LOST is what this node sees for itself: an announced
// leave, or a failing replication link (the node's own renew every
// renew_interval keeps each link exercised). Gossip then declares a
// crashed member dead within seconds and it leaves the list.
func (c *Cluster) Nodes() []Member { return c.members.nodes(c.repl.failing) }

// Register forwards a register this node accepted from a client (or, with
// fromZone, from another zone): to every same-zone peer as a replicated op,
// and, when fromZone is false, to one node per other zone (spec 7.2). ins
// is the stored copy (its dirty_timestamp travels with it), handed over:
// the caller does not touch it afterwards, so it is queued as it is, not
// copied again. Never blocks.
func (c *Cluster) Register(ins registry.Instance, fromZone bool) {
	if !c.repl.targets(!fromZone) {
		return
	}
	c.repl.forward(Op{Kind: OpRegister, Instance: &ins, Owner: c.reg.Owner(ins.Key())}, !fromZone)
}

// Forwards reports whether a register accepted now (with fromZone as
// Register gets it) would reach any peer, so the API layer builds no
// stored copy for Register to drop.
func (c *Cluster) Forwards(fromZone bool) bool { return c.repl.targets(!fromZone) }

// Renew forwards a renew of k with the sender's stored dirty_timestamp, so peers answer
// the -404/-409 handshake (spec 7.3). Cross-zone only for instances of our
// own zone. Never blocks.
func (c *Cluster) Renew(k registry.Key, dirty int64, fromZone bool) {
	cross := !fromZone && k.Zone == c.self.Zone
	if !c.repl.targets(cross) {
		return
	}
	c.repl.forward(Op{Kind: OpRenew, Key: &k, DirtyTimestamp: dirty}, cross)
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
	c.repl.forward(Op{Kind: OpCancel, Key: &k, DirtyTimestamp: at}, !fromZone && k.Zone == c.self.Zone)
}

// Set forwards an accepted set with its set_timestamp, so every node stamps
// the same value. req.SetTimestamp should be the value the local registry
// used; 0 is replaced by now. Never blocks.
func (c *Cluster) Set(req registry.SetRequest, fromZone bool) {
	s := setOpFrom(req)
	if s.SetTimestamp <= 0 {
		s.SetTimestamp = time.Now().UnixNano()
	}
	c.repl.forward(Op{Kind: OpSet, Set: s}, !fromZone)
}

// BeginShutdown is the first half of a graceful Shutdown: it announces
// "leaving" in gossip meta (peers list this node as LOST and do not treat
// its departure as a crash), stops the background loops (join, sync,
// anti-entropy, self-renew) and cancels the node's own infra.discovery
// record, replicated. Replication keeps going until Shutdown: the caller
// should stop taking client writes (close HTTP) between the two calls, so
// every write it acknowledged is queued before the drain. Idempotent;
// Shutdown calls it when it was not called.
func (c *Cluster) BeginShutdown(ctx context.Context) error {
	c.leaveOnce.Do(func() { c.leaveErr = c.beginShutdown(ctx, true) })
	return c.leaveErr
}

func (c *Cluster) beginShutdown(ctx context.Context, graceful bool) error {
	c.lifeMu.Lock()
	c.stopping.Store(true)
	started := c.started
	c.lifeMu.Unlock()
	var err error
	if graceful && started {
		err = c.members.setLeaving(ctx)
	}
	// The loops stop before the cancel: a self renew still running would
	// otherwise find the record gone and register it again, behind the
	// cancel, on every peer.
	if c.loopCancel != nil {
		c.loopCancel()
		c.loops.Wait()
	}
	c.members.stopJoining()
	if graceful && started {
		c.recs.cancel()
	} else {
		c.recs.leaving.Store(true)
	}
	return err
}

// Shutdown leaves the cluster, in order: BeginShutdown (unless done
// already), close the replicator (later writes are not forwarded), drain
// the replication queues until they are empty or ctx ends, leave and stop
// gossip, and wait for every goroutine. Safe to call more than once.
func (c *Cluster) Shutdown(ctx context.Context) error {
	c.shutdownOnce.Do(func() { c.shutdownErr = c.shutdown(ctx, true) })
	return c.shutdownErr
}

// Kill stops the cluster layer like a crash: no leave is announced, the
// own record is not cancelled and nothing is drained (tests of failure
// handling). Safe to call instead of, or after, Shutdown.
func (c *Cluster) Kill() {
	c.shutdownOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.shutdownErr = c.shutdown(ctx, false)
	})
}

func (c *Cluster) shutdown(ctx context.Context, graceful bool) error {
	c.leaveOnce.Do(func() { c.leaveErr = c.beginShutdown(ctx, graceful) })
	errs := []error{c.leaveErr}
	c.repl.close()
	// Drain while gossip still runs, so a peer declared dead meanwhile is
	// removed and stops holding the drain.
	if graceful && c.members.started() {
		errs = append(errs, c.repl.drain(ctx))
	}
	c.repl.stop()
	errs = append(errs, c.members.shutdown(ctx, graceful))
	if c.ownTr != nil {
		c.ownTr.CloseIdleConnections()
	}
	if c.legacyTr != nil {
		c.legacyTr.CloseIdleConnections()
	}
	if c.members.started() {
		c.log.Info("cluster stopped", "graceful", graceful)
	}
	return errors.Join(errs...)
}
