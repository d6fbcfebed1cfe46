package syncup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/discovery-go/discovery/registry"
)

// SelfAppID is the appid under which every node registers itself (spec 7.5).
const SelfAppID = "infra.discovery"

// Node status values of /discovery/nodes (spec 4.10).
const (
	NodeUp   = 0
	NodeLost = 1
)

// Registry is what the cluster needs from the registry; *registry.Registry
// satisfies it. Semantics are those documented on *registry.Registry.
type Registry interface {
	Register(in registry.Instance, latestHint int64) (stored registry.Instance, applied bool, err error)
	Renew(k registry.Key, replicated bool, dirty int64) (registry.Instance, error)
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
	Version  string
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

// Cluster is the cluster layer of one node: gossip membership, replication
// of client writes to peers, startup sync, anti-entropy and the node's own
// infra.discovery record.
//
// All exported methods are safe for concurrent use. The Replicator methods
// (Register, Renew, Cancel, Set) never block: they only enqueue.
type Cluster struct {
	cfg    Config
	self   Self
	reg    Registry
	log    *slog.Logger
	tr     Transport
	rawTr  RawReplicator  // tr, when it takes encoded bodies (nil otherwise)
	ownTr  *HTTPTransport // closed at shutdown when we built it
	mlHook func(*memberlist.Config)
	mlLog  *mlLogWriter
	met    *metrics
	name   string
	secret []byte
	// staleAfter: copies silent for longer are not imported (Deps.EvictAfter).
	staleAfter time.Duration

	lifeMu   sync.Mutex // Start against the start of shutdown
	ml       *memberlist.Memberlist
	metaMu   sync.Mutex
	meta     nodeMeta
	metaEnc  atomic.Pointer[[]byte]
	started  atomic.Bool
	stopping atomic.Bool // shutdown began: loops stop, no crash handling
	ready    atomic.Bool
	readyCh  chan struct{}
	joinDone chan struct{}
	startAt  time.Time

	mu     sync.RWMutex
	peers  map[string]*peer // same-zone members by gossip name
	zones  map[string]*peer // remote zone links by zone name
	closed bool             // Replicator closed (Shutdown): no new ops, no new peers

	memMu   sync.RWMutex
	members map[string]memberState         // other live members, from gossip callbacks
	failed  map[string]failedMember        // members that failed without leaving
	evicted map[registry.Key]evictedRecord // their infra.discovery records we evicted
	gossip  string                         // our advertised gossip host:port
	bound   string                         // our bound gossip host:port

	evMu  sync.Mutex
	evq   []memberEvent
	evSig chan struct{}

	syncSig chan struct{} // a member joined: the startup sync may retry now
	aeSig   chan struct{}
	aeMu    sync.Mutex
	aePref  []string // peers that joined: next anti-entropy rounds go to them

	loopCtx    context.Context
	loopCancel context.CancelFunc
	loops      sync.WaitGroup // join, events, sync, anti-entropy, self-registration
	peerCtx    context.Context
	peerCancel context.CancelFunc
	senders    sync.WaitGroup
	evCtx      context.Context
	evCancel   context.CancelFunc
	evLoop     sync.WaitGroup

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
	secret, err := cfg.secretKey()
	if err != nil {
		return nil, err
	}
	name := cfg.NodeName
	if name == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		name = self.Hostname + "-" + hex.EncodeToString(b[:])
	}
	meta := nodeMeta{HTTPAddr: self.HTTPAddr, Zone: self.Zone, Env: self.Env, Hostname: self.Hostname, Version: self.Version, Status: metaAlive}
	enc, err := encodeMeta(meta)
	if err != nil {
		return nil, fmt.Errorf("syncup: %w", err)
	}
	if _, err := encodeMeta(nodeMeta{HTTPAddr: self.HTTPAddr, Zone: self.Zone, Env: self.Env, Hostname: self.Hostname, Version: self.Version, Status: metaLeaving}); err != nil {
		return nil, fmt.Errorf("syncup: %w", err)
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{
		cfg: cfg, self: self, reg: reg,
		log:      log.With("node", name),
		tr:       deps.Transport,
		mlHook:   deps.Memberlist,
		name:     name,
		secret:   secret,
		meta:     meta,
		readyCh:  make(chan struct{}),
		joinDone: make(chan struct{}),
		peers:    map[string]*peer{},
		members:  map[string]memberState{},
		failed:   map[string]failedMember{},
		evicted:  map[registry.Key]evictedRecord{},
		zones:    map[string]*peer{},
		evSig:    make(chan struct{}, 1),
		syncSig:  make(chan struct{}, 1),
		aeSig:    make(chan struct{}, 1),

		staleAfter: deps.EvictAfter,
	}
	if c.staleAfter <= 0 {
		c.staleAfter = registry.DefaultConfig().EvictAfter
	}
	c.metaEnc.Store(&enc)
	if c.tr == nil {
		c.ownTr = NewHTTPTransport(HTTPTransportConfig{Timeout: cfg.PeerTimeout})
		c.tr = c.ownTr
	}
	c.rawTr, _ = c.tr.(RawReplicator)
	mreg := deps.Metrics
	if mreg == nil {
		mreg = prometheus.NewRegistry()
	}
	if c.met, err = newMetrics(c, mreg); err != nil {
		return nil, fmt.Errorf("syncup: metrics: %w", err)
	}
	c.loopCtx, c.loopCancel = context.WithCancel(context.Background())
	c.peerCtx, c.peerCancel = context.WithCancel(context.Background())
	c.evCtx, c.evCancel = context.WithCancel(context.Background())
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
	// sees the gossip and senders Start created and stops them.
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.stopping.Load() {
		return errors.New("syncup: shut down")
	}
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("syncup: already started")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	mc, err := c.memberlistConfig()
	if err != nil {
		return err
	}
	var nt *memberlist.NetTransport
	if mc.Transport == nil { // tests may bring their own (Deps.Memberlist)
		if nt, err = c.netTransport(mc); err != nil {
			c.mlLog.close()
			return fmt.Errorf("syncup: gossip: %w", err)
		}
		mc.Transport = nt
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		if nt != nil {
			_ = nt.Shutdown()
		}
		c.mlLog.close()
		return fmt.Errorf("syncup: gossip: %w", err)
	}
	if ln := ml.LocalNode(); ln.Addr == nil || ln.Addr.IsUnspecified() {
		_ = ml.Shutdown()
		c.mlLog.close()
		return fmt.Errorf("syncup: gossip advertises unspecified address %v; set cluster.advertise", ln.Addr)
	}
	c.ml = ml
	c.gossip = ml.LocalNode().Address()
	c.bound = net.JoinHostPort(mc.BindAddr, strconv.Itoa(mc.BindPort))
	c.startAt = time.Now()
	c.log.Info("gossip listening", "gossip", c.gossip, "http", c.self.HTTPAddr, "zone", c.self.Zone)

	c.mu.Lock()
	for zone, seeds := range c.cfg.Zones {
		if zone == c.self.Zone {
			continue
		}
		z := c.newZoneLink(zone, seeds)
		c.zones[zone] = z
		z.start()
	}
	c.mu.Unlock()
	// Our own record is in the registry before anything is served (C63).
	c.registerSelf(0)
	if len(c.cfg.Join) == 0 && !c.cfg.InitProtect {
		c.closeJoinDone()
		c.markReady("no peers configured")
	}

	c.evLoop.Add(1)
	go c.eventLoop()
	c.loops.Add(4)
	go c.joinLoop()
	go c.syncLoop()
	go c.antiEntropyLoop()
	go c.selfRegLoop()
	return nil
}

func (c *Cluster) memberlistConfig() (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.name
	ip, port, err := splitIPPort(c.cfg.Bind, true)
	if err != nil {
		return nil, fmt.Errorf("cluster.bind: %w", err)
	}
	mc.BindAddr = ip.String()
	mc.BindPort = port
	mc.AdvertisePort = port
	if c.cfg.Advertise != "" {
		aip, aport, err := splitIPPort(c.cfg.Advertise, false)
		if err != nil {
			return nil, fmt.Errorf("cluster.advertise: %w", err)
		}
		mc.AdvertiseAddr = aip.String()
		mc.AdvertisePort = aport
	} else if !ip.IsUnspecified() {
		mc.AdvertiseAddr = ip.String()
	}
	// A Join to a silent seed blocks for TCPTimeout and cannot be
	// cancelled; bounding it by peer_timeout bounds Shutdown too.
	mc.TCPTimeout = min(mc.TCPTimeout, c.cfg.PeerTimeout)
	mc.Label = c.cfg.Label
	mc.SecretKey = c.secret
	mc.Delegate = &mlDelegate{c: c}
	mc.Events = &mlEvents{c: c}
	c.mlLog = &mlLogWriter{log: c.log}
	mc.LogOutput = c.mlLog
	if c.mlHook != nil {
		c.mlHook(mc)
	}
	return mc, nil
}

// netTransport binds gossip (TCP and UDP on one port) and settles the
// ports memberlist will use. We bind it ourselves because memberlist, when
// it binds port 0 itself, overwrites AdvertisePort with the bound port and
// so ignores cluster.advertise (memberlist.go, v0.7.0): behind NAT or a
// proxy, peers would then dial a port that leads nowhere.
func (c *Cluster) netTransport(mc *memberlist.Config) (*memberlist.NetTransport, error) {
	ntc := &memberlist.NetTransportConfig{
		BindAddrs: []string{mc.BindAddr},
		BindPort:  mc.BindPort,
		Logger:    mc.Logger,
	}
	if ntc.Logger == nil {
		ntc.Logger = log.New(mc.LogOutput, "", log.LstdFlags)
	}
	// Port 0 picks a TCP port, then binds UDP on the same number, which
	// another socket may hold: retry like memberlist does.
	tries := 1
	if mc.BindPort == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		if nt, err = memberlist.NewNetTransport(ntc); err == nil {
			if mc.BindPort == 0 {
				// memberlist uses BindPort as the default port of a seed
				// given without one; keep its meaning (our own port).
				mc.BindPort = nt.GetAutoBindPort()
			}
			if c.cfg.Advertise == "" {
				mc.AdvertisePort = mc.BindPort
			}
			return nt, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, err
}

// GossipAddr is the advertised gossip host:port (after Start).
func (c *Cluster) GossipAddr() string { return c.gossip }

// GossipBindAddr is the host:port gossip is bound to (after Start); it
// differs from GossipAddr when cluster.advertise is set.
func (c *Cluster) GossipBindAddr() string { return c.bound }

// Ready reports whether the startup sync (or init-protect) phase has ended;
// reads are gated until then (spec 6.5, 7.4.1).
func (c *Cluster) Ready() bool { return c.ready.Load() }

func (c *Cluster) markReady(why string) {
	if c.ready.CompareAndSwap(false, true) {
		close(c.readyCh)
		d := time.Since(c.startAt)
		c.met.syncDur.Set(d.Seconds())
		c.log.Info("node ready", "reason", why, "after", d)
	}
}

// Handler serves the internal peer endpoints (mount at /discovery/internal/).
func (c *Cluster) Handler() http.Handler { return &handler{c: c} }

// BeginShutdown is the first half of a graceful Shutdown: it announces
// "leaving" in gossip meta (peers list this node as LOST and do not treat
// its departure as a crash), stops the background loops (join, sync,
// anti-entropy, self-renew) and cancels the node's own infra.discovery
// record, replicated. The Replicator keeps forwarding until Shutdown: the
// caller should stop taking client writes (close HTTP) between the two
// calls, so every write it acknowledged is queued before the drain.
// Idempotent; Shutdown calls it when it was not called.
func (c *Cluster) BeginShutdown(ctx context.Context) error {
	c.leaveOnce.Do(func() { c.leaveErr = c.beginShutdown(ctx, true) })
	return c.leaveErr
}

func (c *Cluster) beginShutdown(ctx context.Context, graceful bool) error {
	c.lifeMu.Lock()
	c.stopping.Store(true)
	c.lifeMu.Unlock()
	var err error
	if graceful && c.ml != nil {
		c.setMetaStatus(metaLeaving)
		if e := c.ml.UpdateNode(boundedTimeout(ctx, time.Second)); e != nil {
			err = fmt.Errorf("announce leave: %w", e)
		}
	}
	// The loops stop before the cancel: a self renew still running would
	// otherwise find the record gone and register it again, behind the
	// cancel, on every peer.
	c.loopCancel()
	c.loops.Wait()
	if graceful && c.ml != nil {
		c.cancelSelf()
	}
	return err
}

// Shutdown leaves the cluster, in order: BeginShutdown (unless done
// already), close the Replicator (later writes are not forwarded), drain
// the replication queues until they are empty or ctx ends, leave and stop
// gossip, and wait for every goroutine. Safe to call more than once.
func (c *Cluster) Shutdown(ctx context.Context) error {
	c.shutdownOnce.Do(func() { c.shutdownErr = c.shutdown(ctx, true) })
	return c.shutdownErr
}

func (c *Cluster) shutdown(ctx context.Context, graceful bool) error {
	c.leaveOnce.Do(func() { c.leaveErr = c.beginShutdown(ctx, graceful) })
	errs := []error{c.leaveErr}
	// Closing under mu orders it after every enqueue in progress and
	// before any later one: from here no op is added and no peer (sender)
	// either, so the queues hold everything the drain must deliver.
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	if c.ml == nil { // never started, or Start failed
		c.peerCancel()
		c.evCancel()
		if c.ownTr != nil {
			c.ownTr.CloseIdleConnections()
		}
		return errors.Join(errs...)
	}

	// Drain: every sender exits once its queue is empty; at the deadline
	// the rest is dropped. Gossip still runs, so a peer declared dead
	// meanwhile is removed and stops holding the drain.
	allDone := make(chan struct{})
	go func() { c.senders.Wait(); close(allDone) }()
	if graceful {
		for _, p := range c.allPeers() {
			close(p.drain)
		}
		select {
		case <-allDone:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("drain replication queues: %w", ctx.Err()))
		}
	}
	c.peerCancel()
	<-allDone
	for _, p := range c.allPeers() {
		p.dropAll(dropShutdown)
	}

	if graceful {
		if err := c.ml.Leave(boundedTimeout(ctx, 2*time.Second)); err != nil {
			errs = append(errs, fmt.Errorf("gossip leave: %w", err))
		}
	}
	if err := c.ml.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("gossip shutdown: %w", err))
	}
	c.mlLog.close()
	c.evCancel()
	c.evLoop.Wait()
	if c.ownTr != nil {
		c.ownTr.CloseIdleConnections()
	}
	c.log.Info("cluster stopped", "graceful", graceful)
	return errors.Join(errs...)
}

// boundedTimeout returns the time left before ctx's deadline, at most max.
func boundedTimeout(ctx context.Context, max time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left < max {
			if left <= 0 {
				return time.Millisecond
			}
			return left
		}
	}
	return max
}

func (c *Cluster) allPeers() []*peer {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*peer, 0, len(c.peers)+len(c.zones))
	for _, p := range c.peers {
		out = append(out, p)
	}
	for _, p := range c.zones {
		out = append(out, p)
	}
	return out
}

// samePeers returns the live same-zone peers.
func (c *Cluster) samePeers() []*peer {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*peer, 0, len(c.peers))
	for _, p := range c.peers {
		out = append(out, p)
	}
	return out
}

func (c *Cluster) setMetaStatus(status int) {
	c.metaMu.Lock()
	defer c.metaMu.Unlock()
	c.meta.Status = status
	enc, err := encodeMeta(c.meta)
	if err != nil {
		return // impossible: New checked both statuses
	}
	c.metaEnc.Store(&enc)
}
