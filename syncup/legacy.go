package syncup

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/discovery-go/discovery/api/wire"
)

// legacy owns this node's side of a mixed cluster with nodes of the
// original bilibili/discovery (cluster.legacy_nodes, legacy_zones;
// docs/migration.md):
//
//   - a replication link per same-zone legacy node, and one per zone of
//     legacy_zones rotating over its nodes, through a LegacyTransport (the
//     public replication form); the replicator fans writes out to them
//     like to peers, so every client write accepted here reaches them;
//   - the pull of each same-zone legacy node's fetch/all (they have no
//     snapshot or digest route): during the startup sync, when one comes
//     back (its link or a pull recovers), and every legacy_pull_interval;
//   - the trust in their forwarded writes, by source address: they cannot
//     sign, so a request from a configured legacy node's IP counts as a
//     peer's (FromLegacy; docs/security.md);
//   - per-node state and metrics: ops forwarded, failed and received, the
//     last successful pull, items repaired.
//
// Loops cannot form: a legacy node forwards a write only when it was not
// itself forwarded (replication=false) and never back across zones
// (from_zone), the same rules this node keeps; every forward this node or
// a legacy node sends carries replication=true within the zone.
type legacy struct {
	cfg  Config
	tr   *LegacyTransport
	recs *records
	repl *replicator
	res  Resolver
	met  *metrics
	log  *slog.Logger

	nodes []*legacyNode // every configured address, same zone first; fixed
	same  []*legacyNode // those of this zone (pulled, one link each)

	trusted atomic.Pointer[map[netip.Addr]*legacyNode] // source IP -> node
	wake    chan *legacyNode                           // pull this one now (it came back)
}

// legacyNode is one configured legacy address.
type legacyNode struct {
	addr string
	zone string // "" for this node's zone
	link *link  // same-zone nodes only

	pulled   atomic.Bool  // pulled once during this run (the startup sync)
	up       atomic.Bool  // the last pull or forward succeeded
	lastPull atomic.Int64 // unix ns of the last successful pull; 0: never
	lastErr  atomic.Pointer[string]

	forwarded, failed, received, repaired atomic.Uint64
	fwdC, failC, recvC, repairC           prometheus.Counter
}

// LegacyNodeStatus is what a node knows of one legacy node (ctl, admin).
type LegacyNodeStatus = wire.LegacyStatus

func newLegacy(cfg Config, self Self, tr *LegacyTransport, recs *records, repl *replicator, res Resolver, met *metrics, log *slog.Logger) *legacy {
	g := &legacy{cfg: cfg, tr: tr, recs: recs, repl: repl, res: res, met: met, log: log.With("component", "legacy"),
		wake: make(chan *legacyNode, 16)}
	add := func(addr, zone string) {
		for _, n := range g.nodes {
			if n.addr == addr {
				return
			}
		}
		n := &legacyNode{addr: addr, zone: zone}
		n.fwdC = met.legacyForwarded.WithLabelValues(addr)
		n.failC = met.legacyFailed.WithLabelValues(addr)
		n.recvC = met.legacyReceived.WithLabelValues(addr)
		n.repairC = met.legacyRepairs.WithLabelValues(addr)
		g.nodes = append(g.nodes, n)
		if zone == "" {
			g.same = append(g.same, n)
		}
	}
	for _, a := range cfg.LegacyNodes {
		add(a, "")
	}
	for _, z := range sortedZones(cfg.LegacyZones) {
		if z == self.Zone {
			for _, a := range cfg.LegacyZones[z] {
				add(a, "")
			}
			continue
		}
		for _, a := range cfg.LegacyZones[z] {
			add(a, z)
		}
	}
	empty := map[netip.Addr]*legacyNode{}
	g.trusted.Store(&empty)
	return g
}

func sortedZones(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for z := range m {
		out = append(out, z)
	}
	slices.Sort(out)
	return out
}

// configured reports whether any legacy node is configured.
func (g *legacy) configured() bool { return g != nil && len(g.nodes) > 0 }

// start creates the links (before anything is forwarded) and resolves the
// trusted addresses.
func (g *legacy) start(ctx context.Context, selfZone string) {
	for _, n := range g.same {
		n.link = g.repl.addLegacy("legacy:"+n.addr, n.addr, g.tr, g.observer(n))
	}
	for _, z := range sortedZones(g.cfg.LegacyZones) {
		if z != selfZone {
			g.repl.addZoneVia("legacy-zone:"+z, z, g.cfg.LegacyZones[z], nil, g.tr)
		}
	}
	g.resolve(ctx)
}

// observer counts a same-zone link's results and pulls the node again
// when its link recovers (it was down: what it missed meanwhile).
func (g *legacy) observer(n *legacyNode) linkObserver {
	return linkObserver{
		results: func(ok, failed int) {
			n.forwarded.Add(uint64(ok))
			n.fwdC.Add(float64(ok))
			n.failed.Add(uint64(failed))
			n.failC.Add(float64(failed))
		},
		recovered: func() {
			select {
			case g.wake <- n:
			default:
			}
		},
	}
}

