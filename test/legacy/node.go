package legacy

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures one legacy node. Zero values take the defaults noted; the
// original's numbers apply unless a test shortens them.
type Config struct {
	Addr      string       // listen address; default 127.0.0.1:0
	Listener  net.Listener // optional pre-bound listener (Addr is then ignored), so a test can know every address before starting
	Advertise string       // host:port put in infra.discovery and used to recognise self; default: the bound address

	Env, Zone, Region string // defaults dev, zone01, region01 (kratos' defaults)
	Hostname          string // default: the advertised address, so nodes of one process differ

	Nodes []string            // same-zone seed nodes (host:port), may include self
	Zones map[string][]string // other zone -> host:port seeds

	EnableProtect  bool
	ProtectTimeout time.Duration // init-protect lifts after this even without a sync; default 60 s

	PollHold            time.Duration // default 30 s
	RenewInterval       time.Duration // own infra.discovery renew; default 30 s
	EvictInterval       time.Duration // eviction scan period; default 60 s
	EvictAfter          time.Duration // default 90 s
	ProtectedEvictAfter time.Duration // default 3600 s
	GuardResetInterval  time.Duration // expected renews recomputed; default 15 min
	ForwardTimeout      time.Duration // each forward and each startup-sync request; default 3 s

	Logger *slog.Logger // default: discard
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.Env == "" {
		c.Env = "dev"
	}
	if c.Zone == "" {
		c.Zone = "zone01"
	}
	if c.Region == "" {
		c.Region = "region01"
	}
	def(&c.ProtectTimeout, 60*time.Second)
	def(&c.PollHold, 30*time.Second)
	def(&c.RenewInterval, 30*time.Second)
	def(&c.EvictInterval, 60*time.Second)
	def(&c.EvictAfter, 90*time.Second)
	def(&c.ProtectedEvictAfter, 3600*time.Second)
	def(&c.GuardResetInterval, 15*time.Minute)
	def(&c.ForwardTimeout, 3*time.Second)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Nodes = slices.Clone(c.Nodes)
	zs := make(map[string][]string, len(c.Zones))
	for z, l := range c.Zones {
		zs[z] = slices.Clone(l)
	}
	c.Zones = zs
}

// Node is one running legacy node.
type Node struct {
	cfg  Config
	log  *slog.Logger
	self string

	reg       *registry
	peers     atomic.Pointer[peerSet]
	protected atomic.Bool

	transport *http.Transport
	client    *http.Client
	ln        *gateListener
	srv       *http.Server

	baseCtx    context.Context // cancelled last (Close) or first (Kill): aborts forwards
	baseCancel context.CancelFunc
	drain      chan struct{} // closed by Close: releases held polls before shutdown
	selfCtx    context.Context
	selfCancel context.CancelFunc // stops the own-record renew loop
	selfDone   chan struct{}

	wg sync.WaitGroup // background loops and the HTTP server

	hmu      sync.Mutex
	hstopped bool
	hwg      sync.WaitGroup // in-flight handlers

	stopOnce  sync.Once
	selfDirty atomic.Int64 // dirty_timestamp of the first own register
}

// Start listens, performs the one-shot startup sync, registers itself (the
// register is forwarded) and returns once it serves requests. Until then the
// listener resets every connection, as the original is not listening while it
// syncs.
func Start(cfg Config) (*Node, error) {
	cfg.defaults()
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Addr); err != nil {
			return nil, err
		}
	}
	if cfg.Advertise == "" {
		cfg.Advertise = ln.Addr().String()
	}
	if cfg.Hostname == "" {
		cfg.Hostname = cfg.Advertise
	}
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("node", cfg.Advertise),
		self:     cfg.Advertise,
		reg:      newRegistry(),
		ln:       newGateListener(ln),
		drain:    make(chan struct{}),
		selfDone: make(chan struct{}),
	}
	// Requests leave from the address the node listens on, as a server's
	// do from its host's address: peers that trust it by source address
	// (a mixed cluster, several fake nodes on 127.0.0.x) see that one.
	dialer := &net.Dialer{Timeout: cfg.ForwardTimeout}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsUnspecified() {
		dialer.LocalAddr = &net.TCPAddr{IP: ta.IP}
	}
	n.transport = &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     40 * time.Second,
	}
	n.client = &http.Client{Transport: n.transport}
	n.baseCtx, n.baseCancel = context.WithCancel(context.Background())
	n.selfCtx, n.selfCancel = context.WithCancel(n.baseCtx)
	n.protected.Store(cfg.EnableProtect)
	n.peers.Store(newPeerSet(n.self, cfg.Zone, cfg.Nodes, cfg.Zones))

	n.srv = &http.Server{Handler: n.routes(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)}
	n.wg.Go(func() {
		if err := n.srv.Serve(n.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("serve", "err", err)
		}
	})
	n.wg.Go(n.evictLoop) // the original's scan timer runs from process start
	n.syncUp()
	n.peers.Load().markSelfUP(n.self)
	n.registerSelf(n.baseCtx)
	n.wg.Go(n.selfRenewLoop)
	n.wg.Go(n.nodesLoop)
	n.wg.Go(n.protectTimer) // as in the original: counted from the end of the sync
	n.ln.open()
	n.log.Info("legacy node serving", "zone", cfg.Zone, "env", cfg.Env, "nodes", cfg.Nodes)
	return n, nil
}

