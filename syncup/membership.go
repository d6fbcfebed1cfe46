package syncup

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/hashicorp/memberlist"

	"github.com/discovery-go/discovery/registry"
)

// membership is the gossip layer of a node: memberlist, this node's meta,
// the table of the other live members, the addresses of members that
// failed (retried, so two halves of a healed partition merge again) and
// the seeds, joined at start and again while the node is alone.
//
// Its event goroutine hands changes to onChange one call at a time:
// memberlist's callbacks only record them and never block.
type membership struct {
	cfg  Config
	self Self
	name string
	log  *slog.Logger
	hook func(*memberlist.Config)
	keys *keyring
	res  Resolver
	// onChange receives the members gossip no longer lists (crashed or
	// left); the live table has already changed. Called from the event
	// goroutine only.
	onChange func(left []memberEvent)
	// onRefuse counts a member refused (reason: meta, identity,
	// name_conflict). Called from memberlist's goroutines; must not block.
	onRefuse func(reason string)

	refusedMu  sync.Mutex // guards refusedLog
	refusedLog map[string]time.Time

	// Set by start, read-only afterwards.
	ml     *memberlist.Memberlist
	mlLog  *mlLogWriter
	gossip string // advertised gossip host:port
	bound  string // bound gossip host:port

	metaMu  sync.Mutex // guards meta
	meta    nodeMeta
	metaEnc atomic.Pointer[[]byte] // meta's encoding, read by memberlist without a lock

	mu      sync.RWMutex // guards members and failed
	members map[string]memberState
	failed  map[string]failedMember

	evMu  sync.Mutex // guards evq
	evq   []memberEvent
	evSig chan struct{}

	joinEnd sync.Once
	joined  chan struct{} // closed when the start-up join phase ended

	evCancel   context.CancelFunc // stops the event goroutine (shutdown)
	evDone     sync.WaitGroup
	joinCancel context.CancelFunc // stops the join goroutine (stopJoining)
	joinDone   sync.WaitGroup
}

// Resolver resolves gossip seed names: a seed whose name has several
// addresses (a headless service) is joined at every one.
// *net.Resolver satisfies it.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// memberState is what we know of one other live member.
type memberState struct {
	meta    nodeMeta
	metaErr error
	gossip  string
}

// memberEvent is a member gossip no longer lists (NotifyLeave). Joins and
// updates need no queue: the member table holds their result.
type memberEvent struct {
	name string
	meta []byte
}

// failedMember is a member gossip declared dead without a leave.
type failedMember struct {
	addr string
	at   time.Time
}

// reconnectFor bounds how long a failed member's address is retried.
const reconnectFor = 30 * time.Minute

// memberRef names a live same-zone member and its HTTP address.
type memberRef struct{ name, addr string }

func newMembership(cfg Config, self Self, name string, log *slog.Logger, keys *keyring, res Resolver, hook func(*memberlist.Config)) (*membership, error) {
	meta := nodeMeta{HTTPAddr: self.HTTPAddr, Zone: self.Zone, Env: self.Env, Hostname: self.Hostname, Version: self.Version, Status: metaAlive}
	enc, err := encodeMeta(meta)
	if err != nil {
		return nil, fmt.Errorf("syncup: %w", err)
	}
	leaving := meta
	leaving.Status = metaLeaving
	if _, err := encodeMeta(leaving); err != nil {
		return nil, fmt.Errorf("syncup: %w", err)
	}
	if res == nil {
		res = net.DefaultResolver
	}
	m := &membership{
		cfg: cfg, self: self, name: name, log: log, hook: hook, keys: keys, res: res,
		meta:    meta,
		members: map[string]memberState{},
		failed:  map[string]failedMember{},
		evSig:   make(chan struct{}, 1),
		joined:  make(chan struct{}),
	}
	m.metaEnc.Store(&enc)
	return m, nil
}

