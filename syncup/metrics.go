package syncup

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the cluster layer. Values that exist at scrape time (members,
// queue depths, readiness) are read by a collector, never counted twice.
type metrics struct {
	sent       prometheus.Counter
	failed     prometheus.Counter
	received   *prometheus.CounterVec // op, origin
	recv       map[OpKind][2]prometheus.Counter
	dropped    *prometheus.CounterVec // reason: overflow, peer_gone, shutdown
	handshakes *prometheus.CounterVec // code: 404, 409 (renew handshake reactions)
	lag        prometheus.Histogram
	batchOps   prometheus.Histogram
	aeRounds   *prometheus.CounterVec // result: ok, error
	aeRepairs  prometheus.Counter
	syncDur    prometheus.Gauge
	evicted    prometheus.Counter
	refused    *prometheus.CounterVec // reason: meta, identity, name_conflict

	// Per legacy node (label node: its configured address).
	legacyForwarded, legacyFailed, legacyReceived, legacyRepairs *prometheus.CounterVec
	legacyLastPull                                               *prometheus.GaugeVec
	legacyUpDesc                                                 *prometheus.Desc

	membersDesc *prometheus.Desc
	queueDesc   *prometheus.Desc
	readyDesc   *prometheus.Desc
	c           *Cluster // read at scrape time (members, queues, readiness)
}

// newMetrics builds the metrics; register exports them.
func newMetrics() *metrics {
	m := &metrics{
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "discovery_replication_ops_sent_total",
			Help: "Replicated operations acknowledged by a peer (any per-op code).",
		}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_replication_ops_received_total",
			Help: "Operations received from other nodes' replicate requests, by op and origin: peer (a same-zone copy, applied and never forwarded) or zone (an original write from another zone, applied and forwarded inside this zone only).",
		}, []string{"op", "origin"}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "discovery_replication_ops_failed_total",
			Help: "Replicated operations a peer refused (-400/-500 or a rejected batch).",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_replication_ops_dropped_total",
			Help: "Replicated operations never delivered: queue overflow, peer gone, or shutdown deadline.",
		}, []string{"reason"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_replication_handshakes_total",
			Help: "Renew handshake reactions (spec 7.3): code 404 sent our copy, 409 adopted the peer's copy.",
		}, []string{"code"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "discovery_replication_lag_seconds",
			Help:    "Time from enqueueing an operation to the peer's acknowledgement.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		batchOps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "discovery_replication_batch_ops",
			Help:    "Operations per replicate request a link sends (cluster.batch_size caps it; renews linger for cluster.renew_linger to fill it).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10), // 1 .. 512
		}),
		aeRounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_antientropy_rounds_total",
			Help: "Anti-entropy rounds with one peer.",
		}, []string{"result"}),
		aeRepairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "discovery_antientropy_repairs_total",
			Help: "Instances or tombstones changed by anti-entropy, on either side.",
		}),
		syncDur: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "discovery_startup_sync_duration_seconds",
			Help: "How long the startup sync took until the node became ready.",
		}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "discovery_cluster_dead_node_evictions_total",
			Help: "infra.discovery records removed because gossip declared their node dead.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_gossip_refused_members_total",
			Help: "Gossip members refused, by reason: meta (unreadable), identity (claims this node's env, zone and hostname), name_conflict (a live member's name claimed from another address).",
		}, []string{"reason"}),
		legacyForwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_legacy_ops_forwarded_total",
			Help: "Writes forwarded to a legacy (bilibili/discovery) node and answered by it.",
		}, []string{"node"}),
		legacyFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_legacy_ops_failed_total",
			Help: "Writes for a legacy node that it refused or that could not be delivered.",
		}, []string{"node"}),
		legacyReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_legacy_ops_received_total",
			Help: "Writes a legacy node forwarded to this node (trusted by its source address).",
		}, []string{"node"}),
		legacyRepairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "discovery_legacy_pull_repairs_total",
			Help: "Items a pull of a legacy node's fetch/all changed here, plus comma-joined copies re-registered on it.",
		}, []string{"node"}),
		legacyLastPull: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "discovery_legacy_last_pull_timestamp_seconds",
			Help: "Unix time of the last successful pull of a legacy node's fetch/all.",
		}, []string{"node"}),
		legacyUpDesc: prometheus.NewDesc("discovery_legacy_up",
			"1 while the last pull of a legacy node and the last forward to it succeeded.", []string{"node"}, nil),
		membersDesc: prometheus.NewDesc("discovery_cluster_members",
			"Same-zone gossip members (self included) by state: alive, leaving (announced), suspect (our replication link to it fails; memberlist v0.7.0 does not expose its own suspicion).", []string{"state"}, nil),
		queueDesc: prometheus.NewDesc("discovery_replication_queue_depth",
			"Operations queued for a peer and not acknowledged yet (waiting, in flight or being retried).", []string{"peer"}, nil),
		readyDesc: prometheus.NewDesc("discovery_cluster_ready",
			"1 once the startup sync / init-protect phase has ended.", nil, nil),
	}
	// Children resolved once: the hot path does no label lookup.
	m.recv = map[OpKind][2]prometheus.Counter{}
	for _, k := range []OpKind{OpRegister, OpRenew, OpCancel, OpSet, OpImport} {
		m.recv[k] = [2]prometheus.Counter{
			m.received.WithLabelValues(string(k), "peer"),
			m.received.WithLabelValues(string(k), "zone"),
		}
	}
	for _, r := range []string{"meta", "identity", "name_conflict"} {
		m.refused.WithLabelValues(r)
	}
	m.aeRounds.WithLabelValues("ok")
	m.aeRounds.WithLabelValues("error")
	for _, r := range []string{dropOverflow, dropPeerGone, dropShutdown} {
		m.dropped.WithLabelValues(r)
	}
	return m
}