// Addr is the advertised host:port.
func (n *Node) Addr() string { return n.self }

// URL is "http://" + Addr().
func (n *Node) URL() string { return "http://" + n.self }

// Hostname is the hostname of the node's own infra.discovery record.
func (n *Node) Hostname() string { return n.cfg.Hostname }

// Config returns the effective configuration (defaults applied).
func (n *Node) Config() Config {
	c := n.cfg
	c.defaults() // re-clones Nodes and Zones so the caller cannot alias them
	return c
}

// Close is a graceful stop: it cancels the own infra.discovery record (the
// cancel is forwarded and waited for, D9), releases held polls, shuts the
// server down and waits for every goroutine.
func (n *Node) Close() error {
	var err error
	n.stopOnce.Do(func() {
		n.selfCancel()
		<-n.selfDone
		if r := n.doCancel(n.baseCtx, n.selfParams()); r.code != codeOK {
			n.log.Warn("cancel own record", "code", r.code)
		}
		close(n.drain)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = n.srv.Shutdown(ctx)
		cancel()
		if err != nil {
			err = n.srv.Close()
		}
		n.finish()
	})
	return err
}

// Kill is an abrupt stop: the listener and every connection are closed at
// once, in-flight forwards are aborted, nothing is cancelled on peers.
func (n *Node) Kill() {
	n.stopOnce.Do(func() {
		_ = n.srv.Close()
		n.baseCancel()
		<-n.selfDone
		n.finish()
	})
}

func (n *Node) finish() {
	n.baseCancel()
	n.hmu.Lock()
	n.hstopped = true
	n.hmu.Unlock()
	n.hwg.Wait()
	n.wg.Wait()
	n.transport.CloseIdleConnections()
}

// enter counts a handler so Close/Kill can wait for it; false once stopped.
func (n *Node) enter() bool {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	if n.hstopped {
		return false
	}
	n.hwg.Add(1)
	return true
}

func (n *Node) exit() { n.hwg.Done() }

// syncUp is the startup sync (7.4): sequential fetch/all from every
// same-zone node but self and one node per other zone; every instance is
// inserted with its timestamps unchanged and not forwarded. Any code-0 answer
// ends init-protect; protected peers answer -500 and are skipped.
func (n *Node) syncUp() {
	for _, p := range n.peers.Load().syncTargets() {
		if p.addr == n.self {
			continue
		}
		a, err := n.get(n.baseCtx, p.addr, "/discovery/fetch/all")
		if err != nil {
			n.log.Info("startup sync failed", "peer", p.addr, "err", err)
			continue
		}
		var data map[string][]*Instance
		if err := json.Unmarshal(a.Data, &data); err != nil {
			n.log.Info("startup sync: bad data", "peer", p.addr, "err", err)
			continue
		}
		n.protected.Store(false)
		cnt := 0
		for _, l := range data {
			for _, i := range l {
				if i == nil {
					continue
				}
				n.reg.register(i)
				cnt++
			}
		}
		n.log.Info("startup sync", "peer", p.addr, "instances", cnt)
	}
}

func (n *Node) protectTimer() {
	t := time.NewTimer(n.cfg.ProtectTimeout)
	defer t.Stop()
	select {
	case <-t.C:
		n.protected.Store(false)
	case <-n.baseCtx.Done():
	}
}

// selfParams are the key of the own record, as a client would send them.
func (n *Node) selfParams() url.Values {
	v := url.Values{}
	v.Set("region", n.cfg.Region)
	v.Set("zone", n.cfg.Zone)
	v.Set("env", n.cfg.Env)
	v.Set("appid", AppIDDiscovery)
	v.Set("hostname", n.cfg.Hostname)
	return v
}