// start binds gossip and starts the event and join goroutines.
func (m *membership) start() error {
	mc, err := m.memberlistConfig()
	if err != nil {
		return err
	}
	var nt *memberlist.NetTransport
	if mc.Transport == nil { // tests may bring their own (Deps.Memberlist)
		if nt, err = m.netTransport(mc); err != nil {
			m.mlLog.close()
			return fmt.Errorf("syncup: gossip: %w", err)
		}
		mc.Transport = nt
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		if nt != nil {
			_ = nt.Shutdown()
		}
		m.mlLog.close()
		return fmt.Errorf("syncup: gossip: %w", err)
	}
	if ln := ml.LocalNode(); ln.Addr == nil || ln.Addr.IsUnspecified() {
		_ = ml.Shutdown()
		m.mlLog.close()
		return fmt.Errorf("syncup: gossip advertises unspecified address %v; set cluster.advertise", ln.Addr)
	}
	m.ml = ml
	m.gossip = ml.LocalNode().Address()
	m.bound = net.JoinHostPort(mc.BindAddr, strconv.Itoa(mc.BindPort))
	m.log.Info("gossip listening", "gossip", m.gossip, "http", m.self.HTTPAddr, "zone", m.self.Zone, "encrypted", mc.Keyring != nil)

	evCtx, evCancel := context.WithCancel(context.Background())
	m.evCancel = evCancel
	m.evDone.Add(1)
	go m.eventLoop(evCtx)
	joinCtx, joinCancel := context.WithCancel(context.Background())
	m.joinCancel = joinCancel
	m.joinDone.Add(1)
	go m.joinLoop(joinCtx)
	return nil
}

