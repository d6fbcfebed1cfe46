package syncup

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Config is the cluster's configuration (configuration section "cluster").
type Config struct {
	// NodeName is this node's unique gossip name. Empty: hostname plus a
	// random suffix, so a restarted node is never refused as a reclaimed name.
	NodeName string `mapstructure:"node_name"`
	// Bind is the gossip listen address host:port (TCP and UDP).
	Bind string `mapstructure:"bind"`
	// Advertise is the gossip address peers use (IP:port). Empty: derived
	// from Bind, never an unspecified address.
	Advertise string `mapstructure:"advertise"`
	// Join lists gossip seeds (host:port). A seed that is not up yet is
	// normal: joining retries with backoff.
	Join []string `mapstructure:"join"`
	// Secret is the cluster secret: 16, 24 or 32 random bytes, given
	// base64-encoded (discovery keygen makes one). Gossip is encrypted and
	// authenticated with it, and every request between nodes is signed
	// with it. Never printed.
	Secret string `mapstructure:"secret"`
	// AcceptSecrets are further secrets accepted from peers (gossip and
	// signatures) but not used by this node: the second step of a key
	// rotation (docs/security.md).
	AcceptSecrets []string `mapstructure:"accept_secrets"`
	// Insecure runs without a secret on a network: gossip in clear text
	// and peer requests unauthenticated. Without it a node with no secret
	// only binds gossip to loopback and takes no peer request; with join
	// seeds, remote zones or a non-loopback gossip address it refuses to
	// start.
	Insecure bool `mapstructure:"insecure"`
	// MaxClockSkew bounds the age (and future) of a signed peer request;
	// nodes' clocks must agree within it. Replays inside it are refused.
	MaxClockSkew time.Duration `mapstructure:"max_clock_skew"`
	// Label keeps clusters sharing a network apart.
	Label string `mapstructure:"label"`
	// Zones maps other zone names to HTTP host:port seeds of that zone
	// (cross-zone replication, spec 7.2).
	Zones map[string][]string `mapstructure:"zones"`
	// LegacyNodes are HTTP host:port addresses of nodes of a running
	// bilibili/discovery cluster in this node's zone (a migration,
	// docs/migration.md). Towards them the node speaks only the public
	// replication form (spec 7.2-7.4), pulls their fetch/all at start, when
	// one comes back and every legacy_pull_interval, and takes their
	// forwarded writes, trusted by source address (they cannot sign).
	LegacyNodes []string `mapstructure:"legacy_nodes"`
	// LegacyZones maps other zones to the legacy nodes there; a write that
	// crosses zones goes to one of them per zone, as the original sends it.
	LegacyZones map[string][]string `mapstructure:"legacy_zones"`
	// LegacyPullInterval: how often each legacy node's fetch/all is pulled
	// and merged (they have no digest route; anti-entropy against them).
	LegacyPullInterval time.Duration `mapstructure:"legacy_pull_interval"`

	// JoinTimeout bounds the start-up join attempts; when no seed answers
	// within it the node starts alone (and keeps rejoining in the background).
	JoinTimeout time.Duration `mapstructure:"join_timeout"`
	// RejoinInterval: how often a node retries the seeds while it sees no peer.
	RejoinInterval time.Duration `mapstructure:"rejoin_interval"`
	// SyncTimeout bounds the startup sync's wait for peers; after it the
	// node reports ready with what it has. A snapshot being received is
	// cut only after SyncTimeout without progress (or ten times it in all).
	SyncTimeout time.Duration `mapstructure:"sync_timeout"`
	// InitProtect (the original's enableprotect): gate reads until the first
	// successful sync from a peer or InitProtectTimeout, even with no peers.
	InitProtect        bool          `mapstructure:"init_protect"`
	InitProtectTimeout time.Duration `mapstructure:"init_protect_timeout"`
	// AntiEntropyInterval: how often this node compares digests with one
	// random peer (jittered).
	AntiEntropyInterval time.Duration `mapstructure:"anti_entropy_interval"`
	// RenewInterval: how often the node renews its own infra.discovery record.
	RenewInterval time.Duration `mapstructure:"renew_interval"`

	// Replication queue per peer.
	QueueSize int `mapstructure:"queue_size"` // ops buffered per peer; overflow is dropped and counted
	BatchSize int `mapstructure:"batch_size"` // ops per replication request
	// RenewLinger: how long a link holds a batch of nothing but renews
	// for more ops before sending it. Below saturation every op otherwise
	// travels alone, and a replicate request costs several goroutine wakes
	// on both nodes whatever it carries; renews (every instance, every
	// 30 s) can wait a few ms. Registers, cancels and sets never wait, and
	// take the renews queued before them along. 0 sends at once.
	RenewLinger     time.Duration `mapstructure:"renew_linger"`
	PeerTimeout     time.Duration `mapstructure:"peer_timeout"`      // one request to a peer (< 30 s, spec 7.2.2)
	RetryMaxBackoff time.Duration `mapstructure:"retry_max_backoff"` // cap of the per-peer resend backoff

	// Limits on what a peer may send to the internal endpoints (spec 10.5
	// spirit: a bad or hostile payload is refused, never trusted).
	MaxBatchOps     int   `mapstructure:"max_batch_ops"`     // ops accepted in one replicate request; must be >= batch_size
	MaxBodyBytes    int64 `mapstructure:"max_body_bytes"`    // body of one replicate or digest request (a digest is ~80 B per app); a larger replicate batch is split by the sender
	MaxDigests      int   `mapstructure:"max_digests"`       // app digests accepted in one digest request (at least registry.max_apps)
	MaxPeerRequests int   `mapstructure:"max_peer_requests"` // peer requests served at once; beyond, HTTP 503 (the peer retries)
	// MaxRepairInstances bounds the instances one anti-entropy round
	// carries each way (the apps beyond wait for the next rounds), so a
	// round between two nodes that differ in every app (one far behind
	// during a mass registration) does not hold the whole registry in
	// memory at once: that took 2.7 GB with 1 000 000 instances.
	MaxRepairInstances int `mapstructure:"max_repair_instances"`
}