// registerSelf goes through the normal register path, so it is forwarded.
// A re-register keeps the first dirty_timestamp, as the original re-sends its
// original record.
func (n *Node) registerSelf(ctx context.Context) {
	v := n.selfParams()
	v.Set("addrs", "http://"+n.self)
	v.Set("status", "1")
	v.Set("version", "")
	if d := n.selfDirty.Load(); d > 0 {
		v.Set("dirty_timestamp", strconv.FormatInt(d, 10))
	}
	n.doRegister(ctx, v)
	if ins, ok := n.reg.lookup(n.cfg.Env, AppIDDiscovery, n.cfg.Zone, n.cfg.Hostname); ok && n.selfDirty.Load() == 0 {
		n.selfDirty.Store(ins.DirtyTimestamp)
	}
}

func (n *Node) selfRenewLoop() {
	defer close(n.selfDone)
	t := time.NewTicker(n.cfg.RenewInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if r := n.doRenew(n.selfCtx, n.selfParams()); r.code == codeNothing {
				n.registerSelf(n.selfCtx)
			}
		case <-n.selfCtx.Done():
			return
		}
	}
}

// nodesLoop is the original's nodesproc: it long-polls its own registry for
// infra.discovery in its env (all zones, UP only) and rebuilds the peer lists
// from every http addr: same zone -> peers, others -> per-zone lists.
func (n *Node) nodesLoop() {
	var last int64
	for {
		changed, _, w := n.reg.polls(n.cfg.Env, "", []string{AppIDDiscovery}, []int64{last})
		if w != nil {
			select {
			case changed = <-w.ch:
				n.reg.unwait(w)
			case <-n.baseCtx.Done():
				n.reg.unwait(w)
				return
			}
		}
		info := changed[AppIDDiscovery]
		if info == nil {
			n.log.Error("node list watcher got no infra.discovery answer; stopping it, as the original does")
			return
		}
		var same []string
		zones := map[string][]string{}
		for _, z := range sortedKeys(info.Instances) {
			for _, ins := range info.Instances[z] {
				for _, a := range ins.Addrs {
					u, err := url.Parse(a)
					if err != nil || u.Scheme != "http" {
						continue
					}
					if ins.Zone == n.cfg.Zone {
						same = append(same, u.Host)
					} else {
						zones[ins.Zone] = append(zones[ins.Zone], u.Host)
					}
				}
			}
		}
		last = info.LatestTimestamp
		ps := newPeerSet(n.self, n.cfg.Zone, same, zones)
		ps.markSelfUP(n.self)
		n.peers.Store(ps)
		n.log.Info("node list changed", "nodes", same, "zones", zones)
	}
}

func (n *Node) evictLoop() {
	ev := time.NewTicker(n.cfg.EvictInterval)
	defer ev.Stop()
	reset := time.NewTicker(n.cfg.GuardResetInterval)
	defer reset.Stop()
	for {
		select {
		case <-ev.C:
			n.reg.scan(n.cfg.EvictAfter, n.cfg.ProtectedEvictAfter)
		case <-reset.C:
			n.reg.resetExp()
		case <-n.baseCtx.Done():
			return
		}
	}
}

// Peers returns the current forward lists: same-zone nodes (self included
// when listed) and other zones.
func (n *Node) Peers() (same []string, zones map[string][]string) {
	ps := n.peers.Load()
	for _, p := range ps.same {
		same = append(same, p.addr)
	}
	zones = map[string][]string{}
	for z, l := range ps.zones {
		for _, p := range l {
			zones[z] = append(zones[z], p.addr)
		}
	}
	return same, zones
}

// Nodes is what /discovery/nodes would answer now.
func (n *Node) Nodes() []NodeInfo {
	r := n.doNodes(context.Background(), nil, nil)
	return slices.Clone(r.data.([]NodeInfo))
}

// Protected reports whether the init-protect gate is closed.
func (n *Node) Protected() bool { return n.protected.Load() }

// Instance returns a copy of one stored instance.
func (n *Node) Instance(env, appid, zone, hostname string) (Instance, bool) {
	return n.reg.lookup(env, appid, zone, hostname)
}

// Drop removes one instance from this node only (nothing is forwarded):
// a copy lost on one node, for tests of the repairs.
func (n *Node) Drop(env, appid, zone, hostname string) bool {
	_, ok := n.reg.cancel(env, appid, zone, hostname, nowNano())
	return ok
}

// Instances returns copies of every stored instance, sorted by env, appid,
// zone, hostname.
func (n *Node) Instances() []Instance { return n.reg.snapshot() }

// AppLatest returns the app latest_timestamp of (env, appid).
func (n *Node) AppLatest(env, appid string) (int64, bool) { return n.reg.appLatest(env, appid) }

// Stats returns the eviction and guard counters.
func (n *Node) Stats() Stats { return n.reg.stats() }

// HeldPolls counts the poll/polls requests currently held on (env, appid)
// (the node's own infra.discovery watcher included for that appid).
func (n *Node) HeldPolls(env, appid string) int { return n.reg.waiting(env, appid) }