func (m *membership) memberlistConfig() (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig()
	mc.Name = m.name
	ip, port, err := splitIPPort(m.cfg.Bind, true)
	if err != nil {
		return nil, fmt.Errorf("cluster.bind: %w", err)
	}
	mc.BindAddr = ip.String()
	mc.BindPort = port
	mc.AdvertisePort = port
	if m.cfg.Advertise != "" {
		aip, aport, err := splitIPPort(m.cfg.Advertise, false)
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
	mc.TCPTimeout = min(mc.TCPTimeout, m.cfg.PeerTimeout)
	mc.Label = m.cfg.Label
	if m.keys != nil {
		// Every gossip message is encrypted and authenticated (AES-GCM)
		// with the primary key; any key of the ring is accepted, which is
		// how a key is rotated without a restart of every node at once.
		mc.Keyring = m.keys.gossip
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	mc.Delegate = &mlDelegate{m: m}
	mc.Events = &mlEvents{m: m}
	mc.Alive = &mlAlive{m: m}
	mc.Conflict = &mlConflict{m: m}
	m.mlLog = &mlLogWriter{log: m.log}
	mc.LogOutput = m.mlLog
	if m.hook != nil {
		m.hook(mc)
	}
	return mc, nil
}

// netTransport binds gossip (TCP and UDP on one port) and settles the
// ports memberlist will use. We bind it ourselves because memberlist, when
// it binds port 0 itself, overwrites AdvertisePort with the bound port and
// so ignores cluster.advertise (memberlist.go, v0.7.0): behind NAT or a
// proxy, peers would then dial a port that leads nowhere.
func (m *membership) netTransport(mc *memberlist.Config) (*memberlist.NetTransport, error) {
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
			if m.cfg.Advertise == "" {
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

func (m *membership) started() bool { return m.ml != nil }

// setLeaving gossips status "leaving" (peers then list this node as LOST
// and do not treat its departure as a crash).
func (m *membership) setLeaving(ctx context.Context) error {
	m.metaMu.Lock()
	m.meta.Status = metaLeaving
	enc, err := encodeMeta(m.meta)
	m.metaMu.Unlock()
	if err != nil {
		return err // impossible: newMembership checked both statuses
	}
	m.metaEnc.Store(&enc)
	if m.ml == nil {
		return nil
	}
	if err := m.ml.UpdateNode(boundedTimeout(ctx, time.Second)); err != nil {
		return fmt.Errorf("announce leave: %w", err)
	}
	return nil
}

func (m *membership) leaving() bool {
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	return m.meta.Status == metaLeaving
}

// stopJoining stops the join goroutine (no more seeds or reconnects); the
// event goroutine keeps running until shutdown, so members that die
// during the replication drain are still removed.
func (m *membership) stopJoining() {
	if m.joinCancel != nil {
		m.joinCancel()
		m.joinDone.Wait()
	}
	m.endJoinPhase()
}

// shutdown leaves gossip (graceful: bounded by ctx, at most 2 s) and stops
// memberlist and the event goroutine.
func (m *membership) shutdown(ctx context.Context, graceful bool) error {
	m.stopJoining()
	if m.ml == nil {
		return nil
	}
	var errs []error
	if graceful {
		if err := m.ml.Leave(boundedTimeout(ctx, 2*time.Second)); err != nil {
			errs = append(errs, fmt.Errorf("gossip leave: %w", err))
		}
	}
	if err := m.ml.Shutdown(); err != nil {
		errs = append(errs, fmt.Errorf("gossip shutdown: %w", err))
	}
	m.mlLog.close()
	m.evCancel()
	m.evDone.Wait()
	return errors.Join(errs...)
}

// joinedC is closed when the start-up join phase ended (joined, or no
// seed answered within join_timeout, or no seed is configured).
func (m *membership) joinedC() <-chan struct{} { return m.joined }

func (m *membership) endJoinPhase() { m.joinEnd.Do(func() { close(m.joined) }) }

// mlDelegate gives memberlist our node meta. Only NodeMeta carries data:
// instance data travels over HTTP, never in gossip.
type mlDelegate struct{ m *membership }

func (d *mlDelegate) NodeMeta(limit int) []byte {
	b := *d.m.metaEnc.Load()
	if len(b) > limit {
		return nil // cannot happen: newMembership checked the size
	}
	return b
}
func (d *mlDelegate) NotifyMsg([]byte)                           {}
func (d *mlDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *mlDelegate) LocalState(join bool) []byte                { return nil }
func (d *mlDelegate) MergeRemoteState(buf []byte, join bool)     {}

// mlAlive vets every member before memberlist accepts it: a member whose
// meta we cannot read, or one that claims this node's own identity (env,
// zone, hostname: the key of our infra.discovery record) under another
// gossip name, is refused. memberlist itself refuses a second member with
// the name of a live one (its address conflict check). Gossip is
// authenticated by the keyring, so a member that gets this far holds the
// cluster key; another live member's hostname is not refused, because
// that is what a node restarted with a new address looks like until its
// old incarnation is declared dead.
type mlAlive struct{ m *membership }

func (a *mlAlive) NotifyAlive(n *memberlist.Node) error {
	if n.Name == a.m.name {
		return nil
	}
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		a.m.refuse("meta")
		return fmt.Errorf("member %q: %w", n.Name, err)
	}
	if meta.Zone == a.m.self.Zone && meta.Env == a.m.self.Env && meta.Hostname == a.m.self.Hostname {
		a.m.refuse("identity")
		a.m.logRefusal("identity", "a node holding the cluster key claims this node's env, zone and hostname: two nodes configured with one hostname (give each its own node.hostname, DISCOVERY_NODE_HOSTNAME); refused",
			"member", n.Name, "gossip", n.Address(), "http", meta.HTTPAddr, "hostname", meta.Hostname)
		return fmt.Errorf("member %q claims this node's identity (hostname %q)", n.Name, meta.Hostname)
	}
	return nil
}

// mlConflict hears of a second member claiming the name of a live one
// from another address: memberlist keeps the live one and ignores the
// claim; it is logged and counted here.
type mlConflict struct{ m *membership }

func (c *mlConflict) NotifyConflict(existing, other *memberlist.Node) {
	c.m.refuse("name_conflict")
	c.m.logRefusal("name_conflict", "gossip member name claimed from a second address; the live member is kept",
		"name", existing.Name, "live", existing.Address(), "claimed_by", other.Address())
}

func (m *membership) refuse(reason string) {
	if m.onRefuse != nil {
		m.onRefuse(reason)
	}
}

// logRefusal logs a refused member at most once a minute per reason: an
// impostor's alive messages repeat with every gossip round.
func (m *membership) logRefusal(reason, msg string, attrs ...any) {
	now := time.Now()
	m.refusedMu.Lock()
	last, seen := m.refusedLog[reason]
	due := !seen || now.Sub(last) >= time.Minute
	if due {
		if m.refusedLog == nil {
			m.refusedLog = map[string]time.Time{}
		}
		m.refusedLog[reason] = now
	}
	m.refusedMu.Unlock()
	if due {
		m.log.Error(msg, attrs...)
	}
}

// mlEvents hands memberlist's callbacks to the event goroutine without
// blocking (memberlist calls them one at a time from its own goroutines).
type mlEvents struct{ m *membership }

func (e *mlEvents) NotifyJoin(n *memberlist.Node)   { e.m.record(false, n) }
func (e *mlEvents) NotifyLeave(n *memberlist.Node)  { e.m.record(true, n) }
func (e *mlEvents) NotifyUpdate(n *memberlist.Node) { e.m.record(false, n) }

// record runs inside memberlist's callback, where n may be read (later
// memberlist mutates it under its own lock, so Members() results must not
// be read concurrently). It updates the member table, queues a leave and
// wakes the event goroutine; it never blocks on it.
func (m *membership) record(leave bool, n *memberlist.Node) {
	if n.Name == m.name {
		return
	}
	raw := slices.Clone(n.Meta)
	meta, err := decodeMeta(raw)
	ms := memberState{meta: meta, metaErr: err, gossip: n.Address()}
	m.mu.Lock()
	if leave {
		delete(m.members, n.Name)
		if err != nil || meta.Status != metaLeaving {
			// Failed, not left: it may be a partition. Keep its address to
			// reconnect to, as two halves that each declared the other dead
			// never gossip again on their own.
			m.failed[n.Name] = failedMember{addr: ms.gossip, at: time.Now()}
		}
	} else {
		m.members[n.Name] = ms
		// Back, possibly under a new name (a restart): its address no
		// longer needs retrying.
		for name, f := range m.failed {
			if name == n.Name || f.addr == ms.gossip {
				delete(m.failed, name)
			}
		}
	}
	m.mu.Unlock()
	if leave {
		m.evMu.Lock()
		m.evq = append(m.evq, memberEvent{name: n.Name, meta: raw})
		m.evMu.Unlock()
	}
	select {
	case m.evSig <- struct{}{}:
	default:
	}
}

func (m *membership) eventLoop(ctx context.Context) {
	defer m.evDone.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.evSig:
		}
		m.evMu.Lock()
		evs := m.evq
		m.evq = nil
		m.evMu.Unlock()
		m.onChange(evs)
	}
}

// table returns a copy of the other live members.
func (m *membership) table() map[string]memberState {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[string]memberState, len(m.members))
	for k, v := range m.members {
		out[k] = v
	}
	return out
}