// DefaultConfig returns production defaults.
func DefaultConfig() Config {
	return Config{
		Bind:                "0.0.0.0:7946",
		Label:               "discovery",
		JoinTimeout:         5 * time.Second,
		RejoinInterval:      10 * time.Second,
		SyncTimeout:         10 * time.Second,
		InitProtectTimeout:  60 * time.Second,
		AntiEntropyInterval: 30 * time.Second,
		RenewInterval:       30 * time.Second,
		QueueSize:           65536,
		BatchSize:           512,
		RenewLinger:         10 * time.Millisecond,
		PeerTimeout:         5 * time.Second,
		RetryMaxBackoff:     5 * time.Second,
		MaxBatchOps:         4096,
		MaxBodyBytes:        16 << 20,
		MaxDigests:          200_000,
		MaxPeerRequests:     32,
		MaxRepairInstances:  20_000,
		MaxClockSkew:        time.Minute,
		LegacyPullInterval:  30 * time.Second,
	}
}

// Validate reports invalid fields by their key under "cluster".
func (c Config) Validate() error {
	var errs []error
	if c.Bind == "" {
		errs = append(errs, errors.New("cluster.bind: must not be empty"))
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"cluster.join_timeout", c.JoinTimeout},
		{"cluster.rejoin_interval", c.RejoinInterval},
		{"cluster.sync_timeout", c.SyncTimeout},
		{"cluster.init_protect_timeout", c.InitProtectTimeout},
		{"cluster.anti_entropy_interval", c.AntiEntropyInterval},
		{"cluster.renew_interval", c.RenewInterval},
		{"cluster.peer_timeout", c.PeerTimeout},
		{"cluster.legacy_pull_interval", c.LegacyPullInterval},
		{"cluster.retry_max_backoff", c.RetryMaxBackoff},
		{"cluster.max_clock_skew", c.MaxClockSkew},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be > 0, got %s", d.key, d.v))
		}
	}
	if c.PeerTimeout >= 30*time.Second {
		errs = append(errs, fmt.Errorf("cluster.peer_timeout: must be < 30s (spec 7.2.2), got %s", c.PeerTimeout))
	}
	if c.RenewLinger < 0 || c.RenewLinger > time.Second {
		errs = append(errs, fmt.Errorf("cluster.renew_linger: must be in [0, 1s], got %s", c.RenewLinger))
	}
	if c.QueueSize < 1 {
		errs = append(errs, fmt.Errorf("cluster.queue_size: must be >= 1, got %d", c.QueueSize))
	}
	if c.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("cluster.batch_size: must be >= 1, got %d", c.BatchSize))
	}
	if c.MaxBatchOps < c.BatchSize {
		errs = append(errs, fmt.Errorf("cluster.max_batch_ops: must be >= cluster.batch_size (%d), got %d", c.BatchSize, c.MaxBatchOps))
	}
	if c.MaxBodyBytes < 64<<10 {
		errs = append(errs, fmt.Errorf("cluster.max_body_bytes: must be >= 65536, got %d", c.MaxBodyBytes))
	}
	if c.MaxRepairInstances < 1 {
		errs = append(errs, fmt.Errorf("cluster.max_repair_instances: must be >= 1, got %d", c.MaxRepairInstances))
	}
	if c.MaxDigests < 1 {
		errs = append(errs, fmt.Errorf("cluster.max_digests: must be >= 1, got %d", c.MaxDigests))
	}
	if c.MaxPeerRequests < 1 {
		errs = append(errs, fmt.Errorf("cluster.max_peer_requests: must be >= 1, got %d", c.MaxPeerRequests))
	}
	errs = append(errs, c.validateAddrs()...)
	return errors.Join(errs...)
}