// resolve refreshes the trusted source addresses (names are looked up;
// a failed lookup keeps what the name resolved to before).
func (g *legacy) resolve(ctx context.Context) {
	old := *g.trusted.Load()
	next := make(map[netip.Addr]*legacyNode, len(g.nodes))
	for _, n := range g.nodes {
		host, _, err := net.SplitHostPort(n.addr)
		if err != nil {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			next[ip.Unmap()] = n
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, g.cfg.PeerTimeout)
		ips, err := g.res.LookupHost(rctx, host)
		cancel()
		if err != nil {
			g.log.Warn("cannot resolve legacy node; keeping its previous addresses", "node", n.addr, "err", err)
			for ip, on := range old {
				if on == n {
					next[ip] = n
				}
			}
			continue
		}
		for _, s := range ips {
			if ip, err := netip.ParseAddr(s); err == nil {
				next[ip.Unmap()] = n
			}
		}
	}
	g.trusted.Store(&next)
}

// FromLegacy reports whether r comes from the address of a configured
// legacy node, and counts it as received from that node.
func (g *legacy) FromLegacy(r *http.Request) bool {
	if !g.configured() {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	n := (*g.trusted.Load())[ap.Addr().Unmap()]
	if n == nil {
		return false
	}
	n.received.Add(1)
	n.recvC.Inc()
	return true
}

// pullPending pulls every same-zone legacy node not pulled yet in this
// run and reports how many are pulled by now (the startup sync).
func (g *legacy) pullPending(ctx context.Context) int {
	done := 0
	for _, n := range g.same {
		if !n.pulled.Load() {
			g.pull(ctx, n)
		}
		if n.pulled.Load() {
			done++
		}
	}
	return done
}

// run pulls every same-zone legacy node every legacy_pull_interval
// (jittered), and one that came back at once, until ctx ends.
func (g *legacy) run(ctx context.Context) {
	for {
		t := time.NewTimer(jittered(g.cfg.LegacyPullInterval))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case n := <-g.wake:
			t.Stop()
			g.pull(ctx, n)
		case <-t.C:
			g.resolve(ctx)
			for _, n := range g.same {
				g.pull(ctx, n)
			}
		}
	}
}

// pull merges n's fetch/all into the registry. An instance that n holds
// with comma-joined addrs (Defect D4) is merged repaired, and when our
// copy is not older, our copy is registered on n again so n stores it
// right (the original replaces a copy of equal dirty_timestamp).
func (g *legacy) pull(ctx context.Context, n *legacyNode) {
	pctx, cancel := context.WithTimeout(ctx, max(g.cfg.SyncTimeout, g.cfg.PeerTimeout))
	defer cancel()
	wasUp := n.up.Load()
	items, repaired := 0, 0
	var fix []wire.Instance
	err := g.tr.fetchAll(pctx, n.addr, func(ins wire.Instance, joined bool) error {
		items++
		if ins.Key().Validate() != nil {
			return nil //nolint:nilerr // an invalid record is skipped, not a failed pull
		}
		if g.recs.admit(ins) {
			repaired++
		}
		if joined {
			if ours, ok := g.recs.reg.Get(ins.Key()); ok && ours.DirtyTimestamp >= ins.DirtyTimestamp && len(fix) < 10000 {
				fix = append(fix, ours)
			}
		}
		return nil
	})
	if err != nil {
		n.up.Store(false)
		msg := err.Error()
		n.lastErr.Store(&msg)
		if wasUp || !n.pulled.Load() {
			g.log.Warn("pull from legacy node failed", "node", n.addr, "err", err)
		}
		return
	}
	for i := range fix {
		n.link.enqueue(newOutOp(Op{Kind: OpRegister, Replication: true, FromZone: true, Instance: &fix[i]}))
	}
	repaired += len(fix)
	n.repaired.Add(uint64(repaired))
	n.repairC.Add(float64(repaired))
	n.up.Store(true)
	n.lastErr.Store(nil)
	n.lastPull.Store(time.Now().UnixNano())
	g.met.legacyLastPull.WithLabelValues(n.addr).SetToCurrentTime()
	first := !n.pulled.Swap(true)
	if first || !wasUp || repaired > 0 {
		g.log.Info("pulled legacy node", "node", n.addr, "instances", items, "repaired", repaired, "joined_addrs_fixed", len(fix))
	}
}

// status lists every configured legacy node.
func (g *legacy) status() []LegacyNodeStatus {
	if g == nil {
		return nil
	}
	out := make([]LegacyNodeStatus, 0, len(g.nodes))
	for _, n := range g.nodes {
		s := LegacyNodeStatus{
			Addr: n.addr, Zone: n.zone,
			Forwarded: n.forwarded.Load(), Failed: n.failed.Load(), Received: n.received.Load(), Repaired: n.repaired.Load(),
		}
		if n.link != nil {
			s.Up = n.up.Load() && !n.link.failing.Load()
		} else {
			s.Up = n.received.Load() > 0
		}
		s.LastPull = n.lastPull.Load()
		if e := n.lastErr.Load(); e != nil {
			s.LastError = *e
		}
		out = append(out, s)
	}
	return out
}