// sameZone lists the other live members of our zone (readable meta only).
func (m *membership) sameZone() []memberRef {
	var out []memberRef
	for name, ms := range m.table() {
		if ms.metaErr == nil && ms.meta.Zone == m.self.Zone {
			out = append(out, memberRef{name, ms.meta.HTTPAddr})
		}
	}
	return out
}

// isLive reports whether a member of that gossip name is live.
func (m *membership) isLive(name string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	_, ok := m.members[name]
	return ok
}

// ownerLive reports whether a live member owns the infra.discovery record
// k (same env, zone and hostname).
func (m *membership) ownerLive(k registry.Key) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, ms := range m.members {
		if x := ms.meta; ms.metaErr == nil && x.Env == k.Env && x.Zone == k.Zone && x.Hostname == k.Hostname {
			return true
		}
	}
	return false
}

// joinLoop joins the seeds with backoff, bounded by join_timeout, then
// rejoins every rejoin_interval while this node sees no other member, and
// retries the address of one failed member each round.
func (m *membership) joinLoop(ctx context.Context) {
	defer m.joinDone.Done()
	if len(m.cfg.Join) > 0 {
		jctx, cancel := context.WithTimeout(ctx, m.cfg.JoinTimeout)
		bo := backoff.NewExponentialBackOff()
		bo.InitialInterval = 100 * time.Millisecond
		bo.MaxInterval = time.Second
		_, err := backoff.Retry(jctx, func() (struct{}, error) { return struct{}{}, m.joinOnce(jctx) },
			backoff.WithBackOff(bo), backoff.WithMaxElapsedTime(0))
		cancel()
		if err != nil && ctx.Err() == nil {
			m.log.Warn("no seed reachable; starting alone and retrying in the background", "seeds", m.cfg.Join, "err", err)
		}
	}
	m.endJoinPhase()
	t := time.NewTicker(m.cfg.RejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if len(m.cfg.Join) > 0 && m.ml.NumMembers() <= 1 {
			if err := m.joinOnce(ctx); err == nil {
				m.log.Info("rejoined the cluster", "members", m.ml.NumMembers())
				continue
			}
		}
		m.reconnectFailed()
	}
}