// validateAddrs checks the gossip addresses, seeds, secret, label and zone
// seeds. memberlist needs IP literals for bind and advertise.
func (c Config) validateAddrs() []error {
	var errs []error
	if c.Bind != "" {
		if _, _, err := splitIPPort(c.Bind, true); err != nil {
			errs = append(errs, fmt.Errorf("cluster.bind: %w", err))
		}
	}
	if c.Advertise != "" {
		ip, _, err := splitIPPort(c.Advertise, false)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("cluster.advertise: %w", err))
		case ip.IsUnspecified():
			errs = append(errs, fmt.Errorf("cluster.advertise: %q is an unspecified address; give a routable IP", c.Advertise))
		}
	}
	for i, s := range c.Join {
		if strings.TrimSpace(s) == "" {
			errs = append(errs, fmt.Errorf("cluster.join[%d]: must not be empty", i))
		}
	}
	if _, err := c.secretKeys(); err != nil {
		errs = append(errs, err)
	}
	if c.Secret == "" && len(c.AcceptSecrets) > 0 {
		errs = append(errs, errors.New("cluster.accept_secrets: needs cluster.secret (the key this node uses)"))
	}
	if len(c.Label) > 255 {
		errs = append(errs, fmt.Errorf("cluster.label: at most 255 bytes, got %d", len(c.Label)))
	}
	if len(c.NodeName) > 128 {
		errs = append(errs, fmt.Errorf("cluster.node_name: at most 128 bytes, got %d", len(c.NodeName)))
	}
	errs = append(errs, zoneErrs("cluster.zones", c.Zones)...)
	errs = append(errs, zoneErrs("cluster.legacy_zones", c.LegacyZones)...)
	for i, s := range c.LegacyNodes {
		if err := checkHostPort(s); err != nil {
			errs = append(errs, fmt.Errorf("cluster.legacy_nodes[%d]: %w", i, err))
		}
	}
	return errs
}

// zoneErrs checks a zone -> host:port list map under key.
func zoneErrs(key string, zones map[string][]string) []error {
	var errs []error
	for zone, seeds := range zones {
		if zone == "" {
			errs = append(errs, fmt.Errorf("%s: zone name must not be empty", key))
			continue
		}
		if len(seeds) == 0 {
			errs = append(errs, fmt.Errorf("%s.%s: needs at least one host:port", key, zone))
		}
		for i, s := range seeds {
			if err := checkHostPort(s); err != nil {
				errs = append(errs, fmt.Errorf("%s.%s[%d]: %w", key, zone, i, err))
			}
		}
	}
	return errs
}

// checkHostPort accepts host:port with a non-empty host and a port in
// 1-65535.
func checkHostPort(s string) error {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	if port, err := strconv.Atoi(ps); host == "" || err != nil || port < 1 || port > 65535 {
		return fmt.Errorf("%q is not host:port with a host and a port in 1-65535", s)
	}
	return nil
}

// splitIPPort parses "ip:port". With allowZeroPort, port 0 (pick one) is
// accepted; the host may then also be empty (all interfaces).
func splitIPPort(s string, allowZeroPort bool) (net.IP, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return nil, 0, fmt.Errorf("%q is not ip:port: %w", s, err)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 || (port == 0 && !allowZeroPort) {
		return nil, 0, fmt.Errorf("%q: invalid port %q", s, ps)
	}
	if host == "" && allowZeroPort {
		return net.IPv4zero, port, nil
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, 0, fmt.Errorf("%q: host must be an IP literal (memberlist does not resolve names here)", s)
	}
	return ip, port, nil
}

// ErrNoSecret is New's error for a node that would take peers on a network
// without a cluster secret and without cluster.insecure.
var ErrNoSecret = errors.New("cluster.secret: required to take peers on a network (cluster.join, cluster.zones, cluster.legacy_nodes, cluster.legacy_zones or a non-loopback cluster.bind/advertise is set); " +
	"create one with `discovery keygen` and give every node the same one (DISCOVERY_CLUSTER_SECRET), " +
	"or set cluster.insecure=true to run without (never on a shared network)")

// secured applies the secure-by-default rule: with a secret, or
// cluster.insecure, c is used as is. Without either, a node that has no
// one to join binds gossip to loopback (a standalone node: nobody can
// join it, and it takes no peer request); one that would take peers on a
// network is refused with ErrNoSecret.
func (c Config) secured() (Config, error) {
	if c.Secret != "" || c.Insecure {
		return c, nil
	}
	ip, port, err := splitIPPort(c.Bind, true)
	if err != nil {
		return c, err
	}
	network := len(c.Join) > 0 || len(c.Zones) > 0 || len(c.LegacyNodes) > 0 || len(c.LegacyZones) > 0 ||
		(!ip.IsUnspecified() && !ip.IsLoopback())
	if c.Advertise != "" {
		if aip, _, err := splitIPPort(c.Advertise, false); err == nil && !aip.IsLoopback() {
			network = true
		}
	}
	if network {
		return c, ErrNoSecret
	}
	if ip.IsUnspecified() {
		c.Bind = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	return c, nil
}