// register exports the metrics on reg; c is read at scrape time.
func (m *metrics) register(reg prometheus.Registerer, c *Cluster) error {
	m.c = c
	for _, col := range []prometheus.Collector{m.sent, m.received, m.failed, m.dropped, m.handshakes, m.lag, m.batchOps, m.aeRounds, m.aeRepairs, m.syncDur, m.evicted, m.refused,
		m.legacyForwarded, m.legacyFailed, m.legacyReceived, m.legacyRepairs, m.legacyLastPull, m} {
		if err := reg.Register(col); err != nil {
			return err
		}
	}
	return nil
}

// countReceived counts one op taken from a peer (validated: a known kind,
// and replication or from_zone set).
func (m *metrics) countReceived(op *Op) {
	origin := 0 // peer
	if !op.Replication {
		origin = 1 // zone
	}
	if c, ok := m.recv[op.Kind]; ok {
		c[origin].Inc()
	}
}

// Reasons for dropped ops.
const (
	dropOverflow = "overflow"
	dropPeerGone = "peer_gone"
	dropShutdown = "shutdown"
)

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.membersDesc
	ch <- m.queueDesc
	ch <- m.readyDesc
	ch <- m.legacyUpDesc
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{"alive": 0, "suspect": 0, "leaving": 0}
	for _, mem := range m.c.Nodes() {
		switch {
		case mem.Leaving:
			counts["leaving"]++
		case mem.Status == NodeLost:
			counts["suspect"]++
		default:
			counts["alive"]++
		}
	}
	for s, n := range counts {
		ch <- prometheus.MustNewConstMetric(m.membersDesc, prometheus.GaugeValue, float64(n), s)
	}
	for _, l := range m.c.repl.links() {
		ch <- prometheus.MustNewConstMetric(m.queueDesc, prometheus.GaugeValue, float64(l.pending.Load()), l.name)
	}
	r := 0.0
	if m.c.Ready() {
		r = 1
	}
	ch <- prometheus.MustNewConstMetric(m.readyDesc, prometheus.GaugeValue, r)
	for _, s := range m.c.LegacyStatus() {
		up := 0.0
		if s.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(m.legacyUpDesc, prometheus.GaugeValue, up, s.Addr)
	}
}