// joinOnce tries every seed once, a seed name at every address it resolves
// to; joining only ourselves does not count.
func (m *membership) joinOnce(ctx context.Context) error {
	addrs, err := m.resolveSeeds(ctx)
	if len(addrs) == 0 {
		return err
	}
	n, err := m.ml.Join(addrs)
	if err != nil {
		return err
	}
	if m.ml.NumMembers() <= 1 {
		return errors.New("only reached ourselves")
	}
	m.log.Info("joined cluster", "contacted", n, "members", m.ml.NumMembers())
	return nil
}

// resolveSeeds expands the seeds to ip:port: an IP literal as is, a name
// at each of its addresses. Names that do not resolve are skipped (and
// reported when nothing is left).
func (m *membership) resolveSeeds(ctx context.Context) ([]string, error) {
	var out []string
	var errs []error
	for _, s := range m.cfg.Join {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			host, port = s, strconv.Itoa(int(m.ml.LocalNode().Port)) // memberlist's rule: our own port
		}
		if net.ParseIP(host) != nil {
			out = append(out, net.JoinHostPort(host, port))
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, m.cfg.PeerTimeout)
		ips, err := m.res.LookupHost(lctx, host)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("seed %s: %w", s, err))
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), errors.Join(errs...)
}

// reconnectFailed tries to join one failed member (a healed partition
// merges back; a crashed node just refuses the connection).
func (m *membership) reconnectFailed() {
	m.mu.Lock()
	var cands []string
	for name, f := range m.failed {
		if time.Since(f.at) > reconnectFor {
			delete(m.failed, name)
			continue
		}
		cands = append(cands, f.addr)
	}
	m.mu.Unlock()
	if len(cands) == 0 {
		return
	}
	addr := cands[rand.IntN(len(cands))]
	if _, err := m.ml.Join([]string{addr}); err == nil {
		m.log.Info("reconnected to a failed member's address", "gossip", addr)
	}
}

// nodes lists the same-zone live members including self, one per HTTP
// address: alive → NodeUp; leaving, or failing(name) → NodeLost. See
// Cluster.Nodes.
func (m *membership) nodes(failing func(name string) bool) []Member {
	out := []Member{m.selfMember()}
	if m.ml == nil {
		return out
	}
	for name, ms := range m.table() {
		x := ms.meta
		if ms.metaErr != nil || x.Zone != m.self.Zone {
			continue
		}
		mem := Member{
			Name: name, Addr: x.HTTPAddr, GossipAddr: ms.gossip, Zone: x.Zone, Env: x.Env,
			Hostname: x.Hostname, Version: x.Version, Leaving: x.Status == metaLeaving,
		}
		if mem.Leaving || failing(name) {
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

func (m *membership) selfMember() Member {
	leaving := m.leaving()
	mem := Member{Name: m.name, Addr: m.self.HTTPAddr, GossipAddr: m.gossip, Zone: m.self.Zone, Env: m.self.Env,
		Hostname: m.self.Hostname, Version: m.self.Version, Leaving: leaving, Self: true}
	if leaving {
		mem.Status = NodeLost
	}
	return mem
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
